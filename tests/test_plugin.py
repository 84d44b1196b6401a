"""The pytest plugin's fixtures, as a user's test suite gets them (entry point ``pytest11``)."""

from __future__ import annotations

import iii_trio
from iii_trio.testing import DevEngine


async def test_iii_engine_is_a_running_dev_engine(iii_engine: DevEngine) -> None:
    assert iii_engine.url.startswith("ws://127.0.0.1:")
    async with iii_trio.open_worker(iii_engine.url, name="plugin-check") as worker:
        assert worker.connection_state is iii_trio.ConnectionState.CONNECTED


async def test_iii_worker_is_connected_to_iii_engine(
    iii_engine: DevEngine, iii_worker: iii_trio.Worker
) -> None:
    # The engine the fixture started is the one the worker is connected to.
    assert iii_engine.statistics().connections == 1
    assert iii_worker.worker_id in {entry.id for entry in await iii_worker.list_workers()}
    iii_worker.register_function("plugin::add", lambda payload: payload["a"] + payload["b"])
    assert await iii_worker.trigger("plugin::add", {"a": 1, "b": 2}) == 3
