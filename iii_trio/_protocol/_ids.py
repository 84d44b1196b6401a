"""Invocation ids: random UUIDv4 strings in canonical form, made cheaply.

Every synchronous call needs a fresh one, and ``str(uuid.uuid4())`` costs about 2 µs (a system
call per id and a detour through an integer). Here the randomness is fetched from the OS 4 KiB at
a time and formatted directly. The ids stay unpredictable (any connection may complete a pending
id, so a guessable one would let another worker answer in its place) and are never reused.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["new_invocation_id"]

_BATCH: Final = 256  # ids per fetch from the OS
_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}

_pool = b""
_offset = 0


def new_invocation_id() -> str:
    """A random UUIDv4 string, lowercase and hyphenated as the engine emits them."""
    global _pool, _offset
    if _offset >= len(_pool):
        _pool = os.urandom(16 * _BATCH)
        _offset = 0
    digits = _pool[_offset : _offset + 16].hex()
    _offset += 16
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{_VARIANT[digits[16]]}{digits[17:20]}-{digits[20:]}"
    )
