"""What one client that never reads costs the dev engine, and everyone else.

The engine stops reading a connection while CALL_LIMIT of its calls wait for an answer or for
their answer to be written to it, so a client that keeps calling and never reads is held at
that many: its calls stay in the socket buffers, not in the engine, and the workers it calls
serve everyone else at once. The callee runs in a process of its own, as in production, so the
other caller's latency measures the engine and not the test process's CPU share.
"""

from __future__ import annotations

import gc
import time
import uuid

import psutil
import trio
from peer_process import read_line, start_peer

import iii_trio
from iii_trio._protocol._fastpath import encode_call
from iii_trio.testing import open_dev_engine
from iii_trio.testing._dev_engine import _WRITE_EVERY, CALL_LIMIT

from ._raw import RawWorker

#: What the silent client tries to send (it gets nowhere near: the engine stops reading it).
SILENT_CALLS = 100_000
MEASURED_SECONDS = 3.0
P99_LIMIT = 0.050
RSS_GROWTH_LIMIT = 64 * 2**20


async def call_and_never_read(silent: RawWorker, sent: list[int]) -> None:
    websocket = silent.websocket
    for start in range(0, SILENT_CALLS, 1000):
        for n in range(start, start + 1000):
            websocket.send_text(encode_call("echo::back", {"n": n}, str(uuid.uuid4())))
        await websocket.flush()
        sent[0] = start + 1000


async def test_a_client_that_never_reads_costs_little_and_slows_nobody_else() -> None:
    process = psutil.Process()
    async with open_dev_engine() as engine, trio.open_nursery() as nursery:
        peer = await start_peer(nursery, "echo_worker.py", engine.url)
        assert peer.stdin is not None
        with trio.fail_after(30):
            assert await read_line(peer) == "ready\n"
        async with iii_trio.open_worker(engine.url, name="steady-caller") as caller:
            for n in range(500):  # warm up both sides before taking the baseline
                await caller.trigger("echo::back", {"n": n})
            gc.collect()
            rss_before = rss_peak = process.memory_info().rss
            silent = await RawWorker.connect(engine.url)
            sent = [0]
            flooding = trio.CancelScope()

            async def flood() -> None:
                with flooding:
                    await call_and_never_read(silent, sent)

            nursery.start_soon(flood)
            latencies: list[float] = []
            with trio.fail_after(MEASURED_SECONDS + 10):
                stop = trio.current_time() + MEASURED_SECONDS
                while trio.current_time() < stop:
                    began = time.perf_counter()
                    assert await caller.trigger("echo::back", {"n": -1}) == {"n": -1}
                    latencies.append(time.perf_counter() - began)
                    if len(latencies) % 50 == 0:
                        rss_peak = max(rss_peak, process.memory_info().rss)
            rss_peak = max(rss_peak, process.memory_info().rss)
            # The silent client is held at the limit; the rest of its calls never left its side.
            assert engine.statistics().pending_invocations <= CALL_LIMIT + _WRITE_EVERY
            assert sent[0] < SILENT_CALLS

        flooding.cancel()
        await silent.websocket.abort()
        latencies.sort()
        p50, p99 = (latencies[int(len(latencies) * share)] for share in (0.5, 0.99))
        growth = rss_peak - rss_before
        print(
            f"\nother caller: {len(latencies)} calls, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f}"
            f" ms; engine process RSS growth {growth / 2**20:.1f} MiB; silent client sent"
            f" {sent[0]} calls"
        )
        assert p99 < P99_LIMIT
        assert growth < RSS_GROWTH_LIMIT
        await peer.stdin.aclose()
        nursery.cancel_scope.cancel()
