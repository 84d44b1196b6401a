"""``iii-state`` on the sans-io core: every ``state::*`` function, its errors, the ``state``
trigger type and the ``iii-state`` config block (spec/engine.md 5.1; the transcripts follow
spec/engine-observed.md 2)."""

from __future__ import annotations

from typing import Any

import pytest

from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from iii_trio.testing._engine._builtins import BlockError
from iii_trio.testing._engine._state_worker import StateSettings, StateWorker, read_state_block

from .engine_driver import Engine, Worker, messages_to

S = "obs-st"


@pytest.fixture
def engine() -> Engine:
    return Engine(plugins=[StateWorker()])


@pytest.fixture
def worker(engine: Engine) -> Worker:
    return engine.worker("writer")


def test_the_functions_answer_as_the_engine_does(worker: Worker) -> None:
    def call(function_id: str, data: Any) -> Any:
        return worker.result(function_id, data)

    assert call("state::get", {"scope": S, "key": "k1"}) is None
    assert call("state::set", {"scope": S, "key": "k1", "value": {"v": 1}}) == {
        "old_value": None,
        "new_value": {"v": 1},
    }
    assert call("state::set", {"scope": S, "key": "k1", "value": {"v": 2}}) == {
        "old_value": {"v": 1},
        "new_value": {"v": 2},
    }
    assert call("state::set", {"scope": S, "key": "k2", "data": "via-data-alias"}) == {
        "old_value": None,
        "new_value": "via-data-alias",
    }
    assert call("state::set", {"scope": S, "key": "k4", "value": None}) == {
        "old_value": None,
        "new_value": None,
    }
    assert call("state::get", {"scope": S, "key": "k1"}) == {"v": 2}
    assert call("state::get", {"scope": S, "key": "k4"}) is None
    assert call("state::list", {"scope": S}) == [{"v": 2}, "via-data-alias", None]
    assert call("state::list", {"scope": "unknown"}) == []
    assert call("state::delete", {"scope": S, "key": "k1"}) == {"v": 2}
    assert call("state::delete", {"scope": S, "key": "k1"}) is None
    assert call("state::list", {"scope": S}) == ["via-data-alias", None]


def test_an_overwrite_keeps_the_keys_place_in_the_list(worker: Worker) -> None:
    for key, value in (("a", 1), ("b", 2), ("a", 3)):
        worker.result("state::set", {"scope": S, "key": key, "value": value})
    assert worker.result("state::list", {"scope": S}) == [3, 2]


def test_list_groups_is_sorted_and_keeps_emptied_scopes(worker: Worker) -> None:
    assert worker.result("state::list_groups", {}) == {"groups": []}
    worker.result("state::set", {"scope": "zeta", "key": "k", "value": 1})
    worker.result("state::set", {"scope": "alpha", "key": "k", "value": 1})
    worker.result("state::update", {"scope": "mid", "key": "k", "ops": []})
    worker.result("state::delete", {"scope": "alpha", "key": "k"})
    worker.result("state::delete", {"scope": "never", "key": "k"})
    worker.result("state::get", {"scope": "read-only", "key": "k"})
    assert worker.result("state::list_groups", {}) == {"groups": ["alpha", "mid", "zeta"]}
    assert worker.result("state::list", {"scope": "alpha"}) == []


@pytest.mark.parametrize(
    ("function_id", "data", "detail"),
    [
        ("state::set", {"scope": S, "key": "k3"}, "missing field `value`"),
        ("state::set", {"scope": S, "key": "k", "value": 1, "data": 2}, "duplicate field `value`"),
        ("state::set", {"key": "k", "value": 1}, "missing field `scope`"),
        ("state::get", {"scope": S}, "missing field `key`"),
        ("state::get", {"scope": S, "key": 5}, "invalid type: integer `5`, expected a string"),
        ("state::list", {}, "missing field `scope`"),
        ("state::delete", {"scope": None, "key": "k"}, "invalid type: null, expected a string"),
        ("state::list_groups", None, "invalid type: null, expected struct StateListGroupsInput"),
        ("state::update", [], "invalid type: sequence, expected struct StateUpdateInput"),
    ],
)
def test_bad_input_is_a_deserialization_error(
    worker: Worker, function_id: str, data: Any, detail: str
) -> None:
    message = f"Failed to deserialize input for {function_id}: {detail}"
    assert worker.error(function_id, data) == ErrorBody("deserialization_error", message)


