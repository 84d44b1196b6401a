"""Run iii-trio's dev engine with its REST API on loopback; print ``{"url", "http_url"}`` as
the first line of stdout. Serves until killed."""

from __future__ import annotations

import json

import trio

import iii_trio.testing


async def serve() -> None:
    async with iii_trio.testing.open_dev_engine(host="127.0.0.1", port=0, http_port=0) as engine:
        print(json.dumps({"url": engine.url, "http_url": engine.http_url}), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(serve)
