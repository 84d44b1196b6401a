"""The sans-io protocol core: message types, codec, registration state and backoff schedule.

Nothing in this package performs I/O or imports trio, websockets or httpx; a test enforces it.
"""
