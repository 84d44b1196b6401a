"""An iii-trio worker that keeps many calls waiting and reports its own memory growth.

``iii_trio_memory.py URL --mode trigger|park [--payload-bytes B] [--tracemalloc [--sites]]``

The harness (section ``memory`` of ``benchmarks/run.py``) drives it through the engine connection,
by calling functions this worker registers:

- ``bench::measure``: collect garbage, then return this process's RSS (psutil) and, with
  ``--tracemalloc``, the bytes of Python allocations traced so far. Called once before the tasks
  start and once while they all wait; with ``--sites`` the second answer also lists the source
  lines that allocated the growth (two snapshots of every trace: slow, so asked for once).
- ``bench::start`` (``{"calls": N}``): start N tasks and answer once every one of them waits.
  With ``--mode trigger`` each task makes one ``worker.trigger("bench::hold", payload)``, which
  the engine leaves unanswered until the harness releases it; with ``--mode park`` (the reference)
  each task parks in ``trio.sleep_forever()`` instead.
- ``bench::finish`` (a call without an id, nothing is answered): with ``--mode trigger``, wait
  until the N calls have returned, checking each result against the payload; with ``--mode park``,
  cancel the parked tasks. Then print one JSON line (``{"completed": ..., "mismatches": ...,
  "iii_trio_file": ...}``) and leave the worker's block, which ends the process.

Before its first measurement it warms up by calling ``bench::echo``, which it serves itself (the
engine routes the calls back). Only the public API is used: ``open_worker``,
``register_function`` and ``trigger``. Whatever happens, it gives up after ``LIFETIME`` seconds.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from typing import Any

import orjson
import psutil
import trio
import trio.testing

import iii_trio

HOLD = "bench::hold"
ECHO = "bench::echo"
LIFETIME = 120.0
WARMUP_CALLS = 256
#: How many source lines to name, largest growth first, in the traced "after" answer.
TOP_SITES = 8


def _option(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def _short_path(filename: str) -> str:
    """``filename`` relative to the import root it was found under (no machine-specific part)."""
    roots = sorted((p for p in sys.path if p), key=len, reverse=True)
    for root in roots:
        prefix = root.rstrip(os.sep) + os.sep
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return os.path.basename(filename)


async def main(argv: list[str]) -> None:
    url = argv[0]
    mode = _option(argv, "--mode", "trigger")
    if mode not in ("trigger", "park"):
        raise SystemExit(f"unknown --mode {mode!r}")
    size = int(_option(argv, "--payload-bytes", "100"))
    traced = "--tracemalloc" in argv
    sites = traced and "--sites" in argv
    if traced:
        tracemalloc.start()
    # One payload object shared by every call: it is the caller's data, not the SDK's cost.
    payload = {"data": "x" * max(0, size - 11)}
    process = psutil.Process()
    state: dict[str, Any] = {"completed": 0, "mismatches": 0, "errors": 0, "before": None}
    finish = trio.Event()

    with trio.fail_after(LIFETIME):
        async with iii_trio.open_worker(url, name="bench-memory-caller") as worker:
            async with trio.open_nursery() as tasks:
                # One coroutine for both modes, so that a parked task and a calling one have
                # frames of the same size: the difference between the modes is trigger's alone.
                async def one_task() -> None:
                    if mode == "park":
                        await trio.sleep_forever()
                    try:
                        result = await worker.trigger(HOLD, payload)
                    except iii_trio.InvocationError:
                        state["errors"] += 1
                        return
                    state["completed"] += 1
                    if result != payload:
                        state["mismatches"] += 1

                async def echo(data: Any) -> Any:
                    return data

                async def measure(data: Any) -> Any:
                    after = isinstance(data, dict) and data.get("point") == "after"
                    if sites and not after:
                        # The "before" snapshot lives until the "after" one: take it first, so
                        # its own memory is already counted in both measurements.
                        state["before"] = tracemalloc.take_snapshot()
                    gc.collect()
                    answer: dict[str, Any] = {"rss": process.memory_info().rss}
                    if traced:
                        answer["traced"] = tracemalloc.get_traced_memory()[0]
                        if sites and after and state["before"] is not None:
                            answer["sites"] = _growth_by_line(state["before"])
                    return answer

                async def start(data: Any) -> Any:
                    calls = int(data["calls"])
                    for _ in range(calls):
                        tasks.start_soon(one_task)
                    # Answer only once every task is waiting (its call sent, or parked).
                    await trio.testing.wait_all_tasks_blocked()
                    return {"started": calls}

                async def finish_handler(data: Any) -> None:
                    finish.set()

                worker.register_function(ECHO, echo)
                async with trio.open_nursery() as warmup:
                    for _ in range(WARMUP_CALLS):
                        warmup.start_soon(worker.trigger, ECHO, payload)
                worker.register_function("bench::start", start)
                worker.register_function("bench::finish", finish_handler)
                # Registered last: the harness waits for this one before it starts.
                worker.register_function("bench::measure", measure)

                await finish.wait()
                if mode == "park":
                    tasks.cancel_scope.cancel()
            _emit(
                {
                    "completed": state["completed"],
                    "mismatches": state["mismatches"],
                    "errors": state["errors"],
                    "iii_trio_file": iii_trio.__file__,
                }
            )


def _growth_by_line(before: tracemalloc.Snapshot) -> list[list[Any]]:
    """[where, bytes, blocks] of the source lines that allocated the most since ``before``."""
    own = tracemalloc.Filter(False, tracemalloc.__file__)
    after = tracemalloc.take_snapshot().filter_traces([own])
    stats = after.compare_to(before.filter_traces([own]), "lineno")
    top = sorted(stats, key=lambda s: s.size_diff, reverse=True)[:TOP_SITES]
    sites = []
    for stat in top:
        frame = stat.traceback[0]
        sites.append(
            [f"{_short_path(frame.filename)}:{frame.lineno}", stat.size_diff, stat.count_diff]
        )
    return sites


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
