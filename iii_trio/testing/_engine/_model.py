"""The dev engine core's records, outputs and text rules, shared by the core and its plugins.

Nothing here decides anything: these are the rows of the core's tables (:class:`Connection`,
:class:`Function`, :class:`Binding`, ...), what the core hands its shell (:data:`Output`), and the
engine's rules for ids, labels and baggage (spec/protocol.md sections 2.4 and 4).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, TypeAlias
from urllib.parse import quote

import attrs

from ..._protocol._messages import JSON, Message

if TYPE_CHECKING:
    from ._http_api import HttpReply
    from ._plugin import Continuation, EnginePlugin
    from ._timers import Timer

#: The engine release whose behaviour this core reproduces (spec/protocol.md, status line).
BASELINE_ENGINE_VERSION: Final = "0.23.0-rc.4"

DEFAULT_NAMESPACE: Final = "default"

# --- outputs -----------------------------------------------------------------------------------


@attrs.frozen
class Send:
    """Queue ``message`` for the connection ``connection_id``."""

    connection_id: str
    message: Message


@attrs.frozen
class CloseConnection:
    """Stop reading ``connection_id`` and close it.

    With ``drain`` the frames already queued for it go out first, then a close frame (the
    ``WORKER_NAMESPACE_CONFLICT`` case); without it the socket is dropped at once (eviction by a
    reattach). Either way the shell still calls :meth:`EngineState.disconnect` afterwards.
    """

    connection_id: str
    drain: bool


@attrs.frozen
class TimerArmed:
    """A deadline at ``deadline`` was armed; the shell's timer must not sleep past it."""

    deadline: float


@attrs.frozen
class WorkerConnected:
    """A worker connection was accepted (for logs)."""

    connection_id: str
    peer_host: str | None


@attrs.frozen
class WorkerAnnounced:
    """A worker's ``engine::workers::register`` succeeded (for logs)."""

    connection_id: str
    name: str | None
    namespace: str


@attrs.frozen
class WorkerDisconnected:
    """A worker connection's cleanup ran (for logs)."""

    connection_id: str
    name: str | None
    namespace: str | None


@attrs.frozen
class HttpRequest:
    """Send one HTTP request for an HTTP-invoked function (spec/protocol.md section 9.2), then
    hand its outcome to the ``iii-http-functions`` plugin's ``finish`` under ``request_id``.

    The request's headers need the wall clock (``x-iii-Timestamp``, and the HMAC signature over
    it), which the core does not read: the shell builds them with :meth:`headers_at`. The
    header values and the HMAC secret may hold credentials and are left out of the repr.
    """

    #: Identifies the outcome to ``finish``; also the request's ``x-iii-Invocation-ID``.
    request_id: str
    method: str
    url: str
    #: The invocation's data as compact JSON.
    body: bytes
    #: Seconds the whole request may take, connecting included.
    timeout: float
    #: Headers before ``x-iii-Timestamp``.
    head: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    #: Headers after it: the registered ones, then a bearer or API key header.
    tail: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    #: Set for HMAC authentication: the body is signed with it.
    hmac_secret: str | None = attrs.field(default=None, repr=False)
    #: A host name the shell must resolve first, refusing the request if any of its addresses
    #: is private (the security rule ``block_private_ips``, which the core checks only for
    #: addresses written in the URL).
    check_host: str | None = None

    def headers_at(self, timestamp: int) -> list[tuple[str, str]]:
        """Every header of the request sent at ``timestamp`` (Unix seconds), in order."""
        headers = [*self.head, ("x-iii-timestamp", str(timestamp)), *self.tail]
        if self.hmac_secret is not None:
            signature = hmac_signature(self.body, self.hmac_secret, timestamp)
            headers.append(("x-iii-signature", signature))
        return headers


@attrs.frozen
class ChannelDropped:
    """The sweep removed channel ``channel_id`` (section 6.6): the shell releases what it holds
    for it, so that an attached reader sees the end of the stream and an attached writer's
    socket is dropped."""

    channel_id: str


@attrs.frozen
class HttpApiOutcome:
    """REST API request ``request_id`` (the ``iii-http`` worker) is answered with ``reply``
    instead of what its ``response`` channel carries; the core has forgotten the request and
    its two channels."""

    request_id: str
    reply: HttpReply


Output: TypeAlias = (
    Send
    | CloseConnection
    | TimerArmed
    | WorkerConnected
    | WorkerAnnounced
    | WorkerDisconnected
    | HttpRequest
    | ChannelDropped
    | HttpApiOutcome
)

#: How the engine itself performs a function for its owner (an HTTP-invoked function): called
#: with the call's data and where its outcome goes (``None`` when nobody waits), it reports
#: the outcome there, now or later.
RunInEngine: TypeAlias = Callable[[JSON, "Continuation | None", list[Output]], None]


