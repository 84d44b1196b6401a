"""The dev engine's ``iii-queue`` worker (spec/engine.md section 3), driven by hand on a fake
clock: the enqueue action and its provider, named and topic queues, retries with backoff, dead
letters and redrive, FIFO order, and the inspection functions."""

from __future__ import annotations

from typing import Any

import pytest

from iii_trio._protocol._messages import (
    EnqueueAction,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from iii_trio.testing._engine import Output, canonical_uuid
from iii_trio.testing._engine._builtins import BlockError
from iii_trio.testing._engine._queues import (
    NamedQueueConfig,
    Queues,
    QueueSettings,
    TopicDefaults,
    backoff,
    read_queue_block,
    rust_debug,
)

from .engine_driver import Engine, Worker, messages_to

FAR = 1e6
BOOM = ErrorBody("invocation_failed", "boom")
QUEUES = {
    "default": NamedQueueConfig(),
    "pair": NamedQueueConfig(concurrency=2),
    "single": NamedQueueConfig(concurrency=1),
    "once": NamedQueueConfig(max_retries=1),
    "payment": NamedQueueConfig(type="fifo", message_group_field="transaction_id", concurrency=2),
}


@pytest.fixture
def engine() -> Engine:
    # The functions-available poll must not count among the timers the tests look at.
    return Engine(poll=FAR, plugins=[Queues(QueueSettings(queues=QUEUES))])


def consumer(engine: Engine, name: str = "jobs", **fields: Any) -> Worker:
    worker = engine.worker(name, **fields)
    worker.send(RegisterFunction(id=f"{name}::run"))
    return worker


def enqueue(
    caller: Worker, function_id: str, data: Any, queue: str = "default", **fields: Any
) -> InvocationResult:
    answer = caller.call(function_id, data, action=EnqueueAction(queue=queue), **fields)
    assert answer is not None
    return answer


def receipt(
    caller: Worker, function_id: str, data: Any, queue: str = "default", **fields: Any
) -> str:
    answer = enqueue(caller, function_id, data, queue, **fields)
    assert answer.error is None, answer.error
    assert isinstance(answer.result, dict)
    receipt_id = answer.result["messageReceiptId"]
    assert list(answer.result) == ["messageReceiptId"]
    assert canonical_uuid(receipt_id) == receipt_id
    return str(receipt_id)


def deliveries(outputs: list[Output], worker: Worker) -> list[InvokeFunction]:
    return [m for m in messages_to(outputs, worker.id) if isinstance(m, InvokeFunction)]


def only_delivery(outputs: list[Output], worker: Worker) -> InvokeFunction:
    (delivery,) = deliveries(outputs, worker)
    return delivery


def reply(worker: Worker, delivery: InvokeFunction, error: ErrorBody | None = None) -> list[Output]:
    assert delivery.invocation_id is not None
    return worker.send(
        InvocationResult(
            delivery.invocation_id,
            delivery.function_id,
            result=None if error else "ok",
            error=error,
        )
    )


def next_in(engine: Engine) -> float | None:
    """Seconds until the engine's next timer, if any (short of :data:`FAR`)."""
    deadline = engine.state.next_deadline()
    if deadline is None or deadline - engine.now >= FAR / 2:
        return None
    return round(deadline - engine.now, 6)


def run_until_next(engine: Engine) -> list[Output]:
    """Advance the clock exactly to the next timer and fire it."""
    deadline = engine.state.next_deadline()
    assert deadline is not None
    engine.now = deadline
    return engine.state.tick(deadline)


def fire_after(engine: Engine, delay: float) -> list[Output]:
    """Check that the next timer is ``delay`` seconds away, and fire it."""
    assert next_in(engine) == pytest.approx(delay)
    return run_until_next(engine)


# -- the enqueue action and its provider ----------------------------------------------------------


def test_an_enqueued_message_is_delivered_at_the_consumers_next_poll(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    before = len(jobs.outputs)
    receipt(caller, "jobs::run", {"n": 1}, metadata={"m": 1}, traceparent=traceparent)
    assert deliveries(jobs.outputs[before:], jobs) == []  # the receipt does not wait for it
    assert next_in(engine) == 0.1
    delivery = only_delivery(fire_after(engine, 0.1), jobs)
    # Exactly the data (no _caller_worker_id), no metadata; the trace goes along.
    assert delivery.data == {"n": 1}
    assert delivery.metadata is None
    assert delivery.traceparent == traceparent
    assert delivery.baggage == "iii.function.id=jobs::run"
    assert reply(jobs, delivery) == []
    assert next_in(engine) is None
    stats = caller.result("engine::queue::topic_stats", {"topic": "default"})
    assert stats == {"depth": 0, "consumer_count": 10, "dlq_depth": 0, "config": None}


def test_the_target_resolves_in_the_namespace_the_enqueue_named(engine: Engine) -> None:
    billing = consumer(engine, "billing", namespace="billing")
    caller = engine.worker("caller")
    receipt(caller, "billing::run", 1, namespace="billing")
    assert only_delivery(fire_after(engine, 0.1), billing).function_id == "billing::run"


def test_enqueue_to_an_undefined_queue_is_an_enqueue_error(engine: Engine) -> None:
    answer = enqueue(engine.worker("caller"), "jobs::run", {}, queue="nowhere")
    assert answer.error == ErrorBody(
        "enqueue_error",
        "invocation_failed: handler error: queue 'nowhere' is not defined; call queue::define "
        "before enqueueing",
    )


def test_without_the_queue_worker_enqueue_has_no_provider() -> None:
    answer = enqueue(Engine().worker("caller"), "jobs::run", {})
    assert answer.error is not None
    assert answer.error.code == "enqueue_error"
    assert answer.error.message.startswith("No queue provider is installed.")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            {"queue": "default", "function_id": "f", "data": 1},
            ErrorBody(
                "deserialization_error",
                "Failed to deserialize input for engine::queue::enqueue: missing field "
                "`messageReceiptId`",
            ),
        ),
        (
            {"queue": "default", "function_id": "f", "messageReceiptId": "r"},
            ErrorBody(
                "deserialization_error",
                "Failed to deserialize input for engine::queue::enqueue: missing field `data`",
            ),
        ),
        (
            {"queue": " ", "function_id": "f", "data": 1, "messageReceiptId": "r"},
            ErrorBody("invocation_failed", "handler error: queue is required"),
        ),
        (
            {"queue": "default", "function_id": "", "data": 1, "messageReceiptId": "r"},
            ErrorBody("invocation_failed", "handler error: function_id is required"),
        ),
        (
            {"queue": "default", "function_id": "f", "data": 1, "messageReceiptId": ""},
            ErrorBody("invocation_failed", "handler error: messageReceiptId is required"),
        ),
    ],
)
def test_the_provider_checks_its_input(engine: Engine, data: Any, error: ErrorBody) -> None:
    assert engine.worker("caller").error("engine::queue::enqueue", data) == error


