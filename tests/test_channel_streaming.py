"""Channels under load and failure, between workers in separate processes: 100 MB each way with
the bytes checked, memory bounded by backpressure, and every way a peer can vanish mid-stream
ending in an end of stream or a ChannelClosed, never a hang."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

import iii_trio
from iii_trio.testing import DevEngine, open_dev_engine, serve_dev_engine

PEER = Path(__file__).parent / "peers" / "channel_peer.py"
#: The checkout under test comes first on the peers' path, ahead of any installed copy.
PEER_PATH = os.pathsep.join(
    filter(None, [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")])
)
PATIENCE = 30.0
MB = 1_000_000
MiB = 1024 * 1024


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


@pytest.fixture
async def worker(engine: DevEngine) -> AsyncIterator[iii_trio.Worker]:
    async with iii_trio.open_worker(engine.url, name="local") as connected:
        yield connected


@asynccontextmanager
async def _peer(*arguments: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """Run channel_peer.py with ``arguments``; yield the process and its first line."""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(PEER), *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": PEER_PATH},
                check=False,
            )
        )
        assert process.stdin is not None
        assert process.stdout is not None
        with trio.fail_after(PATIENCE):
            line = await _read_line(process.stdout)
        try:
            yield process, line
        finally:
            with trio.move_on_after(PATIENCE, shield=True):
                await process.stdin.aclose()  # the peer exits when its stdin closes
                await process.wait()
            if process.returncode is None:  # pragma: no cover - it did not exit in time
                process.kill()


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"the peer exited before its first line; got {buffer!r}")
        buffer += chunk
    return buffer.decode().strip()


async def _drain(reader: iii_trio.ChannelReader) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in reader:
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


# --- 100 MB each way ----------------------------------------------------------------------------


async def test_100_mb_from_another_process_arrive_intact(
    engine: DevEngine, worker: iii_trio.Worker
) -> None:
    async with _peer(engine.url, "far"):
        channel = await worker.create_channel()
        sent: dict[str, Any] = {}

        async def produce() -> None:
            sent["sha256"] = await worker.trigger(
                "far::produce", {"sink": channel.writer_ref, "size": 100 * MB, "seed": 7}
            )

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                size, sha256 = await _drain(channel.reader)
    assert size == 100 * MB
    assert sha256 == sent["sha256"]


async def test_100_mb_to_another_process_arrive_intact(
    engine: DevEngine, worker: iii_trio.Worker
) -> None:
    async with _peer(engine.url, "far"):
        channel = await worker.create_channel()
        digest = hashlib.sha256()
        received: dict[str, Any] = {}

        async def consume() -> None:
            received.update(await worker.trigger("far::consume", {"source": channel.reader_ref}))

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                async with channel.writer as writer:
                    block = bytes(range(256)) * 256  # 64 KiB
                    for n in range(100 * MB // len(block)):
                        piece = block[n % 256 :] + block[: n % 256]
                        await writer.send_all(piece)
                        digest.update(piece)
                    tail = b"end" * 1000
                    await writer.send_all(tail)
                    digest.update(tail)
    assert received["size"] == 100 * MB // 65536 * 65536 + 3000
    assert received["sha256"] == digest.hexdigest()


# --- backpressure keeps memory bounded ----------------------------------------------------------


async def test_a_slow_reader_holds_the_writer_and_the_engine_to_little_memory() -> None:
    # The engine and the writer each run in a process of their own; this process reads at
    # 1 MiB/s while the writer tries to push 64 MiB. Neither may grow by 64 MiB (were the
    # stream not held back, the engine alone would hold most of it).
    async with (
        _peer("engine") as (engine_process, url),
        _peer(url, "writer") as (writer_process, _),
        iii_trio.open_worker(url, name="slow-reader") as worker,
    ):
        channel = await worker.create_channel()
        watched = {
            "engine": psutil.Process(engine_process.pid),
            "writer": psutil.Process(writer_process.pid),
        }
        before = {name: process.memory_info().rss for name, process in watched.items()}
        peak = dict(before)
        sent: dict[str, Any] = {}

        async def produce() -> None:
            sent["sha256"] = await worker.trigger(
                "writer::produce", {"sink": channel.writer_ref, "size": 64 * MiB, "seed": 3}
            )

        digest = hashlib.sha256()
        size = 0
        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                reader = channel.reader
                slow_until = trio.current_time() + 3.0
                while trio.current_time() < slow_until:
                    chunk = await reader.receive_some(64 * 1024)
                    size += len(chunk)
                    digest.update(chunk)
                    for name, process in watched.items():
                        peak[name] = max(peak[name], process.memory_info().rss)
                    await trio.sleep(len(chunk) / MiB)  # 1 MiB/s
                held_back_at = size
                rest, _ = await _drain_into(reader, digest)
                size += rest
    assert held_back_at < 8 * MiB  # it was read slowly
    assert size == 64 * MiB
    assert digest.hexdigest() == sent["sha256"]
    growth = {name: (peak[name] - before[name]) / MiB for name in watched}
    assert growth["engine"] < 64, growth
    assert growth["writer"] < 64, growth


async def _drain_into(reader: iii_trio.ChannelReader, digest: Any) -> tuple[int, None]:
    size = 0
    async for chunk in reader:
        size += len(chunk)
        digest.update(chunk)
    return size, None


# --- a peer that vanishes mid-stream ------------------------------------------------------------


async def test_a_writer_process_killed_mid_stream_is_an_end_of_stream_for_the_reader(
    engine: DevEngine, worker: iii_trio.Worker
) -> None:
    async with _peer(engine.url, "victim") as (process, _):
        channel = await worker.create_channel()

        async def produce() -> None:
            with pytest.raises(iii_trio.InvocationError, match="invocation_stopped"):
                await worker.trigger(
                    "victim::produce", {"sink": channel.writer_ref, "size": 1000 * MB}
                )

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                reader = channel.reader
                size = len(await reader.receive_some())
                process.kill()
                # As the engine reports a writer that is gone: the end of the stream.
                rest, _ = await _drain(reader)
    assert 0 < size + rest < 1000 * MB
    assert await worker.trigger("engine::functions::list", {}) is not None  # serving on


async def test_a_reader_process_killed_mid_stream_is_channel_closed_for_the_writer(
    engine: DevEngine, worker: iii_trio.Worker
) -> None:
    async with _peer(engine.url, "victim") as (process, _):
        channel = await worker.create_channel(buffer_size=4)

        async def consume() -> None:
            with pytest.raises(iii_trio.InvocationError, match="invocation_stopped"):
                await worker.trigger(
                    "victim::consume", {"source": channel.reader_ref, "rate": 256 * 1024}
                )

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                writer = channel.writer
                await writer.send_all(b"x" * 65536)
                await trio.sleep(0.2)
                process.kill()
                with pytest.raises(iii_trio.ChannelClosed, match="dropped"):
                    await _write_until_refused(writer)
                await writer.aclose()  # what a send reported already, closing does not repeat


async def test_the_engine_going_away_mid_stream_is_channel_closed_at_both_ends() -> None:
    stopped = trio.CancelScope()

    async def run_engine(task_status: trio.TaskStatus[DevEngine]) -> None:
        with stopped:
            await serve_dev_engine(task_status=task_status)

    async with trio.open_nursery() as nursery:
        engine: DevEngine = await nursery.start(run_engine)
        backoff = iii_trio.Backoff(initial=0.05, maximum=0.05)
        async with (
            iii_trio.open_worker(engine.url, name="a", backoff=backoff) as a,
            iii_trio.open_worker(engine.url, name="b", backoff=backoff) as b,
        ):
            channel = await a.create_channel()
            reader = b._channels.end(channel.reader_ref)
            assert isinstance(reader, iii_trio.ChannelReader)
            writer = channel.writer
            with trio.fail_after(PATIENCE):
                await writer.send_all(b"before")
                assert await reader.receive_some() == b"before"
                stopped.cancel()  # the engine stops: every socket is dropped
                with pytest.raises(iii_trio.ChannelClosed, match="lost"):
                    await reader.receive_some()
                with pytest.raises(iii_trio.ChannelClosed):
                    await _write_until_refused(writer)


async def _write_until_refused(writer: iii_trio.ChannelWriter) -> None:
    while True:
        await writer.send_all(b"z" * 65536)
        await trio.sleep(0.01)
