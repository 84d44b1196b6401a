"""The dev engine's ``iii-pubsub`` worker (spec/engine.md section 6), driven by hand."""

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
from iii_trio.testing._engine import Output
from iii_trio.testing._engine._builtins import BlockError
from iii_trio.testing._engine._pubsub import PubSub, PubSubSettings, read_pubsub_block

from .engine_driver import Engine, Worker, messages_to


@pytest.fixture
def engine() -> Engine:
    return Engine(plugins=[PubSub()])


def subscriber(engine: Engine, name: str, binding_id: str, config: Any, **fields: Any) -> Worker:
    worker = engine.worker(name, namespace=fields.get("namespace"))
    worker.send(RegisterFunction(id=f"{name}::on-event"))
    worker.send(
        RegisterTrigger(
            id=binding_id,
            trigger_type="subscribe",
            function_id=f"{name}::on-event",
            config=config,
            **fields,
        )
    )
    return worker


def deliveries(outputs: list[Output], worker: Worker) -> list[InvokeFunction]:
    return [m for m in messages_to(outputs, worker.id) if isinstance(m, InvokeFunction)]


def publish(publisher: Worker, data: Any) -> list[Output]:
    """Call ``publish``, check it answered ``null``, and return everything it caused."""
    before = len(publisher.outputs)
    answer = publisher.call("publish", data)
    assert answer is not None
    assert answer.error is None
    assert answer.result is None
    return publisher.outputs[before:]


def test_publish_hands_the_raw_data_to_every_subscriber_and_answers_null(engine: Engine) -> None:
    first = subscriber(engine, "first", "s1", {"topic": "orders"}, metadata={"m": 1})
    second = subscriber(engine, "second", "s2", {"topic": "orders"})
    other = subscriber(engine, "other", "s3", {"topic": "invoices"})
    publisher = engine.worker("publisher")
    outputs = publish(publisher, {"topic": "orders", "data": {"id": 7}})
    for worker, function_id in ((first, "first::on-event"), (second, "second::on-event")):
        (delivery,) = deliveries(outputs, worker)
        # No envelope, no _caller_worker_id, and no binding metadata (unlike other triggers).
        assert delivery.function_id == function_id
        assert delivery.data == {"id": 7}
        assert delivery.metadata is None
    assert deliveries(outputs, other) == []


def test_null_and_scalar_data_are_delivered_as_they_are(engine: Engine) -> None:
    listener = subscriber(engine, "listener", "s1", {"topic": "t"})
    publisher = engine.worker("publisher")
    for data in (None, "text", [1, 2]):
        outputs = publish(publisher, {"topic": "t", "data": data})
        (delivery,) = deliveries(outputs, listener)
        assert delivery.data == data


def test_a_subscriber_is_called_in_its_bindings_namespace(engine: Engine) -> None:
    listener = subscriber(engine, "billing", "s1", {"topic": "t"}, namespace="billing")
    publisher = engine.worker("publisher")
    outputs = publish(publisher, {"topic": "t", "data": 1})
    (delivery,) = deliveries(outputs, listener)
    assert delivery.function_id == "billing::on-event"


def test_subscribers_results_and_failures_are_ignored(engine: Engine) -> None:
    listener = subscriber(engine, "listener", "s1", {"topic": "t"})
    publisher = engine.worker("publisher")
    (delivery,) = deliveries(publish(publisher, {"topic": "t", "data": 1}), listener)
    assert delivery.invocation_id is not None
    failed = listener.send(
        InvocationResult(delivery.invocation_id, delivery.function_id, error=ErrorBody("x", "y"))
    )
    assert failed == []  # no retry, nobody told
    assert engine.state.statistics().pending_invocations == 0


def test_the_condition_is_ignored(engine: Engine) -> None:
    listener = subscriber(
        engine, "listener", "s1", {"topic": "t", "condition_function_id": "listener::never"}
    )
    publisher = engine.worker("publisher")
    outputs = publish(publisher, {"topic": "t", "data": 1})
    assert [d.function_id for d in deliveries(outputs, listener)] == ["listener::on-event"]