def test_the_provider_called_directly_answers_with_the_receipt_it_was_given(
    engine: Engine,
) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    request = {
        "queue": " default ",
        "function_id": "jobs::run",
        "data": [1],
        "messageReceiptId": "r-1",
    }
    assert caller.result("engine::queue::enqueue", request) == {"messageReceiptId": "r-1"}
    assert only_delivery(fire_after(engine, 0.1), jobs).data == [1]


# -- retries, dead letters, redrive ---------------------------------------------------------------


def fail_until_dead(engine: Engine, jobs: Worker, attempts: int) -> list[float]:
    """Fail every delivery to ``jobs``; return the delays between them."""
    delays = []
    for _ in range(attempts):
        delay = next_in(engine)
        assert delay is not None
        delays.append(delay)
        reply(jobs, only_delivery(fire_after(engine, delay), jobs), BOOM)
    return delays


def test_a_message_whose_handler_always_fails_ends_in_the_dead_letter_queue(
    engine: Engine,
) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    receipt(caller, "jobs::run", {"n": 1})
    # The first attempt at the next poll, then retries after 1 s and 2 s; three in all.
    assert fail_until_dead(engine, jobs, 3) == [0.1, 1.0, 2.0]
    assert next_in(engine) is None
    (dead,) = caller.result("engine::queue::dlq_messages", {"queue": "default"})
    assert dead == {
        "id": dead["id"],
        "payload": {"n": 1},
        "error": "function call failed",
        "failed_at": int(engine.now),
        "retries": 3,
        "size_bytes": len('{"n":1}'),
    }
    stats = caller.result("engine::queue::topic_stats", {"queue": "default"})
    assert stats == {"depth": 0, "consumer_count": 10, "dlq_depth": 1, "config": None}
    assert {"topic": "default", "broker_type": "function_queue", "message_count": 1} in (
        caller.result("engine::queue::dlq_topics", {})
    )