@attrs.frozen
class EngineStatistics:
    """Counts describing the engine's current state (for tests and diagnostics)."""

    connections: int
    pending_invocations: int
    functions: int
    trigger_types: int
    bindings: int
    #: Services declared with ``registerservice``: the engine keeps them (for its console)
    #: but no ``engine::*`` function lists them, so this count is the only way to see them.
    services: int = 0


class NamespaceState(enum.Enum):
    """Where a connection's namespace is in section 2.5's life cycle."""

    #: Registrations are buffered until ``engine::workers::register`` or the grace deadline.
    PENDING = "pending"
    #: Fixed; registrations apply immediately.
    RESOLVED = "resolved"
    #: The connection is closing: registrations are swallowed.
    ABORTED = "aborted"


# --- records -----------------------------------------------------------------------------------


class Liveness(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    GONE = "gone"


@attrs.define(eq=False)
class Connection:
    id: str
    reattach_token: str
    peer_host: str | None
    connected_at_ms: int
    liveness: Liveness = Liveness.OPEN
    namespace_state: NamespaceState = NamespaceState.PENDING
    namespace: str | None = None
    buffered: list[Message] = attrs.Factory(list)
    # Metadata from engine::workers::register (section 2.4).
    registered: bool = False
    name: str | None = None
    description: str | None = None
    runtime: str | None = None
    version: str | None = None
    os: str | None = None
    pid: int | None = None
    isolation: str | None = None
    declared_namespace: str | None = None
    telemetry: dict[str, str | None] | None = None
    # What this connection owns or takes part in.
    functions: set[tuple[str, str]] = attrs.Factory(set)
    trigger_types: set[tuple[str, str]] = attrs.Factory(set)
    in_flight: set[str] = attrs.Factory(set)
    #: Calls this connection started that wait for a worker's answer (the shell's limit).
    calls_started: int = 0
    #: Section 2.5's grace deadline while the namespace is pending.
    grace_timer: Timer | None = None

    @property
    def effective_namespace(self) -> str:
        return self.namespace if self.namespace is not None else DEFAULT_NAMESPACE


@attrs.define(eq=False)
class Function:
    namespace: str
    id: str
    #: Owning connection; ``None`` for a built-in, which ``provider`` then provides.
    owner: Connection | None
    description: str | None = None
    request_format: JSON = None
    response_format: JSON = None
    metadata: JSON = None
    provider: InProcessWorker | None = None
    #: Set when the engine performs the function's calls itself instead of sending them to
    #: ``owner`` (an HTTP-invoked function, which ``owner`` registered and still owns).
    run: RunInEngine | None = None


@attrs.define(eq=False)
class Caller:
    """Where an invocation's answer goes: the calling connection, the id it used, the function
    id it asked for, and the trace fields the reply echoes.

    Never changed once built; not ``frozen`` only because one is built per call and a frozen
    attrs class costs about four times as much to build.
    """

    connection: Connection
    invocation_id: str
    function_id: str
    traceparent: str | None
    baggage: str | None


@attrs.define(eq=False)
class Pending:
    """One routed invocation waiting for its executor's ``invocationresult``.

    The delivery id keys it in the core's pending table and sits in the executor's and the
    caller's ``in_flight`` sets.
    """

    executor: Connection
    #: The connection whose message started the call; ``None`` when the engine started it.
    origin: Connection | None
    #: The connection waiting for the outcome; ``None`` for void calls and for calls the engine
    #: starts itself.
    caller: Caller | None
    #: When set, the outcome goes here instead of straight to ``caller``: the engine started
    #: the call and continues once it is answered (see :class:`._plugin.Continuation`).
    then: Continuation | None = None


@attrs.define(eq=False)
class TriggerType:
    namespace: str
    id: str
    description: str
    trigger_request_format: JSON = None
    call_request_format: JSON = None
    #: Providing connection; ``None`` for the engine's own types.
    provider: Connection | None = None
    #: The in-process worker that provides one of the engine's own types.
    plugin: EnginePlugin | None = None


@attrs.define(eq=False)
class Binding:
    id: str
    trigger_type: str
    function_id: str
    config: JSON
    metadata: JSON
    #: Namespace the target function resolves in.
    namespace: str
    #: Explicit provider namespace (strict lookup), or ``None`` for "origin, then default".
    trigger_namespace: str | None
    #: Namespace of the registering connection when it was registered.
    origin_namespace: str
    #: Registering connection; ``None`` for durable bindings made with engine::register_trigger.
    owner: Connection | None
    #: Provider key while live; ``None`` while parked.
    provider_key: tuple[str, str] | None = None


@attrs.define(eq=False)
class InProcessWorker:
    """A worker that runs inside the engine (a plugin, or the listener itself)."""

    id: str
    name: str
    function_ids: tuple[str, ...]
    trigger_types: tuple[str, ...]


# --- text rules ----------------------------------------------------------------------------------

# Rust's str::trim strips Unicode White_Space, which differs from str.isspace (U+001C..U+001F).
_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_NAME_LIMIT: Final = 280
_INVISIBLE_FORMATTING: Final = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)

