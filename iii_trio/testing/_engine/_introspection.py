"""``iii-engine-functions``: the engine's ``engine::*`` functions and discovery trigger types.

The listing and describing functions (spec/protocol.md section 7) read the core's tables; the
registration functions (``engine::workers::register``, ``engine::register_trigger``,
``engine::unregister_trigger``) are the core's own operations, which this worker only exposes.
``engine::workers-available`` fires on the core's worker events; ``engine::functions-available``
fires from a poll that compares the function table with what it saw last (the engine polls every
5 s, so a change and its notice can be that far apart).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final

from ..._protocol._messages import JSON
from ._model import (
    DEFAULT_NAMESPACE,
    Binding,
    Connection,
    Function,
    InProcessWorker,
    Liveness,
    Output,
    TriggerType,
    config_summary,
    first_segment,
    ns_list,
)
from ._plugin import BuiltinFailure, BuiltinFunction, Call, EnginePlugin, Input

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = ["FUNCTIONS_AVAILABLE", "MAX_FUNCTION_IDS", "WORKERS_AVAILABLE", "EngineFunctions"]

FUNCTIONS_AVAILABLE: Final = "engine::functions-available"
WORKERS_AVAILABLE: Final = "engine::workers-available"
#: ``engine::functions::info`` batch limit (section 7.3).
MAX_FUNCTION_IDS: Final = 32


class EngineFunctions(EnginePlugin):
    """The ``iii-engine-functions`` worker.

    Args:
        poll_interval: seconds between the checks that fire ``engine::functions-available``;
            the first check is armed when the first worker connects.
    """

    name = "iii-engine-functions"

    def __init__(self, poll_interval: float = 5.0) -> None:
        if poll_interval <= 0:
            raise ValueError("functions_poll_interval must be > 0")
        self._poll_interval = poll_interval
        self._next_poll: float | None = None
        self._functions_seen: frozenset[tuple[str, str]] = frozenset()
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine
        self._functions_seen = frozenset(engine.functions)

    def functions(self) -> Mapping[str, BuiltinFunction]:
        table = {
            "engine::channels::create": (self._create_channel, "CreateChannelInput"),
            "engine::functions::list": (self._functions_list, "ListFunctionsInput"),
            "engine::functions::info": (self._functions_info, "FunctionInfoInput"),
            "engine::triggers::list": (self._triggers_list, "ListTriggersInput"),
            "engine::triggers::info": (self._triggers_info, "TriggerInfoInput"),
            "engine::registered-triggers::list": (
                self._registered_triggers_list,
                "ListRegisteredTriggersInput",
            ),
            "engine::registered-triggers::info": (
                self._registered_triggers_info,
                "RegisteredTriggerInfoInput",
            ),
            "engine::workers::list": (self._workers_list, "ListWorkersInput"),
            "engine::workers::info": (self._workers_info, "WorkerInfoInput"),
            "engine::workers::register": (self._register_worker, "RegisterWorkerInput"),
            "engine::register_trigger": (self._register_trigger, "RegisterTriggerInput"),
            "engine::unregister_trigger": (
                self._unregister_trigger,
                "UnregisterTriggerInput",
            ),
        }
        return {
            function_id: BuiltinFunction(handler, _DESCRIPTIONS[function_id], struct)
            for function_id, (handler, struct) in table.items()
        }

    def trigger_types(self) -> Mapping[str, str]:
        return {
            FUNCTIONS_AVAILABLE: "Fires when the set of registered functions changes",
            WORKERS_AVAILABLE: "Fires when workers connect, update their metadata or disconnect",
        }

    # -- the core's registration operations ----------------------------------------------------

    def _register_worker(self, call: Call, data: Input, out: list[Output]) -> JSON:
        return self._engine.register_worker(call, data, out)

    def _create_channel(self, call: Call, data: Input, out: list[Output]) -> JSON:
        channel = self._engine.channels.create(data.optional_usize("buffer_size"), call.now, out)
        return {"writer": channel.ref("write"), "reader": channel.ref("read")}

    def _register_trigger(self, call: Call, data: Input, out: list[Output]) -> JSON:
        return self._engine.register_durable_trigger(call, data, out)

    def _unregister_trigger(self, call: Call, data: Input, out: list[Output]) -> JSON:
        return self._engine.unregister_durable_trigger(call, data, out)

    # -- discovery triggers ------------------------------------------------------------------------

    def worker_connected(self, connection: Connection, now: float, out: list[Output]) -> None:
        if self._next_poll is None:
            self._next_poll = now + self._poll_interval
            self._engine.arm(self._next_poll, self._poll, out)
        self._worker_event("worker_connected", connection, out)

    def worker_announced(self, connection: Connection, out: list[Output]) -> None:
        self._worker_event("worker_metadata_updated", connection, out)

    def worker_disconnected(self, connection: Connection, out: list[Output]) -> None:
        self._worker_event("worker_disconnected", connection, out)

    def _worker_event(self, event: str, connection: Connection, out: list[Output]) -> None:
        self._engine.fire_trigger(
            WORKERS_AVAILABLE, {"event": event, "worker_id": connection.id}, out
        )

    def _poll(self, now: float, out: list[Output]) -> None:
        assert self._next_poll is not None
        while self._next_poll <= now:
            self._next_poll += self._poll_interval
        self._engine.arm(self._next_poll, self._poll, out)
        self._poll_functions(out)

    # -- listing and describing (section 7) --------------------------------------------------------

    def _function_worker_name(self, function: Function) -> str:
        if function.owner is not None and function.owner.name is not None:
            return function.owner.name
        return first_segment(function.id)

    def _function_summary(self, function: Function) -> dict[str, JSON]:
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

    def _function_detail(self, function: Function) -> dict[str, JSON]:
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

    def _functions_list(self, call: Call, data: Input, out: list[Output]) -> JSON:
        search = data.optional_str("search")
        prefix = data.optional_str("prefix")
        worker = data.optional_str("worker")
        workers = data.optional_str_list("workers")
        include_internal = bool(data.optional_bool("include_internal"))
        wanted_workers = set(workers or ())
        if worker is not None:
            wanted_workers.add(worker)
        needle = search.lower() if search else None
        ranked: list[tuple[int, str, str, Function]] = []
        for function in self._engine.functions.values():
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

    def _resolve_function(self, function_id: str, namespace: str | None) -> Function:
        if namespace is not None:
            function = self._engine.functions.get((namespace, function_id))
            if function is None:
                raise BuiltinFailure("NOT_FOUND", f"Function '{function_id}' is not registered.")
            return function
        function = self._engine.functions.get((DEFAULT_NAMESPACE, function_id))
        if function is not None:
            return function
        holders = [f for (ns, fid), f in self._engine.functions.items() if fid == function_id]
        if len(holders) == 1:
            return holders[0]
        if not holders:
            raise BuiltinFailure("NOT_FOUND", f"Function '{function_id}' is not registered.")
        raise BuiltinFailure(
            "NOT_FOUND",
            f"Function '{function_id}' is ambiguous: it is registered in namespace(s): "
            f"{ns_list(f.namespace for f in holders)}. Pass `namespace` to select one.",
        )

    def _functions_info(self, call: Call, data: Input, out: list[Output]) -> JSON:
        function_id = data.optional_str("function_id")
        function_ids = data.optional_str_list("function_ids")
        namespace = data.optional_str("namespace")
        if function_id is not None and function_ids is not None:
            raise BuiltinFailure(
                "INVALID_ARGUMENTS", "pass either `function_id` or `function_ids`, not both"
            )
        if function_id is not None:
            return self._function_detail(self._resolve_function(function_id, namespace))
        if function_ids is None:
            raise BuiltinFailure(
                "INVALID_ARGUMENTS",
                "missing field `function_id` (or `function_ids` for a batch)",
            )
        unique = list(dict.fromkeys(function_ids))
        if not unique:
            raise BuiltinFailure(
                "INVALID_ARGUMENTS", "`function_ids` must be a non-empty array of function ids"
            )
        if len(unique) > MAX_FUNCTION_IDS:
            raise BuiltinFailure(
                "INVALID_ARGUMENTS", f"too many function_ids (max {MAX_FUNCTION_IDS})"
            )
        items: list[JSON] = []
        for each in unique:
            try:
                items.append(self._function_detail(self._resolve_function(each, namespace)))
            except BuiltinFailure:
                items.append({"function_id": each, "error": "not_found"})
        return {"functions": items}

    def _worker_summary(self, connection: Connection) -> dict[str, JSON]:
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

    def _in_process_summary(self, worker: InProcessWorker) -> dict[str, JSON]:
        return {
            "name": worker.name,
            "description": None,
            "version": self._engine.version,
            "id": worker.id,
            "namespace": DEFAULT_NAMESPACE,
            "runtime": "engine",
            "os": None,
            "status": "available",
            "function_count": len(worker.function_ids),
            "connected_at_ms": self._engine.started_at_ms,
            "active_invocations": 0,
            "isolation": "in-process",
            "ip_address": None,
        }

    def _workers_list(self, call: Call, data: Input, out: list[Output]) -> JSON:
        search = data.optional_str("search")
        runtime = data.optional_str("runtime")
        status = data.optional_str("status")
        summaries = [
            self._worker_summary(connection)
            for connection in self._engine.connections.values()
            if connection.pid is not None and connection.liveness is Liveness.OPEN
        ]
        summaries.extend(
            self._in_process_summary(worker) for worker in self._engine.in_process_workers
        )
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

    def _workers_info(self, call: Call, data: Input, out: list[Output]) -> JSON:
        name = data.required_str("name")
        namespace = data.optional_str("namespace")
        by_namespace: dict[str, Connection | InProcessWorker] = {}
        for worker in self._engine.in_process_workers:
            if worker.name == name:
                by_namespace[DEFAULT_NAMESPACE] = worker
        for connection in self._engine.connections.values():
            if connection.name == name and connection.liveness is Liveness.OPEN:
                by_namespace.setdefault(connection.effective_namespace, connection)
        if not by_namespace:
            raise BuiltinFailure("NOT_FOUND", f"Worker '{name}' is not connected.")
        if namespace is not None:
            found = by_namespace.get(namespace)
            if found is None:
                raise BuiltinFailure(
                    "NOT_FOUND",
                    f"Worker '{name}' is not connected in the requested namespace; it is "
                    f"connected in namespace(s): {ns_list(by_namespace)}.",
                )
        elif DEFAULT_NAMESPACE in by_namespace:
            found = by_namespace[DEFAULT_NAMESPACE]
        elif len(by_namespace) == 1:
            found = next(iter(by_namespace.values()))
        else:
            raise BuiltinFailure(
                "NOT_FOUND",
                f"Worker '{name}' is ambiguous: it is connected in namespace(s): "
                f"{ns_list(by_namespace)}. Pass `namespace` to disambiguate.",
            )
        if isinstance(found, InProcessWorker):
            detail = self._in_process_summary(found)
            detail["internal"] = True
            functions = [
                self._engine.functions[(DEFAULT_NAMESPACE, function_id)]
                for function_id in found.function_ids
            ]
            types = [
                self._engine.trigger_types[(DEFAULT_NAMESPACE, t)] for t in found.trigger_types
            ]
            bindings: list[Binding] = []
        else:
            detail = self._worker_summary(found)
            if found.pid is not None:
                detail["pid"] = found.pid
            detail["internal"] = False
            functions = [self._engine.functions[key] for key in found.functions]
            types = [self._engine.trigger_types[key] for key in found.trigger_types]
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

    def _live_bindings(self) -> Iterator[Binding]:
        return (b for b in self._engine.bindings.values() if b.provider_key is not None)

    def _poll_functions(self, out: list[Output]) -> None:
        current = frozenset(self._engine.functions)
        if current == self._functions_seen:
            return
        self._functions_seen = current
        key = (DEFAULT_NAMESPACE, FUNCTIONS_AVAILABLE)
        if not any(binding.provider_key == key for binding in self._engine.bindings.values()):
            return
        summaries = [self._function_summary(f) for f in self._engine.functions.values()]
        self._engine.fire_trigger(
            FUNCTIONS_AVAILABLE, {"event": "functions_changed", "functions": summaries}, out
        )

    def _trigger_type_worker_name(self, trigger_type: TriggerType) -> str:
        if trigger_type.provider is not None and trigger_type.provider.name is not None:
            return trigger_type.provider.name
        if trigger_type.provider is None:
            for worker in self._engine.in_process_workers:
                if trigger_type.id in worker.trigger_types:
                    return worker.name
        return first_segment(trigger_type.id)

    def _trigger_type_summary(self, trigger_type: TriggerType) -> dict[str, JSON]:
        return {
            "id": trigger_type.id,
            "namespace": trigger_type.namespace,
            "worker_name": self._trigger_type_worker_name(trigger_type),
            "description": trigger_type.description,
        }

    def _trigger_type_detail(self, trigger_type: TriggerType) -> dict[str, JSON]:
        detail = self._trigger_type_summary(trigger_type)
        if trigger_type.trigger_request_format is not None:
            detail["configuration_schema"] = trigger_type.trigger_request_format
        if trigger_type.call_request_format is not None:
            detail["request_schema"] = trigger_type.call_request_format
        detail["instance_count"] = sum(
            1 for b in self._live_bindings() if b.trigger_type == trigger_type.id
        )
        return detail

    def _binding_worker_name(self, binding: Binding) -> str:
        if binding.owner is not None and binding.owner.name is not None:
            return binding.owner.name
        return first_segment(binding.function_id)

    def _binding_summary(self, binding: Binding) -> dict[str, JSON]:
        return {
            "id": binding.id,
            "trigger_type": binding.trigger_type,
            "function_id": binding.function_id,
            "worker_name": self._binding_worker_name(binding),
            "config": binding.config,
            "config_summary": config_summary(binding.config),
        }

    def _triggers_list(self, call: Call, data: Input, out: list[Output]) -> JSON:
        search = data.optional_str("search")
        prefix = data.optional_str("prefix")
        worker = data.optional_str("worker")
        include_internal = bool(data.optional_bool("include_internal"))
        needle = search.lower() if search else None
        chosen = []
        for trigger_type in self._engine.trigger_types.values():
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

    def _triggers_info(self, call: Call, data: Input, out: list[Output]) -> JSON:
        type_id = data.required_str("id")
        namespace = data.optional_str("namespace") or DEFAULT_NAMESPACE
        trigger_type = self._engine.trigger_types.get((namespace, type_id))
        if trigger_type is None:
            raise BuiltinFailure(
                "NOT_FOUND",
                f"Trigger type '{type_id}' is not registered in namespace '{namespace}'.",
            )
        return self._trigger_type_detail(trigger_type)

    def _registered_triggers_list(self, call: Call, data: Input, out: list[Output]) -> JSON:
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

    def _registered_triggers_info(self, call: Call, data: Input, out: list[Output]) -> JSON:
        binding_id = data.required_str("id")
        binding = self._engine.bindings.get(binding_id)
        if binding is None or binding.provider_key is None:
            raise BuiltinFailure("NOT_FOUND", f"Registered trigger '{binding_id}' was not found.")
        detail = self._binding_summary(binding)
        del detail["config_summary"]
        if binding.metadata is not None:
            detail["metadata"] = binding.metadata
        trigger_type = self._engine.trigger_types.get(binding.provider_key)
        detail["trigger"] = (
            self._trigger_type_detail(trigger_type) if trigger_type is not None else None
        )
        function = self._engine.functions.get((binding.namespace, binding.function_id))
        detail["function"] = self._function_detail(function) if function is not None else None
        return detail


def _is_internal_function(function: Function) -> bool:
    if function.id.startswith("engine::") and not function.id.startswith("engine::queue::"):
        return True
    metadata = function.metadata
    return isinstance(metadata, dict) and metadata.get("internal") is True


_DESCRIPTIONS: Final = {
    "engine::channels::create": "Create a streaming channel pair",
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