def test_a_redriven_message_is_delivered_again_with_a_fresh_budget(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    receipt(caller, "jobs::run", {"n": 1})
    fail_until_dead(engine, jobs, 3)
    redriven = caller.result("iii::queue::redrive", {"queue": "default"})
    assert redriven == {"queue": "default", "redriven": 1}
    assert fail_until_dead(engine, jobs, 2) == [0.1, 1.0]  # attempts start again from 0
    reply(jobs, only_delivery(run_until_next(engine), jobs))
    assert caller.result("engine::queue::dlq_messages", {"topic": "default"}) == []
    assert caller.result("iii::queue::redrive", {"queue": "default"})["redriven"] == 0


def test_one_dead_letter_can_be_redriven_or_discarded(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    receipt(caller, "jobs::run", "first", queue="once")
    receipt(caller, "jobs::run", "second", queue="once")
    for delivery in deliveries(fire_after(engine, 0.1), jobs):
        reply(jobs, delivery, BOOM)  # max_retries 1: dead at once
    letters = caller.result("engine::queue::dlq_messages", {"queue": "once"})
    assert [letter["payload"] for letter in letters] == ["second", "first"]  # newest first
    second, first = (letter["id"] for letter in letters)
    missing = {"queue": "once", "message_id": "nope"}
    assert caller.result("iii::queue::redrive_message", missing)["redriven"] == 0
    asked = {"queue": "once", "message_id": first}
    assert caller.result("iii::queue::redrive_message", asked) == {**asked, "redriven": 1}
    asked = {"topic": "once", "message_id": second}
    assert caller.result("iii::queue::discard_message", asked) == {
        "queue": "once",
        "message_id": second,
        "redriven": 1,
    }
    assert caller.result("engine::queue::dlq_messages", {"queue": "once"}) == []
    assert only_delivery(fire_after(engine, 0.1), jobs).data == "first"


def test_a_retry_set_aside_goes_first_in_line_when_it_is_due(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    receipt(caller, "jobs::run", "m1", queue="single")
    receipt(caller, "jobs::run", "m2", queue="single")
    reply(jobs, only_delivery(fire_after(engine, 0.1), jobs), BOOM)  # m1 set aside for 1 s
    m2 = only_delivery(fire_after(engine, 0.1), jobs)
    assert m2.data == "m2"  # the queue goes on meanwhile
    reply(jobs, m2)
    receipt(caller, "jobs::run", "m3", queue="single")
    m3 = only_delivery(fire_after(engine, 0.1), jobs)
    assert m3.data == "m3"
    assert next_in(engine) == pytest.approx(0.8)  # m1 is due then, but m3 holds the slot
    assert deliveries(fire_after(engine, 0.8), jobs) == []
    receipt(caller, "jobs::run", "m4", queue="single")
    reply(jobs, m3)  # m1, due already, goes before m4, which came after it
    assert only_delivery(run_until_next(engine), jobs).data == "m1"


def test_a_standard_queue_keeps_up_to_concurrency_messages_in_flight(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    for n in range(3):
        receipt(caller, "jobs::run", n, queue="pair")
    first, second = deliveries(fire_after(engine, 0.1), jobs)
    assert (first.data, second.data) == (0, 1)
    assert next_in(engine) is None  # full: nothing to poll for
    reply(jobs, first)
    assert next_in(engine) == 0.1
    assert only_delivery(fire_after(engine, 0.1), jobs).data == 2
    stats = caller.result("engine::queue::topic_stats", {"topic": "pair"})
    assert (stats["depth"], stats["consumer_count"]) == (2, 2)


def test_a_departed_consumers_message_is_retried_not_lost(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    receipt(caller, "jobs::run", {"n": 1})
    only_delivery(fire_after(engine, 0.1), jobs)
    jobs.disconnect()  # invocation_stopped: a failed attempt
    again = consumer(engine)
    assert next_in(engine) == 1.0
    reply(again, only_delivery(fire_after(engine, 1.0), again))
    assert caller.result("engine::queue::dlq_messages", {"topic": "default"}) == []


def test_a_message_for_a_function_nobody_serves_is_retried_then_dead(engine: Engine) -> None:
    caller = engine.worker("caller")
    receipt(caller, "ghost::run", {"n": 1})
    for delay in (0.1, 1.0, 2.0):
        fire_after(engine, delay)
    assert next_in(engine) is None
    (dead,) = caller.result("engine::queue::dlq_messages", {"topic": "default"})
    assert (dead["payload"], dead["retries"], dead["error"]) == (
        {"n": 1},
        3,
        "function call failed",
    )


# -- FIFO -----------------------------------------------------------------------------------------


def test_a_fifo_queue_keeps_each_group_in_order_and_retries_in_place(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    for data in ({"transaction_id": "a", "n": 1}, {"transaction_id": "a", "n": 2}):
        receipt(caller, "jobs::run", data, queue="payment")
    receipt(caller, "jobs::run", {"transaction_id": "b", "n": 1}, queue="payment")
    a1, b1 = deliveries(fire_after(engine, 0.1), jobs)
    assert (a1.data["n"], b1.data) == (1, {"transaction_id": "b", "n": 1})
    reply(jobs, a1, BOOM)  # retried in place in 1 s: a2 waits behind it
    reply(jobs, b1)
    assert next_in(engine) == 1.0
    again = only_delivery(fire_after(engine, 1.0), jobs)
    assert again.data == {"transaction_id": "a", "n": 1}
    reply(jobs, again)
    assert only_delivery(fire_after(engine, 0.1), jobs).data == {"transaction_id": "a", "n": 2}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"n": 1}, "requires field 'transaction_id' in data, but it was not found"),
        ("text", "requires field 'transaction_id' in data, but it was not found"),
        ({"transaction_id": None}, ": field 'transaction_id' must not be null"),
    ],
)
def test_a_fifo_message_needs_its_group(engine: Engine, data: Any, problem: str) -> None:
    answer = enqueue(engine.worker("caller"), "jobs::run", data, queue="payment")
    assert answer.error is not None
    assert answer.error.code == "enqueue_error"
    assert answer.error.message.startswith("invocation_failed: handler error: FIFO queue 'payment'")
    assert answer.error.message.endswith(problem)


# -- queue::define --------------------------------------------------------------------------------


def test_queue_define_makes_a_queue_that_takes_messages(engine: Engine) -> None:
    jobs = consumer(engine)
    caller = engine.worker("caller")
    config = {"max_retries": 1, "backoff_ms": 10, "poll_interval_ms": 5}
    asked = {"queue": "emails", "config": config}
    assert caller.result("queue::define", asked) == {"queue": "emails", "changed": True}
    assert caller.result("queue::define", asked) == {"queue": "emails", "changed": False}
    receipt(caller, "jobs::run", "hello", queue="emails")
    assert next_in(engine) == 0.005
    reply(jobs, only_delivery(fire_after(engine, 0.005), jobs), BOOM)
    assert caller.result("iii::queue::redrive", {"queue": "emails"})["redriven"] == 1
    assert caller.result("queue::define", {"queue": "emails"})["changed"] is True  # defaults
    topics = caller.result("engine::queue::list_topics", {})
    assert {"name": "emails", "broker_type": "builtin", "subscriber_count": 10} in topics


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "lifo"}, "Queue 'q' has invalid type 'lifo'. Must be 'standard' or 'fifo'"),
        ({"type": "fifo"}, "Queue 'q' is of type 'fifo' but 'message_group_field' is not set"),
        ({"concurrency": 0}, "Queue 'q' has 'concurrency' 0; it must be at least 1"),
        ({"max_priority": 0}, "Queue 'q' has 'max_priority' 0; it must be between 1 and 255"),
    ],
)
def test_queue_define_refuses_what_the_engine_refuses(
    engine: Engine, config: Any, message: str
) -> None:
    error = engine.worker("caller").error("queue::define", {"queue": "q", "config": config})
    assert error == ErrorBody("invocation_failed", f"handler error: {message}")


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ({"queue": "q", "config": {"retries": 1}}, "unknown field `retries`, expected one of"),
        ({"queue": "q", "config": {"max_retries": "3"}}, 'invalid type: string "3", expected u32'),
        (
            {"queue": "q", "config": {"max_retries": -1}},
            "invalid value: integer `-1`, expected u32",
        ),
        (
            {"queue": "q", "config": []},
            "invalid type: sequence, expected struct FunctionQueueConfig",
        ),
        ({"queue": "q", "extra": 1}, "unknown field `extra`"),
        ({"config": {}}, "missing field `queue`"),
    ],
)
def test_queue_define_input_must_deserialize(engine: Engine, data: Any, detail: str) -> None:
    error = engine.worker("caller").error("queue::define", data)
    assert error.code == "deserialization_error"
    assert error.message.startswith("Failed to deserialize input for queue::define: ")
    assert detail in error.message


