"""``iii-observability``, thinly: ``engine::log::*``, the ``log`` trigger type,
``engine::health::check`` and ``engine::baggage::*`` (spec/engine.md sections 8 and 9 P2,
engine-observed.md section 7).

The engine always runs this worker (it is mandatory, like ``iii-engine-functions``) and reads
its ``iii-observability`` block; so does the dev engine, applying the keys below.

- ``engine::log::{info,warn,error,debug,trace}`` take ``{message, data?, trace_id?, span_id?,
  service_name?}``, keep an OTEL log record (severity 9, 13, 17, 5, 1) in a ring of
  ``logs_max_count`` records, hand it to every ``log`` binding whose ``level`` matches, and
  answer ``null``. An object ``data`` becomes the record's ``attributes``; any other ``data`` is
  dropped. With ``logs_enabled: false`` nothing is kept or delivered.
- The ``log`` trigger type exists only when the block leaves ``enabled`` true (its default): a
  disabled engine parks ``log`` bindings silently. A binding's ``config.level`` is ``all`` (the
  default, also for a non-string) or a severity in lower case, matched exactly. The record is
  delivered to the binding's function **in namespace** ``default`` whatever the binding's
  namespace, with the binding's metadata, fire-and-forget, as the engine does.
- ``engine::health::check`` reports the engine's shape with what the dev engine has: ``otel``
  healthy when enabled (else disabled), ``metrics`` healthy with no metrics, ``logs`` healthy
  with the records kept (disabled with ``logs_enabled: false``), ``spans`` disabled.

Deliberate deviations (the engine's OTEL pipeline is not reproduced): spans and metrics are
never stored, so ``spans`` is always ``disabled``; ``log`` bindings get each ``engine::log::*``
record once, not also the engine's own tracing records and a tracing copy of each call's record;
the console queries (``engine::logs::*``, ``engine::traces::*``...) and the ``trace`` trigger type
are left out, so they answer ``function_not_found`` and park as on an engine without them.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import attrs

from ..._protocol._messages import JSON
from ._cron import unix_nanos
from ._model import DEFAULT_NAMESPACE, Binding, Output
from ._plugin import BuiltinFunction, Call, EnginePlugin, Input

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = [
    "LOG",
    "OBSERVABILITY",
    "Observability",
    "ObservabilitySettings",
    "read_observability_block",
]

#: The worker's name, and its config block's.
OBSERVABILITY: Final = "iii-observability"
#: The trigger type of log records.
LOG: Final = "log"

#: Every key the engine's block takes; the dev engine applies those of ObservabilitySettings.
_BLOCK_KEYS: Final = (
    "enabled",
    "service_name",
    "service_version",
    "service_namespace",
    "exporter",
    "endpoint",
    "sampling_ratio",
    "sampling",
    "memory_max_spans",
    "trace_storage",
    "live_spans",
    "metrics_enabled",
    "metrics_exporter",
    "metrics_retention_seconds",
    "metrics_max_count",
    "logs_enabled",
    "logs_exporter",
    "logs_max_count",
    "logs_retention_seconds",
    "logs_batch_size",
    "logs_flush_interval_ms",
    "logs_sampling_ratio",
    "logs_console_output",
    "alerts",
    "level",
    "format",
    "collapse_spans",
)
_EXPORTERS: Final = {"otlp": "Otlp", "memory": "Memory", "both": "Both"}
#: ``(severity_text, severity_number)`` of each log function.
_SEVERITIES: Final = {
    "info": ("INFO", 9),
    "warn": ("WARN", 13),
    "error": ("ERROR", 17),
    "debug": ("DEBUG", 5),
    "trace": ("TRACE", 1),
}
_BAGGAGE_NOTE: Final = "Baggage set in new context. For propagation, use SDK-level baggage headers."


@attrs.frozen
class ObservabilitySettings:
    """An ``iii-observability`` block, read (the engine's defaults for what it leaves out).

    Attributes:
        enabled: whether the worker's live parts run (here: the ``log`` trigger type, and
            ``otel`` in the health report).
        logs_enabled: whether ``engine::log::*`` keeps and delivers records.
        logs_max_count: how many records are kept (the oldest go first).
        service_name: ``service.name`` of the records' resource.
        service_version: ``service.version`` of the records' resource; ``None``: the
            engine's version.
        service_namespace: ``service.namespace`` of the records' resource, if any.
        exporter: ``otlp``, ``memory`` or ``both``, as reported by the health check.
        not_applied: keys of the block the dev engine accepts but does not apply.
    """

    enabled: bool = True
    logs_enabled: bool = True
    logs_max_count: int = 1000
    service_name: str = "iii"
    service_version: str | None = None
    service_namespace: str | None = None
    exporter: str = "memory"
    not_applied: tuple[str, ...] = ()


def read_observability_block(block: object) -> ObservabilitySettings:
    """Read an ``iii-observability`` config block (``None``: the defaults).

    Raises:
        BlockError: naming the key at fault (an unknown key, or a wrong type of an applied
            one).
    """
    # Imported here: the registry of built-in workers may import this module.
    from ._builtins import BlockError, describe_setting

    if block is None:
        return ObservabilitySettings()
    if not isinstance(block, dict):
        raise BlockError("", f"expected a mapping, got {describe_setting(block)}")
    for key in block:
        if key not in _BLOCK_KEYS:
            raise BlockError(str(key), f"unknown key (an {OBSERVABILITY} block takes {_keys()})")

    def flag(key: str, default: bool) -> bool:
        value = block.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise BlockError(key, f"expected a boolean, got {describe_setting(value)}")
        return value

    def text(key: str) -> str | None:
        value = block.get(key)
        if value is not None and not isinstance(value, str):
            raise BlockError(key, f"expected a string, got {describe_setting(value)}")
        return value

    max_count = block.get("logs_max_count")
    if max_count is not None and (type(max_count) is not int or max_count < 0):
        raise BlockError(
            "logs_max_count", f"expected a non-negative integer, got {describe_setting(max_count)}"
        )
    exporter = text("exporter") or "memory"
    if exporter not in _EXPORTERS:
        raise BlockError("exporter", f"expected otlp, memory or both, got {exporter!r}")
    applied = {field.name for field in attrs.fields(ObservabilitySettings)}
    return ObservabilitySettings(
        enabled=flag("enabled", True),
        logs_enabled=flag("logs_enabled", True),
        # The engine treats 0 as unset.
        logs_max_count=max_count or 1000,
        service_name=text("service_name") or "iii",
        service_version=text("service_version"),
        service_namespace=text("service_namespace"),
        exporter=exporter,
        not_applied=tuple(key for key in block if key not in applied),
    )


def _keys() -> str:
    return ", ".join(_BLOCK_KEYS)


_Handler = Callable[[Call, Input, list[Output]], JSON]


class Observability(EnginePlugin):
    """The ``iii-observability`` worker; see the module docstring."""

    name = OBSERVABILITY

    def __init__(self, settings: ObservabilitySettings | None = None) -> None:
        self.settings = settings if settings is not None else ObservabilitySettings()
        # The records kept, oldest first.
        self._records: collections.deque[dict[str, JSON]] = collections.deque(
            maxlen=self.settings.logs_max_count
        )
        self._bindings: dict[str, Binding] = {}
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def functions(self) -> Mapping[str, BuiltinFunction]:
        table: dict[str, tuple[_Handler, str, str]] = {
            f"engine::log::{level}": (
                functools.partial(self._log, text, number),
                f"Record a {text} log (severity {number}) and deliver it to log triggers",
                "OtelLogInput",
            )
            for level, (text, number) in _SEVERITIES.items()
        }
        table["engine::health::check"] = (
            self._health_check,
            "Report the health of the observability components",
            "HealthCheckInput",
        )
        table["engine::baggage::get"] = (
            self._baggage_get,
            "Read one baggage entry of the engine's own context",
            "BaggageGetInput",
        )
        table["engine::baggage::set"] = (
            self._baggage_set,
            "Set a baggage entry on a new context (not propagated)",
            "BaggageSetInput",
        )
        table["engine::baggage::get_all"] = (
            self._baggage_get_all,
            "Read every baggage entry of the engine's own context",
            "BaggageGetAllInput",
        )
        return {
            function_id: BuiltinFunction(handler, description, struct)
            for function_id, (handler, description, struct) in table.items()
        }

    def trigger_types(self) -> Mapping[str, str]:
        if not self.settings.enabled:
            return {}
        return {LOG: "Fires for every log record, or those of one level"}

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        self._bindings[binding.id] = binding

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        if self._bindings.get(binding.id) is binding:
            del self._bindings[binding.id]

    # -- engine::log::* ---------------------------------------------------------------------------

    def _log(
        self, severity_text: str, severity_number: int, call: Call, data: Input, out: list[Output]
    ) -> JSON:
        message = data.required_str("message")
        attributes = data.any("data")
        trace_id = data.optional_str("trace_id")
        span_id = data.optional_str("span_id")
        service_name = data.optional_str("service_name")
        if not self.settings.logs_enabled:
            return None
        timestamp = unix_nanos(self._engine.unix_time())
        record: dict[str, JSON] = {
            "attributes": dict(attributes) if isinstance(attributes, dict) else {},
            "body": message,
            "instrumentation_scope_name": "iii",
            "instrumentation_scope_version": self._engine.version,
            "observed_timestamp_unix_nano": timestamp,
            "resource": self._resource(),
            "service_name": service_name if service_name is not None else "unknown",
            "severity_number": severity_number,
            "severity_text": severity_text,
            "span_id": span_id,
            "timestamp_unix_nano": timestamp,
            "trace_id": trace_id,
        }
        self._records.append(record)
        level = severity_text.lower()
        for binding in list(self._bindings.values()):
            config = binding.config
            wanted = config.get("level") if isinstance(config, dict) else None
            if not isinstance(wanted, str):
                wanted = "all"
            if wanted in ("all", level):
                self._engine.call_function(
                    DEFAULT_NAMESPACE,
                    binding.function_id,
                    dict(record),
                    out,
                    metadata=binding.metadata,
                )
        return None

    def _resource(self) -> dict[str, JSON]:
        settings = self.settings
        resource: dict[str, JSON] = {"service.name": settings.service_name}
        if settings.service_namespace is not None:
            resource["service.namespace"] = settings.service_namespace
        resource["service.version"] = (
            settings.service_version
            if settings.service_version is not None
            else self._engine.version
        )
        return resource

    # -- engine::health::check --------------------------------------------------------------------

    def _health_check(self, call: Call, data: Input, out: list[Output]) -> JSON:
        settings = self.settings
        disabled: dict[str, JSON] = {"details": None, "status": "disabled"}
        otel: dict[str, JSON] = (
            {
                "details": {
                    "enabled": True,
                    "exporter": f"Some({_EXPORTERS[settings.exporter]})",
                    "service_name": settings.service_name,
                },
                "status": "healthy",
            }
            if settings.enabled
            else dict(disabled)
        )
        logs: dict[str, JSON] = (
            {"details": {"stored_logs": len(self._records)}, "status": "healthy"}
            if settings.logs_enabled
            else dict(disabled)
        )
        return {
            "components": {
                "logs": logs,
                "metrics": {"details": {"stored_metrics": 0}, "status": "healthy"},
                "otel": otel,
                "spans": dict(disabled),
            },
            "status": "healthy",
            "timestamp": int(self._engine.unix_time() * 1000),
            "version": self._engine.version,
        }

    # -- engine::baggage::* -----------------------------------------------------------------------
    # The engine reads its own process context, which never carries a caller's baggage.

    def _baggage_get(self, call: Call, data: Input, out: list[Output]) -> JSON:
        data.required_str("key")
        return {"value": None}

    def _baggage_set(self, call: Call, data: Input, out: list[Output]) -> JSON:
        data.required_str("key")
        data.required_str("value")
        return {"note": _BAGGAGE_NOTE, "success": True}

    def _baggage_get_all(self, call: Call, data: Input, out: list[Output]) -> JSON:
        return {"baggage": {}}