def test_the_callers_worker_id_is_ignored(worker: Worker) -> None:
    # The engine adds _caller_worker_id to every object payload a worker sends.
    worker.result("state::set", {"scope": S, "key": "k", "value": 1})
    assert worker.result("state::list", {"scope": S}) == [1]


def test_max_value_bytes_refuses_larger_values_as_compact_json() -> None:
    engine = Engine(plugins=[StateWorker(StateSettings(max_value_bytes=9))])
    worker = engine.worker("writer")
    assert worker.result("state::set", {"scope": S, "key": "k", "value": {"ab": 12}})  # 9 bytes
    failed = worker.error("state::set", {"scope": S, "key": "k", "value": {"ab": 123}})
    assert failed == ErrorBody(
        "VALUE_TOO_LARGE",
        "value of 10 bytes exceeds the configured max_value_bytes limit of 9",
    )
    assert worker.result("state::get", {"scope": S, "key": "k"}) == {"ab": 12}
    # Incremental updates are not size-guarded, as in the engine.
    ops = [{"type": "set", "path": "long", "value": "x" * 50}]
    assert worker.result("state::update", {"scope": S, "key": "k", "ops": ops})


# --- the state trigger ------------------------------------------------------------------------


def subscriber(engine: Engine, config: Any, *, binding: str = "b1", **fields: Any) -> Worker:
    listener = engine.worker(f"listener-{binding}")
    listener.send(RegisterFunction(id=f"on::{binding}"))
    outputs = listener.send(
        RegisterTrigger(
            id=binding, trigger_type="state", function_id=f"on::{binding}", config=config, **fields
        )
    )
    assert messages_to(outputs, listener.id) == []
    return listener


def deliveries(worker: Worker, outputs: list[Any]) -> list[InvokeFunction]:
    return [m for m in messages_to(outputs, worker.id) if isinstance(m, InvokeFunction)]


def answer(
    worker: Worker, delivery: InvokeFunction, *, error: ErrorBody | None = None
) -> list[Any]:
    assert delivery.invocation_id is not None
    return worker.send(
        InvocationResult(delivery.invocation_id, delivery.function_id, result=None, error=error)
    )


def test_each_change_fires_with_the_engines_payload_and_the_bindings_metadata(
    engine: Engine, worker: Worker
) -> None:
    listener = subscriber(engine, {"scope": S}, metadata={"tm": 1})
    seen = []
    for function_id, data in [
        ("state::set", {"scope": S, "key": "k1", "value": {"v": 1}}),
        ("state::set", {"scope": S, "key": "k1", "value": {"v": 2}}),
        ("state::set", {"scope": S, "key": "k4", "value": None}),
        ("state::set", {"scope": S, "key": "k4", "value": 0}),
        ("state::update", {"scope": S, "key": "k1", "ops": [{"type": "bogus"}]}),
        ("state::update", {"scope": S, "key": "k1", "ops": []}),
        ("state::delete", {"scope": S, "key": "k1"}),
        ("state::delete", {"scope": S, "key": "k1"}),
        ("state::set", {"scope": "elsewhere", "key": "k1", "value": 1}),
    ]:
        outputs = worker.send(InvokeFunction(function_id, data=data, invocation_id=None))
        for delivery in deliveries(listener, outputs):
            assert (delivery.function_id, delivery.metadata) == ("on::b1", {"tm": 1})
            seen.append(delivery.data)
            answer(listener, delivery)

    def event(kind: str, key: str, old: Any, new: Any) -> dict[str, Any]:
        return {
            "type": "state",
            "event_type": f"state:{kind}",
            "scope": S,
            "key": key,
            "old_value": old,
            "new_value": new,
        }

    assert seen == [
        event("created", "k1", None, {"v": 1}),
        event("updated", "k1", {"v": 1}, {"v": 2}),
        event("created", "k4", None, None),
        # A stored null counts as no value: this is a creation too.
        event("created", "k4", None, 0),
        event("updated", "k1", {"v": 2}, {"v": 2}),
        event("deleted", "k1", {"v": 2}, None),
        event("deleted", "k1", None, None),
    ]


def test_the_writer_is_answered_before_any_binding_is_called(
    engine: Engine, worker: Worker
) -> None:
    listener = subscriber(engine, {})
    outputs = worker.send(
        InvokeFunction("state::set", data={"scope": S, "key": "k", "value": 1}, invocation_id=CALL)
    )
    kinds = [type(o.message) for o in outputs if o.connection_id in (worker.id, listener.id)]
    assert kinds == [InvocationResult, InvokeFunction]


CALL = "0f0e0d0c-0b0a-4999-8888-777766665555"


