"""A queue with a dead-letter queue: a charge that keeps failing is retried, then parked in the
queue's dead-letter queue instead of being lost, and redriven once its handler works again.

The worker defines the queue ``payments`` (three attempts, 50 ms then 100 ms apart), enqueues a
charge while the card processor is "down", waits for the message to reach the dead-letter queue,
brings the processor back and redrives it. Run it with ``python examples/queue_dead_letter.py``
(the dev engine starts in-process unless ``III_URL`` names an engine with a queue worker).
"""

from __future__ import annotations

from typing import Any

import trio

import iii_trio
from iii_trio.testing import engine_url

QUEUE = "payments"


async def dead_letters(worker: iii_trio.Worker) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = await worker.trigger(
        "engine::queue::dlq_messages", {"queue": QUEUE}
    )
    return letters


async def main(url: str) -> None:
    processor_up = False
    attempts = 0
    charged = trio.Event()
    async with iii_trio.open_worker(url, name="payments") as worker:

        @worker.function("payments::charge")
        async def charge(order: dict[str, Any]) -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            if not processor_up:
                print(f"attempt {attempts}: card processor down")
                raise RuntimeError("card processor down")
            print(f"charged order {order['order']}: {order['amount']}")
            charged.set()
            return {"charged": order["amount"]}

        await worker.wait_registered()
        await worker.trigger(
            "queue::define",
            {
                "queue": QUEUE,
                "config": {"max_retries": 3, "backoff_ms": 50, "poll_interval_ms": 10},
            },
        )
        await worker.enqueue("payments::charge", {"order": 42, "amount": 1999}, queue=QUEUE)

        # The engine retries on its own; the message is parked once its attempts are spent.
        with trio.fail_after(10):
            while not (letters := await dead_letters(worker)):  # noqa: ASYNC110 - no event
                await trio.sleep(0.05)
        (letter,) = letters
        print(
            f"dead letter: {letter['payload']} after {letter['retries']} attempts "
            f"({letter['error']})"
        )

        processor_up = True
        redriven = await worker.trigger("iii::queue::redrive", {"queue": QUEUE})
        print(f"card processor back: redrive -> {redriven}")
        with trio.fail_after(10):
            await charged.wait()
        print(f"dead letters left: {len(await dead_letters(worker))}")


async def run() -> None:
    async with engine_url() as url:  # $III_URL, else a dev engine started here
        await main(url)


if __name__ == "__main__":
    trio.run(run)
