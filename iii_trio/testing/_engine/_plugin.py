"""The interface between the dev engine core and its in-process workers (plugins).

A plugin is what the real engine calls a built-in worker (spec/engine.md): it provides functions
(``engine::functions::list``, later ``state::get``, ...) and trigger types (``engine::workers-
available``, later ``http``, ``cron``, ...), and it may start calls of its own (deliver a trigger
fire, run a condition function, retry a queue message) that continue when their result arrives.
It runs inside the core's synchronous state machine, so, like the core, it never blocks, reads
no clock and does no I/O: it appends :data:`._model.Output` to the ``out`` list it is given and
uses the core's plugin interface (listed on :class:`._state.EngineState`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, KeysView, Mapping
from typing import TYPE_CHECKING, ClassVar, Final, TypeAlias

import attrs

from ..._protocol._messages import JSON, ErrorBody, RegisterFunction
from ._model import Binding, Caller, Connection, Output, RunInEngine, describe_value

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = [
    "DEFERRED",
    "BuiltinFailure",
    "BuiltinFunction",
    "Call",
    "Continuation",
    "Deferred",
    "EnginePlugin",
    "Input",
]

#: What continues an engine-originated call: ``(result, error, out)``, called once with the
#: executor's answer (``error`` set when it failed or went away).
Continuation: TypeAlias = Callable[[JSON, "ErrorBody | None", list[Output]], None]


@attrs.frozen
class Call:
    """The context a built-in function runs in."""

    connection: Connection
    function_id: str
    #: ``None`` when the call expects no answer.
    caller: Caller | None
    now: float


class BuiltinFailure(Exception):
    """Raised by a built-in function: its caller gets this error instead of a result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.body = ErrorBody(code=code, message=message)


class Deferred:
    """Returned by a built-in whose answer comes later, through :meth:`EngineState.answer`."""


DEFERRED: Final = Deferred()


@attrs.frozen
class BuiltinFunction:
    """A function a plugin provides."""

    #: Runs the call; returns the result, or :data:`DEFERRED` to answer ``call.caller`` later.
    handler: Callable[[Call, Input, list[Output]], JSON | Deferred]
    description: str
    #: The input type's name in serde's ``expected struct ...`` messages.
    input_struct: str


class EnginePlugin:
    """An in-process worker. Subclasses set :attr:`name` and override what they provide or
    follow; every hook does nothing by default.

    The core installs its plugins in order when it is built: it registers their functions and
    trigger types in namespace ``default``, lists each plugin as a worker, then calls
    :meth:`attach` on each.
    """

    #: The worker's name in ``engine::workers::list``.
    name: ClassVar[str]

    def functions(self) -> Mapping[str, BuiltinFunction]:
        """The functions this worker provides, by id."""
        return {}

    def trigger_types(self) -> Mapping[str, str]:
        """The trigger types this worker provides: id to description."""
        return {}

    def attach(self, engine: EngineState) -> None:
        """Called once the core is built; keep ``engine`` to use its plugin interface."""

    def check_binding(self, binding: Binding) -> None:
        """A binding of one of this plugin's trigger types is being registered: raise
        :class:`BuiltinFailure` to refuse it (its ``message`` reaches the registering worker as
        ``trigger_registration_failed``; the binding is not kept). Must not change anything:
        :meth:`start_binding` follows when it is accepted."""

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        """A binding of one of this plugin's trigger types goes live (checked already). Fire
        it with :meth:`EngineState.fire_binding`; the same id may be started again after
        :meth:`stop_binding`."""

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        """A live binding of one of this plugin's trigger types ends (unregistered, its owner
        left, or replaced under the same id)."""

    def worker_connected(self, connection: Connection, now: float, out: list[Output]) -> None:
        """A worker connection was accepted."""

    def worker_announced(self, connection: Connection, out: list[Output]) -> None:
        """A worker's ``engine::workers::register`` succeeded."""

    def worker_disconnected(self, connection: Connection, out: list[Output]) -> None:
        """A worker connection's cleanup ran (its functions and bindings are gone)."""

    def http_function(
        self, connection: Connection, message: RegisterFunction
    ) -> RunInEngine | None:
        """``connection`` registers an HTTP-invoked function (``message.invocation`` is set,
        spec/protocol.md section 9): return what performs its calls, or ``None`` to refuse it.

        The core has checked the id's lease already; it drops the registration silently, as
        the engine does, when no plugin takes it. The function stays owned by ``connection``
        and goes away with it.
        """
        return None


class Input:
    """Typed access to a built-in's input object, failing the way serde does.

    Every accessor treats an absent key and ``null`` alike (``Option`` fields) unless it says
    otherwise; a wrong type raises ``deserialization_error`` naming the function.
    """

    def __init__(self, function_id: str, data: dict[str, JSON]) -> None:
        self._function_id = function_id
        self._data = data

    def fail(self, detail: str) -> BuiltinFailure:
        return BuiltinFailure(
            "deserialization_error",
            f"Failed to deserialize input for {self._function_id}: {detail}",
        )

    def _invalid_type(self, value: JSON, expected: str) -> BuiltinFailure:
        return self.fail(f"invalid type: {describe_value(value)}, expected {expected}")

    def any(self, key: str) -> JSON:
        return self._data.get(key)

    def keys(self) -> KeysView[str]:
        """The fields present, for inputs that refuse unknown fields or take aliases."""
        return self._data.keys()

    def required(self, key: str) -> JSON:
        """A field of any type that must be there (``null`` counts as there)."""
        if key not in self._data:
            raise self.fail(f"missing field `{key}`")
        return self._data[key]

    def nested(self, data: dict[str, JSON]) -> Input:
        """Typed access to an object inside the input; errors still name the function."""
        return Input(self._function_id, data)

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

    def optional_usize(self, key: str) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._invalid_type(value, "usize")
        if not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
            raise self.fail(f"invalid value: integer `{value}`, expected usize")
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
        nested = Input(self._function_id, value)
        return {field: nested.optional_str(field) for field in fields}
