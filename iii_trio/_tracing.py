"""W3C trace context (``traceparent``) and baggage for the calls a worker makes, with no
dependency: https://www.w3.org/TR/trace-context/ and https://www.w3.org/TR/baggage/.

A call made inside a handler continues the handler's trace: same trace id, a new parent span
id, the same sampled flag, and the handler's baggage. A call made anywhere else starts a trace.
What the engine hands a handler is checked here, and a malformed value is dropped, never an
error: the trace then starts afresh at this worker.

New ids are random (``random.randbytes``: unique, not secret, and the cheapest way to a hex
string on the call path; an all-zero id, which W3C forbids, has odds of 2**-64 or less).
"""

from __future__ import annotations

import random
import re
from typing import Final

__all__ = ["child_traceparent", "trace_id_of", "valid_baggage", "valid_traceparent"]

# version-traceid-parentid-flags, lowercase hex; a version above 00 may append fields.
_TRACEPARENT: Final = re.compile(
    r"(?!ff)([0-9a-f]{2})-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})(-.*)?"
)
#: A baggage list member: key=value, then properties (``;name`` or ``;name=value``).
_TOKEN: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE: Final = r"[!#-+\--:<-\[\]-~]*"  # baggage-octets: no space, quote, comma, semicolon, \
_PROPERTY: Final = rf"\s*;\s*{_TOKEN}(?:\s*=\s*{_VALUE})?"
_MEMBER: Final = rf"\s*{_TOKEN}\s*=\s*{_VALUE}(?:{_PROPERTY})*\s*"
_BAGGAGE: Final = re.compile(rf"{_MEMBER}(?:,{_MEMBER})*")
#: The W3C limits a propagator must accept; larger baggage is dropped whole.
_BAGGAGE_MAX_BYTES: Final = 8192
_BAGGAGE_MAX_MEMBERS: Final = 180

_random_bytes = random.randbytes


def valid_traceparent(value: object) -> str | None:
    """``value`` if it is a well-formed traceparent, else None."""
    if type(value) is not str:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None or (match[1] == "00" and match[5] is not None):
        return None
    return value


def valid_baggage(value: object) -> str | None:
    """``value`` if it is well-formed baggage within the W3C limits, else None."""
    if type(value) is not str or not value.isascii() or len(value) > _BAGGAGE_MAX_BYTES:
        return None
    if _BAGGAGE.fullmatch(value) is None or value.count(",") >= _BAGGAGE_MAX_MEMBERS:
        return None
    return value


def trace_id_of(traceparent: str) -> str:
    """The trace id of a valid traceparent."""
    return traceparent[3:35]


def child_traceparent(parent: str | None) -> str:
    """The traceparent of a call made under ``parent``, a valid traceparent (its trace, a new
    span id, its sampled flag), or under nothing (a new sampled trace)."""
    if parent is None:
        ids = _random_bytes(24).hex()
        return "00-" + ids[:32] + "-" + ids[32:] + "-01"
    # Fixed offsets: "vv-" trace id (32) "-" span id (16) "-" flags (2), then, for versions
    # above 00 only, fields this version does not know, which it leaves out. Of the flags only
    # `sampled` carries over: version 00 defines no other, and the engine drops a version-00
    # traceparent whose flags exceed 2 (a W3C level-2 random-trace-id bit with sampled is 03).
    sampled = "-01" if int(parent[53:55], 16) & 1 else "-00"
    return "00" + parent[2:36] + _random_bytes(8).hex() + sampled
