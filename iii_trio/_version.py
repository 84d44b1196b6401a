__version__ = "0.1.0"
"""This package's version; a worker announces it to the engine as its SDK version."""
