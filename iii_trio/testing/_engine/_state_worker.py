"""``iii-state``: the engine's key-value state and its ``state`` trigger type (spec/engine.md
sections 5.1 and 5.3), kept in memory.

Values live in scopes: scope -> key -> JSON value, keys in the order they were first set (an
overwrite keeps its place, a delete forgets it). ``state::update`` on a missing key starts from
``{}`` and stores the result. As with the engine's store, a scope stays listed by
``state::list_groups`` after its last key is deleted.

Every ``set``, ``update`` and ``delete`` fires the ``state`` bindings whose ``scope`` and ``key``
(when set) match, with ``{"type": "state", "event_type", "scope", "key", "old_value",
"new_value"}`` and the binding's metadata. The writing call is answered first; the matching
bindings are then called one after the other, each waiting for the previous one's answer (and
its condition function first, when it names one), and their failures are only logged. A delete
fires ``state:deleted`` even when there was nothing to delete; ``state:created`` is reported
whenever the old value is ``null`` (spec/engine-observed.md section 2).

The block's ``triggers_enabled: false`` turns every delivery off and ``max_value_bytes`` refuses
larger ``state::set`` values with ``VALUE_TOO_LARGE``. The storage ``adapter`` is read and
checked but not used: the dev engine keeps state in memory, like the engine's default ``kv``
adapter with ``store_method: in_memory``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import attrs

from ..._protocol._messages import JSON, ErrorBody
from ._conditions import run_if_condition_allows
from ._model import Binding, Output, describe_value
from ._plugin import (
    DEFERRED,
    BuiltinFailure,
    BuiltinFunction,
    Call,
    Deferred,
    EnginePlugin,
    Input,
)
from ._update_ops import apply_update_ops, parse_update_ops

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = [
    "STATE",
    "StateSettings",
    "StateWorker",
    "check_adapter",
    "check_block_keys",
    "deliver_in_turn",
    "json_size",
    "read_state_block",
]

logger = logging.getLogger("iii_trio.dev_engine")

STATE: Final = "iii-state"
#: The trigger type this worker provides.
STATE_TRIGGER: Final = "state"
#: The storage adapters the engine knows for state and streams.
KNOWN_ADAPTERS: Final = ("kv", "redis", "bridge")
_BLOCK_KEYS: Final = ("adapter", "triggers_enabled", "max_value_bytes", "save_interval_ms")


@attrs.frozen
class StateSettings:
    """What the dev engine takes from an ``iii-state`` block.

    Attributes:
        triggers_enabled: whether writes fire ``state`` bindings (the engine's default: yes).
        max_value_bytes: the largest ``state::set`` value, as compact JSON, in bytes; ``None``
            (also what 0 means) for no limit.
        adapter: the storage adapter the block names (``kv`` by default); state is kept in
            memory whatever it is.
    """

    triggers_enabled: bool = True
    max_value_bytes: int | None = None
    adapter: str = "kv"


def check_block_keys(block: object, worker: str, keys: tuple[str, ...]) -> dict[str, object]:
    """``block`` as a mapping with only ``keys`` (the engine refuses unknown keys)."""
    from ._builtins import BlockError, describe_setting  # here: _builtins imports this module

    if block is None:
        return {}
    if not isinstance(block, dict):
        raise BlockError("", f"expected a mapping, got {describe_setting(block)}")
    for key in block:
        if key not in keys:
            raise BlockError(str(key), f"unknown key (an {worker} block takes {', '.join(keys)})")
    return block


def optional_count(block: Mapping[str, object], key: str) -> int | None:
    from ._builtins import BlockError, describe_setting  # here: _builtins imports this module

    value = block.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise BlockError(key, f"expected a non-negative integer, got {describe_setting(value)}")
    return value


def check_adapter(value: object) -> str:
    """The adapter name of an ``adapter: {name, config?}`` entry (``kv`` when absent)."""
    from ._builtins import BlockError, read_adapter  # here: _builtins imports this module

    adapter = read_adapter(value)
    if adapter is None:
        return "kv"
    name = adapter[0]
    if name not in KNOWN_ADAPTERS:
        raise BlockError(
            "adapter.name", f"unknown adapter {name!r} (the engine has {', '.join(KNOWN_ADAPTERS)})"
        )
    return name


def read_state_block(block: object) -> StateSettings:
    """The settings of an ``iii-state`` block (``None``: the engine's defaults).

    Raises:
        BlockError: an unknown key or a value of the wrong type, as the engine refuses them.
    """
    from ._builtins import BlockError, describe_setting  # here: _builtins imports this module

    fields = check_block_keys(block, STATE, _BLOCK_KEYS)
    adapter = check_adapter(fields.get("adapter"))
    enabled = fields.get("triggers_enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise BlockError("triggers_enabled", f"expected a boolean, got {describe_setting(enabled)}")
    limit = optional_count(fields, "max_value_bytes")
    optional_count(fields, "save_interval_ms")  # a persistence cadence: nothing to persist here
    return StateSettings(
        triggers_enabled=enabled is not False,
        # The engine reads 0 as "no limit" rather than refusing every write.
        max_value_bytes=limit or None,
        adapter=adapter,
    )


def json_size(value: JSON) -> int:
    """The size of ``value`` as compact JSON, in bytes, as the engine measures it."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def deliver_in_turn(
    engine: EngineState,
    targets: list[Binding],
    payload: JSON,
    out: list[Output],
    worker: str,
) -> None:
    """Call ``targets`` one after the other with ``payload``, each after the previous one has
    answered, running each binding's condition first; failures are logged (``worker`` names
    who delivers)."""
    _Turns(engine, targets, payload, worker).next(out)


class _Turns:
    """The bindings one write still has to call, in order.

    A binding can be done at once (its function is gone, its condition unserved), and then
    the next one starts from inside the previous one's continuation; a loop rather than
    recursion keeps a write with many such bindings from growing the stack.
    """

    def __init__(
        self, engine: EngineState, targets: list[Binding], payload: JSON, worker: str
    ) -> None:
        self._engine = engine
        self._waiting = list(reversed(targets))
        self._payload = payload
        self._worker = worker
        self._looping = False
        self._turn_over = False

    def next(self, out: list[Output]) -> None:
        """The current binding is done: start the next one."""
        self._turn_over = True
        if self._looping:
            return  # the loop below, further up the stack, goes on
        self._looping = True
        try:
            while self._turn_over and self._waiting:
                self._turn_over = False
                self._start(self._waiting.pop(), out)
        finally:
            self._looping = False

    def _start(self, binding: Binding, out: list[Output]) -> None:
        def answered(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            if error is not None:
                logger.warning(
                    "%s: trigger %s: %s failed (%s: %s)",
                    self._worker,
                    binding.id,
                    binding.function_id,
                    error.code,
                    error.message,
                )
            self.next(out)

        def proceed(out: list[Output]) -> None:
            self._engine.fire_binding(binding, self._payload, out, then=answered)

        def failed(error: ErrorBody, out: list[Output]) -> None:
            logger.warning(
                "%s: trigger %s: condition failed (%s: %s); %s not called",
                self._worker,
                binding.id,
                error.code,
                error.message,
                binding.function_id,
            )
            self.next(out)

        run_if_condition_allows(
            self._engine, binding, self._payload, out, proceed, failed=failed, skipped=self.next
        )


@attrs.frozen
class _StateFilter:
    scope: str | None
    key: str | None

    def matches(self, scope: str, key: str) -> bool:
        return (self.scope is None or self.scope == scope) and (self.key is None or self.key == key)


def _parse_filter(config: JSON) -> _StateFilter:
    def refuse(detail: str) -> BuiltinFailure:
        return BuiltinFailure(
            "trigger_registration_failed", f"Failed to parse trigger config: {detail}"
        )

    if not isinstance(config, dict):
        raise refuse(f"invalid type: {describe_value(config)}, expected struct StateTriggerConfig")
    fields: dict[str, str | None] = {}
    for name in ("scope", "key", "condition_function_id"):
        value = config.get(name)
        if value is not None and not isinstance(value, str):
            raise refuse(f"invalid type: {describe_value(value)}, expected a string")
        fields[name] = value
    return _StateFilter(fields["scope"], fields["key"])


def _change(scope: str, key: str, old_value: JSON, new_value: JSON) -> dict[str, JSON]:
    return {
        "type": "state",
        # The engine tells a creation by the old value being null, stored null included.
        "event_type": "state:created" if old_value is None else "state:updated",
        "scope": scope,
        "key": key,
        "old_value": old_value,
        "new_value": new_value,
    }


class StateWorker(EnginePlugin):
    """The ``iii-state`` worker, configured by :class:`StateSettings`."""

    name = STATE

    def __init__(self, settings: StateSettings | None = None) -> None:
        self._settings = StateSettings() if settings is None else settings
        self._scopes: dict[str, dict[str, JSON]] = {}
        self._bindings: dict[str, tuple[Binding, _StateFilter]] = {}
        self._engine: EngineState
        if self._settings.adapter != "kv":
            logger.info(
                "iii-state: adapter %r is not emulated; the dev engine keeps state in memory",
                self._settings.adapter,
            )

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def functions(self) -> Mapping[str, BuiltinFunction]:
        table: dict[
            str, tuple[Callable[[Call, Input, list[Output]], JSON | Deferred], str, str]
        ] = {
            "state::set": (self._set, "Set a value in state", "StateSetInput"),
            "state::get": (self._get, "Get a value from state", "StateGetInput"),
            "state::delete": (self._delete, "Delete a value from state", "StateDeleteInput"),
            "state::update": (self._update, "Update a value in state", "StateUpdateInput"),
            "state::list": (self._list, "Get a group from state", "StateGetGroupInput"),
            "state::list_groups": (
                self._list_groups,
                "List all state groups",
                "StateListGroupsInput",
            ),
        }
        return {
            function_id: BuiltinFunction(handler, description, struct)
            for function_id, (handler, description, struct) in table.items()
        }

    def trigger_types(self) -> Mapping[str, str]:
        return {STATE_TRIGGER: "State trigger"}

    def check_binding(self, binding: Binding) -> None:
        _parse_filter(binding.config)

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        self._bindings[binding.id] = (binding, _parse_filter(binding.config))

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        self._bindings.pop(binding.id, None)

    # -- the functions ---------------------------------------------------------------------------

    def _set(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        scope = data.required_str("scope")
        key = data.required_str("key")
        # `data` is accepted for `value`; both at once is serde's duplicate field.
        present = data.keys()
        if "value" in present and "data" in present:
            raise data.fail("duplicate field `value`")
        value = data.required("data" if "data" in present else "value")
        limit = self._settings.max_value_bytes
        if limit is not None and (size := json_size(value)) > limit:
            raise BuiltinFailure(
                "VALUE_TOO_LARGE",
                f"value of {size} bytes exceeds the configured max_value_bytes limit of {limit}",
            )
        values = self._scopes.setdefault(scope, {})
        old_value = values.get(key)
        values[key] = value
        result = {"old_value": old_value, "new_value": value}
        return self._answer_then_fire(call, result, _change(scope, key, old_value, value), out)

    def _get(self, call: Call, data: Input, out: list[Output]) -> JSON:
        scope = data.required_str("scope")
        key = data.required_str("key")
        return self._scopes.get(scope, {}).get(key)

    def _delete(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        scope = data.required_str("scope")
        key = data.required_str("key")
        values = self._scopes.get(scope)
        old_value = values.pop(key, None) if values is not None else None
        deleted = {
            "type": "state",
            "event_type": "state:deleted",
            "scope": scope,
            "key": key,
            "old_value": old_value,
            "new_value": None,
        }
        return self._answer_then_fire(call, old_value, deleted, out)

    def _update(self, call: Call, data: Input, out: list[Output]) -> JSON | Deferred:
        scope = data.required_str("scope")
        key = data.required_str("key")
        ops = parse_update_ops(data)
        values = self._scopes.setdefault(scope, {})
        old_value = values.get(key)
        new_value, errors = apply_update_ops(old_value, key in values, ops)
        values[key] = new_value
        result: dict[str, JSON] = {"old_value": old_value, "new_value": new_value}
        if errors:
            result["errors"] = list(errors)
        change = _change(scope, key, old_value, new_value)
        return self._answer_then_fire(call, result, change, out)

    def _list(self, call: Call, data: Input, out: list[Output]) -> JSON:
        scope = data.required_str("scope")
        return list(self._scopes.get(scope, {}).values())

    def _list_groups(self, call: Call, data: Input, out: list[Output]) -> JSON:
        return {"groups": sorted(self._scopes)}

    # -- the state trigger -------------------------------------------------------------------------

    def _answer_then_fire(
        self, call: Call, result: JSON, payload: dict[str, JSON], out: list[Output]
    ) -> Deferred:
        # The writer hears back before any binding is called, as from the engine, whose
        # deliveries run in a task it spawns after the write.
        self._engine.answer(call.caller, out, result=result)
        if self._settings.triggers_enabled:
            self._fire(payload, out)
        return DEFERRED

    def _fire(self, payload: dict[str, JSON], out: list[Output]) -> None:
        scope, key = payload["scope"], payload["key"]
        assert isinstance(scope, str)
        assert isinstance(key, str)
        targets = [
            binding for binding, wanted in self._bindings.values() if wanted.matches(scope, key)
        ]
        deliver_in_turn(self._engine, targets, payload, out, STATE)