# -- topic queues ---------------------------------------------------------------------------------


def subscribe(
    worker: Worker, binding_id: str, function_id: str, config: Any, **fields: Any
) -> list[Output]:
    return worker.send(
        RegisterTrigger(
            id=binding_id,
            trigger_type="durable:subscriber",
            function_id=function_id,
            config=config,
            **fields,
        )
    )


def publish(caller: Worker, topic: str, data: Any) -> None:
    assert caller.result("iii::durable::publish", {"topic": topic, "data": data}) is None


def test_durable_publish_gives_each_subscribed_function_one_copy(engine: Engine) -> None:
    mail = consumer(engine, "mail")
    audit = consumer(engine, "audit")
    replica = engine.worker("replica")
    replica.send(RegisterFunction(id="other::run"))
    subscribe(mail, "b1", "mail::run", {"topic": "orders"}, metadata={"m": 1})
    subscribe(mail, "b2", "mail::run", {"topic": "orders"})  # same function: same queue
    subscribe(audit, "b3", "audit::run", {"queue": "orders"})  # the standalone's key
    caller = engine.worker("caller")
    publish(caller, "orders", {"id": 1})
    fired = fire_after(engine, 0.1)
    for worker in (mail, audit):
        delivery = only_delivery(fired, worker)
        assert delivery.data == {"id": 1}
        assert delivery.metadata is None
    assert caller.result("engine::queue::topic_stats", {"topic": "orders"})["consumer_count"] == 3
    assert caller.result("engine::queue::list_topics", {}) == [
        {"name": "default", "broker_type": "builtin", "subscriber_count": 10},
        {"name": "once", "broker_type": "builtin", "subscriber_count": 10},
        {"name": "orders", "broker_type": "builtin", "subscriber_count": 3},
        {"name": "pair", "broker_type": "builtin", "subscriber_count": 2},
        {"name": "payment", "broker_type": "builtin", "subscriber_count": 2},
        {"name": "single", "broker_type": "builtin", "subscriber_count": 1},
    ]


