"""The dev engine's protocol core: everything the iii engine decides, and no I/O.

This module owns the engine side of the worker protocol (spec/protocol.md): connections and their
namespace state, the function table and its leases, worker-name leases, pending invocations,
trigger types and bindings, and the built-in ``engine::*`` functions. It must not import trio,
websockets or httpx (a test parses its imports): the trio shell in :mod:`._dev_engine` feeds it
decoded messages and performs what it returns.

Theory of operation
-------------------

:class:`EngineState` is a synchronous state machine. The shell calls

- :meth:`EngineState.connect` when a worker's WebSocket opens,
- :meth:`EngineState.receive` for every message that worker sends, in arrival order,
- :meth:`EngineState.disconnect` once its socket is gone, and
- :meth:`EngineState.tick` whenever :meth:`EngineState.next_deadline` has passed,

passing the current time each time (the core never reads a clock). Every call returns a list of
outputs for the shell to perform in order: :class:`Send` a message to a connection,
:class:`CloseConnection`, :class:`TimerArmed` (wake the timer earlier), or one of the
informational worker events the shell logs.

Two shortcuts serve the messages every routed call consists of: :meth:`EngineState.route_invocation`
and :meth:`EngineState.route_result` take plain field values and return plain values, building
no message or output objects. They handle only the common case and decline anything else,
having changed nothing, for the shell to pass to :meth:`EngineState.receive`; tests drive twin
engines through both and compare every output.

Because every call runs to completion, the engine's spawned invocation tasks reduce to entries in
one global map of pending invocations keyed by invocation id, plus a per-connection in-flight set;
a result completes an entry, a disconnect halts every entry in the connection's set. Namespace
buffering (section 2.5) drains in one step, which is one of the schedules the real engine allows
(the register call's reply then always follows the drain). A reattach evicts the old connection
synchronously, so the "wait for the old cleanup" of section 2.6 costs nothing here.

Where the spec is silent
------------------------

- Only ``engine::workers::register``'s input type name is known; the other built-ins' names in
  ``expected struct ...`` serde messages are plausible stand-ins.
- A worker cannot take over a built-in's id or one of the engine's own trigger types: the
  function is refused like any leased id (the owner being the in-process
  ``iii-engine-functions`` worker), the trigger type is ignored with a warning.
- A durable binding (``engine::register_trigger``) that its worker provider refuses is dropped,
  since its caller never learns its id.
- A registered trigger's ``worker_name`` is its registering worker's name, else the first
  ``::`` segment of its function id.
- Not provided yet, answered as an engine without the worker that provides them would:
  HTTP-invoked functions (dropped), channels (``function_not_found``), the queue (enqueue fails
  with ``enqueue_error`` unless a worker registers ``engine::queue::enqueue``).
"""

from __future__ import annotations

import enum
import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Final, TypeAlias
from urllib.parse import quote

import attrs

from .._protocol._messages import (
    JSON,
    EnqueueAction,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    VoidAction,
    WorkerRegistered,
)

__all__ = [
    "BASELINE_ENGINE_VERSION",
    "CloseConnection",
    "EngineState",
    "EngineStatistics",
    "NamespaceState",
    "Output",
    "Send",
    "TimerArmed",
    "WorkerAnnounced",
    "WorkerConnected",
    "WorkerDisconnected",
]

logger = logging.getLogger("iii_trio.dev_engine")

#: The engine release whose behaviour this core reproduces (spec/protocol.md, status line).
BASELINE_ENGINE_VERSION: Final = "0.23.0-rc.4"

DEFAULT_NAMESPACE: Final = "default"
#: How long ``engine::register_trigger`` waits for a worker provider's answer (section 7.3).
TRIGGER_ACK_TIMEOUT: Final = 10.0
#: ``engine::functions::info`` batch limit (section 7.3).
MAX_FUNCTION_IDS: Final = 32

_WORKERS_AVAILABLE: Final = "engine::workers-available"
_FUNCTIONS_AVAILABLE: Final = "engine::functions-available"
_NO_QUEUE_PROVIDER: Final = (
    "No queue provider is installed. `TriggerAction::Enqueue` routes through the "
    "`engine::queue::enqueue` provider, which the standalone queue worker registers. Add it with "
    "`iii worker add queue`. (underlying: Function engine::queue::enqueue not found in "
    "namespace default)"
)
_BLANK_INVOKE_NAMESPACE: Final = (
    "`namespace` is empty: it was named and left blank. Give it a name, or omit it to use "
    "`default`."
)

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


Output: TypeAlias = (
    Send | CloseConnection | TimerArmed | WorkerConnected | WorkerAnnounced | WorkerDisconnected
)


@attrs.frozen
class EngineStatistics:
    """Counts describing the engine's current state (for tests and diagnostics)."""

    connections: int
    pending_invocations: int
    functions: int
    trigger_types: int
    bindings: int


class NamespaceState(enum.Enum):
    """Where a connection's namespace is in section 2.5's life cycle."""

    #: Registrations are buffered until ``engine::workers::register`` or the grace deadline.
    PENDING = "pending"
    #: Fixed; registrations apply immediately.
    RESOLVED = "resolved"
    #: The connection is closing: registrations are swallowed.
    ABORTED = "aborted"


# --- internal records ----------------------------------------------------------------------------


