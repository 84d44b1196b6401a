"""``iii-observability`` in the dev engine core, thinly (spec/engine.md sections 8 and 9 P2,
engine-observed.md section 7): ``engine::log::*``, the ``log`` trigger type,
``engine::health::check``, ``engine::baggage::*``, and the functions left out, which answer as
on an engine without them.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from iii_trio._protocol._messages import (
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from iii_trio.testing._engine import Output
from iii_trio.testing._engine._builtins import BlockError
from iii_trio.testing._engine._observability import (
    Observability,
    ObservabilitySettings,
    read_observability_block,
)

from .engine_driver import Engine, Worker, messages_to

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 29, 16, 56, 49, 500000, tzinfo=UTC).timestamp()
NOW_NANOS = 1_795_971_409_500_000_000


def observed(settings: ObservabilitySettings | None = None) -> Engine:
    return Engine(plugins=[Observability(settings)], wall_clock_offset=NOW - 100.0)


@pytest.fixture
def engine() -> Engine:
    return observed()


def deliveries(outputs: list[Output], worker: Worker) -> list[InvokeFunction]:
    return [m for m in messages_to(outputs, worker.id) if isinstance(m, InvokeFunction)]


def listener(engine: Engine, level: Any = None, *, metadata: Any = None) -> Worker:
    worker = engine.worker("listener")
    worker.send(RegisterFunction(id="logs::on"))
    config = {} if level is None else {"level": level}
    worker.send(
        RegisterTrigger(
            id=f"log-{level}",
            trigger_type="log",
            function_id="logs::on",
            config=config,
            metadata=metadata,
        )
    )
    return worker


# -- engine::log::* --------------------------------------------------------------------------------


def test_a_log_call_answers_null_and_delivers_an_otel_record(engine: Engine) -> None:
    worker = listener(engine)
    caller = engine.worker("caller")
    answer = caller.call(
        "engine::log::info",
        {"message": "obs data test", "data": {"k": 1, "nested": {"a": [1, 2]}, "s": "x"}},
    )
    assert answer is not None
    assert answer.error is None
    assert answer.result is None
    (record,) = deliveries(caller.outputs, worker)
    assert record.data == {
        "attributes": {"k": 1, "nested": {"a": [1, 2]}, "s": "x"},
        "body": "obs data test",
        "instrumentation_scope_name": "iii",
        "instrumentation_scope_version": "9.9.9",
        "observed_timestamp_unix_nano": NOW_NANOS,
        "resource": {"service.name": "iii", "service.version": "9.9.9"},
        "service_name": "unknown",
        "severity_number": 9,
        "severity_text": "INFO",
        "span_id": None,
        "timestamp_unix_nano": NOW_NANOS,
        "trace_id": None,
    }


@pytest.mark.parametrize(
    ("level", "text", "number"),
    [
        ("info", "INFO", 9),
        ("warn", "WARN", 13),
        ("error", "ERROR", 17),
        ("debug", "DEBUG", 5),
        ("trace", "TRACE", 1),
    ],
)
def test_each_level_has_its_severity(engine: Engine, level: str, text: str, number: int) -> None:
    worker = listener(engine)
    delivered = worker.send(
        InvokeFunction(
            f"engine::log::{level}",
            data={"message": "m", "trace_id": "t", "span_id": "s", "service_name": "svc"},
        )
    )
    (record,) = deliveries(delivered, worker)
    assert record.data["severity_text"] == text
    assert record.data["severity_number"] == number
    assert (record.data["trace_id"], record.data["span_id"]) == ("t", "s")
    assert record.data["service_name"] == "svc"


def test_data_that_is_not_an_object_is_dropped(engine: Engine) -> None:
    worker = listener(engine)
    (record,) = deliveries(
        worker.send(InvokeFunction("engine::log::warn", data={"message": "m", "data": 42})),
        worker,
    )
    assert record.data["attributes"] == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"data": 1}, "Failed to deserialize input for engine::log::info: missing field `message`"),
        (
            {"message": 5},
            "Failed to deserialize input for engine::log::info: invalid type: integer `5`, "
            "expected a string",
        ),
        (
            None,
            "Failed to deserialize input for engine::log::info: invalid type: null, "
            "expected struct OtelLogInput",
        ),
    ],
)
def test_bad_input_is_a_deserialization_error(engine: Engine, data: Any, message: str) -> None:
    error = engine.worker("caller").error("engine::log::info", data)
    assert (error.code, error.message) == ("deserialization_error", message)


def test_an_unknown_level_is_not_found(engine: Engine) -> None:
    error = engine.worker("caller").error("engine::log::fatal", {"message": "m"})
    assert error.code == "function_not_found"
    assert error.message == "Function engine::log::fatal not found in namespace default."


def test_at_most_logs_max_count_records_are_kept() -> None:
    engine = observed(ObservabilitySettings(logs_max_count=2))
    caller = engine.worker("caller")
    for n in range(3):
        caller.result("engine::log::info", {"message": f"m{n}"})
    health = caller.result("engine::health::check", {})
    assert health["components"]["logs"]["details"] == {"stored_logs": 2}


def test_the_resource_names_the_configured_service() -> None:
    engine = observed(
        ObservabilitySettings(
            service_name="iii-test", service_version="0.2.0", service_namespace="ns"
        )
    )
    worker = listener(engine)
    (record,) = deliveries(
        worker.send(InvokeFunction("engine::log::info", data={"message": "m"})), worker
    )
    assert record.data["resource"] == {
        "service.name": "iii-test",
        "service.namespace": "ns",
        "service.version": "0.2.0",
    }


# -- the log trigger -------------------------------------------------------------------------------


def test_a_log_binding_gets_each_record_with_its_metadata(engine: Engine) -> None:
    worker = listener(engine, metadata={"tag": "logs"})
    caller = engine.worker("caller")
    delivered = caller.send(
        InvokeFunction("engine::log::error", data={"message": "bad"}, invocation_id=None)
    )
    (record,) = deliveries(delivered, worker)
    assert record.function_id == "logs::on"
    assert record.metadata == {"tag": "logs"}
    assert record.data["body"] == "bad"
    assert "_caller_worker_id" not in record.data


@pytest.mark.parametrize(
    ("level", "gets"),
    [
        ("all", ["INFO", "WARN", "ERROR", "DEBUG", "TRACE"]),
        ("warn", ["WARN"]),
        ("trace", ["TRACE"]),
        ("INFO", []),  # matched exactly against the lower-case severity
        (7, ["INFO", "WARN", "ERROR", "DEBUG", "TRACE"]),  # not a string: all
    ],
)
def test_a_binding_level_picks_records(engine: Engine, level: Any, gets: list[str]) -> None:
    worker = listener(engine, level)
    got = []
    for name in ("info", "warn", "error", "debug", "trace"):
        outputs = worker.send(InvokeFunction(f"engine::log::{name}", data={"message": name}))
        got.extend(d.data["severity_text"] for d in deliveries(outputs, worker))
    assert got == gets


def test_records_go_to_namespace_default_whatever_the_binding_says(engine: Engine) -> None:
    worker = engine.worker("listener", namespace="orders")
    worker.send(RegisterFunction(id="logs::on"))
    worker.send(
        RegisterTrigger(
            id="log-ns",
            trigger_type="log",
            function_id="logs::on",
            config={},
            namespace="orders",
        )
    )
    assert (
        deliveries(worker.send(InvokeFunction("engine::log::info", data={"message": "m"})), worker)
        == []
    )
    owner = engine.worker("default-owner")
    owner.send(RegisterFunction(id="logs::on"))
    delivered = worker.send(InvokeFunction("engine::log::info", data={"message": "m"}))
    assert len(deliveries(delivered, owner)) == 1


def test_an_unregistered_binding_gets_nothing(engine: Engine) -> None:
    worker = listener(engine)
    worker.send(UnregisterTrigger(id="log-None", trigger_type="log"))
    outputs = worker.send(InvokeFunction("engine::log::info", data={"message": "m"}))
    assert deliveries(outputs, worker) == []


def test_disabled_observability_has_no_log_trigger_type_but_keeps_records() -> None:
    engine = observed(ObservabilitySettings(enabled=False))
    worker = listener(engine)
    # Parked silently: no refusal, no delivery.
    assert not [m for m in worker.outputs if isinstance(m, TriggerRegistrationResult)]
    outputs = worker.send(InvokeFunction("engine::log::info", data={"message": "m"}))
    assert deliveries(outputs, worker) == []
    types = worker.result("engine::triggers::list", {"include_internal": True})["triggers"]
    assert "log" not in [t["id"] for t in types]
    health = worker.result("engine::health::check", {})
    assert health["components"]["otel"] == {"details": None, "status": "disabled"}
    assert health["components"]["logs"] == {"details": {"stored_logs": 1}, "status": "healthy"}


def test_logs_disabled_keeps_and_delivers_nothing() -> None:
    engine = observed(ObservabilitySettings(logs_enabled=False))
    worker = listener(engine)
    outputs = worker.send(InvokeFunction("engine::log::info", data={"message": "m"}))
    assert deliveries(outputs, worker) == []
    health = worker.result("engine::health::check", {})
    assert health["components"]["logs"] == {"details": None, "status": "disabled"}


# -- engine::health::check, engine::baggage::* -----------------------------------------------------


def test_health_check_reports_the_engines_shape(engine: Engine) -> None:
    caller = engine.worker("caller")
    caller.result("engine::log::info", {"message": "m"})
    assert caller.result("engine::health::check", {}) == {
        "components": {
            "logs": {"details": {"stored_logs": 1}, "status": "healthy"},
            "metrics": {"details": {"stored_metrics": 0}, "status": "healthy"},
            "otel": {
                "details": {"enabled": True, "exporter": "Some(Memory)", "service_name": "iii"},
                "status": "healthy",
            },
            "spans": {"details": None, "status": "disabled"},
        },
        "status": "healthy",
        "timestamp": 1_795_971_409_500,
        "version": "9.9.9",
    }
    error = caller.error("engine::health::check", None)
    assert error.message == (
        "Failed to deserialize input for engine::health::check: invalid type: null, "
        "expected struct HealthCheckInput"
    )


def test_baggage_functions_answer_as_the_engine_does(engine: Engine) -> None:
    caller = engine.worker("caller")
    assert caller.result("engine::baggage::get", {"key": "a"}) == {"value": None}
    assert caller.result("engine::baggage::set", {"key": "a", "value": "b"}) == {
        "note": "Baggage set in new context. For propagation, use SDK-level baggage headers.",
        "success": True,
    }
    assert caller.result("engine::baggage::get_all", {}) == {"baggage": {}}
    assert caller.error("engine::baggage::get", {}).code == "deserialization_error"


def test_the_functions_are_internal_ones_of_iii_observability(engine: Engine) -> None:
    caller = engine.worker("caller")
    assert not [
        f
        for f in caller.result("engine::functions::list", {})["functions"]
        if f["function_id"].startswith("engine::log::")
    ]
    info = caller.result("engine::workers::info", {"name": "iii-observability"})
    assert [f["function_id"] for f in info["functions"]] == [
        "engine::baggage::get",
        "engine::baggage::get_all",
        "engine::baggage::set",
        "engine::health::check",
        "engine::log::debug",
        "engine::log::error",
        "engine::log::info",
        "engine::log::trace",
        "engine::log::warn",
    ]
    assert [t["id"] for t in info["trigger_types"]] == ["log"]


# -- what is left out (spec/engine.md 9) -----------------------------------------------------------


@pytest.mark.parametrize(
    "function_id",
    [
        "engine::traces::list",
        "engine::traces::tree",
        "engine::traces::clear",
        "engine::traces::group_by",
        "engine::metrics::list",
        "engine::logs::list",
        "engine::logs::clear",
        "engine::sampling::rules",
        "engine::alerts::list",
        "engine::alerts::evaluate",
        "engine::rollups::list",
        "worker::list",
        "worker::add",
    ],
)
def test_left_out_functions_are_not_found(engine: Engine, function_id: str) -> None:
    error = engine.worker("caller").error(function_id, {})
    assert error.code == "function_not_found"
    assert error.message == f"Function {function_id} not found in namespace default."


@pytest.mark.parametrize("trigger_type", ["trace", "worker"])
def test_left_out_trigger_types_park_their_bindings_silently(
    engine: Engine, trigger_type: str
) -> None:
    worker = engine.worker("binder")
    worker.send(RegisterFunction(id="svc::on"))
    outputs = worker.send(
        RegisterTrigger(id="parked", trigger_type=trigger_type, function_id="svc::on", config={})
    )
    assert messages_to(outputs, worker.id) == []
    assert engine.state.bindings["parked"].provider_key is None


# -- the config block ------------------------------------------------------------------------------


def test_the_block_applies_its_keys_and_lists_the_others() -> None:
    assert read_observability_block(None) == ObservabilitySettings()
    settings = read_observability_block(
        {
            "enabled": False,
            "logs_enabled": None,
            "logs_max_count": 0,  # the engine treats 0 as unset
            "service_name": "iii-test",
            "service_version": "0.2.0",
            "exporter": "both",
            "metrics_enabled": True,
            "alerts": [],
        }
    )
    assert settings == ObservabilitySettings(
        enabled=False,
        logs_enabled=True,
        logs_max_count=1000,
        service_name="iii-test",
        service_version="0.2.0",
        exporter="both",
        not_applied=("metrics_enabled", "alerts"),
    )


@pytest.mark.parametrize(
    ("block", "key", "problem"),
    [
        ("x", "", "expected a mapping, got a string ('x')"),
        ({"enabled": "yes"}, "enabled", "expected a boolean, got a string ('yes')"),
        (
            {"logs_max_count": -1},
            "logs_max_count",
            "expected a non-negative integer, got an integer (-1)",
        ),
        ({"service_name": 5}, "service_name", "expected a string, got an integer (5)"),
        ({"exporter": "jaeger"}, "exporter", "expected otlp, memory or both, got 'jaeger'"),
    ],
)
def test_a_bad_block_names_its_key(block: Any, key: str, problem: str) -> None:
    with pytest.raises(BlockError) as caught:
        read_observability_block(block)
    assert (caught.value.key, caught.value.problem) == (key, problem)


def test_an_unknown_key_is_refused() -> None:
    with pytest.raises(BlockError) as caught:
        read_observability_block({"otel": {}})
    assert caught.value.key == "otel"
    assert caught.value.problem.startswith("unknown key (an iii-observability block takes enabled,")