def test_unsubscribing_one_binding_keeps_the_topics_other_subscribers(engine: Engine) -> None:
    # The engine's local adapter drops the whole topic here (its unsubscribe bug); not the dev
    # engine.
    first = subscriber(engine, "first", "s1", {"topic": "t"})
    second = subscriber(engine, "second", "s2", {"topic": "t"})
    third = subscriber(engine, "third", "s3", {"topic": "t"})
    first.send(UnregisterTrigger(id="s1"))
    third.disconnect()
    publisher = engine.worker("publisher")
    outputs = publish(publisher, {"topic": "t", "data": 1})
    assert deliveries(outputs, first) == []
    assert len(deliveries(outputs, second)) == 1


def test_a_binding_without_a_topic_is_accepted_and_hears_nothing(engine: Engine) -> None:
    listeners = [
        subscriber(engine, f"l{number}", f"s{number}", config)
        for number, config in enumerate(({}, None, {"topic": ""}, {"topic": 5}))
    ]
    for listener in listeners:
        # No triggerregistrationresult: the engine accepts it.
        assert not any(
            isinstance(m, TriggerRegistrationResult)
            for m in messages_to(listener.outputs, listener.id)
        )
    assert engine.state.statistics().bindings == 4
    publisher = engine.worker("publisher")
    outputs = publish(publisher, {"topic": "5", "data": 1})
    for listener in listeners:
        assert deliveries(outputs, listener) == []


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"topic": "", "data": 1}, ErrorBody("topic_not_set", "Topic is not set")),
        (
            {"data": 1},
            ErrorBody(
                "deserialization_error",
                "Failed to deserialize input for publish: missing field `topic`",
            ),
        ),
        (
            {"topic": "t"},
            ErrorBody(
                "deserialization_error",
                "Failed to deserialize input for publish: missing field `data`",
            ),
        ),
        (
            {"topic": 5, "data": 1},
            ErrorBody(
                "deserialization_error",
                "Failed to deserialize input for publish: invalid type: integer `5`, "
                "expected a string",
            ),
        ),
    ],
)
def test_bad_publish_input_gets_the_engines_errors(
    engine: Engine, data: Any, error: ErrorBody
) -> None:
    assert engine.worker("publisher").error("publish", data) == error


def test_publish_and_subscribe_are_listed_as_the_engine_lists_them(engine: Engine) -> None:
    caller = engine.worker("caller")
    info = caller.result("engine::functions::info", {"function_id": "publish"})
    assert info["description"] == "Publishes an event"
    (listed,) = [
        t for t in caller.result("engine::triggers::list", {})["triggers"] if t["id"] == "subscribe"
    ]
    assert listed["worker_name"] == "iii-pubsub"


@pytest.mark.parametrize(
    ("block", "adapter"),
    [
        (None, "local"),
        ({}, "local"),
        ({"adapter": None}, "local"),
        ({"adapter": {"name": "memory"}}, "memory"),
        ({"adapter": {"name": "redis", "config": {"redis_url": "redis://x"}}}, "redis"),
    ],
)
def test_the_config_block_names_an_adapter(block: object, adapter: str) -> None:
    assert read_pubsub_block(block) == PubSubSettings(adapter=adapter)


@pytest.mark.parametrize(
    ("block", "key", "problem"),
    [
        ([], "", "expected a mapping"),
        ({"adaptor": {}}, "adaptor", "unknown field"),
        ({"adapter": "local"}, "adapter", "expected a mapping"),
        ({"adapter": {"name": "kafka"}}, "adapter.name", "expected one of local, memory, redis"),
        # Every worker reads its adapter entry alike: a string name, no other key than config.
        ({"adapter": {}}, "adapter.name", "expected a string, got null"),
        ({"adapter": {"name": "local", "url": "x"}}, "adapter.url", "unknown key"),
    ],
)
def test_a_bad_config_block_names_the_key(block: object, key: str, problem: str) -> None:
    with pytest.raises(BlockError) as caught:
        read_pubsub_block(block)
    assert caught.value.key == key
    assert problem in caught.value.problem