class _Liveness(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    GONE = "gone"


@attrs.define(eq=False)
class _Connection:
    id: str
    reattach_token: str
    peer_host: str | None
    connected_at_ms: int
    liveness: _Liveness = _Liveness.OPEN
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

    @property
    def effective_namespace(self) -> str:
        return self.namespace if self.namespace is not None else DEFAULT_NAMESPACE


@attrs.define(eq=False)
class _Function:
    namespace: str
    id: str
    #: Owning connection; ``None`` for a built-in.
    owner: _Connection | None
    description: str | None = None
    request_format: JSON = None
    response_format: JSON = None
    metadata: JSON = None


@attrs.define(eq=False)
class _Caller:
    """Where an invocation's answer goes: the calling connection, the id it used, the function
    id it asked for, and the trace fields the reply echoes.

    Never changed once built; not ``frozen`` only because one is built per call and a frozen
    attrs class costs about four times as much to build.
    """

    connection: _Connection
    invocation_id: str
    function_id: str
    traceparent: str | None
    baggage: str | None


@attrs.define(eq=False)
class _Pending:
    """One routed invocation waiting for its executor's ``invocationresult``.

    The delivery id keys it in ``EngineState._pending`` and sits in the executor's and the
    caller's ``in_flight`` sets.
    """

    executor: _Connection
    #: ``None`` when nobody waits: void calls and engine-originated deliveries.
    caller: _Caller | None
    #: Set for the internal ``engine::queue::enqueue`` call of an enqueue action: the caller then
    #: gets this receipt (or an ``enqueue_error``) instead of the provider's raw result.
    receipt_id: str | None = None


@attrs.define(eq=False)
class _TriggerType:
    namespace: str
    id: str
    description: str
    trigger_request_format: JSON = None
    call_request_format: JSON = None
    #: Providing connection; ``None`` for the engine's own types.
    provider: _Connection | None = None


@attrs.define(eq=False)
class _Binding:
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
    owner: _Connection | None
    #: Provider key while live; ``None`` while parked.
    provider_key: tuple[str, str] | None = None


@attrs.define(eq=False)
class _AwaitedAck:
    """An ``engine::register_trigger`` call waiting for a worker provider's answer."""

    binding_id: str
    caller: _Caller
    deadline: float


@attrs.define(eq=False)
class _InProcessWorker:
    id: str
    name: str
    function_ids: tuple[str, ...]
    trigger_types: tuple[str, ...]


@attrs.frozen
class _Call:
    """The context a built-in function runs in."""

    connection: _Connection
    function_id: str
    #: ``None`` when the call expects no answer.
    caller: _Caller | None
    now: float


class _BuiltinFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.body = ErrorBody(code=code, message=message)


class _Deferred:
    """Returned by a built-in whose answer comes later (``engine::register_trigger``)."""


_DEFERRED: Final = _Deferred()

_REGISTRATIONS: Final = (
    RegisterFunction,
    UnregisterFunction,
    RegisterService,
    RegisterTrigger,
    UnregisterTrigger,
    RegisterTriggerType,
)

Builtin: TypeAlias = Callable[[_Call, "_Input", list[Output]], JSON]

# --- text helpers ---------------------------------------------------------------------------------

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
_CANONICAL_UUID: Final = re.compile(
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\Z"
)

_BAGGAGE_FUNCTION_KEY: Final = "iii.function.id"
# W3C baggage-octet minus '%': everything else in a value is percent-encoded.
_BAGGAGE_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\%')


def _is_blank(text: str) -> bool:
    return not text.strip(_WHITESPACE)


def canonical_uuid(text: str) -> str | None:
    """``text`` as a lowercase hyphenated UUID, or ``None`` when the engine would reject it."""
    if len(text) == 36 and _CANONICAL_UUID.match(text):
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


def _first_segment(identifier: str) -> str:
    return identifier.split("::", 1)[0]


def _compact_json(value: JSON) -> str:
    # The engine's JSON maps are ordered by key, so its compact form has sorted keys.
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _config_summary(config: JSON) -> str:
    text = _compact_json(config)
    return text if len(text) <= 80 else text[:80] + "…"


def _describe_value(value: JSON) -> str:
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


def _ns_list(namespaces: Iterable[str]) -> str:
    return ", ".join(sorted(namespaces))


class _Input:
    """Typed access to a built-in's input object, failing the way serde does.

    Every accessor treats an absent key and ``null`` alike (``Option`` fields) unless it says
    otherwise; a wrong type raises ``deserialization_error`` naming the function.
    """

    def __init__(self, function_id: str, data: dict[str, JSON]) -> None:
        self._function_id = function_id
        self._data = data

    def fail(self, detail: str) -> _BuiltinFailure:
        return _BuiltinFailure(
            "deserialization_error",
            f"Failed to deserialize input for {self._function_id}: {detail}",
        )

    def _invalid_type(self, value: JSON, expected: str) -> _BuiltinFailure:
        return self.fail(f"invalid type: {_describe_value(value)}, expected {expected}")

    def any(self, key: str) -> JSON:
        return self._data.get(key)

    def optional_str(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self._invalid_type(value, "a string")

    def required_str(self, key: str) -> str:
        if key not in self._data:
            raise self.fail(f"missing field `{key}`")
        value = self._data[key]
        if isinstance(value, str):
            return value
        raise self._invalid_type(value, "a string")

    def optional_bool(self, key: str) -> bool | None:
        value = self._data.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self._invalid_type(value, "a boolean")

    def optional_u32(self, key: str) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._invalid_type(value, "u32")
        if not 0 <= value <= 0xFFFFFFFF:
            raise self.fail(f"invalid value: integer `{value}`, expected u32")
        return value

    def optional_str_list(self, key: str) -> list[str] | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._invalid_type(value, "a sequence")
        for item in value:
            if not isinstance(item, str):
                raise self._invalid_type(item, "a string")
        return value

    def optional_str_fields(
        self, key: str, fields: Iterable[str], struct: str
    ) -> dict[str, str | None] | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._invalid_type(value, f"struct {struct}")
        nested = _Input(self._function_id, value)
        return {field: nested.optional_str(field) for field in fields}


# --- the engine -----------------------------------------------------------------------------------


class EngineState:
    """The engine's state machine; see the module docstring for how the shell drives it.

    Args:
        grace: seconds a connection's namespace stays pending before registrations drain into
            ``default`` (section 2.5).
        version: the version the engine reports for its in-process workers.
        new_uuid: source of UUIDs for worker ids, tokens, invocation and binding ids; inject a
            deterministic one in tests.
        started_at_ms: wall-clock start time in Unix milliseconds, shown as the in-process
            workers' ``connected_at_ms``.
        functions_poll_interval: seconds between the checks that fire
            ``engine::functions-available`` (the engine polls every 5 s).
    """

    def __init__(
        self,
        *,
        grace: float = 5.0,
        version: str = BASELINE_ENGINE_VERSION,
        new_uuid: Callable[[], uuid.UUID] = uuid.uuid4,
        started_at_ms: int = 0,
        functions_poll_interval: float = 5.0,
    ) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace!r}")
        if functions_poll_interval <= 0:
            raise ValueError("functions_poll_interval must be > 0")
        self._grace = grace
        self._version = version
        self._new_uuid = new_uuid
        self._started_at_ms = started_at_ms
        self._functions_poll_interval = functions_poll_interval

        self._connections: dict[str, _Connection] = {}
        self._functions: dict[tuple[str, str], _Function] = {}
        self._name_leases: dict[tuple[str, str], _Connection] = {}
        self._pending: dict[str, _Pending] = {}
        self._services: dict[tuple[str, str], RegisterService] = {}
        self._trigger_types: dict[tuple[str, str], _TriggerType] = {}
        self._bindings: dict[str, _Binding] = {}
        # Insertion order is deadline order: every entry uses the same delay.
        self._grace_deadlines: dict[str, float] = {}
        self._awaited_acks: dict[str, _AwaitedAck] = {}
        self._next_functions_poll: float | None = None
        self._functions_seen: frozenset[tuple[str, str]] = frozenset()

        self._builtins: dict[str, Builtin] = {
            "engine::functions::list": self._functions_list,
            "engine::functions::info": self._functions_info,
            "engine::triggers::list": self._triggers_list,
            "engine::triggers::info": self._triggers_info,
            "engine::registered-triggers::list": self._registered_triggers_list,
            "engine::registered-triggers::info": self._registered_triggers_info,
            "engine::workers::list": self._workers_list,
            "engine::workers::info": self._workers_info,
            "engine::workers::register": self._workers_register,
            "engine::register_trigger": self._register_trigger,
            "engine::unregister_trigger": self._unregister_trigger,
        }
        self._in_process_workers = (
            # The listener that serves the WebSocket port owns no functions of its own.
            _InProcessWorker(self._uuid(), "iii-worker-manager", (), ()),
            _InProcessWorker(
                self._uuid(),
                "iii-engine-functions",
                tuple(sorted(self._builtins)),
                (_FUNCTIONS_AVAILABLE, _WORKERS_AVAILABLE),
            ),
        )
        for function_id, description in _BUILTIN_DESCRIPTIONS.items():
            self._functions[(DEFAULT_NAMESPACE, function_id)] = _Function(
                DEFAULT_NAMESPACE, function_id, owner=None, description=description
            )
        for type_id, description in _BUILTIN_TRIGGER_TYPES.items():
            self._trigger_types[(DEFAULT_NAMESPACE, type_id)] = _TriggerType(
                DEFAULT_NAMESPACE, type_id, description
            )
        self._functions_seen = frozenset(self._functions)

    # -- the shell's entry points ------------------------------------------------------------------

    def connect(
        self, *, peer_host: str | None, now: float, connected_at_ms: int
    ) -> tuple[str, list[Output]]:
        """Accept a worker connection (section 2.1).

        Returns:
            The new connection's id (its ``worker_id``) and the outputs, which start with the
            ``workerregistered`` frame.
        """
        connection = _Connection(
            id=self._uuid(),
            reattach_token=self._uuid(),
            peer_host=peer_host,
            connected_at_ms=connected_at_ms,
        )
        self._connections[connection.id] = connection
        out: list[Output] = [
            Send(
                connection.id,
                WorkerRegistered(worker_id=connection.id, reattach_token=connection.reattach_token),
            ),
            WorkerConnected(connection.id, peer_host),
        ]
        deadline = now + self._grace
        self._grace_deadlines[connection.id] = deadline
        out.append(TimerArmed(deadline))
        if self._next_functions_poll is None:
            self._next_functions_poll = now + self._functions_poll_interval
            out.append(TimerArmed(self._next_functions_poll))
        self._fire_engine_trigger(
            _WORKERS_AVAILABLE, {"event": "worker_connected", "worker_id": connection.id}, out
        )
        return connection.id, out

    def receive(self, connection_id: str, message: Message, now: float) -> list[Output]:
        """Handle one decoded message from ``connection_id``; unknown or closing ids are ignored."""
        connection = self._connections.get(connection_id)
        if connection is None or connection.liveness is not _Liveness.OPEN:
            return []
        out: list[Output] = []
        # Most frequent first: this sits on every routed call.
        if isinstance(message, InvokeFunction):
            self._on_invoke(connection, message, now, out)
        elif isinstance(message, InvocationResult):
            self._on_result(connection, message, out)
        elif isinstance(message, _REGISTRATIONS):
            if connection.namespace_state is NamespaceState.PENDING:
                connection.buffered.append(message)
            elif connection.namespace_state is NamespaceState.RESOLVED:
                self._apply_registration(connection, message, out)
        elif isinstance(message, TriggerRegistrationResult):
            self._on_trigger_registration_result(connection, message, out)
        elif isinstance(message, Reattach):
            self._on_reattach(connection, message, out)
        elif isinstance(message, Ping):
            self._send(connection, Pong(), out)
        else:
            # pong, workerregistered, registrationrejected, unregistertriggertype, unknown types.
            logger.debug("ignoring %s from %s", type(message).__name__, connection_id)
        return out

    # The two methods below are :meth:`receive` for the two messages every routed call consists
    # of, in the common case only, with plain values in and out: no message object is built or
    # read, no output list either. Anything else they decline, having changed nothing, and the
    # shell then builds the message and calls :meth:`receive` (tests check both give the same).

    def route_invocation(
        self,
        connection_id: str,
        function_id: str,
        data: JSON,
        invocation_id: str,
        traceparent: str | None,
        baggage: str | None,
        metadata: JSON,
        namespace: str | None,
    ) -> tuple[str, str | None] | None:
        """:meth:`receive` of an ``invokefunction`` without ``action``, if it is the common case.

        That is: a call with a canonical invocation id not already in flight, from an open
        connection, to a function an open worker connection provides. ``data``, when it is a
        dict, gets ``_caller_worker_id`` added in place, so it must be a fresh one (just
        decoded) that nobody else holds.

        Returns:
            ``(executor_connection_id, baggage)``: send that connection
            ``InvokeFunction(function_id, data, invocation_id, traceparent, baggage,
            metadata=metadata)``, with the ``data`` and ``baggage`` this returns, and nothing
            else. ``None`` when the message is not the common case: nothing was done, pass it
            to :meth:`receive`.
        """
        connection = self._connections.get(connection_id)
        if (
            connection is None
            or connection.liveness is not _Liveness.OPEN
            or len(invocation_id) != 36
            or invocation_id in self._pending
            or not _CANONICAL_UUID.match(invocation_id)
        ):
            return None
        if namespace is None:
            namespace = DEFAULT_NAMESPACE
        elif _is_blank(namespace):
            return None
        function = self._functions.get((namespace, function_id))
        if function is None:
            return None
        executor = function.owner
        if executor is None or executor.liveness is not _Liveness.OPEN:
            return None
        if type(data) is dict:
            # What receive() does with a copy; same keys in the same order.
            data["_caller_worker_id"] = connection.id
        caller = _Caller(connection, invocation_id, function_id, traceparent, baggage)
        if traceparent is not None or baggage is not None:
            baggage = baggage_with_function_id(baggage, function_id)
        connection.in_flight.add(invocation_id)
        self._pending[invocation_id] = _Pending(executor, caller)
        executor.in_flight.add(invocation_id)
        return executor.id, baggage

    def route_result(self, connection_id: str, invocation_id: str, result: JSON) -> _Caller | bool:
        """:meth:`receive` of an ``invocationresult`` without ``error``, if it is the common case.

        That is: the result of a pending call routed to a worker, not of an enqueue, arriving
        on an open connection under the canonical id the engine delivered it with. The result
        frame's ``function_id`` and trace fields are not needed: the reply takes the caller's.

        Returns:
            The caller to answer: send its connection ``InvocationResult(caller.invocation_id,
            caller.function_id, result=result, traceparent=caller.traceparent,
            baggage=caller.baggage)``. ``True`` when the result was taken and nobody is to be
            answered. ``False`` when the message is not the common case: nothing was done, pass
            it to :meth:`receive`.
        """
        pending = self._pending.get(invocation_id)
        if pending is None or pending.receipt_id is not None:
            return False
        connection = self._connections.get(connection_id)
        if connection is None or connection.liveness is not _Liveness.OPEN:
            return False
        # The keys of _pending are canonical, so finding it proves the id was.
        del self._pending[invocation_id]
        pending.executor.in_flight.discard(invocation_id)
        caller = pending.caller
        if caller is None:
            return True
        caller_connection = caller.connection
        caller_connection.in_flight.discard(invocation_id)
        if caller_connection.liveness is not _Liveness.OPEN:
            return True
        return caller

    def disconnect(self, connection_id: str) -> list[Output]:
        """Run the disconnect cleanup of section 2.8 (once; later calls are no-ops)."""
        connection = self._connections.get(connection_id)
        if connection is None:
            return []
        out: list[Output] = []
        self._cleanup(connection, out)
        return out

    def tick(self, now: float) -> list[Output]:
        """Fire every deadline at or before ``now``: namespace grace expiries, unanswered
        ``engine::register_trigger`` calls, and the ``engine::functions-available`` poll."""
        out: list[Output] = []
        while self._grace_deadlines:
            connection_id, deadline = next(iter(self._grace_deadlines.items()))
            if deadline > now:
                break
            del self._grace_deadlines[connection_id]
            connection = self._connections[connection_id]
            logger.warning(
                "worker %s did not call engine::workers::register within %ss; its registrations"
                " go to namespace 'default'",
                connection_id,
                self._grace,
            )
            self._resolve_namespace(connection, DEFAULT_NAMESPACE, out)
        while self._awaited_acks:
            awaited = next(iter(self._awaited_acks.values()))
            if awaited.deadline > now:
                break
            # No answer in time: the binding counts as accepted.
            del self._awaited_acks[awaited.binding_id]
            self._answer(awaited.caller, out, result={"id": awaited.binding_id})
        if self._next_functions_poll is not None and self._next_functions_poll <= now:
            while self._next_functions_poll <= now:
                self._next_functions_poll += self._functions_poll_interval
            self._poll_functions(out)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has work to do, or ``None``."""
        candidates = []
        if self._grace_deadlines:
            candidates.append(next(iter(self._grace_deadlines.values())))
        if self._awaited_acks:
            candidates.append(next(iter(self._awaited_acks.values())).deadline)
        if self._next_functions_poll is not None:
            candidates.append(self._next_functions_poll)
        return min(candidates) if candidates else None

    def namespace_state(self, connection_id: str) -> NamespaceState | None:
        """Section 2.5 state of a live connection (``None`` once it is gone)."""
        connection = self._connections.get(connection_id)
        return None if connection is None else connection.namespace_state

    def statistics(self) -> EngineStatistics:
        """Current counts (functions and trigger types include the built-in ones)."""
        return EngineStatistics(
            connections=len(self._connections),
            pending_invocations=len(self._pending),
            functions=len(self._functions),
            trigger_types=len(self._trigger_types),
            bindings=len(self._bindings),
        )

    # -- helpers -----------------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(self._new_uuid())

    @staticmethod
    def _send(connection: _Connection | None, message: Message, out: list[Output]) -> None:
        if connection is not None and connection.liveness is _Liveness.OPEN:
            out.append(Send(connection.id, message))

    # -- namespaces and registrations (sections 2.5, 3.1-3.6) --------------------------------------

    def _resolve_namespace(
        self, connection: _Connection, namespace: str, out: list[Output]
    ) -> None:
        self._grace_deadlines.pop(connection.id, None)
        connection.namespace = namespace
        connection.namespace_state = NamespaceState.RESOLVED
        buffered, connection.buffered = connection.buffered, []
        for message in buffered:
            self._apply_registration(connection, message, out)

    def _apply_registration(
        self, connection: _Connection, message: Message, out: list[Output]
    ) -> None:
        if isinstance(message, RegisterFunction):
            self._apply_register_function(connection, message, out)
        elif isinstance(message, UnregisterFunction):
            self._apply_unregister_function(connection, message)
        elif isinstance(message, RegisterService):
            self._services[(connection.effective_namespace, message.id)] = message
        elif isinstance(message, RegisterTrigger):
            self._apply_register_trigger(connection, message, out)
        elif isinstance(message, UnregisterTrigger):
            self._apply_unregister_trigger(message, out)
        elif isinstance(message, RegisterTriggerType):
            self._apply_register_trigger_type(connection, message, out)

    def _apply_register_function(
        self, connection: _Connection, message: RegisterFunction, out: list[Output]
    ) -> None:
        namespace = connection.effective_namespace
        if message.invocation is not None:
            # The real engine needs its iii-http-functions worker for these and silently drops
            # the registration without it; the dev engine does not have that worker yet.
            logger.debug("dropping HTTP-invoked function %s (not supported)", message.id)
            return
        if message.id.startswith("engine::") and namespace != DEFAULT_NAMESPACE:
            self._reject_function(connection, namespace, message.id, "", out)
            return
        key = (namespace, message.id)
        existing = self._functions.get(key)
        if existing is not None and existing.owner is not connection:
            owner_id = (
                existing.owner.id if existing.owner is not None else self._engine_functions.id
            )
            self._reject_function(connection, namespace, message.id, owner_id, out)
            return
        self._functions[key] = _Function(
            namespace,
            message.id,
            owner=connection,
            description=message.description,
            request_format=message.request_format,
            response_format=message.response_format,
            metadata=message.metadata,
        )
        connection.functions.add(key)

    def _reject_function(
        self,
        connection: _Connection,
        namespace: str,
        function_id: str,
        owner_id: str,
        out: list[Output],
    ) -> None:
        self._send(
            connection,
            RegistrationRejected(
                code="FUNCTION_NAMESPACE_CONFLICT",
                namespace=namespace,
                owner_worker_id=owner_id,
                function_id=function_id,
            ),
            out,
        )

    def _apply_unregister_function(
        self, connection: _Connection, message: UnregisterFunction
    ) -> None:
        key = (connection.effective_namespace, message.id)
        existing = self._functions.get(key)
        if existing is not None and existing.owner is connection:
            del self._functions[key]
            connection.functions.discard(key)

    @property
    def _engine_functions(self) -> _InProcessWorker:
        return self._in_process_workers[1]

    # -- invocations (section 4) -------------------------------------------------------------------

    def _on_invoke(
        self, connection: _Connection, message: InvokeFunction, now: float, out: list[Output]
    ) -> None:
        function_id = message.function_id
        caller = None
        if message.invocation_id is not None:
            invocation_id = canonical_uuid(message.invocation_id)
            if invocation_id is None:
                logger.debug("dropping invokefunction with a non-UUID invocation_id")
                return
            if type(message.action) is not VoidAction:
                caller = _Caller(
                    connection, invocation_id, function_id, message.traceparent, message.baggage
                )
        namespace = message.namespace
        if namespace is None:
            namespace = DEFAULT_NAMESPACE
        elif _is_blank(namespace):
            if caller is not None:
                # The one engine reply that carries no trace fields.
                error = ErrorBody("INVALID_NAMESPACE", _BLANK_INVOKE_NAMESPACE)
                self._send(
                    connection,
                    InvocationResult(caller.invocation_id, function_id, error=error),
                    out,
                )
            return
        if type(message.action) is EnqueueAction:
            self._enqueue(message, message.action, caller, namespace, out)
            return
        data = message.data
        if type(data) is dict:
            data = {**data, "_caller_worker_id": connection.id}
        function = self._functions.get((namespace, function_id))
        if function is None:
            text = self._not_found_message(function_id, namespace)
            self._answer(caller, out, error=ErrorBody("function_not_found", text))
            return
        executor = function.owner
        if executor is None:
            self._run_builtin(_Call(connection, function_id, caller, now), data, out)
            return
        baggage = message.baggage
        if message.traceparent is not None or baggage is not None:
            baggage = baggage_with_function_id(baggage, function_id)
        if caller is None:
            delivery_id = self._uuid()
        else:
            delivery_id = caller.invocation_id
            earlier = self._forget(delivery_id)
            if earlier is not None:
                # The new call takes over the id's result slot, so the earlier caller's channel
                # closes (section 4.1).
                closed = ErrorBody("invocation_error", "channel closed")
                self._answer_pending(earlier, out, error=closed)
            connection.in_flight.add(delivery_id)
        self._pending[delivery_id] = _Pending(executor, caller)
        executor.in_flight.add(delivery_id)
        self._send(
            executor,
            InvokeFunction(
                function_id=function_id,
                data=data,
                invocation_id=delivery_id,
                traceparent=message.traceparent,
                baggage=baggage,
                metadata=message.metadata,
            ),
            out,
        )

    def _not_found_message(self, function_id: str, namespace: str) -> str:
        text = f"Function {function_id} not found in namespace {namespace}."
        elsewhere = [ns for (ns, fid) in self._functions if fid == function_id]
        if elsewhere:
            text += f" It is registered in namespace(s): {_ns_list(elsewhere)}."
        return text

    def _answer(
        self,
        caller: _Caller | None,
        out: list[Output],
        *,
        result: JSON = None,
        error: ErrorBody | None = None,
    ) -> None:
        """Send ``caller`` the outcome of its call (nothing when nobody waits)."""
        if caller is not None:
            self._send(
                caller.connection,
                InvocationResult(
                    invocation_id=caller.invocation_id,
                    function_id=caller.function_id,
                    result=result,
                    error=error,
                    traceparent=caller.traceparent,
                    baggage=caller.baggage,
                ),
                out,
            )

    def _answer_pending(
        self,
        pending: _Pending,
        out: list[Output],
        *,
        result: JSON = None,
        error: ErrorBody | None = None,
    ) -> None:
        if pending.receipt_id is not None:
            # The caller of an enqueue action gets a receipt, not the provider's answer.
            if error is not None:
                error = ErrorBody("enqueue_error", f"{error.code}: {error.message}")
            else:
                result = {"messageReceiptId": pending.receipt_id}
        self._answer(pending.caller, out, result=result, error=error)

    def _forget(self, invocation_id: str) -> _Pending | None:
        pending = self._pending.pop(invocation_id, None)
        if pending is not None:
            pending.executor.in_flight.discard(invocation_id)
            if pending.caller is not None:
                pending.caller.connection.in_flight.discard(invocation_id)
        return pending

    def _on_result(
        self, connection: _Connection, message: InvocationResult, out: list[Output]
    ) -> None:
        invocation_id = canonical_uuid(message.invocation_id)
        if invocation_id is None:
            logger.debug("dropping invocationresult with a non-UUID invocation_id")
            return
        pending = self._forget(invocation_id)
        if pending is None:
            logger.debug("ignoring result for unknown or settled invocation %s", invocation_id)
            return
        self._answer_pending(pending, out, result=message.result, error=message.error)

    def _enqueue(
        self,
        message: InvokeFunction,
        action: EnqueueAction,
        caller: _Caller | None,
        namespace: str,
        out: list[Output],
    ) -> None:
        provider = self._functions.get((DEFAULT_NAMESPACE, "engine::queue::enqueue"))
        if provider is None or provider.owner is None:
            self._answer(caller, out, error=ErrorBody("enqueue_error", _NO_QUEUE_PROVIDER))
            return
        receipt_id = self._uuid()
        request: dict[str, JSON] = {
            "queue": action.queue,
            "function_id": message.function_id,
            "data": message.data,
            "messageReceiptId": receipt_id,
            "traceparent": message.traceparent,
            "baggage": baggage_with_function_id(message.baggage, message.function_id),
        }
        if namespace != DEFAULT_NAMESPACE:
            request["namespace"] = namespace
        delivery_id = self._uuid()
        self._pending[delivery_id] = _Pending(provider.owner, caller, receipt_id)
        provider.owner.in_flight.add(delivery_id)
        if caller is not None:
            caller.connection.in_flight.add(delivery_id)
        self._send(
            provider.owner,
            InvokeFunction(provider.id, data=request, invocation_id=delivery_id),
            out,
        )

    def _deliver_from_engine(self, binding: _Binding, payload: JSON, out: list[Output]) -> None:
        """Invoke a binding's target for an engine-side trigger fire (section 4.6)."""
        function = self._functions.get((binding.namespace, binding.function_id))
        if function is None:
            logger.info(
                "trigger %s: Function %s not found in namespace %s",
                binding.id,
                binding.function_id,
                binding.namespace,
            )
            return
        if function.owner is None:
            logger.debug("trigger %s targets built-in %s: not delivered", binding.id, function.id)
            return
        delivery_id = self._uuid()
        self._pending[delivery_id] = _Pending(function.owner, caller=None)
        function.owner.in_flight.add(delivery_id)
        self._send(
            function.owner,
            InvokeFunction(
                function_id=binding.function_id,
                data=payload,
                invocation_id=delivery_id,
                metadata=binding.metadata,
            ),
            out,
        )

    # -- built-in functions (section 7) -----------------------------------------------------------

    def _run_builtin(self, call: _Call, data: JSON, out: list[Output]) -> None:
        handler = self._builtins[call.function_id]
        try:
            if not isinstance(data, dict):
                struct = _INPUT_STRUCTS[call.function_id]
                raise _Input(call.function_id, {}).fail(
                    f"invalid type: {_describe_value(data)}, expected struct {struct}"
                )
            result = handler(call, _Input(call.function_id, data), out)
        except _BuiltinFailure as failure:
            self._answer(call.caller, out, error=failure.body)
            return
        if result is not _DEFERRED:
            self._answer(call.caller, out, result=result)

    def _workers_register(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        connection = call.connection
        runtime = data.optional_str("runtime")
        version = data.optional_str("version")
        name = sanitize_label(data.optional_str("name"))
        description = sanitize_label(data.optional_str("description"))
        os_name = data.optional_str("os")
        pid = data.optional_u32("pid")
        isolation = data.optional_str("isolation")
        declared = data.optional_str("namespace")
        telemetry = data.optional_str_fields(
            "telemetry", ("language", "project_name", "framework"), "WorkerTelemetryMeta"
        )
        if declared is not None and _is_blank(declared):
            # The grace deadline stays armed: buffered registrations still drain into default.
            raise _BuiltinFailure(
                "INVALID_NAMESPACE",
                f"namespace is empty: worker '{name or '<unnamed>'}' declared \"{declared}\". "
                "Give it a name, or omit the field to register in 'default'.",
            )
        if connection.namespace_state is NamespaceState.RESOLVED:
            namespace = connection.effective_namespace
            if declared is not None and declared != namespace:
                logger.warning(
                    "worker %s declared namespace %r but its namespace is already %r",
                    connection.id,
                    declared,
                    namespace,
                )
        else:
            namespace = declared if declared is not None else DEFAULT_NAMESPACE
        if name is not None:
            holder = self._name_leases.get((namespace, name))
            if holder is not None and holder is not connection:
                self._send(
                    connection,
                    RegistrationRejected(
                        code="WORKER_NAMESPACE_CONFLICT",
                        namespace=namespace,
                        owner_worker_id=holder.id,
                        worker_name=name,
                    ),
                    out,
                )
                self._begin_close(connection, out)
                return {"success": False}
            if connection.name is not None and connection.name != name:
                self._release_name(connection)
            self._name_leases[(namespace, name)] = connection
            connection.name = name
        if description is not None:
            connection.description = description
        if os_name is not None:
            connection.os = os_name
        if pid is not None:
            connection.pid = pid
        if isolation is not None:
            connection.isolation = isolation
        if declared is not None:
            connection.declared_namespace = declared
        connection.runtime = runtime if runtime is not None else "unknown"
        connection.version = version
        connection.telemetry = telemetry
        connection.registered = True
        if connection.namespace_state is NamespaceState.PENDING:
            self._resolve_namespace(connection, namespace, out)
        out.append(WorkerAnnounced(connection.id, connection.name, namespace))
        self._fire_engine_trigger(
            _WORKERS_AVAILABLE,
            {"event": "worker_metadata_updated", "worker_id": connection.id},
            out,
        )
        return {"success": True}

    def _begin_close(self, connection: _Connection, out: list[Output]) -> None:
        connection.liveness = _Liveness.CLOSING
        connection.namespace_state = NamespaceState.ABORTED
        connection.buffered.clear()
        self._grace_deadlines.pop(connection.id, None)
        out.append(CloseConnection(connection.id, drain=True))

    def _release_name(self, connection: _Connection) -> None:
        if connection.name is None:
            return
        key = (connection.effective_namespace, connection.name)
        if self._name_leases.get(key) is connection:
            del self._name_leases[key]

    def _function_worker_name(self, function: _Function) -> str:
        if function.owner is not None and function.owner.name is not None:
            return function.owner.name
        return _first_segment(function.id)

    def _function_summary(self, function: _Function) -> dict[str, JSON]:
        summary: dict[str, JSON] = {
            "function_id": function.id,
            "namespace": function.namespace,
            "worker_name": self._function_worker_name(function),
        }
        if function.description is not None:
            summary["description"] = function.description
        if function.metadata is not None:
            summary["metadata"] = function.metadata
        return summary

    def _function_detail(self, function: _Function) -> dict[str, JSON]:
        detail = self._function_summary(function)
        if function.request_format is not None:
            detail["request_schema"] = function.request_format
        if function.response_format is not None:
            detail["response_schema"] = function.response_format
        detail["registered_triggers"] = [
            {"id": binding.id, "trigger_type": binding.trigger_type, "config": binding.config}
            for binding in self._live_bindings()
            if binding.function_id == function.id and binding.namespace == function.namespace
        ]
        return detail

    def _functions_list(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        search = data.optional_str("search")
        prefix = data.optional_str("prefix")
        worker = data.optional_str("worker")
        workers = data.optional_str_list("workers")
        include_internal = bool(data.optional_bool("include_internal"))
        wanted_workers = set(workers or ())
        if worker is not None:
            wanted_workers.add(worker)
        needle = search.lower() if search else None
        ranked: list[tuple[int, str, str, _Function]] = []
        for function in self._functions.values():
            if not include_internal and _is_internal_function(function):
                continue
            if prefix is not None and not function.id.startswith(prefix):
                continue
            if wanted_workers and self._function_worker_name(function) not in wanted_workers:
                continue
            rank = 0
            if needle is not None:
                lowered = function.id.lower()
                if lowered.startswith(needle) or needle in lowered.split("::"):
                    rank = 0
                elif needle in lowered:
                    rank = 1
                elif function.description is not None and needle in function.description.lower():
                    rank = 2
                else:
                    continue
            ranked.append((rank, function.id, function.namespace, function))
        ranked.sort(key=lambda entry: entry[:3])
        return {"functions": [self._function_summary(entry[3]) for entry in ranked]}

    def _resolve_function(self, function_id: str, namespace: str | None) -> _Function:
        if namespace is not None:
            function = self._functions.get((namespace, function_id))
            if function is None:
                raise _BuiltinFailure("NOT_FOUND", f"Function '{function_id}' is not registered.")
            return function
        function = self._functions.get((DEFAULT_NAMESPACE, function_id))
        if function is not None:
            return function
        holders = [f for (ns, fid), f in self._functions.items() if fid == function_id]
        if len(holders) == 1:
            return holders[0]
        if not holders:
            raise _BuiltinFailure("NOT_FOUND", f"Function '{function_id}' is not registered.")
        raise _BuiltinFailure(
            "NOT_FOUND",
            f"Function '{function_id}' is ambiguous: it is registered in namespace(s): "
            f"{_ns_list(f.namespace for f in holders)}. Pass `namespace` to select one.",
        )

    def _functions_info(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        function_id = data.optional_str("function_id")
        function_ids = data.optional_str_list("function_ids")
        namespace = data.optional_str("namespace")
        if function_id is not None and function_ids is not None:
            raise _BuiltinFailure(
                "INVALID_ARGUMENTS", "pass either `function_id` or `function_ids`, not both"
            )
        if function_id is not None:
            return self._function_detail(self._resolve_function(function_id, namespace))
        if function_ids is None:
            raise _BuiltinFailure(
                "INVALID_ARGUMENTS",
                "missing field `function_id` (or `function_ids` for a batch)",
            )
        unique = list(dict.fromkeys(function_ids))
        if not unique:
            raise _BuiltinFailure(
                "INVALID_ARGUMENTS", "`function_ids` must be a non-empty array of function ids"
            )
        if len(unique) > MAX_FUNCTION_IDS:
            raise _BuiltinFailure(
                "INVALID_ARGUMENTS", f"too many function_ids (max {MAX_FUNCTION_IDS})"
            )
        items: list[JSON] = []
        for each in unique:
            try:
                items.append(self._function_detail(self._resolve_function(each, namespace)))
            except _BuiltinFailure:
                items.append({"function_id": each, "error": "not_found"})
        return {"functions": items}

    def _worker_summary(self, connection: _Connection) -> dict[str, JSON]:
        return {
            "name": connection.name,
            "description": connection.description,
            "version": connection.version,
            "id": connection.id,
            "namespace": connection.effective_namespace,
            "runtime": connection.runtime,
            "os": connection.os,
            "status": "connected",
            "function_count": len(connection.functions),
            "connected_at_ms": connection.connected_at_ms,
            "active_invocations": len(connection.in_flight),
            "isolation": connection.isolation,
            "ip_address": connection.peer_host,
        }

    def _in_process_summary(self, worker: _InProcessWorker) -> dict[str, JSON]:
        return {
            "name": worker.name,
            "description": None,
            "version": self._version,
            "id": worker.id,
            "namespace": DEFAULT_NAMESPACE,
            "runtime": "engine",
            "os": None,
            "status": "available",
            "function_count": len(worker.function_ids),
            "connected_at_ms": self._started_at_ms,
            "active_invocations": 0,
            "isolation": "in-process",
            "ip_address": None,
        }

    def _workers_list(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        search = data.optional_str("search")
        runtime = data.optional_str("runtime")
        status = data.optional_str("status")
        summaries = [
            self._worker_summary(connection)
            for connection in self._connections.values()
            if connection.pid is not None and connection.liveness is _Liveness.OPEN
        ]
        summaries.extend(self._in_process_summary(worker) for worker in self._in_process_workers)
        needle = search.lower() if search else None

        def wanted(summary: dict[str, JSON]) -> bool:
            if runtime is not None and summary["runtime"] != runtime:
                return False
            if status is not None and summary["status"] != status:
                return False
            if needle is not None:
                name = summary["name"]
                return isinstance(name, str) and needle in name.lower()
            return True

        chosen = [summary for summary in summaries if wanted(summary)]
        chosen.sort(key=lambda s: (s["name"] if s["name"] is not None else s["id"], s["id"]))
        return {"workers": chosen}

    def _workers_info(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        name = data.required_str("name")
        namespace = data.optional_str("namespace")
        by_namespace: dict[str, _Connection | _InProcessWorker] = {}
        for worker in self._in_process_workers:
            if worker.name == name:
                by_namespace[DEFAULT_NAMESPACE] = worker
        for connection in self._connections.values():
            if connection.name == name and connection.liveness is _Liveness.OPEN:
                by_namespace.setdefault(connection.effective_namespace, connection)
        if not by_namespace:
            raise _BuiltinFailure("NOT_FOUND", f"Worker '{name}' is not connected.")
        if namespace is not None:
            found = by_namespace.get(namespace)
            if found is None:
                raise _BuiltinFailure(
                    "NOT_FOUND",
                    f"Worker '{name}' is not connected in the requested namespace; it is "
                    f"connected in namespace(s): {_ns_list(by_namespace)}.",
                )
        elif DEFAULT_NAMESPACE in by_namespace:
            found = by_namespace[DEFAULT_NAMESPACE]
        elif len(by_namespace) == 1:
            found = next(iter(by_namespace.values()))
        else:
            raise _BuiltinFailure(
                "NOT_FOUND",
                f"Worker '{name}' is ambiguous: it is connected in namespace(s): "
                f"{_ns_list(by_namespace)}. Pass `namespace` to disambiguate.",
            )
        if isinstance(found, _InProcessWorker):
            detail = self._in_process_summary(found)
            detail["internal"] = True
            functions = [
                self._functions[(DEFAULT_NAMESPACE, function_id)]
                for function_id in found.function_ids
            ]
            types = [self._trigger_types[(DEFAULT_NAMESPACE, t)] for t in found.trigger_types]
            bindings: list[_Binding] = []
        else:
            detail = self._worker_summary(found)
            if found.pid is not None:
                detail["pid"] = found.pid
            detail["internal"] = False
            functions = [self._functions[key] for key in found.functions]
            types = [self._trigger_types[key] for key in found.trigger_types]
            bindings = [b for b in self._live_bindings() if b.owner is found]
        functions.sort(key=lambda f: (f.id, f.namespace))
        types.sort(key=lambda t: (t.id, t.namespace))
        bindings.sort(key=lambda b: b.id)
        return {
            "worker": detail,
            "functions": [self._function_summary(f) for f in functions],
            "trigger_types": [self._trigger_type_summary(t) for t in types],
            "registered_triggers": [self._binding_summary(b) for b in bindings],
        }

    # -- triggers (sections 3.1-3.4, 5, 7) ---------------------------------------------------------

    def _live_bindings(self) -> Iterator[_Binding]:
        return (b for b in self._bindings.values() if b.provider_key is not None)

    def _lookup_provider(self, binding: _Binding) -> tuple[str, str] | None:
        if binding.trigger_namespace is not None:
            key = (binding.trigger_namespace, binding.trigger_type)
            return key if key in self._trigger_types else None
        for namespace in (binding.origin_namespace, DEFAULT_NAMESPACE):
            key = (namespace, binding.trigger_type)
            if key in self._trigger_types:
                return key
        return None

    def _activate(self, binding: _Binding, key: tuple[str, str], out: list[Output]) -> None:
        binding.provider_key = key
        provider = self._trigger_types[key].provider
        if provider is not None:
            self._send(
                provider,
                RegisterTrigger(
                    id=binding.id,
                    trigger_type=binding.trigger_type,
                    function_id=binding.function_id,
                    config=binding.config,
                    metadata=binding.metadata,
                    namespace=None if binding.namespace == DEFAULT_NAMESPACE else binding.namespace,
                    trigger_namespace=None if key[0] == DEFAULT_NAMESPACE else key[0],
                ),
                out,
            )

    def _deactivate(self, binding: _Binding, out: list[Output]) -> None:
        key, binding.provider_key = binding.provider_key, None
        if key is None:
            return
        trigger_type = self._trigger_types.get(key)
        if trigger_type is not None and trigger_type.provider is not None:
            self._send(
                trigger_type.provider,
                UnregisterTrigger(id=binding.id, trigger_type=binding.trigger_type),
                out,
            )

    def _add_binding(self, binding: _Binding, out: list[Output]) -> tuple[str, str] | None:
        replaced = self._bindings.pop(binding.id, None)
        if replaced is not None:
            self._deactivate(replaced, out)
        self._bindings[binding.id] = binding
        key = self._lookup_provider(binding)
        if key is not None:
            self._activate(binding, key, out)
        return key

    def _apply_register_trigger(
        self, connection: _Connection, message: RegisterTrigger, out: list[Output]
    ) -> None:
        for field, value in (
            ("namespace", message.namespace),
            ("trigger_namespace", message.trigger_namespace),
        ):
            if value is not None and _is_blank(value):
                self._send(
                    connection,
                    TriggerRegistrationResult(
                        id=message.id,
                        trigger_type=message.trigger_type,
                        function_id=message.function_id,
                        error=ErrorBody(
                            "INVALID_NAMESPACE",
                            f"`{field}` is empty: it was named and left blank. Give it a name, "
                            "or omit it to use `default`.",
                        ),
                    ),
                    out,
                )
                return
        self._add_binding(
            _Binding(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=message.function_id,
                config=message.config,
                metadata=message.metadata,
                namespace=message.namespace or DEFAULT_NAMESPACE,
                trigger_namespace=message.trigger_namespace,
                origin_namespace=connection.effective_namespace,
                owner=connection,
            ),
            out,
        )

    def _apply_unregister_trigger(self, message: UnregisterTrigger, out: list[Output]) -> None:
        binding = self._bindings.pop(message.id, None)
        if binding is not None:
            self._deactivate(binding, out)

    def _apply_register_trigger_type(
        self, connection: _Connection, message: RegisterTriggerType, out: list[Output]
    ) -> None:
        namespace = message.namespace
        if namespace is None:
            namespace = connection.effective_namespace
        elif _is_blank(namespace):
            logger.info("ignoring trigger type %r with a blank namespace", message.id)
            return
        key = (namespace, message.id)
        existing = self._trigger_types.get(key)
        if existing is not None and existing.provider is None:
            logger.warning("worker %s cannot replace engine trigger type %s", connection.id, key)
            return
        if existing is not None and existing.provider is not None:
            existing.provider.trigger_types.discard(key)
        self._trigger_types[key] = _TriggerType(
            namespace,
            message.id,
            message.description,
            message.trigger_request_format,
            message.call_request_format,
            provider=connection,
        )
        connection.trigger_types.add(key)
        for binding in list(self._bindings.values()):
            if self._lookup_provider(binding) != key:
                continue
            if binding.provider_key is not None and binding.provider_key != key:
                self._deactivate(binding, out)
            self._activate(binding, key, out)

    def _on_trigger_registration_result(
        self,
        connection: _Connection,
        message: TriggerRegistrationResult,
        out: list[Output],
    ) -> None:
        awaited = self._awaited_acks.pop(message.id, None)
        if awaited is not None:
            if message.error is None:
                self._answer(awaited.caller, out, result={"id": message.id})
            else:
                # The caller never learns the id, so a refused durable binding is not kept.
                self._bindings.pop(message.id, None)
                text = f"{message.error.code}: {message.error.message}"
                error = ErrorBody("trigger_registration_failed", text)
                self._answer(awaited.caller, out, error=error)
            return
        binding = self._bindings.get(message.id)
        if binding is None or binding.provider_key is None:
            return
        if self._trigger_types[binding.provider_key].provider is not connection:
            return
        if message.error is not None:
            binding.provider_key = None
            self._send(binding.owner, message, out)

    def _fire_engine_trigger(
        self, type_id: str, payload: dict[str, JSON], out: list[Output]
    ) -> None:
        key = (DEFAULT_NAMESPACE, type_id)
        for binding in list(self._bindings.values()):
            if binding.provider_key == key:
                self._deliver_from_engine(binding, dict(payload), out)

    def _poll_functions(self, out: list[Output]) -> None:
        current = frozenset(self._functions)
        if current == self._functions_seen:
            return
        self._functions_seen = current
        key = (DEFAULT_NAMESPACE, _FUNCTIONS_AVAILABLE)
        if not any(binding.provider_key == key for binding in self._bindings.values()):
            return
        summaries = [self._function_summary(f) for f in self._functions.values()]
        self._fire_engine_trigger(
            _FUNCTIONS_AVAILABLE, {"event": "functions_changed", "functions": summaries}, out
        )

    def _trigger_type_worker_name(self, trigger_type: _TriggerType) -> str:
        if trigger_type.provider is not None and trigger_type.provider.name is not None:
            return trigger_type.provider.name
        if trigger_type.provider is None:
            for worker in self._in_process_workers:
                if trigger_type.id in worker.trigger_types:
                    return worker.name
        return _first_segment(trigger_type.id)

    def _trigger_type_summary(self, trigger_type: _TriggerType) -> dict[str, JSON]:
        return {
            "id": trigger_type.id,
            "namespace": trigger_type.namespace,
            "worker_name": self._trigger_type_worker_name(trigger_type),
            "description": trigger_type.description,
        }

    def _trigger_type_detail(self, trigger_type: _TriggerType) -> dict[str, JSON]:
        detail = self._trigger_type_summary(trigger_type)
        if trigger_type.trigger_request_format is not None:
            detail["configuration_schema"] = trigger_type.trigger_request_format
        if trigger_type.call_request_format is not None:
            detail["request_schema"] = trigger_type.call_request_format
        detail["instance_count"] = sum(
            1 for b in self._live_bindings() if b.trigger_type == trigger_type.id
        )
        return detail

    def _binding_worker_name(self, binding: _Binding) -> str:
        if binding.owner is not None and binding.owner.name is not None:
            return binding.owner.name
        return _first_segment(binding.function_id)

    def _binding_summary(self, binding: _Binding) -> dict[str, JSON]:
        return {
            "id": binding.id,
            "trigger_type": binding.trigger_type,
            "function_id": binding.function_id,
            "worker_name": self._binding_worker_name(binding),
            "config": binding.config,
            "config_summary": _config_summary(binding.config),
        }

    def _triggers_list(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        search = data.optional_str("search")
        prefix = data.optional_str("prefix")
        worker = data.optional_str("worker")
        include_internal = bool(data.optional_bool("include_internal"))
        needle = search.lower() if search else None
        chosen = []
        for trigger_type in self._trigger_types.values():
            if not include_internal and trigger_type.id.startswith("engine::"):
                continue
            if prefix is not None and not trigger_type.id.startswith(prefix):
                continue
            if worker is not None and self._trigger_type_worker_name(trigger_type) != worker:
                continue
            if needle is not None and not (
                needle in trigger_type.id.lower() or needle in trigger_type.description.lower()
            ):
                continue
            chosen.append(trigger_type)
        chosen.sort(key=lambda t: (t.id, t.namespace))
        return {"triggers": [self._trigger_type_summary(t) for t in chosen]}

    def _triggers_info(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        type_id = data.required_str("id")
        namespace = data.optional_str("namespace") or DEFAULT_NAMESPACE
        trigger_type = self._trigger_types.get((namespace, type_id))
        if trigger_type is None:
            raise _BuiltinFailure(
                "NOT_FOUND",
                f"Trigger type '{type_id}' is not registered in namespace '{namespace}'.",
            )
        return self._trigger_type_detail(trigger_type)

    def _registered_triggers_list(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        search = data.optional_str("search")
        trigger_type = data.optional_str("trigger_type")
        function_id = data.optional_str("function_id")
        worker = data.optional_str("worker")
        include_internal = bool(data.optional_bool("include_internal"))
        needle = search.lower() if search else None
        chosen = []
        for binding in self._live_bindings():
            if not include_internal and binding.function_id.startswith("engine::"):
                continue
            if trigger_type is not None and binding.trigger_type != trigger_type:
                continue
            if function_id is not None and binding.function_id != function_id:
                continue
            if worker is not None and self._binding_worker_name(binding) != worker:
                continue
            if needle is not None and not any(
                needle in field.lower()
                for field in (binding.id, binding.trigger_type, binding.function_id)
            ):
                continue
            chosen.append(binding)
        chosen.sort(key=lambda b: b.id)
        return {"registered_triggers": [self._binding_summary(b) for b in chosen]}

    def _registered_triggers_info(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        binding_id = data.required_str("id")
        binding = self._bindings.get(binding_id)
        if binding is None or binding.provider_key is None:
            raise _BuiltinFailure("NOT_FOUND", f"Registered trigger '{binding_id}' was not found.")
        detail = self._binding_summary(binding)
        del detail["config_summary"]
        if binding.metadata is not None:
            detail["metadata"] = binding.metadata
        trigger_type = self._trigger_types.get(binding.provider_key)
        detail["trigger"] = (
            self._trigger_type_detail(trigger_type) if trigger_type is not None else None
        )
        function = self._functions.get((binding.namespace, binding.function_id))
        detail["function"] = self._function_detail(function) if function is not None else None
        return detail

    def _register_trigger(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        trigger_type = data.required_str("trigger_type")
        function_id = data.required_str("function_id")
        config = data.any("config")
        metadata = data.any("metadata")
        trigger_namespace = data.optional_str("trigger_namespace")
        binding = _Binding(
            id=self._uuid(),
            trigger_type=trigger_type,
            function_id=function_id,
            config=config,
            metadata=metadata,
            namespace=DEFAULT_NAMESPACE,
            trigger_namespace=trigger_namespace,
            origin_namespace=DEFAULT_NAMESPACE,
            owner=None,
        )
        key = self._add_binding(binding, out)
        provider = self._trigger_types[key].provider if key is not None else None
        if provider is None or call.caller is None:
            return {"id": binding.id}
        deadline = call.now + TRIGGER_ACK_TIMEOUT
        self._awaited_acks[binding.id] = _AwaitedAck(binding.id, call.caller, deadline)
        out.append(TimerArmed(deadline))
        return _DEFERRED

    def _unregister_trigger(self, call: _Call, data: _Input, out: list[Output]) -> JSON:
        binding_id = data.required_str("id")
        data.optional_str("trigger_type")
        binding = self._bindings.pop(binding_id, None)
        if binding is None:
            return {"removed": False}
        self._awaited_acks.pop(binding_id, None)
        self._deactivate(binding, out)
        return {"removed": True}

    # -- reattach, ping, cleanup (sections 2.6, 2.8, 3.10) -----------------------------------------

    def _on_reattach(self, connection: _Connection, message: Reattach, out: list[Output]) -> None:
        previous_id = canonical_uuid(message.previous_worker_id)
        if previous_id is None or previous_id == connection.id:
            return
        previous = self._connections.get(previous_id)
        if previous is None:
            return
        token = message.reattach_token
        canonical_token = canonical_uuid(token) if token is not None else None
        if token is None or (canonical_token or token) != previous.reattach_token:
            logger.warning("reattach to %s refused: wrong or missing token", previous_id)
            return
        logger.info("worker %s replaces its previous connection %s", connection.id, previous_id)
        out.append(CloseConnection(previous.id, drain=False))
        self._cleanup(previous, out)

    def _cleanup(self, connection: _Connection, out: list[Output]) -> None:
        connection.liveness = _Liveness.GONE
        connection.namespace_state = NamespaceState.ABORTED
        connection.buffered.clear()
        self._grace_deadlines.pop(connection.id, None)
        for key in connection.functions:
            function = self._functions.get(key)
            if function is not None and function.owner is connection:
                del self._functions[key]
        connection.functions.clear()
        for invocation_id in list(connection.in_flight):
            pending = self._forget(invocation_id)
            if pending is not None and pending.executor is connection:
                stopped = ErrorBody("invocation_stopped", "Invocation stopped")
                self._answer_pending(pending, out, error=stopped)
        for binding in list(self._bindings.values()):
            if binding.owner is connection:
                del self._bindings[binding.id]
                self._deactivate(binding, out)
        for binding_id, awaited in list(self._awaited_acks.items()):
            if awaited.caller.connection is connection:
                del self._awaited_acks[binding_id]
        provided = {
            key
            for key in connection.trigger_types
            if (t := self._trigger_types.get(key)) is not None and t.provider is connection
        }
        for key in provided:
            del self._trigger_types[key]
        connection.trigger_types.clear()
        if provided:
            for binding in list(self._bindings.values()):
                if binding.provider_key in provided:
                    binding.provider_key = None
                    fallback = self._lookup_provider(binding)
                    if fallback is not None:
                        self._activate(binding, fallback, out)
        self._release_name(connection)
        del self._connections[connection.id]
        out.append(WorkerDisconnected(connection.id, connection.name, connection.namespace))
        self._fire_engine_trigger(
            _WORKERS_AVAILABLE, {"event": "worker_disconnected", "worker_id": connection.id}, out
        )


def _is_internal_function(function: _Function) -> bool:
    if function.id.startswith("engine::") and not function.id.startswith("engine::queue::"):
        return True
    metadata = function.metadata
    return isinstance(metadata, dict) and metadata.get("internal") is True


_BUILTIN_DESCRIPTIONS: Final = {
    "engine::functions::list": "List registered functions",
    "engine::functions::info": "Describe one or more registered functions",
    "engine::triggers::list": "List trigger types",
    "engine::triggers::info": "Describe a trigger type",
    "engine::registered-triggers::list": "List registered triggers",
    "engine::registered-triggers::info": "Describe a registered trigger",
    "engine::workers::list": "List connected workers",
    "engine::workers::info": "Describe a connected worker",
    "engine::workers::register": "Announce a worker's metadata and namespace",
    "engine::register_trigger": "Register a durable trigger",
    "engine::unregister_trigger": "Remove a trigger",
}

_BUILTIN_TRIGGER_TYPES: Final = {
    _FUNCTIONS_AVAILABLE: "Fires when the set of registered functions changes",
    _WORKERS_AVAILABLE: "Fires when workers connect, update their metadata or disconnect",
}

# Names serde gives the input types in "expected struct ..." messages.
_INPUT_STRUCTS: Final = {
    "engine::functions::list": "ListFunctionsInput",
    "engine::functions::info": "FunctionInfoInput",
    "engine::triggers::list": "ListTriggersInput",
    "engine::triggers::info": "TriggerInfoInput",
    "engine::registered-triggers::list": "ListRegisteredTriggersInput",
    "engine::registered-triggers::info": "RegisteredTriggerInfoInput",
    "engine::workers::list": "ListWorkersInput",
    "engine::workers::info": "WorkerInfoInput",
    "engine::workers::register": "RegisterWorkerInput",
    "engine::register_trigger": "RegisterTriggerInput",
    "engine::unregister_trigger": "UnregisterTriggerInput",
}
