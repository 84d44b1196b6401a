"""``iii-stream`` on the sans-io core: every ``stream::*`` function, custom stream delegation,
the ``stream`` trigger type and the ``iii-stream`` config block (spec/engine.md 5.2; the
transcripts follow spec/engine-observed.md 4)."""

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
)
from iii_trio.testing._engine._builtins import BlockError
from iii_trio.testing._engine._stream_worker import (
    StreamSettings,
    StreamWorker,
    read_stream_block,
)

from .engine_driver import Engine, Worker, invocation_to, messages_to

SN = "obs-sn"
#: engine_driver's clock (100 s) with no offset to the wall clock, in milliseconds.
NOW_MS = 100_000
CALL = "0f0e0d0c-0b0a-4999-8888-777766665555"


@pytest.fixture
def engine() -> Engine:
    return Engine(plugins=[StreamWorker()])


@pytest.fixture
def worker(engine: Engine) -> Worker:
    return engine.worker("writer")


def item(group: str, item_id: str, **fields: Any) -> dict[str, Any]:
    return {"stream_name": SN, "group_id": group, "item_id": item_id, **fields}


def test_the_functions_answer_as_the_engine_does(worker: Worker) -> None:
    assert worker.result("stream::get", item("g1", "i1")) is None
    assert worker.result("stream::set", item("g1", "i1", data={"v": 1})) == {
        "old_value": None,
        "new_value": {"v": 1},
    }
    assert worker.result("stream::set", item("g1", "i1", data={"v": 2})) == {
        "old_value": {"v": 1},
        "new_value": {"v": 2},
    }
    assert worker.result("stream::set", item("g2", "j1", data="x")) == {
        "old_value": None,
        "new_value": "x",
    }
    assert worker.result("stream::get", item("g1", "i1")) == {"v": 2}
    assert worker.result("stream::list", {"stream_name": SN, "group_id": "g1"}) == [{"v": 2}]
    assert worker.result("stream::list", {"stream_name": SN, "group_id": "nope"}) == []
    assert worker.result("stream::list_groups", {"stream_name": SN}) == ["g1", "g2"]
    assert worker.result("stream::list_groups", {"stream_name": "unknown"}) == []
    ops = [{"type": "set", "path": "a", "value": 1}]
    assert worker.result("stream::update", item("g1", "new", ops=ops)) == {
        "old_value": None,
        "new_value": {"a": 1},
    }
    ops = [
        {"type": "increment", "path": "v", "by": 10},
        {"type": "append", "path": "v", "value": 1},
    ]
    updated = worker.result("stream::update", item("g1", "i1", ops=ops))
    assert (updated["old_value"], updated["new_value"]) == ({"v": 2}, {"v": 12})
    assert [e["code"] for e in updated["errors"]] == ["append.type_mismatch"]
    assert worker.result("stream::delete", item("g1", "i1")) == {"old_value": {"v": 12}}
    assert worker.result("stream::delete", item("g1", "i1")) == {"old_value": None}
    send = {"stream_name": SN, "group_id": "g1", "type": "ping", "data": {"p": 1}, "id": "e"}
    assert worker.result("stream::send", send) is None


def test_list_all_sorts_streams_and_groups_and_keeps_emptied_groups(worker: Worker) -> None:
    assert worker.result("stream::list_all", {}) == {"stream": [], "count": 0}
    for stream, group in (("b", "g2"), ("b", "g1"), ("a", "x")):
        worker.result(
            "stream::set", {"stream_name": stream, "group_id": group, "item_id": "i", "data": 1}
        )
    worker.result("stream::delete", {"stream_name": "a", "group_id": "x", "item_id": "i"})
    assert worker.result("stream::list_all", {}) == {
        "stream": [{"id": "a", "groups": ["x"]}, {"id": "b", "groups": ["g1", "g2"]}],
        "count": 2,
    }
    assert worker.result("stream::list_groups", {"stream_name": "a"}) == ["x"]


