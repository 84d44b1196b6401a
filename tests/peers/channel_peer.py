"""An iii_trio worker that streams through channels, in a process of its own.

Usage: ``python channel_peer.py ENGINE_URL NAME``. Serves ``NAME::produce`` (writes ``size``
deterministic bytes, from ``seed``, to the writer ``sink`` in 64 KiB chunks and returns their
SHA-256) and ``NAME::consume`` (reads the reader ``source`` to its end, at most ``rate`` bytes a
second if given, and returns the size and SHA-256 of what it read). Writes ``ready`` on a line
of its own once both are registered, then serves until its standard input closes.

``python channel_peer.py engine`` runs a dev engine instead and prints its URL.
"""

from __future__ import annotations

import hashlib
import random
import sys
from typing import Any

import trio

import iii_trio
from iii_trio.testing import open_dev_engine

CHUNK = 64 * 1024


def chunks(size: int, seed: int) -> Any:
    """``size`` bytes in chunks of 64 KiB, the same for the same seed."""
    generator = random.Random(seed)
    block = generator.randbytes(CHUNK)
    sent = 0
    while sent < size:
        # A fresh chunk now and then keeps the data from repeating while costing little.
        if sent % (16 * CHUNK) == 0:
            block = generator.randbytes(CHUNK)
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


async def serve(url: str, name: str) -> None:
    async with iii_trio.open_worker(url, name=f"{name}-peer") as worker:

        @worker.function(f"{name}::produce")
        async def produce(payload: dict[str, Any]) -> str:
            digest = hashlib.sha256()
            sink: iii_trio.ChannelWriter = payload["sink"]
            for piece in chunks(payload["size"], payload.get("seed", 0)):
                await sink.send_all(piece)
                digest.update(piece)
            return digest.hexdigest()

        @worker.function(f"{name}::consume")
        async def consume(payload: dict[str, Any]) -> dict[str, Any]:
            digest = hashlib.sha256()
            size = 0
            rate = payload.get("rate")
            source: iii_trio.ChannelReader = payload["source"]
            async for chunk in source:
                size += len(chunk)
                digest.update(chunk)
                if rate:
                    await trio.sleep(len(chunk) / rate)
            return {"size": size, "sha256": digest.hexdigest()}

        await worker.wait_registered()
        sys.stdout.write("ready\n")  # one write: the reader waits for the whole line
        sys.stdout.flush()
        await trio.to_thread.run_sync(sys.stdin.read)


async def run_engine() -> None:
    async with open_dev_engine() as engine:
        sys.stdout.write(engine.url + "\n")
        sys.stdout.flush()
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    if sys.argv[1] == "engine":
        trio.run(run_engine)
    else:
        trio.run(serve, sys.argv[1], sys.argv[2])