def test_a_failing_subscriber_ends_in_the_topics_dead_letter_queue(engine: Engine) -> None:
    audit = consumer(engine, "audit")
    queue_config = {"maxRetries": 1, "backoffDelayMs": 500}
    subscribe(audit, "b1", "audit::run", {"topic": "orders", "queue_config": queue_config})
    caller = engine.worker("caller")
    publish(caller, "orders", {"id": 1})
    error = ErrorBody("invocation_failed", 'say "no"', stacktrace="Traceback\n  line 1")
    reply(audit, only_delivery(fire_after(engine, 0.1), audit), error)
    assert next_in(engine) == 0.5  # maxRetries 1: two attempts in all
    reply(audit, only_delivery(fire_after(engine, 0.5), audit), error)
    (dead,) = caller.result("engine::queue::dlq_messages", {"topic": "orders"})
    assert dead["error"] == (
        'ErrorBody { code: "invocation_failed", message: "say \\"no\\"", '
        'stacktrace: Some("Traceback\\n  line 1") }'
    )
    assert dead["retries"] == 2
    assert {"topic": "orders", "broker_type": "builtin", "message_count": 1} in (
        caller.result("engine::queue::dlq_topics", {})
    )
    assert caller.result("iii::queue::redrive", {"topic": "orders"}) == {
        "queue": "orders",
        "redriven": 1,
    }
    reply(audit, only_delivery(fire_after(engine, 0.1), audit))
    assert caller.result("engine::queue::topic_stats", {"topic": "orders"})["dlq_depth"] == 0