def test_scope_and_key_filter_and_matching_bindings_are_called_one_after_the_other(
    engine: Engine, worker: Worker
) -> None:
    everything = subscriber(engine, {}, binding="all")
    only_k2 = subscriber(engine, {"scope": S, "key": "k2"}, binding="k2")
    other_scope = subscriber(engine, {"scope": "other"}, binding="other")
    outputs = worker.send(
        InvokeFunction("state::set", data={"scope": S, "key": "k2", "value": 1}, invocation_id=CALL)
    )
    first = deliveries(everything, outputs)
    assert len(first) == 1
    assert deliveries(only_k2, outputs) == []
    # The next binding is called once the first has answered, even with an error.
    failure = ErrorBody("invocation_failed", "boom")
    second = deliveries(only_k2, answer(everything, first[0], error=failure))
    assert len(second) == 1
    assert answer(only_k2, second[0]) == []
    outputs = worker.send(
        InvokeFunction("state::set", data={"scope": S, "key": "k3", "value": 1}, invocation_id=None)
    )
    assert len(deliveries(everything, outputs)) == 1
    assert deliveries(only_k2, outputs) == deliveries(other_scope, outputs) == []


def test_a_condition_gates_a_binding_and_the_next_one_still_runs(
    engine: Engine, worker: Worker
) -> None:
    gated = engine.worker("gated")
    gated.send(RegisterFunction(id="on::gated"))
    gated.send(RegisterFunction(id="cond::allow"))
    gated.send(
        RegisterTrigger(
            id="g",
            trigger_type="state",
            function_id="on::gated",
            config={"condition_function_id": "cond::allow"},
        )
    )
    after = subscriber(engine, {}, binding="after")
    for verdict in (False, "error", True):
        outputs = worker.send(
            InvokeFunction(
                "state::set", data={"scope": S, "key": "k", "value": 1}, invocation_id=None
            )
        )
        (asked,) = deliveries(gated, outputs)
        assert asked.function_id == "cond::allow"
        assert asked.metadata is None
        assert asked.data == {
            "type": "state",
            "event_type": "state:created" if verdict is False else "state:updated",
            "scope": S,
            "key": "k",
            "old_value": None if verdict is False else 1,
            "new_value": 1,
        }
        assert asked.invocation_id is not None
        if verdict == "error":
            decided = answer(gated, asked, error=ErrorBody("invocation_failed", "no"))
        else:
            decided = gated.send(
                InvocationResult(asked.invocation_id, "cond::allow", result=verdict)
            )
        handled = deliveries(gated, decided)
        assert [d.function_id for d in handled] == (["on::gated"] if verdict is True else [])
        if handled:
            decided = answer(gated, handled[0])
        (next_one,) = deliveries(after, decided)
        answer(after, next_one)


def test_a_binding_whose_function_is_gone_is_skipped(engine: Engine, worker: Worker) -> None:
    orphan = engine.worker("orphan")
    orphan.send(
        RegisterTrigger(id="o", trigger_type="state", function_id="nobody::home", config={})
    )
    after = subscriber(engine, {}, binding="after")
    outputs = worker.send(
        InvokeFunction("state::set", data={"scope": S, "key": "k", "value": 1}, invocation_id=None)
    )
    assert len(deliveries(after, outputs)) == 1


def test_unregistered_bindings_stop_firing(engine: Engine, worker: Worker) -> None:
    listener = subscriber(engine, {})
    listener.send(UnregisterTrigger(id="b1", trigger_type="state"))
    outputs = worker.send(
        InvokeFunction("state::set", data={"scope": S, "key": "k", "value": 1}, invocation_id=None)
    )
    assert deliveries(listener, outputs) == []


def test_triggers_enabled_false_turns_every_delivery_off() -> None:
    engine = Engine(plugins=[StateWorker(StateSettings(triggers_enabled=False))])
    listener = subscriber(engine, {})
    worker = engine.worker("writer")
    for function_id, data in [
        ("state::set", {"scope": S, "key": "k", "value": 1}),
        ("state::update", {"scope": S, "key": "k", "ops": []}),
        ("state::delete", {"scope": S, "key": "k"}),
    ]:
        outputs = worker.send(InvokeFunction(function_id, data=data, invocation_id=None))
        assert deliveries(listener, outputs) == []


