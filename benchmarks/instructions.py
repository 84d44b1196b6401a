"""Instructions per call of the iii-trio echo worker, current code against an earlier commit.

    python -m benchmarks.instructions --baseline REF [--cells 256x100,16x10240] [--seconds 8]
        [--repeats 2]

Wall-clock figures on a shared 2-core machine move by 10-30% from one run to the next, which
hides a 5% change. Instructions do not: valgrind's callgrind counts them, and the count per call
repeats to within about 0.5% at 1 and 16 in flight and 2% at 256, where how many calls one read
brings varies (seen here). So for each cell this runs the echo worker
(``workers/iii_trio_echo.py``) under callgrind, once with the current ``iii_trio`` and once with
REF's (a temporary git worktree, as ``--baseline`` of ``benchmarks.run`` does), alternately; the
harness's fake engine keeps the cell's calls in flight; instrumentation is switched on only for
the measured window (after a warm-up, with ``callgrind_control``), so start-up and imports do not
count. It prints instructions per call for both and their ratio, the median over ``--repeats``.

Callgrind slows the worker some 50x, so the windows see a few thousand calls; the ratio is what
to read, not the throughput. Needs valgrind (``callgrind_control`` comes with it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._peer import Peer
from benchmarks._procs import Processes, install_signal_handlers
from benchmarks.run import ECHO, WORKERS, baseline_worktree, payload, with_pythonpath

WARMUP_SECONDS = 2.0
READY_TIMEOUT = 120.0  # the worker starts slowly under valgrind
_TOTALS = re.compile(rb"^totals: (\d+)", re.MULTILINE)


def instructions_per_call(
    peer: Peer,
    port: int,
    procs: Processes,
    out_dir: Path,
    pythonpath: str | None,
    inflight: int,
    size: int,
    seconds: float,
) -> float:
    """Run one echo worker under callgrind and count its instructions per call of one window."""
    out = out_dir / f"callgrind-{time.monotonic_ns()}"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(WORKERS / "iii_trio_echo.py"),
        f"ws://127.0.0.1:{port}",
    ]
    env = with_pythonpath(dict(os.environ), pythonpath)
    child = procs.spawn("echo-under-callgrind", argv, env=env)
    try:
        peer.wait_until(
            lambda: peer.find_registration(ECHO) is not None, READY_TIMEOUT, alive=child.alive
        )
        connection = peer.find_registration(ECHO)
        if connection is None:
            raise SystemExit(f"the echo worker did not start: {child.stderr_tail(8)}")
        body = payload(size)
        peer.run_load(
            connection, ECHO, body, inflight=inflight, warmup=0.0, duration=WARMUP_SECONDS
        )
        _callgrind_control("-i", "on", child.pid)
        result = peer.run_load(
            connection, ECHO, body, inflight=inflight, warmup=0.0, duration=seconds
        )
        _callgrind_control("-i", "off", child.pid)
        _callgrind_control("-d", child.pid)
    finally:
        procs.stop(child, grace=10.0)
        for connection_left in list(peer.connections):
            peer.drop(connection_left)
    counted = sum(
        int(match.group(1))
        for dump in out_dir.glob(out.name + "*")
        for match in _TOTALS.finditer(dump.read_bytes())
    )
    calls = int(result["calls"])
    if not calls or not counted:
        raise SystemExit(f"nothing measured ({calls} calls, {counted} instructions)")
    return counted / calls


def _callgrind_control(*arguments: object) -> None:
    subprocess.run(
        ["callgrind_control", *map(str, arguments)], check=True, capture_output=True, timeout=60
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description="Instructions per call of the echo worker under callgrind, current vs REF.",
    )
    parser.add_argument("--baseline", required=True, metavar="REF", help="git commit to compare")
    parser.add_argument(
        "--cells",
        default="1x100,16x100,256x100,1x10240,16x10240,256x10240",
        help="comma-separated INFLIGHTxBYTES cells (default: the six load cells)",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell and code")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is needed", file=sys.stderr)
        return 1
    cells = [tuple(int(part) for part in cell.split("x")) for cell in args.cells.split(",")]
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="iii-instructions-") as scratch:
        scratch_dir = Path(scratch)
        procs = Processes(scratch_dir)
        peer = Peer()
        port = peer.listen("127.0.0.1")
        try:
            with baseline_worktree(args.baseline, scratch_dir) as baseline:
                print(f"baseline {args.baseline} = {baseline.short} ({baseline.subject})")
                print("| cell | current | baseline | current ÷ baseline |")
                print("|---|---|---|---|")
                for inflight, size in cells:
                    counts: dict[str, list[float]] = {"current": [], "baseline": []}
                    for repeat in range(args.repeats):
                        order = ["current", "baseline"]
                        for which in order if repeat % 2 == 0 else order[::-1]:
                            root = str(baseline.root) if which == "baseline" else None
                            counts[which].append(
                                instructions_per_call(
                                    peer,
                                    port,
                                    procs,
                                    scratch_dir,
                                    root,
                                    inflight,
                                    size,
                                    args.seconds,
                                )
                            )
                    current = statistics.median(counts["current"])
                    base = statistics.median(counts["baseline"])
                    print(
                        f"| {inflight} x {size} B | {current:,.0f} | {base:,.0f} "
                        f"| {current / base:.3f} |",
                        flush=True,
                    )
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
