"""Run iii-trio's dev engine on loopback and print its URL as the first line of stdout.

``dev_engine.py [PORT]`` (default 0: any free port). Serves until killed.
"""

from __future__ import annotations

import sys

import trio

import iii_trio.testing


async def serve(port: int) -> None:
    async with iii_trio.testing.open_dev_engine(host="127.0.0.1", port=port) as engine:
        print(engine.url, flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(serve, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
