"""Interop with the official Python SDK (PyPI ``iii-sdk``, asyncio): a worker built with it
connects to the dev engine, calls an iii_trio worker's functions and is called by it.

This proves the dev engine is usable as a real engine by a peer we did not write. Skipped only
when the official package cannot be imported.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pytest
import trio
from peer_process import read_line, start_peer

import iii_trio
from iii_trio.testing import DevEngine

if TYPE_CHECKING:
    from conftest import Engine

pytest.importorskip("iii", reason="the official iii-sdk package is not installed")


async def test_official_sdk_worker_and_iii_trio_worker_call_each_other(
    engine: Engine,
) -> None:
    async with iii_trio.open_worker(engine.url, name="trio-side") as worker:

        @worker.function("trio::add")
        async def add(payload: dict[str, Any]) -> int:
            return int(payload["a"] + payload["b"])

        @worker.function("trio::fail")
        async def fail(payload: Any) -> None:
            raise RuntimeError("trio side refuses")

        await worker.wait_registered()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                peer = await start_peer(nursery, "official_sdk_worker.py", engine.url)
                assert peer.stdout is not None
                assert peer.stdin is not None
                report = json.loads(await read_line(peer))
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


async def test_trigger_types_work_both_ways_with_an_official_sdk_worker(
    engine: Engine,
) -> None:
    started, bindings = trio.open_memory_channel[iii_trio.TriggerConfig](8)
    hooked, fired = trio.open_memory_channel[tuple[Any, Any]](8)

    class Ticker:
        async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
            await started.send(trigger)

        async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
            await trio.lowlevel.checkpoint()

    async with iii_trio.open_worker(engine.url, name="trio-provider") as worker:
        worker.register_trigger_type("trio-tick", Ticker(), description="ticks on demand")

        @worker.function("trio::on_hook")
        async def on_hook(payload: Any, metadata: Any) -> None:
            await hooked.send((payload, metadata))

        await worker.wait_registered()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                peer = await start_peer(nursery, "official_trigger_peer.py", engine.url)
                assert peer.stdout is not None
                assert peer.stdin is not None
                assert await read_line(peer) == "ready\n"

                # The official worker bound its function to our type: we fire it.
                tick = await bindings.receive()
                assert (tick.function_id, tick.config) == ("official::on_tick", {"every": 1})
                fired_result = await worker.trigger(
                    tick.function_id, {"n": 7}, metadata=tick.metadata, namespace=tick.namespace
                )
                assert fired_result == {"ticked": {"n": 7}}

                # We bind our function to the official worker's type: it fires it.
                await worker.register_trigger(
                    "official-hook", "trio::on_hook", {"x": 1}, metadata={"m": 2}
                )
                assert await fired.receive() == (
                    {"from": "official", "config": {"x": 1}},
                    {"m": 2},
                )
                await peer.stdin.aclose()
            assert peer.returncode == 0


async def test_an_official_sdk_worker_shares_state_and_serves_a_custom_stream(
    engine: Engine,
) -> None:
    async with iii_trio.open_worker(engine.url, name="trio-state") as worker:
        with trio.fail_after(30):
            # A real engine keeps state between runs: the peer's key starts out missing.
            await iii_trio.State(worker).delete("official", "k")
            async with trio.open_nursery() as nursery:
                peer = await start_peer(nursery, "official_stream_peer.py", engine.url)
                assert peer.stdout is not None
                assert peer.stdin is not None
                report = json.loads(await read_line(peer))
                assert report == {
                    "state_set": {"old_value": None, "new_value": {"from": "official"}},
                    # Its own stream::set went through the engine to its create_stream backend.
                    "stream_set": {"old_value": None, "new_value": {"title": "milk"}},
                }
                assert await iii_trio.State(worker).get("official", "k") == {"from": "official"}
                streams = iii_trio.Streams(worker)
                assert await streams.get("official-todo", "g", "i") == {"title": "milk"}
                assert await streams.set("official-todo", "g", "j", 2) == iii_trio.SetResult(
                    None, 2
                )
                assert await streams.list("official-todo", "g") == [{"title": "milk"}, 2]
                assert await streams.list_groups("official-todo") == ["g"]
                assert await streams.delete("official-todo", "g", "j") == 2
                # The engine's own store was never used for that stream.
                assert "official-todo" not in await streams.list_all()
                await peer.stdin.aclose()
            assert peer.returncode == 0


async def test_queues_and_pubsub_work_with_an_official_sdk_worker(iii_engine: DevEngine) -> None:
    # The dev engine only: a real engine enqueues only with its queue worker added.
    jobs, done = trio.open_memory_channel[Any](1)
    async with iii_trio.open_worker(iii_engine.url, name="trio-queues") as worker:

        @worker.function("trio::job")
        async def job(payload: Any) -> None:
            await jobs.send(payload)

        await worker.wait_registered()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                peer = await start_peer(nursery, "official_queue_peer.py", iii_engine.url)
                assert peer.stdin is not None
                # The official SDK's enqueue gets the engine's receipt; the message arrives here.
                receipt = json.loads(await read_line(peer))["receipt"]
                assert list(receipt) == ["messageReceiptId"]
                assert await done.receive() == {"from": "official"}
                # Our publish and enqueue reach the official worker.
                await worker.trigger("publish", {"topic": "news", "data": {"headline": 1}})
                assert json.loads(await read_line(peer)) == {"news": {"headline": 1}}
                await worker.enqueue("official::settle", {"n": 2}, queue="default")
                assert json.loads(await read_line(peer)) == {"settled": {"n": 2}}
                await peer.stdin.aclose()
            assert peer.returncode == 0


def _official_body(size: int) -> bytes:
    """What official_channel_worker.py's ``body(size)`` gives."""
    block = hashlib.sha256(b"official").digest() * 2048
    return (block * (size // len(block) + 1))[:size]


async def test_official_sdk_worker_and_iii_trio_worker_stream_through_channels(
    engine: Engine,
) -> None:
    async with iii_trio.open_worker(engine.url, name="trio-streams") as worker:

        @worker.function("trio::consume")
        async def consume(payload: dict[str, Any]) -> dict[str, Any]:
            digest = hashlib.sha256()
            size = 0
            async for chunk in payload["source"]:
                size += len(chunk)
                digest.update(chunk)
            return {"size": size, "sha256": digest.hexdigest()}

        await worker.wait_registered()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                peer = await start_peer(nursery, "official_channel_worker.py", engine.url)
                assert peer.stdout is not None
                assert peer.stdin is not None
                # The official worker made a channel, wrote into it and had us read it.
                report = json.loads(await read_line(peer))
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