def test_max_retries_zero_is_one_attempt(engine: Engine) -> None:
    audit = consumer(engine, "audit")
    subscribe(audit, "b1", "audit::run", {"topic": "t", "queue_config": {"maxRetries": 0}})
    caller = engine.worker("caller")
    publish(caller, "t", 1)
    reply(audit, only_delivery(fire_after(engine, 0.1), audit), BOOM)
    assert next_in(engine) is None
    assert caller.result("engine::queue::topic_stats", {"topic": "t"})["dlq_depth"] == 1


def test_a_condition_skips_or_fails_a_topic_message(engine: Engine) -> None:
    audit = consumer(engine, "audit")
    audit.send(RegisterFunction(id="audit::only-big"))
    config = {"topic": "t", "condition_function_id": "audit::only-big"}
    subscribe(audit, "b1", "audit::run", {**config, "queue_config": {"maxRetries": 0}})
    caller = engine.worker("caller")
    publish(caller, "t", {"size": 1})
    check = only_delivery(fire_after(engine, 0.1), audit)
    assert (check.function_id, check.data, check.metadata) == ("audit::only-big", {"size": 1}, None)
    assert check.invocation_id is not None
    skipped = audit.send(InvocationResult(check.invocation_id, check.function_id, result=False))
    assert deliveries(skipped, audit) == []  # acknowledged, not delivered
    publish(caller, "t", {"size": 9})
    check = only_delivery(fire_after(engine, 0.1), audit)
    assert check.invocation_id is not None
    ran = audit.send(InvocationResult(check.invocation_id, check.function_id, result=None))
    reply(audit, only_delivery(ran, audit))
    publish(caller, "t", {"size": 5})
    reply(audit, only_delivery(fire_after(engine, 0.1), audit), BOOM)  # the condition fails
    (dead,) = caller.result("engine::queue::dlq_messages", {"topic": "t"})
    assert dead["error"] == (
        'Condition function error: ErrorBody { code: "invocation_failed", message: "boom", '
        "stacktrace: None }"
    )


def test_a_topic_nobody_subscribes_to_parks_its_messages(engine: Engine) -> None:
    caller = engine.worker("caller")
    publish(caller, "lonely", 1)
    assert next_in(engine) is None
    stats = caller.result("engine::queue::topic_stats", {"topic": "lonely"})
    assert stats == {"depth": 1, "consumer_count": 0, "dlq_depth": 0, "config": None}
    audit = consumer(engine, "audit")
    subscribe(audit, "b1", "audit::run", {"topic": "lonely"})
    assert deliveries(engine.advance(1.0), audit) == []  # as in the engine: not handed over


