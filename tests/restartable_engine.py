"""A dev engine that a test can stop and start again on the same port (an engine restart)."""

from __future__ import annotations

import trio

from iii_trio.testing import DevEngine, open_dev_engine


async def run_engine(
    port: int, scope: trio.CancelScope, *, task_status: trio.TaskStatus[DevEngine]
) -> None:
    """Serve a dev engine on ``port`` (0: a free one) until ``scope`` is cancelled; start it
    with ``nursery.start``, which returns the engine."""
    with scope:
        async with open_dev_engine(port=port) as engine:
            task_status.started(engine)
            await trio.sleep_forever()
