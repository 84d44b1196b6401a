"""Child processes of the harness: started, watched and always stopped by their own PID.

Every process the harness starts is recorded here and stopped (SIGTERM, then SIGKILL after a
grace period) when its measurement ends, and again by :meth:`Processes.stop_all` on the way out,
whatever the way out is (an error, Ctrl-C, SIGTERM). On Linux the children also get
``PR_SET_PDEATHSIG``, so the kernel kills them if the harness itself dies without cleaning up.
Nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

__all__ = ["Child", "Processes", "cpu_seconds"]

_PR_SET_PDEATHSIG = 1


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One started process: its Popen, its stderr log, and a psutil handle for CPU and RSS."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log = log
        self.ps = psutil.Process(popen.pid)
        self._line_buf = b""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.ps)

    def rss_bytes(self) -> int:
        return int(self.ps.memory_info().rss)

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def read_line(self, timeout: float) -> str | None:
        """Next line of the child's stdout (which must be a pipe), or None on timeout/EOF."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._line_buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._line_buf += chunk
        line, _, self._line_buf = self._line_buf.partition(b"\n")
        return line.decode(errors="replace")


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of one process, all its threads included."""
    times = process.cpu_times()
    return float(times.user + times.system)


class Processes:
    """Registry of the children of one harness run; writes their stderr under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []
        self._count = 0

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout_pipe: bool = False,
        cwd: Path | None = None,
    ) -> Child:
        self._count += 1
        log = self._log_dir / f"{self._count:04d}-{name}.stderr"
        with log.open("wb") as err:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else subprocess.DEVNULL,
                stderr=err,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        child = Child(name, popen, log)
        self._children.append(child)
        return child

    def stop(self, child: Child, grace: float = 2.0) -> None:
        """Stop one child by its PID: SIGTERM, then SIGKILL if it is still there after ``grace``."""
        if child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.popen.terminate()
            try:
                child.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.popen.kill()
                child.popen.wait()
        if child.popen.stdout is not None:
            child.popen.stdout.close()
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        for child in list(self._children):
            self.stop(child, grace=1.0)


def install_signal_handlers(on_signal: Callable[[], None] | None = None) -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks stop the children.

    SIGINT gets Python's default handler back even when the harness was started with SIGINT
    ignored (as shells do for background jobs), so Ctrl-C and ``kill -INT`` always clean up.
    """

    def handler(signum: int, frame: object) -> None:
        if on_signal is not None:
            on_signal()
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