def test_an_unbound_functions_queue_waits_for_it_to_bind_again(engine: Engine) -> None:
    audit = consumer(engine, "audit")
    subscribe(audit, "b1", "audit::run", {"topic": "t"})
    caller = engine.worker("caller")
    publish(caller, "t", 1)
    audit.send(UnregisterTrigger(id="b1"))
    assert deliveries(engine.advance(1.0), audit) == []
    subscribe(audit, "b2", "audit::run", {"topic": "t"})
    assert only_delivery(fire_after(engine, 0.1), audit).data == 1


def test_a_fifo_subscriber_gets_one_message_at_a_time(engine: Engine) -> None:
    audit = consumer(engine, "audit")
    subscribe(audit, "b1", "audit::run", {"topic": "t", "queue_config": {"type": "fifo"}})
    caller = engine.worker("caller")
    for n in range(2):
        publish(caller, "t", n)
    first = only_delivery(fire_after(engine, 0.1), audit)
    reply(audit, first, BOOM)
    again = only_delivery(fire_after(engine, 1.0), audit)
    assert again.data == 0
    reply(audit, again)
    assert only_delivery(fire_after(engine, 0.1), audit).data == 1


def test_a_subscriber_without_a_topic_is_accepted_and_hears_nothing(engine: Engine) -> None:
    audit = consumer(engine, "audit")
    for number, config in enumerate(({}, None, {"topic": ""}, {"topic": 7})):
        outputs = subscribe(audit, f"b{number}", "audit::run", config)
        assert not any(
            isinstance(m, TriggerRegistrationResult) for m in messages_to(outputs, audit.id)
        )
    assert engine.state.statistics().bindings == 4


@pytest.mark.parametrize(
    ("function_id", "data", "error"),
    [
        ("iii::durable::publish", {"topic": "", "data": 1}, ("topic_not_set", "Topic is not set")),
        ("iii::queue::redrive", {"queue": ""}, ("queue_not_set", "Queue name is required")),
        (
            "iii::queue::redrive_message",
            {"queue": "", "message_id": "m"},
            ("queue_not_set", "Queue name is required"),
        ),
        (
            "iii::queue::discard_message",
            {"queue": "q", "message_id": ""},
            ("message_id_not_set", "Message ID is required"),
        ),
        ("engine::queue::topic_stats", {"topic": ""}, ("topic_required", "topic is required")),
        ("engine::queue::dlq_messages", {"queue": ""}, ("topic_required", "topic is required")),
    ],
)
def test_empty_names_get_the_engines_errors(
    engine: Engine, function_id: str, data: Any, error: tuple[str, str]
) -> None:
    assert engine.worker("caller").error(function_id, data) == ErrorBody(*error)


@pytest.mark.parametrize(
    ("function_id", "data", "detail"),
    [
        ("iii::durable::publish", {"topic": "t"}, "missing field `data`"),
        ("iii::queue::redrive", {}, "missing field `queue`"),
        ("iii::queue::redrive", {"queue": "a", "topic": "a"}, "duplicate field `queue`"),
        (
            "engine::queue::dlq_messages",
            {"topic": "t", "limit": None},
            "invalid type: null, expected u64",
        ),
        (
            "engine::queue::dlq_messages",
            {"topic": "t", "offset": -1},
            "invalid value: integer `-1`",
        ),
    ],
)
def test_malformed_input_is_a_deserialization_error(
    engine: Engine, function_id: str, data: Any, detail: str
) -> None:
    error = engine.worker("caller").error(function_id, data)
    assert error.code == "deserialization_error"
    assert detail in error.message