def test_stream_names_are_read_from_the_stores_keys_as_the_engine_reads_them(
    worker: Worker,
) -> None:
    # The engine keys a group "stream:<stream>:<group>": a colon in a name leaks across.
    worker.result("stream::set", {"stream_name": "a:b", "group_id": "g", "item_id": "i", "data": 1})
    assert worker.result("stream::list_groups", {"stream_name": "a"}) == ["b:g"]
    assert worker.result("stream::list_all", {})["stream"] == [{"id": "a", "groups": ["b"]}]


@pytest.mark.parametrize(
    ("function_id", "data", "detail"),
    [
        ("stream::set", item("g1", "i2", value=5), "missing field `data`"),
        (
            "stream::set",
            {"stream_name": SN, "group_id": "g1", "data": 1},
            "missing field `item_id`",
        ),
        (
            "stream::get",
            {"stream_name": SN, "group_id": 1, "item_id": "i"},
            "invalid type: integer `1`, expected a string",
        ),
        ("stream::list_groups", {}, "missing field `stream_name`"),
        ("stream::send", {"stream_name": SN, "group_id": "g", "data": 1}, "missing field `type`"),
        ("stream::send", {"stream_name": SN, "group_id": "g", "type": "t"}, "missing field `data`"),
        (
            "stream::update",
            item("g", "i", ops=[{"type": "bogus"}]),
            "unknown variant `bogus`, expected one of `set`, `merge`, `increment`, "
            "`decrement`, `append`, `remove`",
        ),
        ("stream::list_all", None, "invalid type: null, expected struct StreamListAllInput"),
    ],
)
def test_bad_input_is_a_deserialization_error(
    worker: Worker, function_id: str, data: Any, detail: str
) -> None:
    message = f"Failed to deserialize input for {function_id}: {detail}"
    assert worker.error(function_id, data) == ErrorBody("deserialization_error", message)


# --- the stream trigger -----------------------------------------------------------------------


def subscriber(engine: Engine, config: Any, *, binding: str = "b1", **fields: Any) -> Worker:
    listener = engine.worker(f"listener-{binding}")
    listener.send(RegisterFunction(id=f"on::{binding}"))
    outputs = listener.send(
        RegisterTrigger(
            id=binding, trigger_type="stream", function_id=f"on::{binding}", config=config, **fields
        )
    )
    assert messages_to(outputs, listener.id) == []
    return listener


def deliveries(listeners: dict[str, Worker], outputs: list[Any]) -> dict[str, list[InvokeFunction]]:
    """Every delivery to ``listeners`` that ``outputs`` start, each answered in turn (which
    lets the next binding's delivery go out), by listener."""
    found: dict[str, list[InvokeFunction]] = {name: [] for name in listeners}
    pending = list(outputs)
    while pending:
        output = pending.pop(0)
        for name, listener in listeners.items():
            for message in messages_to([output], listener.id):
                if isinstance(message, InvokeFunction):
                    found[name].append(message)
                    assert message.invocation_id is not None
                    reply = InvocationResult(message.invocation_id, message.function_id)
                    pending.extend(listener.send(reply))
    return found


def received(listener: Worker, outputs: list[Any]) -> list[InvokeFunction]:
    return deliveries({"one": listener}, outputs)["one"]


