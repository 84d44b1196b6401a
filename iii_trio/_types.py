"""Public value types (frozen attrs classes and enums). No I/O, no trio."""

from __future__ import annotations

import enum
import math
from typing import Any, Literal, TypeAlias

import attrs

__all__ = [
    "Backoff",
    "ChannelDirection",
    "ChannelRef",
    "ConnectionState",
    "FunctionInfo",
    "JSONValue",
    "TriggerConfig",
    "TriggerInfo",
    "TriggerTypeInfo",
    "WorkerInfo",
]

JSONValue: TypeAlias = Any
"""Any JSON value: payloads, results, metadata, configs and schemas.

``Any`` to the type checker. At run time it must encode as JSON: dicts with string keys, lists,
strings, ints, finite floats, bools and ``None``. A payload, a handler's result or a trigger
config may also be an attrs instance, sent as the JSON object cattrs unstructures it into.
Anything else (``NaN``, a set...) is refused before it is sent: a ``TypeError`` naming the
argument, or, for a handler's result, a failed call.
"""

ChannelDirection: TypeAlias = Literal["read", "write"]
"""Which end of a channel a ref hands over, from its holder's point of view."""


def _seconds(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Backoff.{attribute.name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Backoff.{attribute.name} must be finite and >= 0, got {value!r}")


@attrs.frozen
class Backoff:
    """Reconnect policy: the same schedule as the official SDKs.

    The n-th retry (n from 0) waits ``min(initial * multiplier**n, maximum)`` seconds, varied by
    ``± jitter`` of itself. ``max_attempts=None`` retries forever; otherwise connecting fails
    with :class:`~iii_trio.EngineUnavailable` after that many failed attempts in a row. The count
    resets after every successful connection.

    Attributes:
        initial: seconds before the first retry.
        maximum: the longest wait between two attempts, in seconds.
        multiplier: how much each wait grows over the one before.
        jitter: how far a wait may vary, as a fraction of it (0 to 1).
        max_attempts: failed attempts in a row before giving up; ``None``: never give up.

    Raises:
        TypeError: a field is not a number (``max_attempts``: not an int or None).
        ValueError: a number is negative or not finite, ``jitter`` is above 1 (it is a
            fraction of the delay), or ``max_attempts`` is below 1.
    """

    initial: float = attrs.field(default=1.0, validator=_seconds)
    maximum: float = attrs.field(default=30.0, validator=_seconds)
    multiplier: float = attrs.field(default=2.0, validator=_seconds)
    jitter: float = attrs.field(default=0.3, validator=_seconds)
    max_attempts: int | None = attrs.field(default=None)

    @jitter.validator
    def _check_jitter(self, _: attrs.Attribute[float], value: float) -> None:
        if value > 1:
            raise ValueError(f"Backoff.jitter is a fraction of the delay, 0 to 1; got {value!r}")

    @max_attempts.validator
    def _check_max_attempts(self, _: attrs.Attribute[int | None], value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Backoff.max_attempts must be an int or None, got {value!r}")
        if value < 1:
            raise ValueError(f"Backoff.max_attempts must be >= 1 or None, got {value!r}")


class ConnectionState(enum.Enum):
    """Where a worker's engine connection stands."""

    CONNECTING = "connecting"
    """Opening the first connection."""
    CONNECTED = "connected"
    """Connected, announced and registered: calls and invocations flow."""
    RECONNECTING = "reconnecting"
    """The connection dropped; waiting for the backoff delay or reconnecting."""
    CLOSED = "closed"
    """The worker's block has exited."""
    FAILED = "failed"
    """Gave up: the backoff budget ran out or the engine refused this worker."""


@attrs.frozen
class FunctionInfo:
    """A function as the engine lists it (``engine::functions::list`` / ``::info``).

    Attributes:
        function_id: the function's id (``service::name``).
        description: what it does, as its worker registered it.
        request_format: JSON Schema of its payload, if its worker gave or derived one.
        response_format: JSON Schema of its result, likewise.
        metadata: the metadata it was registered with.
        namespace: the namespace it lives in.
        worker_name: the name of the worker serving it, when the engine says.
    """

    function_id: str
    description: str | None = None
    request_format: JSONValue = None
    response_format: JSONValue = None
    metadata: JSONValue = None
    namespace: str = "default"
    worker_name: str | None = None


@attrs.frozen
class TriggerTypeInfo:
    """A trigger type as the engine lists it (``engine::triggers::list`` / ``::info``).

    Attributes:
        id: the type's id (``http``, ``cron``, ``webhook``...).
        description: what it does, as its provider registered it.
        namespace: the namespace its provider serves.
        worker_name: the providing worker's name (for the engine's own types, the built-in
            worker that provides them).
        configuration_schema: JSON Schema of a binding's ``config`` (``trigger_request_format``).
        request_schema: JSON Schema of the payload a fire delivers (``call_request_format``).
        instance_count: how many live bindings use it.
    """

    id: str
    description: str = ""
    namespace: str = "default"
    worker_name: str | None = None
    configuration_schema: JSONValue = None
    request_schema: JSONValue = None
    instance_count: int = 0


@attrs.frozen
class TriggerConfig:
    """A binding of one of this worker's trigger types, as the engine hands it to the provider.

    Attributes:
        id: the binding's id; the same across reconnects.
        function_id: the function to call when the binding fires.
        config: the binding's configuration, as its registering worker gave it.
        metadata: to pass along as the invocation's metadata at every fire (None: none).
        namespace: where ``function_id`` lives: pass it to :meth:`Worker.trigger` when firing.
    """

    id: str
    function_id: str
    config: JSONValue = None
    metadata: JSONValue = None
    namespace: str = "default"


@attrs.frozen
class TriggerInfo:
    """A registered trigger (a binding of a function to a trigger type), as the engine lists it
    (``engine::registered-triggers::list``).

    Attributes:
        id: the binding's id.
        trigger_type: the trigger type it uses.
        function_id: the function it calls when it fires.
        config: its configuration, as registered.
        worker_name: the registering worker's name, else the function id's first ``::`` segment.
    """

    id: str
    trigger_type: str
    function_id: str
    config: JSONValue = None
    worker_name: str | None = None


@attrs.frozen
class WorkerInfo:
    """A connected worker as the engine lists it (``engine::workers::list``); ``functions``
    comes from ``engine::workers::info`` and stays empty for a worker without a name, which
    the engine cannot describe.

    Attributes:
        id: the engine's id of the worker (of its current connection).
        name: the name it announced, if any.
        runtime: its language runtime, as announced (``python``, ``node``...; ``engine`` for
            the engine's built-in workers).
        version: its SDK's version, as announced.
        os: its operating system, as announced.
        ip_address: the address it connected from.
        status: its state as the engine reports it: ``connected``, or ``available`` for the
            engine's built-in workers.
        connected_at_ms: when it connected, in milliseconds since the Unix epoch.
        function_count: how many functions it serves.
        functions: the ids of the functions it serves.
        active_invocations: how many invocations it is serving now.
        namespace: the namespace it registered in.
        description: the description it announced, if any.
    """

    id: str
    name: str | None = None
    runtime: str | None = None
    version: str | None = None
    os: str | None = None
    ip_address: str | None = None
    status: str = "connected"
    connected_at_ms: int = 0
    function_count: int = 0
    functions: tuple[str, ...] = ()
    active_invocations: int = 0
    namespace: str = "default"
    description: str | None = None


def _string(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be a string, "
            f"got {type(value).__name__}"
        )


def _direction(_: object, __: attrs.Attribute[str], value: object) -> None:
    if value not in ("read", "write"):
        raise ValueError(f"ChannelRef.direction must be 'read' or 'write', got {value!r}")


@attrs.frozen
class ChannelRef:
    """One end of a channel, in the form it travels in payloads and results:
    ``{"channel_id": ..., "access_key": ..., "direction": "read" | "write"}``.

    ``direction`` is the holder's point of view: a ``"read"`` ref is for receiving, a
    ``"write"`` ref for sending. Put one anywhere in a payload to hand that end to the function
    you call: it arrives there as a live :class:`~iii_trio.ChannelReader` or
    :class:`~iii_trio.ChannelWriter`. Each end can be opened once, by whoever holds it.

    ``access_key`` is the capability that opens the end; it is left out of the repr.

    Attributes:
        channel_id: the channel's id (a UUID the engine gave it).
        access_key: the secret that opens either end of the channel.
        direction: ``"read"`` for the receiving end, ``"write"`` for the sending end.

    Raises:
        TypeError: ``channel_id`` or ``access_key`` is not a string.
        ValueError: ``direction`` is neither ``"read"`` nor ``"write"``.
    """

    channel_id: str = attrs.field(validator=_string)
    access_key: str = attrs.field(validator=_string, repr=False)
    direction: ChannelDirection = attrs.field(validator=_direction)
