"""A worker built with the official asyncio SDK (PyPI ``iii-sdk``) that streams through channels,
run as a subprocess peer.

Usage: ``python official_channel_worker.py ENGINE_URL``. It registers ``official::consume``
(reads the channel reader ``source`` to its end and returns the size and SHA-256 of its data
and the text messages it saw) and ``official::produce`` (sends the text message ``header``,
then ``size`` bytes, to the channel writer ``sink``, closes it and returns the data's SHA-256).
Then it creates a channel itself, calls ``trio::consume`` with the channel's reader ref while
writing 1 MiB into it, prints one JSON line with what it sent and what the iii_trio worker
reported, and serves until its standard input closes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any

from iii import InitOptions, register_worker
from iii.helpers import create_channel_async


def body(size: int) -> bytes:
    """``size`` bytes that are the same on both sides of a test."""
    block = hashlib.sha256(b"official").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def consume(data: dict[str, Any]) -> dict[str, Any]:
    reader = data["source"]
    messages: list[str] = []
    reader.on_message(messages.append)
    received = await reader.read_all()
    return {
        "size": len(received),
        "sha256": hashlib.sha256(received).hexdigest(),
        "messages": messages,
    }


async def produce(data: dict[str, Any]) -> str:
    writer = data["sink"]
    sent = body(data["size"])
    await writer.send_message_async("header")
    await writer.write(sent)
    await writer.close_async()
    return hashlib.sha256(sent).hexdigest()


async def stream_to_trio(iii: Any) -> dict[str, Any]:
    channel = await create_channel_async(iii)
    sent = body(1024 * 1024)

    async def write() -> None:
        await channel.writer.write(sent)
        await channel.writer.close_async()

    seen, _ = await asyncio.gather(
        iii.trigger_async(
            {"function_id": "trio::consume", "payload": {"source": channel.reader_ref.model_dump()}}
        ),
        write(),
    )
    return {"sent_sha256": hashlib.sha256(sent).hexdigest(), "trio_saw": seen}


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-channels"))
    try:
        iii.register_function("official::consume", consume)
        iii.register_function("official::produce", produce)
        report = asyncio.run(stream_to_trio(iii))
        print(json.dumps(report), flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