def test_changes_fire_with_the_engines_wrapper_message(engine: Engine, worker: Worker) -> None:
    everything = subscriber(engine, {"stream_name": SN}, binding="all", metadata={"tm": "all"})
    only_g2 = subscriber(
        engine,
        {"stream_name": SN, "group_id": "g2", "item_id": ""},
        binding="g2",
        metadata={"tm": "g2"},
    )
    only_i1 = subscriber(engine, {"stream_name": SN, "item_id": "i1"}, binding="i1")
    other = subscriber(engine, {"stream_name": "other"}, binding="other")
    seen: dict[str, list[Any]] = {"all": [], "g2": [], "i1": [], "other": []}
    for function_id, data in [
        ("stream::set", item("g1", "i1", data={"v": 1})),
        ("stream::set", item("g1", "i1", data={"v": 2})),
        ("stream::set", item("g2", "j1", data="x")),
        ("stream::update", item("g1", "i1", ops=[{"type": "increment", "path": "v", "by": 10}])),
        ("stream::update", item("g1", "new", ops=[{"type": "set", "path": "a", "value": 1}])),
        ("stream::delete", item("g1", "i1")),
        ("stream::delete", item("g1", "i1")),
        (
            "stream::send",
            {"stream_name": SN, "group_id": "g1", "type": "ping", "data": {"p": 1}, "id": "i1"},
        ),
        ("stream::send", {"stream_name": SN, "group_id": "g2", "type": "ping2", "data": 2}),
        ("stream::set", item("g1", "bad", value=1)),
    ]:
        outputs = worker.send(InvokeFunction(function_id, data=data, invocation_id=None))
        listeners = {"all": everything, "g2": only_g2, "i1": only_i1, "other": other}
        for name, found in deliveries(listeners, outputs).items():
            seen[name].extend((delivery.data, delivery.metadata) for delivery in found)

    def message(group: str, item_id: str | None, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "stream",
            "timestamp": NOW_MS,
            "streamName": SN,
            "groupId": group,
            "id": item_id,
            "event": event,
        }

    expected = [
        message("g1", "i1", {"type": "create", "data": {"v": 1}}),
        message("g1", "i1", {"type": "update", "data": {"v": 2}}),
        message("g2", "j1", {"type": "create", "data": "x"}),
        message("g1", "i1", {"type": "update", "data": {"v": 12}}),
        message("g1", "new", {"type": "create", "data": {"a": 1}}),
        message("g1", "i1", {"type": "delete", "data": {"v": 12}}),
        message("g1", "i1", {"type": "event", "event": {"type": "ping", "data": {"p": 1}}}),
        message("g2", None, {"type": "event", "event": {"type": "ping2", "data": 2}}),
    ]
    assert seen["all"] == [(m, {"tm": "all"}) for m in expected]
    assert seen["g2"] == [(m, {"tm": "g2"}) for m in expected if m["groupId"] == "g2"]
    assert [m for m, _ in seen["i1"]] == [m for m in expected if m["id"] == "i1"]
    assert seen["other"] == []


def test_the_timestamp_is_the_wall_clock_of_the_write(engine: Engine, worker: Worker) -> None:
    listener = subscriber(engine, {"stream_name": SN})
    engine.advance(2.5)
    outputs = worker.send(
        InvokeFunction("stream::set", data=item("g", "i", data=1), invocation_id=None)
    )
    (delivery,) = received(listener, outputs)
    assert delivery.data["timestamp"] == NOW_MS + 2500


def test_the_writer_is_answered_before_any_binding_is_called(
    engine: Engine, worker: Worker
) -> None:
    listener = subscriber(engine, {"stream_name": SN})
    outputs = worker.send(
        InvokeFunction("stream::set", data=item("g", "i", data=1), invocation_id=CALL)
    )
    kinds = [type(o.message) for o in outputs if o.connection_id in (worker.id, listener.id)]
    assert kinds == [InvocationResult, InvokeFunction]


def test_a_condition_gates_a_stream_binding(engine: Engine, worker: Worker) -> None:
    gated = engine.worker("gated")
    gated.send(RegisterFunction(id="on::gated"))
    gated.send(RegisterFunction(id="cond::no"))
    gated.send(
        RegisterTrigger(
            id="g",
            trigger_type="stream",
            function_id="on::gated",
            config={"stream_name": SN, "condition_function_id": "cond::no"},
        )
    )
    outputs = worker.send(
        InvokeFunction("stream::set", data=item("g", "i", data=1), invocation_id=None)
    )
    asked = invocation_to(outputs, gated.id)
    assert (asked.function_id, asked.metadata) == ("cond::no", None)
    assert asked.data["event"] == {"type": "create", "data": 1}
    assert asked.invocation_id is not None
    assert gated.send(InvocationResult(asked.invocation_id, "cond::no", result=False)) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"group_id": "g"}, "Failed to deserialize stream trigger: missing field `stream_name`"),
        (
            {"stream_name": None},
            "Failed to deserialize stream trigger: missing field `stream_name`",
        ),
        (None, "Failed to deserialize stream trigger"),
        ({"stream_name": 5}, "Failed to deserialize stream trigger"),
        ({"stream_name": SN, "item_id": []}, "Failed to deserialize stream trigger"),
    ],
)
def test_a_bad_stream_config_is_refused(engine: Engine, config: Any, message: str) -> None:
    listener = engine.worker("listener")
    outputs = listener.send(
        RegisterTrigger(id="b1", trigger_type="stream", function_id="on::x", config=config)
    )
    assert messages_to(outputs, listener.id) == [
        TriggerRegistrationResult(
            id="b1",
            trigger_type="stream",
            function_id="on::x",
            error=ErrorBody("trigger_registration_failed", message),
        )
    ]


