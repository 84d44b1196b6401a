"""An iii-trio worker behind the dev engine's REST API, for ``benchmarks/http_api.py``.

``http_route.py ENGINE_URL``: serves ``bench::ping`` (returns ``{"body": "pong"}``) bound to
``GET /ping``, prints ``ready`` once the route is live, and serves until killed.
"""

from __future__ import annotations

import sys
from typing import Any

import trio

import iii_trio


async def ping(request: Any) -> dict[str, Any]:
    return {"body": "pong"}


async def serve(url: str) -> None:
    async with iii_trio.open_worker(url, name="bench-http-route") as worker:
        worker.register_function("bench::ping", ping)
        await worker.register_trigger("http", "bench::ping", {"api_path": "ping"})
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(serve, sys.argv[1])