_HEX = "[0-9a-fA-F]"
_HYPHENATED = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
# The forms the engine's UUID parser accepts: simple, hyphenated, braced, URN.
_UUID_FORMS: Final = re.compile(
    f"(?:{_HEX}{{32}}|{_HYPHENATED}|\\{{{_HYPHENATED}\\}}|urn:uuid:{_HYPHENATED})\\Z"
)
CANONICAL_UUID: Final = re.compile(
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\Z"
)

_BAGGAGE_FUNCTION_KEY: Final = "iii.function.id"
# W3C baggage-octet minus '%': everything else in a value is percent-encoded.
_BAGGAGE_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\%')


def is_blank(text: str) -> bool:
    return not text.strip(_WHITESPACE)


def canonical_uuid(text: str) -> str | None:
    """``text`` as a lowercase hyphenated UUID, or ``None`` when the engine would reject it."""
    if len(text) == 36 and CANONICAL_UUID.match(text):
        return text
    if not _UUID_FORMS.match(text):
        return None
    return str(uuid.UUID(text.removeprefix("urn:uuid:")))


def sanitize_label(text: str | None) -> str | None:
    """Clean a worker name or description as the engine does (section 2.4).

    Control characters, bidi overrides/isolates and line/paragraph separators are removed, the
    result is cut to 280 characters and trimmed; an empty result means "absent".
    """
    if text is None:
        return None
    kept = "".join(
        char
        for char in text
        if char not in _INVISIBLE_FORMATTING and unicodedata.category(char) != "Cc"
    )
    return kept[:_NAME_LIMIT].strip(_WHITESPACE) or None


#: A traceparent the engine's propagator would write back exactly as it reads it.
_CANONICAL_TRACEPARENT: Final = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-0[01]")
#: What Rust's ``from_str_radix(part, 16)`` takes for an unsigned number.
_RADIX_16: Final = re.compile(r"\+?[0-9a-fA-F]+")


def engine_traceparent(traceparent: str | None) -> str | None:
    """A caller's ``traceparent`` as the engine hands it on: read by its W3C propagator and
    written again (version 00, ids in full, the sampled flag alone), or None where the
    propagator refuses it, a version-00 value with flags above 2 among others."""
    if traceparent is None or _CANONICAL_TRACEPARENT.fullmatch(traceparent):
        return traceparent
    parts = traceparent.strip().split("-")
    if parts[-1] == "":  # a trailing dash ends the last part, as Rust's split_terminator
        parts.pop()
    if len(parts) < 4 or not all(_RADIX_16.fullmatch(part) for part in parts[:4]):
        return None
    version, flags = int(parts[0], 16), int(parts[3], 16)
    if version > 254 or flags > 255 or (version == 0 and (len(parts) != 4 or flags > 2)):
        return None
    if parts[1] != parts[1].lower() or parts[2] != parts[2].lower():
        return None
    trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    if not (0 < trace_id < 1 << 128 and 0 < span_id < 1 << 64):
        return None
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & 1:02x}"


def baggage_with_function_id(baggage: str | None, function_id: str) -> str:
    """Add or replace the ``iii.function.id`` entry of a W3C baggage header."""
    members = []
    for member in (baggage or "").split(","):
        member = member.strip()
        if not member:
            continue
        key = member.split("=", 1)[0].split(";", 1)[0].strip()
        if key != _BAGGAGE_FUNCTION_KEY:
            members.append(member)
    members.append(f"{_BAGGAGE_FUNCTION_KEY}={quote(function_id, safe=_BAGGAGE_SAFE)}")
    return ",".join(members)


def hmac_signature(body: bytes, secret: str, timestamp: int) -> str:
    """The ``x-iii-Signature`` of an HTTP-invoked function's request (section 9.1):
    ``sha256=`` and the hex HMAC-SHA256, keyed with ``secret``, of ``"<timestamp>:<base64 of
    body>"``."""
    signed = f"{timestamp}:{base64.b64encode(body).decode('ascii')}".encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def first_segment(identifier: str) -> str:
    return identifier.split("::", 1)[0]


def _compact_json(value: JSON) -> str:
    # The engine's JSON maps are ordered by key, so its compact form has sorted keys.
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def config_summary(config: JSON) -> str:
    text = _compact_json(config)
    return text if len(text) <= 80 else text[:80] + "…"


def describe_value(value: JSON) -> str:
    """How serde names an unexpected JSON value in its error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def ns_list(namespaces: Iterable[str]) -> str:
    return ", ".join(sorted(namespaces))