def test_join_and_leave_bindings_are_accepted_and_never_fire(
    engine: Engine, worker: Worker
) -> None:
    listener = engine.worker("listener")
    listener.send(RegisterFunction(id="on::join"))
    for type_id in ("stream:join", "stream:leave"):
        outputs = listener.send(
            RegisterTrigger(id=type_id, trigger_type=type_id, function_id="on::join", config=None)
        )
        assert messages_to(outputs, listener.id) == []
    types = {t["id"] for t in worker.result("engine::triggers::list", {})["triggers"]}
    assert {"stream", "stream:join", "stream:leave"} <= types
    outputs = worker.send(
        InvokeFunction("stream::set", data=item("g", "i", data=1), invocation_id=None)
    )
    assert messages_to(outputs, listener.id) == []


# --- custom streams ------------------------------------------------------------------------------


@pytest.fixture
def custom(engine: Engine) -> Worker:
    backend = engine.worker("todo-backend")
    for operation in ("get", "set", "delete", "list", "list_groups", "update"):
        backend.send(RegisterFunction(id=f"stream::{operation}(todo)"))
    return backend


def todo(**fields: Any) -> dict[str, Any]:
    return {"stream_name": "todo", **fields}


def delegated(
    worker: Worker,
    backend: Worker,
    function_id: str,
    data: Any,
    *,
    result: Any = None,
    error: ErrorBody | None = None,
) -> tuple[InvokeFunction, InvocationResult, list[Any]]:
    """Call ``function_id``; the backend answers; returns what it was asked, the caller's
    answer, and everything that answer caused."""
    outputs = worker.send(InvokeFunction(function_id, data=data, invocation_id=CALL))
    assert messages_to(outputs, worker.id) == []
    asked = invocation_to(outputs, backend.id)
    assert asked.invocation_id is not None
    assert asked.metadata is None
    outputs = backend.send(
        InvocationResult(asked.invocation_id, asked.function_id, result=result, error=error)
    )
    (answered,) = [m for m in messages_to(outputs, worker.id) if isinstance(m, InvocationResult)]
    return asked, answered, outputs


def test_reads_go_to_the_custom_functions_and_come_back_unchanged(
    worker: Worker, custom: Worker
) -> None:
    asked, answered, _ = delegated(
        worker, custom, "stream::get", todo(group_id="g", item_id="i"), result={"t": 1}
    )
    assert (asked.function_id, asked.data) == ("stream::get(todo)", todo(group_id="g", item_id="i"))
    assert answered.result == {"t": 1}
    asked, answered, _ = delegated(
        worker, custom, "stream::list", todo(group_id="g"), result="anything"
    )
    assert (asked.function_id, asked.data) == ("stream::list(todo)", todo(group_id="g"))
    assert answered.result == "anything"
    asked, answered, _ = delegated(worker, custom, "stream::list_groups", todo(), result=["g"])
    assert (asked.function_id, asked.data, answered.result) == (
        "stream::list_groups(todo)",
        todo(),
        ["g"],
    )
    failure = ErrorBody("NOPE", "no such todo", "trace")
    _, answered, _ = delegated(
        worker, custom, "stream::get", todo(group_id="g", item_id="i"), error=failure
    )
    assert answered.error == failure
    # Other streams still use the store.
    assert (
        worker.result("stream::get", {"stream_name": "other", "group_id": "g", "item_id": "i"})
        is None
    )


