"""Run the iii worker benchmarks and write benchmarks/RESULTS.md.

    python -m benchmarks.run            # full run, 3 interleaved rounds (about 10 minutes)
    python -m benchmarks.run --quick    # smoke run (about a minute), writes RESULTS-quick.md
    python -m benchmarks.run --profile iii-trio --scenario 256x100   # py-spy one worker
    python -m benchmarks.run --baseline HEAD~1   # also run iii_trio of an earlier commit

See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from benchmarks import _report
from benchmarks._peer import Peer, PeerConnection
from benchmarks._procs import Child, Processes, install_signal_handlers

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORKERS = BENCH_DIR / "workers"
NODE_DIR = WORKERS / "node"
ECHO = "bench::echo"
READY_TIMEOUT = 20.0
MAX_START_FAILURES = 2
SLEEP_SECONDS = 0.02  # what bench::sleep sleeps (workers/_args.py)

#: (calls in flight, payload bytes)
LOAD_SCENARIOS: list[tuple[int, int]] = [
    (1, 100),
    (16, 100),
    (256, 100),
    (1, 10240),
    (16, 10240),
    (256, 10240),
]
E2E_SCENARIOS: list[tuple[int, int]] = [(1, 100), (256, 100), (256, 10240)]

#: The memory section: calls kept waiting at once, and their payload size.
MEMORY_CALLS = 10_000
MEMORY_PAYLOAD_BYTES = 100
#: Fresh processes behind each memory figure, over all rounds together (see Config).
MEMORY_MIN_SAMPLES = 3
#: (mode, with tracemalloc): one caller process each. Tracing costs memory for every live
#: allocation, so RSS is measured in processes that do not trace.
MEMORY_VARIANTS: list[tuple[str, bool]] = [
    ("trigger", False),
    ("park", False),
    ("trigger", True),
    ("park", True),
]
#: Bound on each step of a memory run (start, calls reaching the engine, completion, exit).
MEMORY_STEP_TIMEOUT = 60.0
HOLD = "bench::hold"
MEASURE = "bench::measure"
BASELINE_SUFFIX = "@base"


def scenario_key(inflight: int, size: int) -> str:
    return f"{inflight}x{size}"


def payload(size: int) -> dict[str, str]:
    """A JSON object whose compact encoding is exactly ``size`` bytes (``{"data":"xx…"}``)."""
    return {"data": "x" * max(0, size - 11)}


# ---------------------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Kind:
    """One kind of worker: a standalone script taking ``URL [--functions N] [--extra]``."""

    key: str
    label: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    #: Registers bench::relay and bench::sleep with --extra.
    extra: bool = False
    #: Python statement that must run cleanly for the kind to be usable.
    check: str | None = None
    #: Files that must exist for the kind to be usable, with how to get them.
    needs: tuple[tuple[Path, str], ...] = ()
    #: Built on iii_trio: gets the memory section and, with --baseline, a twin running REF's code.
    iii_trio: bool = False
    #: Put first on the worker's PYTHONPATH (the baseline worktree, so its iii_trio is imported).
    pythonpath: str | None = None
    #: For a baseline twin: the key of the kind it is compared with.
    baseline_of: str | None = None


def all_kinds() -> list[Kind]:
    py = sys.executable
    otel_off = (("OTEL_ENABLED", "false"),)
    return [
        Kind(
            "iii-trio",
            "iii-trio",
            (py, str(WORKERS / "iii_trio_echo.py")),
            extra=True,
            check="import iii_trio; iii_trio.open_worker",
            iii_trio=True,
        ),
        Kind(
            "iii-trio-otel",
            "iii-trio, OpenTelemetry spans to a dropping exporter",
            (py, str(WORKERS / "iii_trio_echo.py")),
            env=(("BENCH_OTEL", "1"),),
            extra=True,
            check="import iii_trio, opentelemetry.sdk.trace",
        ),
        Kind(
            "official",
            "official Python iii-sdk (defaults)",
            (py, str(WORKERS / "official_echo.py")),
            extra=True,
            check="import iii",
        ),
        Kind(
            "official-otel-off",
            "official Python iii-sdk, OTEL_ENABLED=false",
            (py, str(WORKERS / "official_echo.py")),
            env=otel_off,
            extra=True,
            check="import iii",
        ),
        Kind(
            "node-otel-off",
            "official Node iii-sdk, OTEL_ENABLED=false",
            ("node", str(NODE_DIR / "echo.mjs")),
            env=otel_off,
            extra=True,
            needs=(
                (
                    NODE_DIR / "node_modules" / "iii-sdk" / "package.json",
                    "npm install --prefix benchmarks/workers/node",
                ),
            ),
        ),
        Kind(
            "bare-trio-websocket",
            "bare trio + trio-websocket + orjson (no SDK)",
            (py, str(WORKERS / "bare_trio_websocket_echo.py")),
            check="import trio_websocket",
        ),
        Kind(
            "bare-sansio",
            "bare trio + websockets sans-I/O + orjson (no SDK, the limit)",
            (py, str(WORKERS / "bare_sansio_echo.py")),
        ),
    ]


def why_unusable(kind: Kind) -> str | None:
    """None if ``kind`` can run here, else the reason it is skipped."""
    if kind.argv[0] == "node" and shutil.which("node") is None:
        return "node is not installed"
    for path, how in kind.needs:
        if not path.exists():
            return f"{path.relative_to(BENCH_DIR.parent)} is missing (run `{how}`)"
    if kind.check is not None:
        return python_check(kind.check, kind.pythonpath)
    return None


def with_pythonpath(env: dict[str, str], pythonpath: str | None) -> dict[str, str]:
    """``env`` with ``pythonpath`` first on PYTHONPATH (ahead of site-packages, where the
    editable install of this checkout is found)."""
    if pythonpath is not None:
        rest = env.get("PYTHONPATH")
        env["PYTHONPATH"] = pythonpath + (os.pathsep + rest if rest else "")
    return env


def _run_python(statement: str, pythonpath: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", statement],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=with_pythonpath(dict(os.environ), pythonpath),
        # `python -c` puts the working directory first on sys.path: run a baseline check from
        # the worktree, or this checkout's iii_trio would be found first.
        cwd=pythonpath,
    )


def python_check(statement: str, pythonpath: str | None = None) -> str | None:
    proc = _run_python(statement, pythonpath)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return f"`{statement}` failed: {lines[-1] if lines else proc.returncode}"


def iii_trio_file(pythonpath: str | None) -> str | None:
    """``iii_trio.__file__`` as a worker with ``pythonpath`` imports it (None if it cannot)."""
    proc = _run_python("import iii_trio; print(iii_trio.__file__)", pythonpath)
    return proc.stdout.strip() if proc.returncode == 0 else None


# ---------------------------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class Baseline:
    """An earlier commit checked out in a temporary git worktree, whose iii_trio twin kinds run."""

    ref: str  # as given on the command line
    commit: str
    subject: str
    root: Path

    @property
    def short(self) -> str:
        return self.commit[:7]

    def twin(self, kind: Kind) -> Kind:
        """``kind`` running this commit's iii_trio (the worker scripts stay this checkout's)."""
        return dataclasses.replace(
            kind,
            key=kind.key + BASELINE_SUFFIX,
            label=f"{kind.label} at {self.ref} ({self.short})",
            pythonpath=str(self.root),
            baseline_of=kind.key,
        )


def _git(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def baseline_worktree(ref: str, parent: Path) -> Iterator[Baseline]:
    """Check ``ref`` out in a detached git worktree under ``parent``; remove it on the way out,
    whatever the way out is (this checkout's own files and branch are not touched)."""
    resolved = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        raise SystemExit(f"--baseline {ref}: not a commit of this repository")
    commit = resolved.stdout.strip()
    subject = _git("log", "-1", "--format=%s", commit).stdout.strip()
    root = parent / f"baseline-{commit[:12]}"
    try:
        added = _git("worktree", "add", "--detach", "--quiet", str(root), commit)
        if added.returncode != 0:
            raise SystemExit(f"--baseline {ref}: git worktree add failed: {added.stderr.strip()}")
        yield Baseline(ref, commit, subject, root)
    finally:
        removed = _git("worktree", "remove", "--force", str(root)) if root.exists() else None
        if removed is None or removed.returncode != 0:
            # Interrupted half-way, or already gone: drop the files and git's record of them.
            shutil.rmtree(root, ignore_errors=True)
            _git("worktree", "prune")


@dataclass(frozen=True)
class E2EConfig:
    """An end-to-end pairing through the dev engine: a caller and an echo worker kind."""

    key: str
    label: str
    caller: str  # "iii-trio" (a worker process) or "peer" (the harness's bare caller)
    echo: str  # Kind key
    #: First on PYTHONPATH of the dev engine and the iii-trio caller (the baseline worktree).
    pythonpath: str | None = None

    def kinds_needed(self) -> set[str]:
        """The worker kinds this pairing runs (an iii-trio caller counts as the iii-trio kind)."""
        suffix = BASELINE_SUFFIX if self.pythonpath is not None else ""
        return {self.echo} | ({"iii-trio" + suffix} if self.caller == "iii-trio" else set())


E2E_CONFIGS = [
    E2EConfig(
        "iii-trio-pair", "iii-trio caller → dev engine → iii-trio echo", "iii-trio", "iii-trio"
    ),
    E2EConfig("peer-iii-trio", "bare caller → dev engine → iii-trio echo", "peer", "iii-trio"),
    E2EConfig("peer-bare", "bare caller → dev engine → bare sans-I/O echo", "peer", "bare-sansio"),
]


def baseline_e2e_configs(
    baseline: Baseline, kinds: list[Kind], uses_dev_engine: bool
) -> list[E2EConfig]:
    """The pairings again, with every iii_trio process (dev engine, iii-trio echo and caller)
    running the baseline's code; those left with no iii_trio process are not repeated."""
    twins = {k.baseline_of: k.key for k in kinds if k.baseline_of is not None}
    configs = []
    for config in E2E_CONFIGS:
        echo = twins.get(config.echo, config.echo)
        if not uses_dev_engine and config.caller != "iii-trio" and echo == config.echo:
            continue
        configs.append(
            E2EConfig(
                config.key + BASELINE_SUFFIX,
                f"{config.label} (iii_trio at {baseline.ref})",
                config.caller,
                echo,
                pythonpath=str(baseline.root),
            )
        )
    return configs


# ---------------------------------------------------------------------------------------- config


@dataclass
class Config:
    rounds: int = 3
    warmup: float = 0.5
    duration: float = 2.5
    e2e_scenarios: list[tuple[int, int]] = field(default_factory=lambda: list(E2E_SCENARIOS))
    load_scenarios: list[tuple[int, int]] = field(default_factory=lambda: list(LOAD_SCENARIOS))
    quick: bool = False
    kinds: list[str] | None = None
    #: Command that starts the engine for the e2e section and prints its URL (default: dev engine).
    engine_cmd: list[str] | None = None
    sections: set[str] = field(
        default_factory=lambda: {"load", "startup", "register", "memory", "nested", "e2e"}
    )
    memory_calls: int = MEMORY_CALLS
    #: Fresh caller processes per memory figure in each round; main() makes every figure of a
    #: full run a median of at least MEMORY_MIN_SAMPLES processes.
    memory_repeats: int = 1
    baseline: Baseline | None = None


# ---------------------------------------------------------------------------------------- bench


class GaveUp(Exception):
    """A worker kind failed to start too many times in a row; its remaining cells are skipped."""


class MemoryRunFailed(Exception):
    """One caller process of the memory section did not do what it was asked."""


class Bench:
    """One harness run: the peer (fake engine), the children, and every measurement made."""

    def __init__(self, config: Config, procs: Processes, home: Path) -> None:
        self.config = config
        self.procs = procs
        self.home = home
        self.peer = Peer()
        self.port = self.peer.listen("127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.port}"
        self.results = _report.Results()
        self.kinds: list[Kind] = []
        self.dev_engine_ok: str | None = None
        self.e2e_configs: list[E2EConfig] = []
        #: Consecutive start failures per kind; at MAX_START_FAILURES the kind is given up.
        self.start_failures: dict[str, int] = {}

    # ----------------------------------------------------------------- helpers

    def env(self, kind: Kind | None = None, pythonpath: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        # The official SDKs write a marker file under ~/.iii/run that a killed worker never
        # removes: give the children a throwaway home so the user's stays clean.
        env["HOME"] = str(self.home)
        env.pop("III_URL", None)
        env.pop("III_WORKER_NAME", None)
        env.pop("III_NAMESPACE", None)
        env.pop("OTEL_ENABLED", None)
        if kind is not None:
            env.update(dict(kind.env))
            pythonpath = pythonpath or kind.pythonpath
        return with_pythonpath(env, pythonpath)

    def kind(self, key: str) -> Kind | None:
        return next((k for k in self.kinds if k.key == key), None)

    def start_worker(
        self, kind: Kind, extra_args: Sequence[str] = ()
    ) -> tuple[Child, PeerConnection | None, int]:
        """Spawn ``kind`` against the fake engine; wait until it registered bench::echo."""
        self.check_not_given_up(kind)
        t0 = time.perf_counter_ns()
        child = self.procs.spawn(kind.key, [*kind.argv, self.url, *extra_args], env=self.env(kind))
        return child, self.wait_registered(kind, child, ECHO), t0

    def check_not_given_up(self, kind: Kind) -> None:
        if self.start_failures.get(kind.key, 0) >= MAX_START_FAILURES:
            raise GaveUp(f"{kind.key}: gave up after {MAX_START_FAILURES} failed starts")

    def wait_registered(self, kind: Kind, child: Child, function_id: str) -> PeerConnection | None:
        """The connection of ``child`` once it registered ``function_id``; None if it did not
        in time (counted against ``kind``: a kind that fails to start too often is given up)."""
        self.peer.wait_until(
            lambda: self.peer.find_registration(function_id) is not None,
            READY_TIMEOUT,
            alive=child.alive,
        )
        conn = self.peer.find_registration(function_id)
        self.start_failures[kind.key] = 0 if conn else self.start_failures.get(kind.key, 0) + 1
        return conn

    def stop_worker(self, child: Child) -> None:
        self.procs.stop(child)
        self.peer.wait_until(lambda: not self.peer.connections, 2.0)
        for conn in list(self.peer.connections):
            self.peer.drop(conn)

    def not_ready(self, child: Child) -> dict[str, Any]:
        code = child.popen.poll()
        state = f"exited with {code}" if code is not None else f"not ready in {READY_TIMEOUT:.0f} s"
        tail = child.stderr_tail(8)
        return {"error": f"{child.name} {state}" + (f": {tail}" if tail else "")}

    @staticmethod
    def check_load(result: dict[str, Any]) -> dict[str, Any]:
        problems = []
        if result.get("lost"):
            problems.append("connection lost")
        for key in ("errors", "mismatches", "stuck"):
            if result.get(key):
                problems.append(f"{result[key]} {key}")
        if problems:
            result["error"] = ", ".join(problems)
            if result.get("last_error"):
                result["error"] += f" (last error: {result['last_error']})"
        return result

    def log(self, text: str) -> None:
        print(text, flush=True)

    # ----------------------------------------------------------------- measurements

    def measure_load(self, kind: Kind, inflight: int, size: int) -> dict[str, Any]:
        child, conn, _ = self.start_worker(kind)
        try:
            if conn is None:
                return self.not_ready(child)
            result = self.peer.run_load(
                conn,
                ECHO,
                payload(size),
                inflight=inflight,
                warmup=self.config.warmup,
                duration=self.config.duration,
                cpu_probes={"worker": child.cpu_seconds},
            )
            return self.check_load(dict(result))
        finally:
            self.stop_worker(child)

    def measure_startup(self, kind: Kind) -> dict[str, Any]:
        child, conn, t0 = self.start_worker(kind)
        try:
            if conn is None:
                return self.not_ready(child)
            ready_ms = (conn.functions[ECHO] - t0) / 1e6
            self.peer.wait_until(lambda: False, 1.0)  # serve, idle, for one second
            return {"ready_ms": ready_ms, "rss_mib": child.rss_bytes() / 2**20}
        finally:
            self.stop_worker(child)

    def measure_registration(self, kind: Kind, count: int = 1000) -> dict[str, Any]:
        child, conn, _ = self.start_worker(kind, ["--functions", str(count)])
        try:
            if conn is None:
                return self.not_ready(child)
            self.peer.wait_until(lambda: len(conn.registration_times) >= count, 2.0)
            times = conn.registration_times
            if len(times) < count:
                return {"error": f"only {len(times)} registerfunction frames arrived"}
            return {"register_ms": (times[count - 1] - conn.accepted_ns) / 1e6}
        finally:
            self.stop_worker(child)

    def measure_nested(self, kind: Kind) -> tuple[dict[str, Any], dict[str, Any]]:
        """256 in flight of bench::relay (each calls bench::echo), then of bench::sleep."""
        child, conn, _ = self.start_worker(kind, ["--extra"])
        try:
            if conn is None:
                failed = self.not_ready(child)
                return failed, failed
            relay_load = self.peer.run_load(
                conn,
                "bench::relay",
                payload(100),
                inflight=256,
                warmup=self.config.warmup,
                duration=self.config.duration,
                drain_timeout=10.0,
                cpu_probes={"worker": child.cpu_seconds},
            )
            relay = self.check_load(dict(relay_load))
            if conn.closed:
                return relay, {"error": "connection lost during the relay run"}
            sleep_load = self.peer.run_load(
                conn,
                "bench::sleep",
                payload(100),
                inflight=256,
                warmup=self.config.warmup,
                duration=self.config.duration,
                drain_timeout=10.0,
                cpu_probes={"worker": child.cpu_seconds},
            )
            sleep = self.check_load(dict(sleep_load))
            sleep["concurrency"] = sleep["calls_per_s"] * SLEEP_SECONDS
            return relay, sleep
        finally:
            self.stop_worker(child)

    def start_dev_engine(self, pythonpath: str | None) -> tuple[Child, str | None]:
        argv = self.config.engine_cmd or [sys.executable, str(WORKERS / "dev_engine.py")]
        env = self.env(pythonpath=pythonpath)
        engine = self.procs.spawn("dev-engine", argv, env=env, stdout_pipe=True)
        line = engine.read_line(READY_TIMEOUT)
        if line is None or not line.startswith("ws://"):
            return engine, None
        return engine, line.strip()

    def measure_e2e(self, config: E2EConfig, inflight: int, size: int) -> dict[str, Any]:
        echo_kind = self.kind(config.echo)
        assert echo_kind is not None
        started: list[Child] = []
        conn: PeerConnection | None = None
        try:
            engine, url = self.start_dev_engine(config.pythonpath)
            started.append(engine)
            if url is None:
                return {"error": "dev engine did not start: " + engine.stderr_tail(8)}
            echo = self.procs.spawn(echo_kind.key, [*echo_kind.argv, url], env=self.env(echo_kind))
            started.append(echo)
            probes: dict[str, Callable[[], float]] = {
                "engine": engine.cpu_seconds,
                "echo": echo.cpu_seconds,
            }
            if config.caller == "peer":
                conn = self.peer.connect(url)
                if not self.wait_callable(conn, size, alive=echo.alive):
                    return {"error": "bench::echo never answered: " + echo.stderr_tail(8)}
                result = self.peer.run_load(
                    conn,
                    ECHO,
                    payload(size),
                    inflight=inflight,
                    warmup=self.config.warmup,
                    duration=self.config.duration,
                    cpu_probes=probes,
                    strip_caller_id=True,
                )
                return self.check_load(dict(result))
            caller = self.procs.spawn(
                "iii-trio-caller",
                [
                    sys.executable,
                    str(WORKERS / "iii_trio_caller.py"),
                    url,
                    "--inflight",
                    str(inflight),
                    "--payload-bytes",
                    str(size),
                    "--warmup",
                    str(self.config.warmup),
                    "--duration",
                    str(self.config.duration),
                ],
                env=self.env(pythonpath=config.pythonpath),
                stdout_pipe=True,
            )
            started.append(caller)
            probes["caller"] = caller.cpu_seconds
            return self.run_caller(caller, probes)
        finally:
            if conn is not None:
                self.peer.drop(conn)
            for child in reversed(started):
                self.procs.stop(child)

    def wait_callable(self, conn: PeerConnection, size: int, alive: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and alive() and not conn.closed:
            reply = self.peer.call_once(conn, ECHO, payload(size), 2.0)
            if reply is not None and "error" not in reply:
                return True
            self.peer.wait_until(lambda: False, 0.05)
        return False

    def run_caller(self, caller: Child, probes: dict[str, Callable[[], float]]) -> dict[str, Any]:
        start = caller.read_line(READY_TIMEOUT + self.config.warmup + 10)
        if start is None:
            return {"error": "iii-trio caller did not start: " + caller.stderr_tail(8)}
        cpu0 = {name: probe() for name, probe in probes.items()}
        end = caller.read_line(self.config.duration + 30)
        cpu1 = {name: probe() for name, probe in probes.items()}
        if end is None:
            return {"error": "iii-trio caller did not finish: " + caller.stderr_tail(8)}
        result: dict[str, Any] = orjson.loads(end)
        seconds = result.get("seconds") or 0.0
        calls = result.get("calls") or 0
        for name in probes:
            used = cpu1[name] - cpu0[name]
            result[f"{name}_cpu_pct"] = 100.0 * used / seconds if seconds else 0.0
            result[f"{name}_cpu_us_per_call"] = 1e6 * used / calls if calls else 0.0
        return self.check_load(result)

    def measure_memory(self, kind: Kind) -> dict[str, Any]:
        """Memory growth of an iii-trio caller per call kept waiting, and per parked bare task.

        Every variant (MEMORY_VARIANTS) runs ``memory_repeats`` times, each in a fresh caller
        process; a figure is the median of its runs, in bytes per call. ``net_*`` is the part
        attributable to ``trigger`` itself: the growth with the calls minus the growth with the
        same number of tasks parked in ``trio.sleep_forever()``.
        """
        per_call: dict[str, list[float]] = {}
        sites: list[Any] | None = None
        for repeat in range(self.config.memory_repeats):
            for mode, traced in MEMORY_VARIANTS:
                # Naming the source lines of the growth takes two slow snapshots: once a cell.
                want_sites = traced and mode == "trigger" and repeat == 0
                try:
                    outcome = self.memory_run(kind, mode, traced=traced, sites=want_sites)
                except MemoryRunFailed as exc:
                    return {"error": f"{mode}{' with tracemalloc' if traced else ''}: {exc}"}
                name = f"{mode}_{'traced' if traced else 'rss'}"
                per_call.setdefault(name, []).append(outcome["per_call"])
                sites = outcome.get("sites", sites)
        value: dict[str, Any] = {
            name: statistics.median(values) for name, values in per_call.items()
        }
        value["net_rss"] = value["trigger_rss"] - value["park_rss"]
        value["net_traced"] = value["trigger_traced"] - value["park_traced"]
        value["calls"] = self.config.memory_calls
        value["processes"] = self.config.memory_repeats
        value["samples"] = per_call
        if sites is not None:
            value["sites"] = [[where, size / value["calls"]] for where, size, _ in sites]
        return value

    def memory_run(self, kind: Kind, mode: str, *, traced: bool, sites: bool) -> dict[str, Any]:
        """One caller process (workers/iii_trio_memory.py): measure, start the calls (or parked
        tasks), wait until the fake engine holds every call, measure again, release, check."""
        calls = self.config.memory_calls
        argv = [
            sys.executable,
            str(WORKERS / "iii_trio_memory.py"),
            self.url,
            "--mode",
            mode,
            "--payload-bytes",
            str(MEMORY_PAYLOAD_BYTES),
        ]
        if traced:
            argv.append("--tracemalloc")
        if sites:
            argv.append("--sites")
        self.check_not_given_up(kind)
        self.peer.hold(HOLD)
        child = self.procs.spawn(f"{kind.key}-memory", argv, env=self.env(kind), stdout_pipe=True)
        try:
            conn = self.wait_registered(kind, child, MEASURE)
            if conn is None:
                raise MemoryRunFailed(self.not_ready(child)["error"])
            key = "traced" if traced else "rss"
            before = self.control(conn, child, MEASURE, {"point": "before"})
            self.control(conn, child, "bench::start", {"calls": calls})
            if mode == "trigger" and not self.peer.wait_until(
                lambda: self.peer.held_count(HOLD) >= calls,
                MEMORY_STEP_TIMEOUT,
                alive=child.alive,
            ):
                held = self.peer.held_count(HOLD)
                raise MemoryRunFailed(f"only {held} of {calls} calls reached the engine")
            after = self.control(conn, child, MEASURE, {"point": "after"})
            released = self.peer.release_held(HOLD)
            if mode == "trigger" and released != calls:
                raise MemoryRunFailed(f"released {released} held calls, expected {calls}")
            # Its answer may race with the worker closing: nothing waits for it.
            finish = {"type": "invokefunction", "function_id": "bench::finish", "data": {}}
            conn.send_json({**finish, "invocation_id": "finish"})
            line = self.read_line_serving(child, MEMORY_STEP_TIMEOUT)
            if line is None:
                raise MemoryRunFailed("no final line: " + child.stderr_tail(8))
            if not self.peer.wait_until(lambda: not child.alive(), MEMORY_STEP_TIMEOUT):
                raise MemoryRunFailed(f"still running {MEMORY_STEP_TIMEOUT:g} s after finishing")
            report: dict[str, Any] = orjson.loads(line)
            expected = calls if mode == "trigger" else 0
            problems = [
                f"{report.get(name)} {name}"
                for name in ("mismatches", "errors")
                if report.get(name) != 0
            ]
            if report.get("completed") != expected:
                problems.append(f"{report.get('completed')} of {expected} calls completed")
            if child.popen.returncode != 0:
                problems.append(f"exit code {child.popen.returncode}")
            imported = Path(str(report.get("iii_trio_file"))).resolve()
            if kind.pythonpath is not None and not imported.is_relative_to(
                Path(kind.pythonpath).resolve()
            ):
                problems.append("iii_trio was not imported from the baseline worktree")
            if problems:
                tail = child.stderr_tail(4)
                raise MemoryRunFailed(", ".join(problems) + (f" ({tail})" if tail else ""))
            result = {"per_call": (after[key] - before[key]) / calls}
            if "sites" in after:
                result["sites"] = after["sites"]
            return result
        finally:
            self.peer.release_held(HOLD)  # also stops holding
            self.stop_worker(child)

    def control(
        self, conn: PeerConnection, child: Child, function_id: str, data: Any
    ) -> dict[str, Any]:
        """Call one of the memory caller's own functions and return its answer."""
        reply = self.peer.call_once(conn, function_id, data, MEMORY_STEP_TIMEOUT)
        if reply is None:
            state = "exited" if not child.alive() else f"no answer in {MEMORY_STEP_TIMEOUT:g} s"
            raise MemoryRunFailed(f"{function_id}: {state}: {child.stderr_tail(8)}")
        result = reply.get("result")
        if "error" in reply or not isinstance(result, dict):
            raise MemoryRunFailed(f"{function_id} failed: {reply.get('error')}")
        return result

    def read_line_serving(self, child: Child, timeout: float) -> str | None:
        """The child's next stdout line, serving the fake engine meanwhile (it has results to
        write and a closing handshake to answer); None on timeout or when the child exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = child.read_line(0.005)
            if line is not None:
                return line
            if not child.alive():
                return child.read_line(0.5)  # whatever it wrote just before exiting
            self.peer.poll(0.005)
        return None

    # ----------------------------------------------------------------- rounds

    def run(self) -> None:
        cfg = self.config
        self.kinds = []
        candidates = [k for k in all_kinds() if cfg.kinds is None or k.key in cfg.kinds]
        if cfg.baseline is not None:
            candidates += [cfg.baseline.twin(k) for k in candidates if k.iii_trio]
        for kind in candidates:
            reason = why_unusable(kind)
            if reason is None and kind.pythonpath is not None:
                reason = self.check_import_root(kind)
            if reason is None:
                self.kinds.append(kind)
            else:
                self.results.skip(kind.label, reason)
                self.log(f"skip {kind.key}: {reason}")
        self.e2e_configs = []
        if "e2e" in cfg.sections:
            self.dev_engine_ok = (
                None
                if cfg.engine_cmd
                else python_check("import iii_trio.testing as t; t.open_dev_engine")
            )
            if self.dev_engine_ok is not None:
                self.results.skip("end-to-end through the dev engine", self.dev_engine_ok)
                self.log(f"skip e2e: {self.dev_engine_ok}")
            else:
                self.e2e_configs = self.usable_e2e_configs()
        self.results.kinds = [(k.key, k.label) for k in self.kinds]
        self.results.e2e_configs = [(c.key, c.label) for c in self.e2e_configs]
        self.results.load_scenarios = [scenario_key(*s) for s in cfg.load_scenarios]
        self.results.e2e_scenarios = [scenario_key(*s) for s in cfg.e2e_scenarios]
        self.results.memory_kinds = [(k.key, k.label) for k in self.kinds if k.iii_trio]
        self.results.memory_scenario = scenario_key(cfg.memory_calls, MEMORY_PAYLOAD_BYTES)
        if cfg.baseline is not None:
            self.results.baseline = _report.BaselineInfo(
                ref=cfg.baseline.ref,
                commit=cfg.baseline.commit,
                subject=cfg.baseline.subject,
                kinds=[(k.baseline_of, k.key) for k in self.kinds if k.baseline_of],
                e2e_configs=[
                    (c.key.removesuffix(BASELINE_SUFFIX), c.key)
                    for c in self.e2e_configs
                    if c.pythonpath is not None
                ],
            )
        for rnd in range(cfg.rounds):
            self.run_round(rnd)

    def check_import_root(self, kind: Kind) -> str | None:
        """None if ``kind``'s workers import iii_trio from its worktree, else why not."""
        assert kind.pythonpath is not None
        imported = iii_trio_file(kind.pythonpath)
        if imported is None:
            return "`import iii_trio` failed"
        self.log(f"{kind.key}: iii_trio is imported from {imported}")
        if not Path(imported).resolve().is_relative_to(Path(kind.pythonpath).resolve()):
            return "iii_trio is not imported from the baseline worktree"
        return None

    def usable_e2e_configs(self) -> list[E2EConfig]:
        configs = list(E2E_CONFIGS)
        baseline = self.config.baseline
        if baseline is not None:
            reason = (
                None
                if self.config.engine_cmd
                else python_check(
                    "import iii_trio.testing as t; t.open_dev_engine", str(baseline.root)
                )
            )
            twins = baseline_e2e_configs(
                baseline, self.kinds, uses_dev_engine=not self.config.engine_cmd
            )
            if reason is None:
                configs += twins
            else:
                for config in twins:
                    self.results.skip(config.label, reason)
        usable = []
        for config in configs:
            missing = [k for k in sorted(config.kinds_needed()) if self.kind(k) is None]
            if missing:
                self.results.skip(config.label, f"needs the {', '.join(missing)} worker")
            else:
                usable.append(config)
        return usable

    def rotated(self, items: list[Any], rnd: int) -> list[Any]:
        if not items:
            return items
        shift = rnd % len(items)
        return items[shift:] + items[:shift]

    def record(
        self, section: str, row: str, col: str, rnd: int, measure: Callable[[], dict[str, Any]]
    ) -> None:
        try:
            value = measure()
        except GaveUp as exc:
            value = {"error": str(exc)}
        except Exception as exc:  # one broken cell must not end the run
            traceback.print_exc()
            value = {"error": f"harness error: {type(exc).__name__}: {exc}"}
        value["round"] = rnd
        self.results.add(section, row, col, value)
        self.log(f"  [{rnd + 1}] {section:8} {col:10} {row:22} {_report.one_line(value)}")

    def run_round(self, rnd: int) -> None:
        cfg = self.config
        self.log(f"round {rnd + 1}/{cfg.rounds}")
        kinds = self.rotated(self.kinds, rnd)
        if "load" in cfg.sections:
            for inflight, size in cfg.load_scenarios:
                col = scenario_key(inflight, size)
                for kind in kinds:
                    measure = partial(self.measure_load, kind, inflight, size)
                    self.record("load", kind.key, col, rnd, measure)
        if "startup" in cfg.sections:
            for kind in kinds:
                measure = partial(self.measure_startup, kind)
                self.record("startup", kind.key, "startup", rnd, measure)
        if "register" in cfg.sections:
            for kind in kinds:
                measure = partial(self.measure_registration, kind)
                self.record("register", kind.key, "1000", rnd, measure)
        if "memory" in cfg.sections:
            col = scenario_key(cfg.memory_calls, MEMORY_PAYLOAD_BYTES)
            for kind in kinds:
                if kind.iii_trio:
                    self.record("memory", kind.key, col, rnd, partial(self.measure_memory, kind))
        if "nested" in cfg.sections:
            for kind in kinds:
                if kind.extra:
                    try:
                        relay, sleep = self.measure_nested(kind)
                    except GaveUp as exc:
                        relay = {"error": str(exc)}
                        sleep = dict(relay)
                    self.record("nested", kind.key, "relay", rnd, partial(dict, relay))
                    self.record("nested", kind.key, "sleep", rnd, partial(dict, sleep))
        if "e2e" in cfg.sections and self.dev_engine_ok is None:
            for inflight, size in cfg.e2e_scenarios:
                col = scenario_key(inflight, size)
                for config in self.rotated(self.e2e_configs, rnd):
                    measure = partial(self.measure_e2e, config, inflight, size)
                    self.record("e2e", config.key, col, rnd, measure)

    # ----------------------------------------------------------------- profile

    def profile(self, kind_key: str, inflight: int, size: int, out_dir: Path) -> None:
        kind = next((k for k in all_kinds() if k.key == kind_key), None)
        if kind is None:
            raise SystemExit(f"unknown worker kind {kind_key!r}")
        reason = why_unusable(kind)
        if reason is not None:
            raise SystemExit(f"{kind_key} cannot run: {reason}")
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{kind.key}-{scenario_key(inflight, size)}"
        raw = out_dir / f"{stem}.collapsed.txt"
        child, conn, _ = self.start_worker(kind)
        try:
            if conn is None:
                raise SystemExit(self.not_ready(child)["error"])
            spy = self.procs.spawn(
                "py-spy",
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(child.pid),
                    "--rate",
                    "200",
                    "--duration",
                    str(int(self.config.duration + self.config.warmup + 1)),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(raw),
                ],
                env=self.env(),
            )
            self.peer.wait_until(lambda: False, 0.5)  # let py-spy attach
            result = self.peer.run_load(
                conn,
                ECHO,
                payload(size),
                inflight=inflight,
                warmup=self.config.warmup,
                duration=self.config.duration,
                cpu_probes={"worker": child.cpu_seconds},
            )
            self.log(f"{stem}: {_report.one_line(dict(result))}")
            spy.popen.wait(self.config.duration + 30)
        finally:
            self.stop_worker(child)
            self.procs.stop_all()
        if not raw.exists():
            raise SystemExit("py-spy wrote nothing: " + spy.stderr_tail(8))
        summary = _report.profile_summary(raw.read_text())
        (out_dir / f"{stem}.summary.txt").write_text(summary)
        self.log(summary)
        self.log(f"collapsed stacks: {raw} (open in speedscope.app or flamegraph.pl)")


# ---------------------------------------------------------------------------------------- facts


def machine_facts() -> dict[str, str]:
    facts: dict[str, str] = {}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts["CPU"] = f"{cpu}, {os.cpu_count()} logical cores"
    facts["OS"] = platform.platform()
    facts["Python"] = f"{platform.python_implementation()} {platform.python_version()}"
    versions = []
    for dist in ("iii-trio", "trio", "trio-websocket", "websockets", "orjson", "iii-sdk", "psutil"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    facts["Python packages"] = ", ".join(versions)
    node = shutil.which("node")
    if node:
        try:
            node_version = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            node_version = "?"
        sdk = NODE_DIR / "node_modules" / "iii-sdk" / "package.json"
        sdk_version = orjson.loads(sdk.read_bytes()).get("version") if sdk.exists() else None
        facts["Node"] = f"{node_version}, iii-sdk {sdk_version or '(not installed)'}"
    if hasattr(os, "getloadavg"):
        facts["Load average at start"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return facts


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds measured per cell (default 2.5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per cell (default 0.5)")
    parser.add_argument(
        "--kinds", help="comma-separated worker kinds to run (default: all available)"
    )
    parser.add_argument(
        "--sections",
        help="comma-separated subset of load,startup,register,memory,nested,e2e (default: all)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the iii_trio of git commit REF (checked out in a temporary worktree), "
        "interleaved with the current code, and compare the two",
    )
    parser.add_argument(
        "--memory-repeats",
        type=int,
        help="fresh caller processes per memory figure in each round (default: enough for "
        f"{MEMORY_MIN_SAMPLES} over all rounds; 1 with --quick)",
    )
    parser.add_argument(
        "--engine-cmd",
        help="command starting the engine for the e2e section; it must print its ws:// URL as "
        "its first line (default: iii-trio's dev engine, benchmarks/workers/dev_engine.py)",
    )
    parser.add_argument("--output", type=Path, help="report path (default benchmarks/RESULTS.md)")
    parser.add_argument(
        "--json", type=Path, help="also write every measurement of every round to this file"
    )
    parser.add_argument("--profile", metavar="KIND", help="profile one worker kind with py-spy")
    parser.add_argument(
        "--scenario",
        default="256x100",
        help="for --profile: INFLIGHTxBYTES (default 256x100)",
    )
    args = parser.parse_args(argv)
    if args.profile and args.baseline:
        parser.error("--baseline does not apply to --profile")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config()
    if args.quick:
        config.quick = True
        config.rounds = 1
        config.warmup = 0.2
        config.duration = 0.6
        config.e2e_scenarios = [(1, 100), (256, 100)]
    if args.rounds is not None:
        config.rounds = max(1, args.rounds)
    if args.duration is not None:
        config.duration = args.duration
    if args.warmup is not None:
        config.warmup = args.warmup
    if args.kinds:
        config.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.engine_cmd:
        config.engine_cmd = shlex.split(args.engine_cmd)
    if args.sections:
        config.sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if args.memory_repeats is not None:
        config.memory_repeats = max(1, args.memory_repeats)
    elif not config.quick:
        config.memory_repeats = math.ceil(MEMORY_MIN_SAMPLES / config.rounds)
    output = args.output or BENCH_DIR / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    command = shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])])

    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="iii-bench-") as tmp:
        logs = Path(tmp) / "logs"
        home = Path(tmp) / "home"
        logs.mkdir()
        home.mkdir()
        procs = Processes(logs)
        bench = Bench(config, procs, home)
        # Holds the baseline worktree, removed after the children are stopped.
        cleanup = contextlib.ExitStack()
        try:
            if args.baseline and not args.profile:
                config.baseline = cleanup.enter_context(baseline_worktree(args.baseline, Path(tmp)))
                print(
                    f"baseline {args.baseline} = {config.baseline.commit[:12]} "
                    f"({config.baseline.subject}), in a temporary git worktree",
                    flush=True,
                )
            if args.profile:
                if args.duration is None:
                    config.duration = 5.0
                inflight, _, size = args.scenario.partition("x")
                bench.profile(args.profile, int(inflight), int(size), BENCH_DIR / ".profiles")
                return 0
            facts = machine_facts()
            started = datetime.datetime.now(datetime.timezone.utc)
            t0 = time.monotonic()
            print(f"fake engine on {bench.url}; writing {output}", flush=True)
            bench.run()
            elapsed = time.monotonic() - t0
            if hasattr(os, "getloadavg"):
                facts["Load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            text = _report.render(
                bench.results,
                config=config,
                facts=facts,
                command=command,
                started=started,
                elapsed=elapsed,
                previous=output.read_text() if output.exists() else None,
            )
            output.write_text(text)
            if args.json is not None:
                raw = {
                    "command": command,
                    "date": started.isoformat(),
                    "facts": facts,
                    "skipped": bench.results.skipped,
                    "cells": [
                        {"section": section, "row": row, "column": col, "rounds": runs}
                        for (section, row, col), runs in bench.results.cells.items()
                    ],
                }
                args.json.write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
            print(_report.targets_text(bench.results), flush=True)
            print(f"wrote {output} in {elapsed:.0f} s", flush=True)
            return 0
        except KeyboardInterrupt:
            print("interrupted; stopping workers", file=sys.stderr, flush=True)
            return 130
        finally:
            procs.stop_all()
            bench.peer.close()
            cleanup.close()


if __name__ == "__main__":
    sys.exit(main())
