"""``iii-stream``: the engine's streams, their ``stream`` trigger type and custom stream
implementations (spec/engine.md sections 5.2 and 5.3), kept in memory.

Items live in groups of streams: stream -> group -> item id -> JSON value. They are stored as
the engine's ``kv`` adapter stores them, one map per ``stream:<stream>:<group>`` key, so the
listings read those keys as the engine does (a stream name with a colon in it confuses them
there too). A group stays listed after its last item is deleted, as in the engine.

Custom streams: when a worker serves ``stream::get(<stream>)`` (``set``, ``delete``, ``list``,
``list_groups``, ``update``) in namespace ``default``, the operation of that name on that
stream is delegated to it: the engine calls it with the decoded input, metadata ``null``, and
reads its result (``set`` and ``update`` must return ``{old_value, new_value}``, ``delete``
``{old_value}``; ``get`` and the lists return anything, and their errors are the caller's).

Every ``set``, ``update``, effective ``delete`` and every ``send`` makes a change event,
``{"type": "stream", "timestamp", "streamName", "groupId", "id", "event"}``, which fires the
``stream`` bindings of that stream whose ``group_id`` and ``item_id`` (when set and not empty)
match, one after the other as for ``state`` bindings (see :mod:`._state_worker`). The engine
also pushes the events to the clients of its stream WebSocket port (3112); the dev engine has
no such port, so ``stream:join`` and ``stream:leave``, which fire only for those clients,
accept bindings that never fire (spec/engine.md section 9).

A ``stream`` binding without a ``stream_name`` is refused (``missing field `stream_name```):
the engine panics on it and stops serving the registering connection, which the dev engine does
not copy (spec/engine-observed.md section 0.1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import attrs

from ..._protocol._messages import JSON, ErrorBody
from ._model import DEFAULT_NAMESPACE, Binding, Output, describe_value
from ._plugin import (
    DEFERRED,
    BuiltinFailure,
    BuiltinFunction,
    Call,
    Continuation,
    Deferred,
    EnginePlugin,
    Input,
)
from ._state_worker import check_adapter, check_block_keys, deliver_in_turn
from ._update_ops import apply_update_ops, parse_update_ops, rust_debug

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = ["STREAM", "StreamSettings", "StreamWorker", "read_stream_block"]

logger = logging.getLogger("iii_trio.dev_engine")

STREAM: Final = "iii-stream"
STREAM_TRIGGER: Final = "stream"
JOIN_TRIGGER: Final = "stream:join"
LEAVE_TRIGGER: Final = "stream:leave"
_BLOCK_KEYS: Final = ("port", "host", "auth_function", "adapter")
_KEY_PREFIX: Final = "stream:"


@attrs.frozen
class StreamSettings:
    """What the dev engine takes from an ``iii-stream`` block.

    Attributes:
        port: the engine's stream WebSocket port (3112 by default). Read and checked; the dev
            engine opens no such port.
        host: the address of that port (``0.0.0.0`` by default); not used either.
        auth_function: the function that authenticates that port's clients; not used.
        adapter: the storage adapter the block names (``kv`` by default); streams are kept in
            memory whatever it is.
    """

    port: int = 3112
    host: str = "0.0.0.0"
    auth_function: str | None = None
    adapter: str = "kv"


def read_stream_block(block: object) -> StreamSettings:
    """The settings of an ``iii-stream`` block (``None``: the engine's defaults).

    Raises:
        BlockError: an unknown key or a value of the wrong type, as the engine refuses them.
    """
    from ._builtins import BlockError, describe_setting  # here: _builtins imports this module

    fields = check_block_keys(block, STREAM, _BLOCK_KEYS)
    adapter = check_adapter(fields.get("adapter"))
    port = fields.get("port", 3112)
    if type(port) is not int or not 0 <= port <= 65535:
        raise BlockError(
            "port", f"expected an integer from 0 to 65535, got {describe_setting(port)}"
        )
    host = fields.get("host", "0.0.0.0")
    if not isinstance(host, str):
        raise BlockError("host", f"expected a string, got {describe_setting(host)}")
    auth_function = fields.get("auth_function")
    if auth_function is not None and not isinstance(auth_function, str):
        raise BlockError(
            "auth_function", f"expected a string, got {describe_setting(auth_function)}"
        )
    return StreamSettings(port=port, host=host, auth_function=auth_function, adapter=adapter)


@attrs.frozen
class _StreamFilter:
    stream_name: str
    group_id: str
    item_id: str

    def matches(self, stream_name: str, group_id: str, item_id: str) -> bool:
        # An empty filter means "any", as an absent one does.
        return (
            self.stream_name == stream_name
            and (not self.group_id or self.group_id == group_id)
            and (not self.item_id or self.item_id == item_id)
        )


def _parse_filter(config: JSON) -> _StreamFilter:
    refused = BuiltinFailure("trigger_registration_failed", "Failed to deserialize stream trigger")
    if not isinstance(config, dict):
        raise refused
    fields: dict[str, str | None] = {}
    for name in ("stream_name", "group_id", "item_id", "condition_function_id"):
        value = config.get(name)
        if value is not None and not isinstance(value, str):
            raise refused
        fields[name] = value
    stream_name = fields["stream_name"]
    if stream_name is None:
        raise BuiltinFailure(
            "trigger_registration_failed",
            "Failed to deserialize stream trigger: missing field `stream_name`",
        )
    return _StreamFilter(stream_name, fields["group_id"] or "", fields["item_id"] or "")


def _error_text(error: ErrorBody) -> str:
    """``error`` as the engine's Rust ``{:?}`` prints it inside its messages."""
    stacktrace = "None" if error.stacktrace is None else f"Some({rust_debug(error.stacktrace)})"
    return (
        f"ErrorBody {{ code: {rust_debug(error.code)}, message: {rust_debug(error.message)}, "
        f"stacktrace: {stacktrace} }}"
    )


class _BadResult(Exception):
    """A custom stream's result does not fit the engine's result struct."""


def _result_struct(result: JSON, struct: str, required: tuple[str, ...]) -> dict[str, JSON]:
    if not isinstance(result, dict):
        raise _BadResult(f"invalid type: {describe_value(result)}, expected struct {struct}")
    for name in required:
        if name not in result:
            raise _BadResult(f"missing field `{name}`")
    return result


def _op_errors(errors: JSON) -> list[JSON]:
    """The ``errors`` of a custom ``update`` result, checked as ``UpdateOpError`` items."""
    if errors is None:
        raise _BadResult("invalid type: null, expected a sequence")
    if not isinstance(errors, list):
        raise _BadResult(f"invalid type: {describe_value(errors)}, expected a sequence")
    checked: list[JSON] = []
    for item in errors:
        fields = _result_struct(item, "UpdateOpError", ("op_index", "code", "message"))
        index = fields["op_index"]
        if isinstance(index, bool) or not isinstance(index, int):
            raise _BadResult(f"invalid type: {describe_value(index)}, expected usize")
        if index < 0:
            raise _BadResult(f"invalid value: integer `{index}`, expected usize")
        for name in ("code", "message", "doc_url"):
            value = fields.get(name)
            if value is not None and not isinstance(value, str):
                raise _BadResult(f"invalid type: {describe_value(value)}, expected a string")
            if value is None and name != "doc_url":
                raise _BadResult("invalid type: null, expected a string")
        shaped: dict[str, JSON] = {
            "op_index": index,
            "code": fields["code"],
            "message": fields["message"],
        }
        if fields.get("doc_url") is not None:
            shaped["doc_url"] = fields["doc_url"]
        checked.append(shaped)
    return checked


class StreamWorker(EnginePlugin):
    """The ``iii-stream`` worker, configured by :class:`StreamSettings`."""

    name = STREAM

    def __init__(self, settings: StreamSettings | None = None) -> None:
        self._settings = StreamSettings() if settings is None else settings
        # Keyed "stream:<stream>:<group>", as the engine's kv adapter keys them.
        self._groups: dict[str, dict[str, JSON]] = {}
        self._bindings: dict[str, tuple[Binding, _StreamFilter]] = {}
        self._engine: EngineState
        if self._settings.adapter != "kv":
            logger.info(
                "iii-stream: adapter %r is not emulated; the dev engine keeps streams in memory",
                self._settings.adapter,
            )

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def functions(self) -> Mapping[str, BuiltinFunction]:
        table: dict[str, tuple[Callable[[Call, Input, list[Output]], JSON | Deferred], str, str]]
        table = {
            "stream::set": (self._set, "Set a value in a stream", "StreamSetInput"),
            "stream::get": (self._get, "Get a value from a stream", "StreamGetInput"),
            "stream::delete": (self._delete, "Delete a value from a stream", "StreamDeleteInput"),
            "stream::list": (self._list, "List all items in a stream group", "StreamListInput"),
            "stream::list_groups": (
                self._list_groups,
                "List all groups in a stream",
                "StreamListGroupsInput",
            ),
            "stream::list_all": (
                self._list_all,
                "List all available stream with metadata",
                "StreamListAllInput",
            ),
            "stream::send": (
                self._send,
                "Send a custom event to stream subscribers",
                "StreamSendInput",
            ),
            "stream::update": (
                self._update,
                "Atomically update a stream value with multiple operations",
                "StreamUpdateInput",
            ),
        }
        return {
            function_id: BuiltinFunction(handler, description, struct)
            for function_id, (handler, description, struct) in table.items()
        }

    def trigger_types(self) -> Mapping[str, str]:
        return {
            JOIN_TRIGGER: "Stream join trigger",
            LEAVE_TRIGGER: "Stream leave trigger",
            STREAM_TRIGGER: "Stream trigger",
        }

    def check_binding(self, binding: Binding) -> None:
        if binding.trigger_type == STREAM_TRIGGER:
            _parse_filter(binding.config)

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        if binding.trigger_type == STREAM_TRIGGER:
            self._bindings[binding.id] = (binding, _parse_filter(binding.config))

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        self._bindings.pop(binding.id, None)

    # -- the functions ---------------------------------------------------------------------------

    def _custom(self, operation: str, stream_name: str) -> str | None:
        """The id of the worker function that implements ``operation`` for ``stream_name``."""
        function_id = f"stream::{operation}({stream_name})"
        function = self._engine.functions.get((DEFAULT_NAMESPACE, function_id))
        return function_id if function is not None and function.owner is not None else None

    def _delegate(
        self, function_id: str, payload: dict[str, JSON], out: list[Output], then: Continuation
    ) -> Deferred:
        self._engine.call_function(DEFAULT_NAMESPACE, function_id, payload, out, then=then)
        return DEFERRED

    def _passed_through(self, call: Call) -> Continuation:
        """What answers ``call`` with a custom function's outcome, unchanged."""

        def answer(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            self._engine.answer(call.caller, out, result=result, error=error)

        return answer

    def _set(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        stream_name = data.required_str("stream_name")
        group_id = data.required_str("group_id")
        item_id = data.required_str("item_id")
        value = data.required("data")
        custom = self._custom("set", stream_name)
        if custom is None:
            items = self._groups.setdefault(_key(stream_name, group_id), {})
            existed = item_id in items
            old_value = items.get(item_id)
            items[item_id] = value
            result = {"old_value": old_value, "new_value": value}
            kind = "update" if existed else "create"
            event = self._event(stream_name, group_id, item_id, {"type": kind, "data": value})
            return self._answer_then_fire(call, result, event, out)

        def finish(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            self._finish_write(
                call,
                "set",
                "STREAM_SET_ERROR",
                (stream_name, group_id, item_id),
                result,
                error,
                out,
            )

        payload = {"stream_name": stream_name, "group_id": group_id, "item_id": item_id}
        return self._delegate(custom, {**payload, "data": value}, out, finish)

    def _update(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        stream_name = data.required_str("stream_name")
        group_id = data.required_str("group_id")
        item_id = data.required_str("item_id")
        ops = parse_update_ops(data)
        custom = self._custom("update", stream_name)
        if custom is None:
            items = self._groups.setdefault(_key(stream_name, group_id), {})
            existed = item_id in items
            old_value = items.get(item_id)
            new_value, errors = apply_update_ops(old_value, existed, ops)
            items[item_id] = new_value
            result: dict[str, JSON] = {"old_value": old_value, "new_value": new_value}
            if errors:
                result["errors"] = list(errors)
            kind = "update" if existed else "create"
            event = self._event(stream_name, group_id, item_id, {"type": kind, "data": new_value})
            return self._answer_then_fire(call, result, event, out)

        def finish(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            self._finish_write(
                call,
                "update",
                "STREAM_UPDATE_ERROR",
                (stream_name, group_id, item_id),
                result,
                error,
                out,
            )

        payload: dict[str, JSON] = {
            "stream_name": stream_name,
            "group_id": group_id,
            "item_id": item_id,
            "ops": [op.to_json() for op in ops],
        }
        return self._delegate(custom, payload, out, finish)

    def _delete(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        stream_name = data.required_str("stream_name")
        group_id = data.required_str("group_id")
        item_id = data.required_str("item_id")
        custom = self._custom("delete", stream_name)
        if custom is None:
            items = self._groups.get(_key(stream_name, group_id))
            existed = items is not None and item_id in items
            old_value = items.pop(item_id) if items is not None and existed else None
            event = None
            if existed:
                detail = {"type": "delete", "data": old_value}
                event = self._event(stream_name, group_id, item_id, detail)
            return self._answer_then_fire(call, {"old_value": old_value}, event, out)

        def finish(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            self._finish_write(
                call,
                "delete",
                "STREAM_DELETE_ERROR",
                (stream_name, group_id, item_id),
                result,
                error,
                out,
            )

        payload = {"stream_name": stream_name, "group_id": group_id, "item_id": item_id}
        return self._delegate(custom, dict(payload), out, finish)

    def _get(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        stream_name = data.required_str("stream_name")
        group_id = data.required_str("group_id")
        item_id = data.required_str("item_id")
        custom = self._custom("get", stream_name)
        if custom is None:
            return self._groups.get(_key(stream_name, group_id), {}).get(item_id)
        payload = {"stream_name": stream_name, "group_id": group_id, "item_id": item_id}
        return self._delegate(custom, dict(payload), out, self._passed_through(call))

    def _list(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        stream_name = data.required_str("stream_name")
        group_id = data.required_str("group_id")
        custom = self._custom("list", stream_name)
        if custom is None:
            return list(self._groups.get(_key(stream_name, group_id), {}).values())
        payload = {"stream_name": stream_name, "group_id": group_id}
        return self._delegate(custom, dict(payload), out, self._passed_through(call))

    def _list_groups(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        stream_name = data.required_str("stream_name")
        custom = self._custom("list_groups", stream_name)
        if custom is None:
            prefix = _key(stream_name, "")
            return [key[len(prefix) :] for key in self._groups if key.startswith(prefix)]
        payload: dict[str, JSON] = {"stream_name": stream_name}
        return self._delegate(custom, payload, out, self._passed_through(call))

    def _list_all(self, call: Call, data: Input, out: list[Output]) -> JSON:
        streams: dict[str, set[str]] = {}
        for key in self._groups:
            parts = key.split(":")
            if len(parts) >= 3 and parts[0] == "stream":
                streams.setdefault(parts[1], set()).add(parts[2])
        listed: list[JSON] = [
            {"id": name, "groups": sorted(groups)} for name, groups in sorted(streams.items())
        ]
        return {"stream": listed, "count": len(listed)}

    def _send(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        stream_name = data.required_str("stream_name")
        group_id = data.required_str("group_id")
        item_id = data.optional_str("id")
        event_type = data.required_str("type")
        value = data.required("data")
        detail: dict[str, JSON] = {"type": "event", "event": {"type": event_type, "data": value}}
        event = self._event(stream_name, group_id, item_id, detail)
        return self._answer_then_fire(call, None, event, out)

    # -- custom streams ----------------------------------------------------------------------------

    def _finish_write(
        self,
        call: Call,
        operation: str,
        code: str,
        where: tuple[str, str, str],
        result: JSON,
        error: ErrorBody | None,
        out: list[Output],
    ) -> None:
        """Answer ``call`` with a custom ``set``/``update``/``delete`` outcome and fire its
        change event, as the engine reads such an outcome."""
        if error is not None:
            message = (
                f"Failed to {operation} value: Failed to invoke function: {_error_text(error)}"
            )
            self._engine.answer(call.caller, out, error=ErrorBody(code, message))
            return
        if result is None:
            message = f"Failed to {operation} value: Function returned no result"
            self._engine.answer(call.caller, out, error=ErrorBody(code, message))
            return
        try:
            shaped = self._shape_result(operation, result)
        except _BadResult as exc:
            message = f"Failed to convert result to value: {exc}"
            self._engine.answer(call.caller, out, error=ErrorBody("JSON_ERROR", message))
            return
        stream_name, group_id, item_id = where
        old_value = shaped["old_value"]
        event = None
        if operation == "delete":
            if old_value is not None:
                detail: dict[str, JSON] = {"type": "delete", "data": old_value}
                event = self._event(stream_name, group_id, item_id, detail)
        else:
            kind = "create" if old_value is None else "update"
            detail = {"type": kind, "data": shaped["new_value"]}
            event = self._event(stream_name, group_id, item_id, detail)
        self._answer_then_fire(call, shaped, event, out)

    @staticmethod
    def _shape_result(operation: str, result: JSON) -> dict[str, JSON]:
        if operation == "delete":
            fields = _result_struct(result, "StreamDeleteResult", ())
            return {"old_value": fields.get("old_value")}
        struct = "StreamSetResult" if operation == "set" else "StreamUpdateResult"
        fields = _result_struct(result, struct, ("new_value",))
        shaped: dict[str, JSON] = {
            "old_value": fields.get("old_value"),
            "new_value": fields["new_value"],
        }
        if operation == "update" and "errors" in fields:
            errors = _op_errors(fields["errors"])
            if errors:
                shaped["errors"] = errors
        return shaped

    # -- change events -----------------------------------------------------------------------------

    def _event(
        self, stream_name: str, group_id: str, item_id: str | None, detail: dict[str, JSON]
    ) -> dict[str, JSON]:
        return {
            "type": "stream",
            "timestamp": int(self._engine.unix_time() * 1000),
            "streamName": stream_name,
            "groupId": group_id,
            "id": item_id,
            "event": detail,
        }

    def _answer_then_fire(
        self, call: Call, result: JSON, event: dict[str, JSON] | None, out: list[Output]
    ) -> Deferred:
        # The writer hears back before any binding is called, as from the engine, whose
        # deliveries run in a task it spawns after the write.
        self._engine.answer(call.caller, out, result=result)
        if event is not None:
            stream_name, group_id, item_id = event["streamName"], event["groupId"], event["id"]
            assert isinstance(stream_name, str)
            assert isinstance(group_id, str)
            item = item_id if isinstance(item_id, str) else ""
            targets = [
                binding
                for binding, wanted in self._bindings.values()
                if wanted.matches(stream_name, group_id, item)
            ]
            deliver_in_turn(self._engine, targets, event, out, STREAM)
        return DEFERRED


def _key(stream_name: str, group_id: str) -> str:
    return f"{_KEY_PREFIX}{stream_name}:{group_id}"