def test_a_custom_set_is_read_as_the_engine_reads_it_and_fires(
    engine: Engine, worker: Worker, custom: Worker
) -> None:
    listener = subscriber(engine, {"stream_name": "todo"})
    data = todo(group_id="g", item_id="i", data={"t": 1}, extra="dropped")
    asked, answered, outputs = delegated(
        worker, custom, "stream::set", data, result={"new_value": {"t": 1}, "more": "dropped"}
    )
    assert asked.data == todo(group_id="g", item_id="i", data={"t": 1})
    assert answered.result == {"old_value": None, "new_value": {"t": 1}}
    (event,) = received(listener, outputs)
    assert event.data["event"] == {"type": "create", "data": {"t": 1}}
    _, answered, outputs = delegated(
        worker, custom, "stream::set", data, result={"old_value": {"t": 0}, "new_value": {"t": 1}}
    )
    (event,) = received(listener, outputs)
    assert event.data["event"] == {"type": "update", "data": {"t": 1}}
    # Nothing was stored by the engine itself.
    custom.send(RegisterFunction(id="unrelated"))
    assert worker.result("stream::list_all", {}) == {"stream": [], "count": 0}


@pytest.mark.parametrize(
    ("function_id", "result", "error", "expected"),
    [
        (
            "stream::set",
            None,
            None,
            ErrorBody("STREAM_SET_ERROR", "Failed to set value: Function returned no result"),
        ),
        (
            "stream::set",
            None,
            ErrorBody("E", 'say "hi"\n'),
            ErrorBody(
                "STREAM_SET_ERROR",
                'Failed to set value: Failed to invoke function: ErrorBody { code: "E", '
                'message: "say \\"hi\\"\\n", stacktrace: None }',
            ),
        ),
        (
            "stream::set",
            5,
            None,
            ErrorBody(
                "JSON_ERROR",
                "Failed to convert result to value: invalid type: integer `5`, "
                "expected struct StreamSetResult",
            ),
        ),
        (
            "stream::set",
            {"old_value": 1},
            None,
            ErrorBody("JSON_ERROR", "Failed to convert result to value: missing field `new_value`"),
        ),
        (
            "stream::delete",
            None,
            None,
            ErrorBody("STREAM_DELETE_ERROR", "Failed to delete value: Function returned no result"),
        ),
        (
            "stream::delete",
            "x",
            None,
            ErrorBody(
                "JSON_ERROR",
                'Failed to convert result to value: invalid type: string "x", '
                "expected struct StreamDeleteResult",
            ),
        ),
        (
            "stream::update",
            None,
            ErrorBody("E", "m", "at line 1"),
            ErrorBody(
                "STREAM_UPDATE_ERROR",
                'Failed to update value: Failed to invoke function: ErrorBody { code: "E", '
                'message: "m", stacktrace: Some("at line 1") }',
            ),
        ),
        (
            "stream::update",
            {"new_value": 1, "errors": [{"op_index": -1, "code": "c", "message": "m"}]},
            None,
            ErrorBody(
                "JSON_ERROR",
                "Failed to convert result to value: invalid value: integer `-1`, expected usize",
            ),
        ),
    ],
)
def test_a_custom_write_that_fails_or_answers_badly_is_an_error(
    engine: Engine,
    worker: Worker,
    custom: Worker,
    function_id: str,
    result: Any,
    error: ErrorBody | None,
    expected: ErrorBody,
) -> None:
    listener = subscriber(engine, {"stream_name": "todo"})
    data = todo(group_id="g", item_id="i", data=1, ops=[])
    _, answered, outputs = delegated(worker, custom, function_id, data, result=result, error=error)
    assert answered.error == expected
    assert received(listener, outputs) == []