def test_dead_letters_are_listed_a_page_at_a_time(engine: Engine) -> None:
    caller = engine.worker("caller")
    for n in range(4):
        receipt(caller, "ghost::run", n, queue="once")
    fire_after(engine, 0.1)  # nobody serves ghost::run: one attempt each, all dead
    page = caller.result("engine::queue::dlq_messages", {"queue": "once", "offset": 1, "limit": 2})
    assert [letter["payload"] for letter in page] == [2, 1]


def test_the_queue_functions_are_listed_without_include_internal(engine: Engine) -> None:
    caller = engine.worker("caller")
    listed = {f["function_id"] for f in caller.result("engine::functions::list", {})["functions"]}
    assert listed >= {
        "engine::queue::enqueue",
        "queue::define",
        "iii::durable::publish",
        "iii::queue::redrive",
        "iii::queue::redrive_message",
        "iii::queue::discard_message",
        "engine::queue::list_topics",
        "engine::queue::topic_stats",
        "engine::queue::dlq_topics",
        "engine::queue::dlq_messages",
    }
    info = caller.result("engine::workers::info", {"name": "iii-queue"})
    assert [t["id"] for t in info["trigger_types"]] == ["durable:subscriber"]


# -- settings -------------------------------------------------------------------------------------


def test_without_a_block_there_is_a_default_queue_with_the_engines_defaults() -> None:
    assert read_queue_block(None) == QueueSettings()
    settings = read_queue_block({"queue_configs": {"payment": {"max_retries": 10}}})
    assert settings.queues == {
        "payment": NamedQueueConfig(max_retries=10),
        "default": NamedQueueConfig(),
    }
    kept = read_queue_block({"queue_configs": {"default": {"concurrency": 1}}})
    assert kept.queues == {"default": NamedQueueConfig(concurrency=1)}


def test_the_builtin_adapters_config_sets_the_topic_defaults_leniently() -> None:
    config = {"backoff_ms": 20, "poll_interval_ms": 5, "max_attempts": "x", "mode": "fifo"}
    settings = read_queue_block({"adapter": {"name": "builtin", "config": config}})
    assert settings.topics == TopicDefaults(backoff_ms=20, poll_interval_ms=5, fifo=True)
    ignored = read_queue_block({"adapter": {"name": "redis", "config": {"backoff_ms": 20}}})
    assert (ignored.adapter, ignored.topics) == ("redis", TopicDefaults())


@pytest.mark.parametrize(
    ("block", "key", "problem"),
    [
        ([], "", "expected a mapping"),
        ({"queues": {}}, "queues", "unknown field"),
        ({"adapter": {"name": "kafka"}}, "adapter.name", "expected one of builtin"),
        ({"adapter": {"config": {}}}, "adapter.name", "expected a string, got null"),
        ({"adapter": {"name": "builtin", "url": "x"}}, "adapter.url", "unknown key"),
        ({"queue_configs": []}, "queue_configs", "expected a mapping"),
        ({"queue_configs": {"q": 3}}, "queue_configs.q", "expected a mapping"),
        ({"queue_configs": {"q": {"max_retries": "3"}}}, "queue_configs.q.max_retries", "u32"),
        ({"queue_configs": {"q": {"retries": 3}}}, "queue_configs.q", "unknown field `retries`"),
        ({"queue_configs": {"q": {"type": "fifo"}}}, "queue_configs.q", "'message_group_field'"),
    ],
)
def test_a_bad_block_names_the_key(block: object, key: str, problem: str) -> None:
    with pytest.raises(BlockError) as caught:
        read_queue_block(block)
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_backoff_doubles_and_saturates() -> None:
    assert [backoff(1000, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff(10**19, 200) == (2**64 - 1) / 1000


def test_errors_are_shown_as_rusts_debug_format() -> None:
    error = ErrorBody("c", "tab\there\0 \u200b 'quoted' é")
    assert rust_debug(error) == (
        'ErrorBody { code: "c", message: "tab\\there\\0 \\u{200b} \'quoted\' é", stacktrace: None }'
    )
