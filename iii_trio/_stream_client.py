"""Typed calls to the engine's streams (the ``iii-stream`` worker, spec/engine.md 5.2), and
serving a stream of your own behind them.

As with :mod:`._state_client`, the streams live in the engine and this module spells its
function ids and payloads, in namespace ``default``, on top of :meth:`Worker.trigger`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ._exceptions import ProtocolError
from ._state_client import (
    ENGINE_NAMESPACE,
    SetResult,
    UpdateOp,
    UpdateResult,
    check_worker,
    json_argument,
    list_answer,
    ops_argument,
    set_result,
    string_argument,
    update_result,
)
from ._types import JSONValue

if TYPE_CHECKING:
    from ._worker import FunctionRef, Worker

__all__ = ["StreamBackend", "Streams"]


class StreamBackend(Protocol):
    """A stream kept by your worker instead of the engine (see :meth:`Streams.serve`).

    Each method gets the call's group and item ids; what it returns goes back to the caller.
    An exception fails that call, as in any handler.
    """

    async def get(self, group_id: str, item_id: str) -> JSONValue:
        """The item, or ``None``."""

    async def set(self, group_id: str, item_id: str, data: JSONValue) -> SetResult:
        """Store ``data``; say what it replaced (``old_value`` ``None`` for a new item)."""

    async def delete(self, group_id: str, item_id: str) -> JSONValue:
        """Delete the item; return its old value, ``None`` when there was none."""

    async def list(self, group_id: str) -> builtins.list[JSONValue]:
        """The items of ``group_id``."""

    async def list_groups(self) -> builtins.list[str]:
        """The stream's group ids."""


def _field(payload: Any, name: str) -> str:
    if not isinstance(payload, dict) or not isinstance(payload.get(name), str):
        raise TypeError(f"the engine's payload has no string {name!r}: {payload!r}")
    value: str = payload[name]
    return value