def test_a_custom_delete_fires_only_when_it_deleted_something(
    engine: Engine, worker: Worker, custom: Worker
) -> None:
    listener = subscriber(engine, {"stream_name": "todo"})
    data = todo(group_id="g", item_id="i")
    asked, answered, outputs = delegated(worker, custom, "stream::delete", data, result={})
    assert (asked.function_id, asked.data) == ("stream::delete(todo)", data)
    assert answered.result == {"old_value": None}
    assert received(listener, outputs) == []
    _, answered, outputs = delegated(
        worker, custom, "stream::delete", data, result={"old_value": {"t": 1}}
    )
    assert answered.result == {"old_value": {"t": 1}}
    (event,) = received(listener, outputs)
    assert event.data["event"] == {"type": "delete", "data": {"t": 1}}


def test_a_custom_update_gets_the_operations_as_decoded(worker: Worker, custom: Worker) -> None:
    ops = [
        {"type": "merge", "value": {"a": 1}},
        {"type": "append", "path": ["x", "y"], "value": 2},
        {"type": "set", "path": "s"},
        {"type": "increment", "path": "n", "by": 1, "ignored": True},
        {"type": "remove", "path": "r"},
    ]
    result = {
        "old_value": None,
        "new_value": {"a": 1},
        "errors": [{"op_index": 0, "code": "c", "message": "m"}],
    }
    asked, answered, _ = delegated(
        worker, custom, "stream::update", todo(group_id="g", item_id="i", ops=ops), result=result
    )
    assert asked.data["ops"] == [
        {"type": "merge", "value": {"a": 1}},
        {"type": "append", "path": ["x", "y"], "value": 2},
        {"type": "set", "path": "s", "value": None},
        {"type": "increment", "path": "n", "by": 1},
        {"type": "remove", "path": "r"},
    ]
    assert answered.result == result
    _, answered, _ = delegated(
        worker,
        custom,
        "stream::update",
        todo(group_id="g", item_id="i", ops=[]),
        result={"new_value": 1, "errors": []},
    )
    assert answered.result == {"old_value": None, "new_value": 1}


def test_without_a_custom_update_the_store_is_updated(engine: Engine, worker: Worker) -> None:
    backend = engine.worker("backend")
    backend.send(RegisterFunction(id="stream::get(todo)"))
    ops = [{"type": "set", "path": "a", "value": 1}]
    assert worker.result("stream::update", todo(group_id="g", item_id="i", ops=ops)) == {
        "old_value": None,
        "new_value": {"a": 1},
    }
    assert worker.result("stream::list", todo(group_id="g")) == [{"a": 1}]


def test_a_custom_stream_must_be_served_in_namespace_default(
    engine: Engine, worker: Worker
) -> None:
    elsewhere = engine.worker("elsewhere", namespace="team")
    elsewhere.send(RegisterFunction(id="stream::get(todo)"))
    assert worker.result("stream::get", todo(group_id="g", item_id="i")) is None


# --- the iii-stream block -------------------------------------------------------------------------


def test_the_block_defaults_to_the_engines_settings() -> None:
    assert read_stream_block(None) == StreamSettings(3112, "0.0.0.0", None, "kv")
    assert read_stream_block(
        {
            "port": 0,
            "host": "127.0.0.1",
            "auth_function": "auth::check",
            "adapter": {"name": "redis", "config": {}},
        }
    ) == StreamSettings(0, "127.0.0.1", "auth::check", "redis")


@pytest.mark.parametrize(
    ("block", "key", "problem"),
    [
        (
            {"unknown": True},
            "unknown",
            "unknown key (an iii-stream block takes port, host, auth_function, adapter)",
        ),
        ({"port": 70000}, "port", "expected an integer from 0 to 65535, got an integer (70000)"),
        ({"port": "3112"}, "port", "expected an integer from 0 to 65535, got a string ('3112')"),
        ({"host": 1}, "host", "expected a string, got an integer (1)"),
        ({"auth_function": ["a"]}, "auth_function", "expected a string, got a list"),
        (
            {"adapter": {"name": "nats"}},
            "adapter.name",
            "unknown adapter 'nats' (the engine has kv, redis, bridge)",
        ),
    ],
)
def test_a_bad_block_is_refused_naming_the_key(block: Any, key: str, problem: str) -> None:
    with pytest.raises(BlockError) as refused:
        read_stream_block(block)
    assert (refused.value.key, refused.value.problem) == (key, problem)
