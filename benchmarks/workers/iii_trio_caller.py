"""An iii-trio worker that calls ``bench::echo`` through an engine and measures it.

``iii_trio_caller.py URL --inflight N --payload-bytes B --warmup S --duration S``

Keeps N ``worker.trigger`` calls in flight. Prints one JSON line when the measurement window
opens (``{"event": "start"}``) and one when it closes, with the numbers
(``{"event": "end", "calls": ..., "seconds": ..., "p50_us": ..., ...}``), then exits. Before
loading it waits (up to 20 s) until ``bench::echo`` answers, so it can be started together with
the echo worker.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
import trio

import iii_trio


def _option(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    return float(values[min(len(values) - 1, round(q * (len(values) - 1)))])


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def main(argv: list[str]) -> None:
    url = argv[0]
    inflight = int(_option(argv, "--inflight", "1"))
    size = int(_option(argv, "--payload-bytes", "100"))
    warmup = float(_option(argv, "--warmup", "0.5"))
    duration = float(_option(argv, "--duration", "2"))
    payload = {"data": "x" * max(0, size - 11)}
    latencies: list[int] = []
    state = {"measuring": False, "sending": True, "done": 0, "errors": 0, "mismatches": 0}
    perf_ns = time.perf_counter_ns

    async with iii_trio.open_worker(url, name="bench-caller") as worker:
        with trio.fail_after(20):
            while True:
                try:
                    await worker.trigger("bench::echo", payload)
                    break
                except iii_trio.FunctionNotFound:
                    await trio.sleep(0.02)

        all_done = trio.Event()
        running = [inflight]

        async def call_loop() -> None:
            try:
                await calls()
            finally:
                running[0] -= 1
                if running[0] == 0:
                    all_done.set()

        async def calls() -> None:
            while state["sending"]:
                start = perf_ns()
                try:
                    result = await worker.trigger("bench::echo", payload)
                except iii_trio.InvocationError:
                    state["errors"] += 1
                    continue
                if state["measuring"]:
                    latencies.append(perf_ns() - start)
                    state["done"] += 1
                if result != payload:
                    state["mismatches"] += 1

        stuck = 0
        async with trio.open_nursery() as nursery:
            for _ in range(inflight):
                nursery.start_soon(call_loop)
            await trio.sleep(warmup)
            _emit({"event": "start"})
            t0 = perf_ns()
            state["measuring"] = True
            await trio.sleep(duration)
            state["measuring"] = False
            t1 = perf_ns()
            state["sending"] = False
            with trio.move_on_after(10):
                await all_done.wait()
            stuck = running[0]
            nursery.cancel_scope.cancel()
        latencies.sort()
        seconds = (t1 - t0) / 1e9
        _emit(
            {
                "event": "end",
                "calls": state["done"],
                "seconds": seconds,
                "calls_per_s": state["done"] / seconds,
                "p50_us": _percentile(latencies, 0.5) / 1e3,
                "p99_us": _percentile(latencies, 0.99) / 1e3,
                "errors": state["errors"],
                "mismatches": state["mismatches"],
                "stuck": stuck,
            }
        )


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
