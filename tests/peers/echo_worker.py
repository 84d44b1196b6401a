"""An iii_trio worker serving ``echo::back`` in a process of its own, for tests whose callee must
not share the test process's CPU time.

Usage: ``python echo_worker.py ENGINE_URL``. Prints ``ready`` once its function is registered,
then serves until its standard input closes.
"""

from __future__ import annotations

import sys
from typing import Any

import trio

import iii_trio


async def serve(url: str) -> None:
    async with iii_trio.open_worker(url, name="echo-peer") as worker:

        @worker.function("echo::back")
        async def back(payload: Any) -> Any:
            return payload

        await worker.wait_registered()
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    trio.run(serve, sys.argv[1])
