"""REST API throughput: a trivial ``GET`` route through the dev engine's HTTP port to an
iii-trio function.

``python -m benchmarks.http_api [--connections N] [--seconds S] [--rounds N]``

Three processes on loopback: the dev engine (``workers/http_engine.py``), an iii-trio worker
serving ``bench::ping`` behind ``GET /ping`` (``workers/http_route.py``), and this process as
the client: ``--connections`` keep-alive connections (default 64), each sending its next
request as soon as the previous response is complete (no pipelining), with a minimal HTTP/1.1
client on trio sockets so that the client costs little next to the engine. Each round runs
0.5 s of warm-up, then ``--seconds`` (default 3) of counted requests; the report gives the
requests/s of each round and the median, with the engine's CPU time per request. Not part of
``python -m benchmarks.run``; nothing is written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from benchmarks._procs import Processes, install_signal_handlers

ROOT = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).resolve().parent / "workers"
START_TIMEOUT = 30.0
WARM_UP = 0.5
REQUEST = b"GET /ping HTTP/1.1\r\nhost: bench\r\n\r\n"


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OTEL_ENABLED": "false"}


async def _one_connection(host: str, port: int, counts: list[int], index: int) -> None:
    """Send requests one after the other on one connection, counting complete responses."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        buffer = b""
        while True:
            await stream.send_all(REQUEST)
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end >= 0:
                    head = buffer[:head_end].lower()
                    if not head.startswith(b"http/1.1 200"):
                        raise RuntimeError(f"unexpected response: {head[:80]!r}")
                    start = head.index(b"content-length:") + len(b"content-length:")
                    length = int(head[start : head.index(b"\r\n", start)])
                    end = head_end + 4 + length
                    if len(buffer) >= end:
                        buffer = buffer[end:]
                        break
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise RuntimeError("the engine closed a keep-alive connection")
                buffer += chunk
            counts[index] += 1


async def measure(
    http_url: str, connections: int, seconds: float, engine_cpu: Callable[[], float]
) -> tuple[float, float]:
    """Requests per second over ``seconds``, after the warm-up, and the engine's CPU seconds
    per request over the same time."""
    host, port = http_url.removeprefix("http://").rsplit(":", 1)
    counts = [0] * connections
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(_one_connection, host, int(port), counts, index)
        await trio.sleep(WARM_UP)
        before = sum(counts)
        cpu_before = engine_cpu()
        started = trio.current_time()
        await trio.sleep(seconds)
        done = sum(counts) - before
        cpu = engine_cpu() - cpu_before
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    return done / elapsed, cpu / done if done else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_api", description=__doc__)
    parser.add_argument("--connections", type=int, default=64, help="connections (default 64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per round (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args(argv)
    install_signal_handlers()
    rates: list[float] = []
    cpu_per_request: list[float] = []
    with tempfile.TemporaryDirectory(prefix="iii-http-bench-") as logs:
        processes = Processes(Path(logs))
        try:
            engine = processes.spawn(
                "dev-engine",
                [sys.executable, str(WORKERS / "http_engine.py")],
                env=_env(),
                stdout_pipe=True,
            )
            line = engine.read_line(START_TIMEOUT)
            if line is None:
                raise RuntimeError(f"the dev engine did not start:\n{engine.stderr_tail()}")
            urls = json.loads(line)
            route = processes.spawn(
                "http-route",
                [sys.executable, str(WORKERS / "http_route.py"), urls["url"]],
                env=_env(),
                stdout_pipe=True,
            )
            if route.read_line(START_TIMEOUT) is None:
                raise RuntimeError(f"the route worker did not start:\n{route.stderr_tail()}")
            for round_number in range(args.rounds):
                rate, cpu = trio.run(
                    measure, urls["http_url"], args.connections, args.seconds, engine.cpu_seconds
                )
                rates.append(rate)
                cpu_per_request.append(cpu * 1e6)
                print(f"round {round_number + 1}: {rate:,.0f} requests/s")
        finally:
            processes.stop_all()
    print()
    print(
        f"GET /ping through the dev engine's REST API to an iii-trio function, "
        f"{args.connections} keep-alive connections, {args.rounds} rounds of {args.seconds} s:"
    )
    print(
        f"{statistics.median(rates):,.0f} requests/s [{min(rates):,.0f}-{max(rates):,.0f}], "
        f"engine CPU ~{statistics.median(cpu_per_request):,.0f} µs per request"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
