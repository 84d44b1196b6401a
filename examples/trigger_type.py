"""A trigger type of your own: a worker provides ``ticker::every``, which calls each bound
function every ``every_ms`` milliseconds, ``count`` times.

Any worker can bind a function to it with ``register_trigger("ticker::every", ...)``; this one
binds its own ``demo::on_tick``. Run it with ``python examples/trigger_type.py`` (the dev engine
starts in-process unless ``III_URL`` names an engine).
"""

from __future__ import annotations

import attrs
import trio

import iii_trio
from iii_trio.testing import engine_url


@attrs.frozen
class Every:
    """A binding's config. Its JSON Schema is what discovery shows for the type."""

    every_ms: int
    count: int = 1


@attrs.frozen
class Tick:
    """What each fire delivers."""

    number: int
    of: int


class Ticker:
    """The provider: one task per binding, in a nursery that lives as long as the worker."""

    def __init__(self, worker: iii_trio.Worker, nursery: trio.Nursery) -> None:
        self._worker = worker
        self._nursery = nursery
        self._running: dict[str, trio.CancelScope] = {}

    async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        every = Every(**trigger.config)  # a bad config raises: the engine refuses the binding
        if every.every_ms <= 0 or every.count <= 0:
            raise ValueError("every_ms and count must be positive")
        scope = trio.CancelScope()
        self._running[trigger.id] = scope
        self._nursery.start_soon(self._tick, trigger, every, scope)
        await trio.lowlevel.checkpoint()

    async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        scope = self._running.pop(trigger.id, None)
        if scope is not None:
            scope.cancel()
        await trio.lowlevel.checkpoint()

    async def _tick(
        self, trigger: iii_trio.TriggerConfig, every: Every, scope: trio.CancelScope
    ) -> None:
        with scope:
            for number in range(1, every.count + 1):
                await trio.sleep(every.every_ms / 1000)
                await self._worker.trigger(
                    trigger.function_id,
                    attrs.asdict(Tick(number, every.count)),
                    metadata=trigger.metadata,
                    namespace=trigger.namespace,
                )


async def main(url: str) -> None:
    async with (
        iii_trio.open_worker(url, name="ticker") as worker,
        trio.open_nursery() as ticking,
    ):
        ticker = worker.register_trigger_type(
            "ticker::every",
            Ticker(worker, ticking),
            description="Calls the bound function every every_ms milliseconds, count times",
            trigger_request_format=Every,
            call_request_format=Tick,
        )
        done = trio.Event()

        @worker.function("demo::on_tick")
        async def on_tick(tick: Tick, metadata: dict[str, str]) -> None:
            print(f"{metadata['label']}: tick {tick.number} of {tick.of}")
            if tick.number == tick.of:
                done.set()

        binding = await ticker.register_trigger(
            "demo::on_tick", {"every_ms": 20, "count": 3}, metadata={"label": "demo"}
        )
        await done.wait()
        binding.unregister()
        print("unbound", binding.trigger_type)
        ticking.cancel_scope.cancel()


async def run() -> None:
    async with engine_url() as url:  # $III_URL, else a dev engine started here
        await main(url)


if __name__ == "__main__":
    trio.run(run)