@pytest.mark.parametrize(
    ("config", "detail"),
    [
        ({"scope": 5}, "invalid type: integer `5`, expected a string"),
        ({"key": ["k"]}, "invalid type: sequence, expected a string"),
        ({"condition_function_id": 1}, "invalid type: integer `1`, expected a string"),
        (None, "invalid type: null, expected struct StateTriggerConfig"),
        ("users", 'invalid type: string "users", expected struct StateTriggerConfig'),
    ],
)
def test_a_bad_config_is_refused(engine: Engine, config: Any, detail: str) -> None:
    listener = engine.worker("listener")
    outputs = listener.send(
        RegisterTrigger(id="b1", trigger_type="state", function_id="on::x", config=config)
    )
    assert messages_to(outputs, listener.id) == [
        TriggerRegistrationResult(
            id="b1",
            trigger_type="state",
            function_id="on::x",
            error=ErrorBody(
                "trigger_registration_failed", f"Failed to parse trigger config: {detail}"
            ),
        )
    ]


# --- the iii-state block --------------------------------------------------------------------------


def test_the_block_defaults_to_the_engines_settings() -> None:
    assert read_state_block(None) == StateSettings(True, None, "kv")
    assert read_state_block({}) == StateSettings()
    assert read_state_block(
        {
            "adapter": {"name": "kv", "config": {"store_method": "file_based"}},
            "triggers_enabled": False,
            "max_value_bytes": 1024,
            "save_interval_ms": 5000,
        }
    ) == StateSettings(triggers_enabled=False, max_value_bytes=1024)
    assert read_state_block({"max_value_bytes": 0}).max_value_bytes is None
    assert read_state_block({"adapter": {"name": "redis"}}).adapter == "redis"
    assert read_state_block({"triggers_enabled": None}).triggers_enabled is True


@pytest.mark.parametrize(
    ("block", "key", "problem"),
    [
        (
            {"triggers_enabledd": True},
            "triggers_enabledd",
            "unknown key (an iii-state block takes adapter, triggers_enabled, max_value_bytes, "
            "save_interval_ms)",
        ),
        ([], "", "expected a mapping, got a list"),
        (
            {"triggers_enabled": "yes"},
            "triggers_enabled",
            "expected a boolean, got a string ('yes')",
        ),
        (
            {"max_value_bytes": -1},
            "max_value_bytes",
            "expected a non-negative integer, got an integer (-1)",
        ),
        (
            {"max_value_bytes": True},
            "max_value_bytes",
            "expected a non-negative integer, got a boolean (True)",
        ),
        (
            {"save_interval_ms": 1.5},
            "save_interval_ms",
            "expected a non-negative integer, got a number (1.5)",
        ),
        ({"adapter": "kv"}, "adapter", "expected a mapping with a `name`, got a string ('kv')"),
        ({"adapter": {"config": {}}}, "adapter.name", "expected a string, got null"),
        (
            {"adapter": {"name": "kv", "url": "x"}},
            "adapter.url",
            "unknown key (an adapter takes name and config)",
        ),
        (
            {"adapter": {"name": "postgres"}},
            "adapter.name",
            "unknown adapter 'postgres' (the engine has kv, redis, bridge)",
        ),
    ],
)
def test_a_bad_block_is_refused_naming_the_key(block: Any, key: str, problem: str) -> None:
    with pytest.raises(BlockError) as refused:
        read_state_block(block)
    assert (refused.value.key, refused.value.problem) == (key, problem)


def test_many_bindings_done_at_once_do_not_grow_the_stack(engine: Engine, worker: Worker) -> None:
    orphans = engine.worker("orphans")
    for n in range(3000):
        orphans.send(
            RegisterTrigger(id=f"o{n}", trigger_type="state", function_id="gone::fn", config={})
        )
    after = subscriber(engine, {}, binding="after")
    outputs = worker.send(
        InvokeFunction("state::set", data={"scope": S, "key": "k", "value": 1}, invocation_id=None)
    )
    assert len(deliveries(after, outputs)) == 1


def test_a_config_file_error_names_the_file_and_the_key_path() -> None:
    from iii_trio.testing import ConfigError
    from iii_trio.testing._config import parse_config

    text = "workers:\n  - name: iii-stream\n  - name: iii-state\n    config: {adapter: {name: x}}\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="config.yaml", environ={}, engine_version="1")
    assert str(refused.value) == (
        "config.yaml: workers[1].config.adapter.name: unknown adapter 'x' "
        "(the engine has kv, redis, bridge)"
    )
    config = parse_config(
        "workers:\n  - name: iii-state\n    config: {max_value_bytes: 10}\n",
        environ={},
        engine_version="1",
    )
    assert config.builtin_settings == {"iii-state": StateSettings(max_value_bytes=10)}