class Streams:
    """The engine's streams, reached through ``worker``::

        streams = iii_trio.Streams(worker)
        await streams.set("todo", "inbox", "item-1", {"title": "milk"})
        items = await streams.list("todo", "inbox")

    A stream holds groups of JSON items. Each method is one call of the engine's
    ``stream::*`` function of the same name and waits for its answer; cancelling it forgets
    the call locally, as with :meth:`Worker.trigger`, whose errors it raises
    (``FunctionNotFound`` when the engine runs no ``iii-stream`` worker).

    Every ``set``, ``update``, ``delete`` of an item and every ``send`` is also an event for
    the functions bound to a ``stream`` trigger (config ``{"stream_name", "group_id"?,
    "item_id"?}``), with a :class:`StreamEvent` payload.

    Raises:
        TypeError: ``worker`` is not a :class:`Worker`.
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = check_worker(worker, "Streams")

    async def _call(self, function_id: str, payload: dict[str, JSONValue]) -> JSONValue:
        return await self._worker.trigger(function_id, payload, namespace=ENGINE_NAMESPACE)

    @staticmethod
    def _item(stream_name: str, group_id: str, item_id: str) -> dict[str, JSONValue]:
        return {
            "stream_name": string_argument("stream_name", stream_name),
            "group_id": string_argument("group_id", group_id),
            "item_id": string_argument("item_id", item_id),
        }

    async def get(self, stream_name: str, group_id: str, item_id: str) -> JSONValue:
        """The item, or ``None`` when there is none."""
        return await self._call("stream::get", self._item(stream_name, group_id, item_id))

    async def set(
        self, stream_name: str, group_id: str, item_id: str, data: JSONValue
    ) -> SetResult:
        """Store ``data`` (JSON, or attrs values) as the item."""
        payload = self._item(stream_name, group_id, item_id)
        payload["data"] = json_argument("data", data)
        return set_result("stream::set", await self._call("stream::set", payload))

    async def update(
        self, stream_name: str, group_id: str, item_id: str, ops: Iterable[UpdateOp]
    ) -> UpdateResult:
        """Apply ``ops`` in order, atomically, to the item (to ``{}`` when there is none), as
        :meth:`State.update` does."""
        payload = self._item(stream_name, group_id, item_id)
        payload["ops"] = ops_argument(ops)
        return update_result("stream::update", await self._call("stream::update", payload))

    async def delete(self, stream_name: str, group_id: str, item_id: str) -> JSONValue:
        """Delete the item; returns the value it had (``None`` when there was none, which is
        not an error)."""
        payload = self._item(stream_name, group_id, item_id)
        answer = await self._call("stream::delete", payload)
        if not isinstance(answer, dict):
            raise ProtocolError(f"stream::delete answered {answer!r}, not an object")
        return answer.get("old_value")

    async def list(self, stream_name: str, group_id: str) -> builtins.list[JSONValue]:
        """The items of a group."""
        payload: dict[str, JSONValue] = {
            "stream_name": string_argument("stream_name", stream_name),
            "group_id": string_argument("group_id", group_id),
        }
        return list_answer("stream::list", await self._call("stream::list", payload))

    async def list_groups(self, stream_name: str) -> builtins.list[str]:
        """The group ids of a stream (in no particular order)."""
        payload: dict[str, JSONValue] = {"stream_name": string_argument("stream_name", stream_name)}
        answer = await self._call("stream::list_groups", payload)
        if isinstance(answer, dict):  # what the engine's README promises; its code sends a list
            answer = answer.get("groups")
        return [str(group) for group in list_answer("stream::list_groups", answer)]

    async def list_all(self) -> dict[str, builtins.list[str]]:
        """Every stream the engine stores, by name, with its sorted group ids."""
        answer = await self._call("stream::list_all", {})
        streams = answer.get("stream") if isinstance(answer, dict) else None
        if not isinstance(streams, list):
            raise ProtocolError(f"stream::list_all answered {answer!r}, without streams")
        return {
            str(entry.get("id")): [str(group) for group in entry.get("groups") or ()]
            for entry in streams
            if isinstance(entry, dict)
        }

    async def send(
        self,
        stream_name: str,
        group_id: str,
        event_type: str,
        data: JSONValue,
        *,
        item_id: str | None = None,
    ) -> None:
        """Send a custom event (nothing is stored) to the group's ``stream`` bindings."""
        payload: dict[str, JSONValue] = {
            "stream_name": string_argument("stream_name", stream_name),
            "group_id": string_argument("group_id", group_id),
            "type": string_argument("event_type", event_type),
            "data": json_argument("data", data),
        }
        if item_id is not None:
            payload["id"] = string_argument("item_id", item_id)
        await self._call("stream::send", payload)

    def serve(self, stream_name: str, backend: StreamBackend) -> tuple[FunctionRef, ...]:
        """Keep ``stream_name`` in ``backend`` instead of the engine's store.

        Registers ``stream::get(<stream_name>)`` and the ``set``, ``delete``, ``list`` and
        ``list_groups`` functions, which the engine then calls for that stream; ``update``
        stays with the engine's store, as with the official SDKs. The engine still sends the
        change events of ``set`` and ``delete`` to ``stream`` bindings. Like every
        registration, they are replayed on reconnect; unregister them through the returned
        refs.

        Raises:
            TypeError: ``stream_name`` is not a string.
            ValueError: the worker has a namespace other than ``default``, where the engine
                looks for these functions.
        """
        string_argument("stream_name", stream_name)
        namespace = self._worker._namespace
        if namespace is not None and namespace != ENGINE_NAMESPACE:
            raise ValueError(
                f"a worker in namespace {namespace!r} cannot serve a stream: the engine looks "
                "for stream backends in namespace 'default'"
            )

        async def get(payload: Any) -> JSONValue:
            return await backend.get(_field(payload, "group_id"), _field(payload, "item_id"))

        async def set_(payload: Any) -> JSONValue:
            group_id, item_id = _field(payload, "group_id"), _field(payload, "item_id")
            data = payload.get("data")
            result = await backend.set(group_id, item_id, data)
            if not isinstance(result, SetResult):
                raise TypeError(f"{type(backend).__name__}.set must return a SetResult")
            return {"old_value": result.old_value, "new_value": result.new_value}

        async def delete(payload: Any) -> JSONValue:
            old_value = await backend.delete(
                _field(payload, "group_id"), _field(payload, "item_id")
            )
            return {"old_value": old_value}

        async def list_(payload: Any) -> JSONValue:
            return await backend.list(_field(payload, "group_id"))

        async def list_groups(payload: Any) -> JSONValue:
            return await backend.list_groups()

        handlers = {"get": get, "set": set_, "delete": delete, "list": list_}
        handlers["list_groups"] = list_groups
        return tuple(
            self._worker.register_function(
                f"stream::{operation}({stream_name})",
                handler,
                description=f"Stream {operation} for {stream_name}, kept by this worker",
            )
            for operation, handler in handlers.items()
        )
