"""Channel throughput: 64 KiB chunks through the dev engine, next to a bare WebSocket pipe.

``python -m benchmarks.channels [--size MIB] [--rounds N] [--json PATH] [--engine-url URL
--engine-pid PID]``

Each round moves ``--size`` MiB (default 256) three times, in 64 KiB binary frames, each time
between processes on loopback:

- **pipe**: a bare WebSocket client writing to a bare WebSocket server (iii-trio's transport, no
  engine, no SDK): the most the socket code can do here;
- **relay**: the same client writing to a bare WebSocket relay in a third process, which
  forwards every frame to a bare reading client: the least any engine in between costs;
- **channel**: an iii-trio worker writing into a ``ChannelWriter`` and another reading the
  ``ChannelReader`` in a handler, through the dev engine in a third process (as in production:
  writer → engine → reader, each socket with its own backpressure).

Throughput is measured by the reading end, from its first byte to the end of the stream, in MB/s
(10^6 bytes). The report gives the median over rounds with the min-max spread, the channel as a
share of the pipe (the goal is at least 80%) and of the relay, and each process's CPU time per
MB, which says more than the rate on a machine with fewer free cores than processes. Rounds
rotate the order of the paths, so that a change in the machine's load hits all alike. Children
are stopped by PID (see ``_procs.py``); the worker scripts are ``workers/channel_stream.py`` and
``workers/dev_engine.py``. With ``--engine-url`` (and the PID whose CPU to count) the channel
goes through an engine already running there instead, a real iii engine say. Not part of
``python -m benchmarks.run``; nothing is written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from benchmarks._procs import Child, Processes, cpu_seconds, install_signal_handlers

ROOT = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).resolve().parent / "workers"
STREAM = WORKERS / "channel_stream.py"
START_TIMEOUT = 30.0
MB = 1_000_000


def _env() -> dict[str, str]:
    # The children import this checkout's iii_trio, ahead of any installed copy.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OTEL_ENABLED": "false"}


def _json_line(child: Child, timeout: float) -> dict[str, Any]:
    line = child.read_line(timeout)
    if line is None:
        raise RuntimeError(f"{child.name} printed nothing; its stderr:\n{child.stderr_tail()}")
    record: dict[str, Any] = json.loads(line)
    return record


def _wait(child: Child, timeout: float) -> None:
    child.popen.wait(timeout)
    if child.popen.returncode != 0:
        raise RuntimeError(f"{child.name} failed; its stderr:\n{child.stderr_tail()}")


def run_pipe(processes: Processes, size: int, timeout: float) -> dict[str, Any]:
    server = processes.spawn(
        "pipe-server", [sys.executable, str(STREAM), "pipe-server"], env=_env(), stdout_pipe=True
    )
    url = _json_line(server, START_TIMEOUT)["url"]
    client = processes.spawn(
        "pipe-client",
        [sys.executable, str(STREAM), "pipe-client", url, str(size)],
        env=_env(),
        stdout_pipe=True,
    )
    result = _json_line(server, timeout)
    result.update(_json_line(client, timeout))
    _wait(client, timeout)
    processes.stop(server)
    return result


def run_relay(processes: Processes, size: int, timeout: float) -> dict[str, Any]:
    relay = processes.spawn(
        "relay", [sys.executable, str(STREAM), "relay"], env=_env(), stdout_pipe=True
    )
    url = _json_line(relay, START_TIMEOUT)["url"]
    cpu_before = relay.cpu_seconds()
    reader = processes.spawn(
        "relay-reader",
        [sys.executable, str(STREAM), "pipe-reader", url + "/read"],
        env=_env(),
        stdout_pipe=True,
    )
    _json_line(reader, START_TIMEOUT)
    writer = processes.spawn(
        "relay-writer",
        [sys.executable, str(STREAM), "pipe-client", url + "/write", str(size)],
        env=_env(),
        stdout_pipe=True,
    )
    result = _json_line(reader, timeout)
    result.update(_json_line(writer, timeout))
    result["engine_cpu_seconds"] = relay.cpu_seconds() - cpu_before
    _wait(writer, timeout)
    _wait(reader, timeout)
    processes.stop(relay)
    return result


def run_channel(
    processes: Processes, url: str, engine_cpu: Callable[[], float], size: int, timeout: float
) -> Any:
    cpu_before = engine_cpu()
    source = processes.spawn(
        "channel-source",
        [sys.executable, str(STREAM), "source", url, str(size)],
        env=_env(),
        stdout_pipe=True,
    )
    result = _json_line(source, timeout)
    _wait(source, timeout)
    result["engine_cpu_seconds"] = engine_cpu() - cpu_before
    return result


def _start_dev_engine(processes: Processes) -> tuple[str, Callable[[], float]]:
    engine = processes.spawn(
        "dev-engine", [sys.executable, str(WORKERS / "dev_engine.py")], env=_env(), stdout_pipe=True
    )
    url = engine.read_line(START_TIMEOUT)
    if url is None:
        raise RuntimeError(f"the dev engine did not start:\n{engine.stderr_tail()}")
    return url, engine.cpu_seconds


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.channels", description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="MiB per transfer (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--engine-url", help="an engine already running, for the channel path")
    parser.add_argument("--engine-pid", type=int, help="that engine's PID, to count its CPU")
    args = parser.parse_args(argv)
    if (args.engine_url is None) != (args.engine_pid is None):
        parser.error("--engine-url and --engine-pid go together")
    size = args.size * 1024 * 1024
    timeout = 60.0 + size / (5 * MB)  # even at 5 MB/s a transfer ends within this
    install_signal_handlers()
    measurements: dict[str, list[dict[str, Any]]] = {"pipe": [], "relay": [], "channel": []}
    with tempfile.TemporaryDirectory(prefix="iii-channel-bench-") as logs:
        processes = Processes(Path(logs))
        try:
            if args.engine_url is None:
                url, engine_cpu = _start_dev_engine(processes)
            else:
                url = args.engine_url
                external = psutil.Process(args.engine_pid)
                engine_cpu = functools.partial(cpu_seconds, external)
            sink = processes.spawn(
                "channel-sink",
                [sys.executable, str(STREAM), "sink", url],
                env=_env(),
                stdout_pipe=True,
            )
            _json_line(sink, START_TIMEOUT)
            kinds = ["pipe", "relay", "channel"]
            for round_number in range(args.rounds):
                for kind in kinds[round_number % 3 :] + kinds[: round_number % 3]:
                    if kind == "pipe":
                        result = run_pipe(processes, size, timeout)
                    elif kind == "relay":
                        result = run_relay(processes, size, timeout)
                    else:
                        result = run_channel(processes, url, engine_cpu, size, timeout)
                    if result["bytes"] != size // 65536 * 65536:
                        raise RuntimeError(f"{kind}: {result['bytes']} bytes arrived of {size}")
                    result["mb_per_s"] = result["bytes"] / MB / result["seconds"]
                    measurements[kind].append(result)
                    print(f"round {round_number + 1} {kind}: {result['mb_per_s']:,.0f} MB/s")
        finally:
            processes.stop_all()
    pipe = [m["mb_per_s"] for m in measurements["pipe"]]
    relay = [m["mb_per_s"] for m in measurements["relay"]]
    channel = [m["mb_per_s"] for m in measurements["channel"]]
    shares = [100 * c / p for c, p in zip(channel, pipe, strict=True)]
    relay_shares = [100 * c / r for c, r in zip(channel, relay, strict=True)]

    def cpu(kind: str, key: str) -> str:
        return _summary([m[key] / (m["bytes"] / MB) * 1e6 for m in measurements[kind]])

    through = "the dev engine" if args.engine_url is None else "the engine at --engine-url"
    print()
    print(f"{args.size} MiB in 64 KiB frames, {args.rounds} rounds: median [min-max]")
    print()
    print("| path | MB/s | writer CPU/MB (µs) | engine CPU/MB (µs) | reader CPU/MB (µs) |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| bare WebSocket pipe (one hop) | {_summary(pipe)} | "
        f"{cpu('pipe', 'writer_cpu_seconds')} | - | {cpu('pipe', 'reader_cpu_seconds')} |"
    )
    print(
        f"| bare WebSocket relay (two hops) | {_summary(relay)} | "
        f"{cpu('relay', 'writer_cpu_seconds')} | {cpu('relay', 'engine_cpu_seconds')} | "
        f"{cpu('relay', 'reader_cpu_seconds')} |"
    )
    print(
        f"| channel through {through} (two hops) | {_summary(channel)} | "
        f"{cpu('channel', 'writer_cpu_seconds')} | {cpu('channel', 'engine_cpu_seconds')} | "
        f"{cpu('channel', 'reader_cpu_seconds')} |"
    )
    print()
    print(f"channel / pipe, per round: {_summary(shares)} % (goal: at least 80 %)")
    print(f"channel / relay, per round: {_summary(relay_shares)} %")
    if args.json is not None:
        args.json.write_text(json.dumps(measurements, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
