"""Streaming through channels: a function streams tokens to its caller as they are made, and a
file streams to a function that checks it.

Run it with ``python examples/streaming.py``. With ``III_URL`` unset it starts iii_trio's dev
engine in-process, so no iii binary is needed; with ``III_URL`` set it uses that engine.

A channel has a writer and a reader. Keep one end and put the other (or its ref) in the payload
of the function you call: the function gets it as a live ``ChannelReader`` or
``ChannelWriter``. Reading and writing happen at the same time, in two tasks; the engine holds
a fast writer back until the reader catches up.
"""

from __future__ import annotations

import hashlib
from typing import Any

import trio

import iii_trio
from iii_trio.testing import engine_url


async def main(url: str) -> None:
    async with iii_trio.open_worker(url, name="streaming") as worker:

        @worker.function("tokens::generate", description="Stream a reply, one token at a time")
        async def generate(request: dict[str, Any]) -> int:
            out: iii_trio.ChannelWriter = request["out"]
            words = f"you said: {request['prompt']}".split()
            for word in words:
                await out.send_message(word)  # a text message per token
                await trio.sleep(0.01)  # as a model would take its time
            return len(words)  # `out` is closed when the function returns: the stream ends

        @worker.function("files::checksum", description="Size and SHA-256 of a streamed file")
        async def checksum(request: dict[str, Any]) -> dict[str, Any]:
            digest = hashlib.sha256()
            size = 0
            async for chunk in request["file"]:  # a ChannelReader is a trio ReceiveStream
                digest.update(chunk)
                size += len(chunk)
            return {"size": size, "sha256": digest.hexdigest()}

        # 1. Tokens, printed as they arrive while the function is still running.
        reply = await worker.create_channel()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                worker.trigger, "tokens::generate", {"prompt": "hello", "out": reply.writer_ref}
            )
            tokens = []
            while True:
                try:
                    tokens.append(await reply.reader.receive_message())
                except trio.EndOfChannel:
                    break
        print("tokens:", " ".join(tokens))

        # 2. A file, streamed in 64 KiB frames to a function that reads it as it comes.
        path = trio.Path(__file__)
        upload = await worker.create_channel()
        result: dict[str, Any] = {}

        async def check() -> None:
            result.update(await worker.trigger("files::checksum", {"file": upload.reader}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check)
            async with upload.writer as writer, await path.open("rb") as file:
                while chunk := await file.read(64 * 1024):
                    await writer.send_all(chunk)
        matches = result["sha256"] == hashlib.sha256(await path.read_bytes()).hexdigest()
        print(f"files::checksum: {result['size']} bytes, sha256 matches: {matches}")


async def run() -> None:
    async with engine_url() as url:  # $III_URL, else a dev engine started here
        await main(url)


if __name__ == "__main__":
    trio.run(run)
