"""Typed calls to the engine's key-value state (the ``iii-state`` worker, spec/engine.md 5.1),
and the update operations it shares with streams (5.3).

The state lives in the engine; this module only spells its function ids and payloads for you
and read its answers into values, on top of :meth:`Worker.trigger`. They always address
namespace ``default``, where the engine's workers provide their functions, whatever the
worker's own namespace. Arguments are checked before anything is sent.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import attrs

from ._dispatch import to_json_value
from ._exceptions import ProtocolError
from ._types import JSONValue
from ._worker import Worker, _json_argument

__all__ = [
    "SetResult",
    "State",
    "StateEvent",
    "UpdateOp",
    "UpdateOpError",
    "UpdateResult",
    "check_worker",
    "json_argument",
    "list_answer",
    "ops_argument",
    "set_result",
    "string_argument",
    "update_result",
]

#: Where the engine provides its own functions.
ENGINE_NAMESPACE: Final = "default"
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
UpdateOpType = Literal["set", "merge", "increment", "decrement", "append", "remove"]
_OP_TYPES: Final = ("set", "merge", "increment", "decrement", "append", "remove")


def string_argument(argument: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, got {type(value).__name__}")
    return value


def json_argument(argument: str, value: object) -> JSONValue:
    """``value`` as plain JSON (attrs values unstructured); TypeError naming ``argument``."""
    return _json_argument(argument, to_json_value, value)


def check_worker(worker: object, caller: str) -> Worker:
    if not isinstance(worker, Worker):
        raise TypeError(f"{caller} needs an iii_trio.Worker, got {type(worker).__name__}")
    return worker


def _path(argument: str, path: object) -> str | tuple[str, ...] | None:
    if path is None or isinstance(path, str):
        return path
    if isinstance(path, Sequence) and all(isinstance(segment, str) for segment in path):
        return tuple(path)
    raise TypeError(f"{argument} must be a string, a sequence of strings or None, got {path!r}")


def _by(by: object) -> int:
    if isinstance(by, bool) or not isinstance(by, int):
        raise TypeError(f"by must be an int (the engine takes no fractions), got {by!r}")
    if not _I64_MIN <= by <= _I64_MAX:
        raise ValueError(f"by must fit in 64 bits (signed), got {by!r}")
    return by


@attrs.frozen
class UpdateOp:
    """One step of an atomic update (``State.update``, ``Streams.update``), applied by the
    engine in order to the stored value, or to ``{}`` when there is none.

    Build one with a class method. ``path`` is one literal top-level key (dots are not
    separators; ``""`` is the whole value), except for :meth:`merge` and :meth:`append`, which
    also take a sequence of keys for a nested place and no path for the whole value.

    Attributes:
        type: the operation: ``set``, ``merge``, ``increment``, ``decrement``, ``append`` or
            ``remove``.
        path: where it applies: a key, a tuple of keys (``merge``, ``append``), or ``None``
            for the whole value.
        value: what ``set``, ``merge`` and ``append`` put there.
        by: how much ``increment`` and ``decrement`` change the number.
    """

    type: UpdateOpType
    path: str | tuple[str, ...] | None = None
    value: JSONValue = None
    by: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.type not in _OP_TYPES:
            raise ValueError(
                f"UpdateOp type must be one of {', '.join(_OP_TYPES)}, got {self.type!r} "
                "(use UpdateOp.set(), UpdateOp.increment()...)"
            )

    @classmethod
    def set(cls, path: str, value: JSONValue) -> UpdateOp:
        """Set ``path`` to ``value`` (``""``: replace the whole value)."""
        return cls("set", string_argument("path", path), json_argument("value", value))

    @classmethod
    def merge(
        cls, value: Mapping[str, JSONValue], *, path: str | Sequence[str] | None = None
    ) -> UpdateOp:
        """Copy the keys of ``value`` into the object at ``path`` (created as needed)."""
        if not isinstance(value, Mapping):
            raise TypeError(f"merge value must be a mapping, got {type(value).__name__}")
        return cls("merge", _path("path", path), json_argument("value", dict(value)))

    @classmethod
    def increment(cls, path: str, by: int = 1) -> UpdateOp:
        """Add ``by`` to the number at ``path`` (a missing one counts as 0)."""
        return cls("increment", string_argument("path", path), by=_by(by))

    @classmethod
    def decrement(cls, path: str, by: int = 1) -> UpdateOp:
        """Subtract ``by`` from the number at ``path`` (a missing one counts as 0)."""
        return cls("decrement", string_argument("path", path), by=_by(by))

    @classmethod
    def append(cls, value: JSONValue, *, path: str | Sequence[str] | None = None) -> UpdateOp:
        """Append ``value`` to the array at ``path``, or concatenate it to a string there; a
        missing place becomes ``[value]`` (a string value stays a string at one key)."""
        return cls("append", _path("path", path), json_argument("value", value))

    @classmethod
    def remove(cls, path: str) -> UpdateOp:
        """Delete the key ``path`` (``""``: the value becomes ``null``)."""
        return cls("remove", string_argument("path", path))

    def to_json(self) -> dict[str, JSONValue]:
        """The operation as the engine reads it."""
        shaped: dict[str, JSONValue] = {"type": self.type}
        if self.path is not None:
            shaped["path"] = list(self.path) if isinstance(self.path, tuple) else self.path
        if self.type in ("set", "merge", "append"):
            shaped["value"] = self.value
        if self.by is not None:
            shaped["by"] = self.by
        return shaped


def ops_argument(ops: object) -> list[JSONValue]:
    if isinstance(ops, str | bytes | Mapping) or not isinstance(ops, Iterable):
        raise TypeError(f"ops must be an iterable of UpdateOp, got {type(ops).__name__}")
    shaped: list[JSONValue] = []
    for op in ops:
        if not isinstance(op, UpdateOp):
            raise TypeError(f"ops must hold UpdateOp values, got {type(op).__name__}")
        shaped.append(op.to_json())
    return shaped


@attrs.frozen
class SetResult:
    """The answer to a ``set``.

    Attributes:
        old_value: the value it replaced; ``None`` when there was none (or it was ``null``).
        new_value: the value now stored.
    """

    old_value: JSONValue
    new_value: JSONValue


@attrs.frozen
class UpdateOpError:
    """An operation the engine skipped; the others still applied.

    Attributes:
        op_index: its position in ``ops``.
        code: such as ``increment.not_number`` or ``merge.path.proto_polluted``.
        message: the engine's explanation.
        doc_url: where the engine documents the code.
    """

    op_index: int
    code: str
    message: str
    doc_url: str | None = None


@attrs.frozen
class UpdateResult:
    """The outcome of an atomic update.

    Attributes:
        old_value: the value before (``None`` when there was none).
        new_value: the value stored, with every operation that could apply applied.
        errors: the operations that could not apply, in order; empty when all did.
    """

    old_value: JSONValue
    new_value: JSONValue
    errors: tuple[UpdateOpError, ...] = ()


def _answer_object(function_id: str, answer: JSONValue) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ProtocolError(f"{function_id} answered {answer!r}, not an object")
    return answer


def set_result(function_id: str, answer: JSONValue) -> SetResult:
    fields = _answer_object(function_id, answer)
    return SetResult(fields.get("old_value"), fields.get("new_value"))


def update_result(function_id: str, answer: JSONValue) -> UpdateResult:
    fields = _answer_object(function_id, answer)
    errors = []
    for item in fields.get("errors") or ():
        if not isinstance(item, dict):
            raise ProtocolError(f"{function_id} answered an error item {item!r}")
        errors.append(
            UpdateOpError(
                op_index=item.get("op_index", -1),
                code=str(item.get("code", "")),
                message=str(item.get("message", "")),
                doc_url=item.get("doc_url"),
            )
        )
    return UpdateResult(fields.get("old_value"), fields.get("new_value"), tuple(errors))


def list_answer(function_id: str, answer: JSONValue) -> list[JSONValue]:
    if not isinstance(answer, list):
        raise ProtocolError(f"{function_id} answered {answer!r}, not a list")
    return answer


@attrs.frozen
class StateEvent:
    """The payload of a function bound to a ``state`` trigger: annotate its payload parameter
    with this class.

    Attributes:
        event_type: ``"state:created"`` (there was no value, or ``null``), ``"state:updated"``
            or ``"state:deleted"`` (also sent when there was nothing to delete).
        scope: the scope written.
        key: the key written.
        old_value: the value before (``None`` for a creation).
        new_value: the value after (``None`` for a deletion).
        type: always ``"state"``.
    """

    event_type: str
    scope: str
    key: str
    old_value: JSONValue = None
    new_value: JSONValue = None
    type: str = "state"


class State:
    """The engine's key-value state, reached through ``worker``::

        state = iii_trio.State(worker)
        await state.set("users", "u1", {"name": "Ada"})
        user = await state.get("users", "u1")
        await state.update("users", "u1", [iii_trio.UpdateOp.increment("logins")])

    Values are JSON, stored under a key in a scope. Each method is one call of the
    engine's ``state::*`` function of the same name and waits for its answer; cancelling it
    forgets the call locally, as with :meth:`Worker.trigger`, whose errors it raises
    (``FunctionNotFound`` when the engine runs no ``iii-state`` worker).

    Functions bound to a ``state`` trigger (config ``{"scope"?, "key"?}``) hear of every
    write, with a :class:`StateEvent` payload.

    Raises:
        TypeError: ``worker`` is not a :class:`Worker`.
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = check_worker(worker, "State")

    async def _call(self, function_id: str, payload: dict[str, JSONValue]) -> JSONValue:
        return await self._worker.trigger(function_id, payload, namespace=ENGINE_NAMESPACE)

    async def get(self, scope: str, key: str) -> JSONValue:
        """The value at ``scope``/``key``, or ``None`` when there is none."""
        payload = {"scope": string_argument("scope", scope), "key": string_argument("key", key)}
        return await self._call("state::get", payload)

    async def set(self, scope: str, key: str, value: JSONValue) -> SetResult:
        """Store ``value`` (JSON, or attrs values) at ``scope``/``key``."""
        payload = {
            "scope": string_argument("scope", scope),
            "key": string_argument("key", key),
            "value": json_argument("value", value),
        }
        return set_result("state::set", await self._call("state::set", payload))

    async def update(self, scope: str, key: str, ops: Iterable[UpdateOp]) -> UpdateResult:
        """Apply ``ops`` in order, atomically, to the value at ``scope``/``key`` (to ``{}``
        when there is none) and store the result, even if some operations failed: those are
        in :attr:`UpdateResult.errors`."""
        payload = {
            "scope": string_argument("scope", scope),
            "key": string_argument("key", key),
            "ops": ops_argument(ops),
        }
        return update_result("state::update", await self._call("state::update", payload))

    async def delete(self, scope: str, key: str) -> JSONValue:
        """Delete ``scope``/``key``; returns the value it had (``None`` when there was none,
        which is not an error)."""
        payload = {"scope": string_argument("scope", scope), "key": string_argument("key", key)}
        return await self._call("state::delete", payload)

    async def list(self, scope: str) -> builtins.list[JSONValue]:
        """The values of ``scope``, in the order their keys were first set."""
        payload = {"scope": string_argument("scope", scope)}
        return list_answer("state::list", await self._call("state::list", payload))

    async def list_groups(self) -> builtins.list[str]:
        """Every scope, sorted."""
        answer = _answer_object("state::list_groups", await self._call("state::list_groups", {}))
        groups = answer.get("groups")
        if not isinstance(groups, list):
            raise ProtocolError(f"state::list_groups answered {answer!r}, without groups")
        return [str(group) for group in groups]
