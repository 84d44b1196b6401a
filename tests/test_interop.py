"""Interop with the official Python SDK (PyPI ``iii-sdk``, asyncio): a worker built with it
connects to the dev engine, calls an iii_trio worker's functions and is called by it.

This proves the dev engine is usable as a real engine by a peer we did not write. Skipped only
when the official package cannot be imported.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio.testing import DevEngine

pytest.importorskip("iii", reason="the official iii-sdk package is not installed")

PEER = Path(__file__).parent / "peers" / "official_sdk_worker.py"
CHANNEL_PEER = Path(__file__).parent / "peers" / "official_channel_worker.py"


async def test_official_sdk_worker_and_iii_trio_worker_call_each_other(
    iii_engine: DevEngine,
) -> None:
    async with iii_trio.open_worker(iii_engine.url, name="trio-side") as worker:

        @worker.function("trio::add")
        async def add(payload: dict[str, Any]) -> int:
            return int(payload["a"] + payload["b"])

        @worker.function("trio::fail")
        async def fail(payload: Any) -> None:
            raise RuntimeError("trio side refuses")

        await worker.wait_registered()
        env = {**os.environ, "OTEL_ENABLED": "false"}
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                peer: trio.Process = await nursery.start(
                    functools.partial(
                        trio.run_process,
                        [sys.executable, str(PEER), iii_engine.url],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                        check=False,
                    )
                )
                assert peer.stdout is not None
                assert peer.stdin is not None
                report = json.loads(await _read_line(peer.stdout))
                assert report["total"] == 5
                assert report["failure"] == {
                    "code": "invocation_failed",
                    "message": "trio side refuses",
                }
                answer = await worker.trigger("official::greet", {"name": "trio"})
                assert answer == {"greeting": "hello trio", "saw_caller_key": True}
                workers = {info.name: info for info in await worker.list_workers()}
                assert workers["official-peer"].runtime == "python"
                await peer.stdin.aclose()  # the peer shuts down when its stdin closes
            assert peer.returncode == 0


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"peer exited before reporting; got {buffer!r}")
        buffer += chunk
    return buffer.decode()


def _official_body(size: int) -> bytes:
    """What official_channel_worker.py's ``body(size)`` gives."""
    block = hashlib.sha256(b"official").digest() * 2048
    return (block * (size // len(block) + 1))[:size]


async def test_official_sdk_worker_and_iii_trio_worker_stream_through_channels(
    iii_engine: DevEngine,
) -> None:
    async with iii_trio.open_worker(iii_engine.url, name="trio-streams") as worker:

        @worker.function("trio::consume")
        async def consume(payload: dict[str, Any]) -> dict[str, Any]:
            digest = hashlib.sha256()
            size = 0
            async for chunk in payload["source"]:
                size += len(chunk)
                digest.update(chunk)
            return {"size": size, "sha256": digest.hexdigest()}

        await worker.wait_registered()
        env = {**os.environ, "OTEL_ENABLED": "false"}
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                peer: trio.Process = await nursery.start(
                    functools.partial(
                        trio.run_process,
                        [sys.executable, str(CHANNEL_PEER), iii_engine.url],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                        check=False,
                    )
                )
                assert peer.stdout is not None
                assert peer.stdin is not None
                # The official worker made a channel, wrote into it and had us read it.
                report = json.loads(await _read_line(peer.stdout))
                assert report["trio_saw"] == {"size": 1024 * 1024, "sha256": report["sent_sha256"]}

                # An iii_trio writer, an official reader (text goes to its message callbacks).
                into = await worker.create_channel()
                data = bytes(range(256)) * 4096 + b"tail"
                answers: dict[str, Any] = {}

                async def official_consumes() -> None:
                    answers["consume"] = await worker.trigger(
                        "official::consume", {"source": into.reader_ref}
                    )

                async with trio.open_nursery() as streams:
                    streams.start_soon(official_consumes)
                    async with into.writer as writer:
                        await writer.send_message("hello official")
                        await writer.send_all(data)
                assert answers["consume"] == {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "messages": ["hello official"],
                }

                # An official writer, an iii_trio reader.
                out_of = await worker.create_channel()

                async def official_produces() -> None:
                    answers["produce"] = await worker.trigger(
                        "official::produce", {"sink": out_of.writer, "size": 3 * 65536 + 7}
                    )

                async with trio.open_nursery() as streams:
                    streams.start_soon(official_produces)
                    reader = out_of.reader
                    assert await reader.receive_message() == "header"
                    received = b"".join([chunk async for chunk in reader])
                assert received == _official_body(3 * 65536 + 7)
                assert answers["produce"] == hashlib.sha256(received).hexdigest()

                await peer.stdin.aclose()  # the peer shuts down when its stdin closes
            assert peer.returncode == 0
