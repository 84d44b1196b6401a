"""The dev engine's queue and pub/sub workers through real sockets, with iii_trio workers: the
enqueue action and its receipt, a failing consumer's message in the dead-letter queue and back
with ``iii::queue::redrive``, FIFO order, topic queues, and pub/sub fan-out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio.testing import DevEngine, open_dev_engine
from iii_trio.testing._config import ConfigError, EngineConfig, parse_config
from iii_trio.testing._dev_engine import DEV_ENGINE_VERSION
from iii_trio.testing._engine._model import canonical_uuid

#: Small delays so that retries take milliseconds; everything else is the engine's default.
FAST_QUEUES = """
workers:
  - name: iii-queue
    config:
      adapter:
        name: builtin
        config: {poll_interval_ms: 5, backoff_ms: 10}
      queue_configs:
        default: {poll_interval_ms: 5, backoff_ms: 10}
        payment:
          type: fifo
          message_group_field: transaction_id
          poll_interval_ms: 5
          backoff_ms: 10
  - name: iii-pubsub
"""


def config(text: str) -> EngineConfig:
    return parse_config(text, source="config.yaml", environ={}, engine_version=DEV_ENGINE_VERSION)


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine(config=config(FAST_QUEUES)) as running:
        yield running


async def eventually(probe: Callable[[], Awaitable[Any]], seconds: float = 5.0) -> Any:
    """What ``probe`` returns once it is truthy, asking every 10 ms for at most ``seconds``
    (what the engine does after a handler returns cannot be awaited from the worker)."""
    with trio.fail_after(seconds):
        while not (answer := await probe()):  # noqa: ASYNC110 - the engine's state has no event
            await trio.sleep(0.01)
    return answer


async def test_a_failing_consumer_ends_in_the_dead_letter_queue_and_comes_back(
    engine: DevEngine,
) -> None:
    healthy = False
    attempts: list[Any] = []
    charged = trio.Event()
    async with iii_trio.open_worker(engine.url, name="payments") as worker:

        @worker.function("payments::charge")
        async def charge(payload: Any) -> Any:
            attempts.append(payload)
            if not healthy:
                raise RuntimeError("card declined")
            charged.set()
            return {"charged": payload["amount"]}

        await worker.wait_registered()
        receipt = await worker.enqueue("payments::charge", {"amount": 5}, queue="default")
        assert canonical_uuid(receipt) == receipt

        async def dead_letters() -> Any:
            return await worker.trigger("engine::queue::dlq_messages", {"queue": "default"})

        (dead,) = await eventually(dead_letters)
        # Three attempts in all, each with exactly the enqueued payload; nothing dropped.
        assert attempts == [{"amount": 5}] * 3
        assert (dead["payload"], dead["retries"], dead["error"]) == (
            {"amount": 5},
            3,
            "function call failed",
        )
        stats = await worker.trigger("engine::queue::topic_stats", {"queue": "default"})
        assert (stats["depth"], stats["dlq_depth"]) == (0, 1)

        healthy = True
        redriven = await worker.trigger("iii::queue::redrive", {"queue": "default"})
        assert redriven == {"queue": "default", "redriven": 1}
        with trio.fail_after(5):
            await charged.wait()
        assert attempts[-1] == {"amount": 5}
        assert await eventually(
            lambda: worker.trigger("engine::queue::topic_stats", {"queue": "default"})
        ) == {"depth": 0, "consumer_count": 10, "dlq_depth": 0, "config": None}


async def test_an_enqueued_payload_reaches_its_handler_as_it_was_sent(engine: DevEngine) -> None:
    received = trio.Event()
    seen: list[tuple[Any, Any, str | None]] = []
    async with (
        iii_trio.open_worker(engine.url, name="billing", namespace="billing") as billing,
        iii_trio.open_worker(engine.url, name="shop") as shop,
    ):

        @billing.function("invoice::send")
        async def send(payload: Any, metadata: Any) -> None:
            seen.append((payload, metadata, iii_trio.get_context().caller_worker_id))
            received.set()

        await billing.wait_registered()
        await shop.enqueue(
            "invoice::send", {"order": 7}, queue="default", namespace="billing", metadata={"m": 1}
        )
        with trio.fail_after(5):
            await received.wait()
    # The engine delivers the data alone: no caller id, no metadata.
    assert seen == [({"order": 7}, None, None)]


async def test_enqueue_to_a_queue_nobody_defined_is_refused(engine: DevEngine) -> None:
    async with iii_trio.open_worker(engine.url) as worker:
        with pytest.raises(iii_trio.InvocationError) as caught:
            await worker.enqueue("svc::job", {}, queue="nowhere")
        assert caught.value.code == "enqueue_error"
        assert "queue 'nowhere' is not defined; call queue::define" in caught.value.message
        defined = await worker.trigger(
            "queue::define", {"queue": "nowhere", "config": {"poll_interval_ms": 5}}
        )
        assert defined == {"queue": "nowhere", "changed": True}
        assert canonical_uuid(await worker.enqueue("svc::job", {}, queue="nowhere"))


async def test_a_fifo_queue_delivers_a_group_in_the_order_it_was_enqueued(
    engine: DevEngine,
) -> None:
    order: list[int] = []
    failed_once = False
    finished = trio.Event()
    async with iii_trio.open_worker(engine.url, name="ledger") as worker:

        @worker.function("ledger::post")
        async def post(payload: Any) -> None:
            nonlocal failed_once
            if payload["n"] == 2 and not failed_once:
                failed_once = True
                raise RuntimeError("retry me")  # retried in place: 3 and 4 wait for it
            order.append(payload["n"])
            if len(order) == 5:
                finished.set()

        await worker.wait_registered()
        for n in range(5):
            await worker.enqueue("ledger::post", {"transaction_id": "t1", "n": n}, queue="payment")
        with trio.fail_after(5):
            await finished.wait()
    assert order == [0, 1, 2, 3, 4]


async def test_durable_publish_reaches_each_subscribed_function_once(engine: DevEngine) -> None:
    got: dict[str, list[Any]] = {"mail": [], "audit": []}
    both = trio.Event()
    async with iii_trio.open_worker(engine.url, name="subscribers") as worker:

        def recorder(key: str) -> Callable[[Any], Awaitable[None]]:
            async def record(payload: Any) -> None:
                got[key].append(payload)
                if all(len(values) == 2 for values in got.values()):
                    both.set()

            return record

        worker.register_function("mail::on-order", recorder("mail"))
        worker.register_function("audit::on-order", recorder("audit"))
        await worker.register_trigger("durable:subscriber", "mail::on-order", {"topic": "orders"})
        await worker.register_trigger("durable:subscriber", "mail::on-order", {"topic": "orders"})
        await worker.register_trigger(
            "durable:subscriber",
            "audit::on-order",
            {"topic": "orders", "queue_config": {"maxRetries": 5, "concurrency": 2}},
        )
        for n in (1, 2):
            published = await worker.trigger(
                "iii::durable::publish", {"topic": "orders", "data": {"n": n}}
            )
            assert published is None
        with trio.fail_after(5):
            await both.wait()
        await trio.sleep(0.05)  # a second copy would have arrived by now
        assert sorted(p["n"] for p in got["mail"]) == [1, 2]
        assert sorted(p["n"] for p in got["audit"]) == [1, 2]
        topics = await worker.trigger("engine::queue::list_topics", {})
        assert {"name": "orders", "broker_type": "builtin", "subscriber_count": 3} in topics


async def test_pubsub_fans_out_and_an_unsubscribe_keeps_the_others(engine: DevEngine) -> None:
    inbox, received = trio.open_memory_channel[tuple[str, Any, Any]](16)

    def listener(name: str) -> Callable[[Any, Any], Awaitable[None]]:
        async def on_event(payload: Any, metadata: Any) -> None:
            await inbox.send((name, payload, metadata))

        return on_event

    async with (
        iii_trio.open_worker(engine.url, name="first") as first,
        iii_trio.open_worker(engine.url, name="second") as second,
        iii_trio.open_worker(engine.url, name="publisher") as publisher,
    ):
        refs = []
        for name, worker in (("first", first), ("second", second)):
            worker.register_function(f"{name}::on-event", listener(name))
            await worker.wait_registered()
            refs.append(
                await worker.register_trigger(
                    "subscribe", f"{name}::on-event", {"topic": "news"}, metadata={"x": 1}
                )
            )
        assert await publisher.trigger("publish", {"topic": "news", "data": "hello"}) is None
        with trio.fail_after(5):
            # The raw data, and no binding metadata.
            assert sorted([await received.receive(), await received.receive()]) == [
                ("first", "hello", None),
                ("second", "hello", None),
            ]
        refs[0].unregister()  # the engine would now cut "second" off as well
        await first.wait_registered()
        await publisher.trigger("publish", {"topic": "news", "data": "again"})
        with trio.fail_after(5):
            assert await received.receive() == ("second", "again", None)
        await trio.sleep(0.05)  # a delivery to "first" would have arrived by now
        with pytest.raises(trio.WouldBlock):
            received.receive_nowait()


async def test_built_ins_can_be_turned_off() -> None:
    async with (
        open_dev_engine(without=["iii-pubsub"]) as engine,
        iii_trio.open_worker(engine.url) as worker,
    ):
        with pytest.raises(iii_trio.FunctionNotFound):
            await worker.trigger("publish", {"topic": "t", "data": 1})
        assert await worker.trigger("iii::durable::publish", {"topic": "t", "data": 1}) is None


async def test_a_bad_queue_block_is_a_config_error_naming_the_key() -> None:
    text = (
        "workers:\n  - name: iii-queue\n    config:\n      queue_configs: {q: {concurrency: 0}}\n"
    )
    with pytest.raises(ConfigError, match=r"workers\[0\]\.config\.queue_configs\.q: Queue 'q'"):
        config(text)
    text = "workers:\n  - name: iii-pubsub\n    config: {adapter: {name: kafka}}\n"
    with pytest.raises(ConfigError, match=r"workers\[0\]\.config\.adapter\.name: expected one"):
        config(text)
