"""Worker peers run as subprocesses (tests/peers/): start one, read the lines it reports."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import trio

PEERS = Path(__file__).parent / "peers"


async def start_peer(nursery: trio.Nursery, script: str, url: str) -> trio.Process:
    """Run ``tests/peers/<script>`` against ``url``; it serves until its standard input
    closes. Its stdin and stdout are pipes."""
    env = {**os.environ, "OTEL_ENABLED": "false"}  # the official SDK's exporter stays quiet
    peer: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            [sys.executable, str(PEERS / script), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            check=False,
        )
    )
    return peer


async def read_line(peer: trio.Process) -> str:
    """The next line the peer prints (a pipe may hand it over in pieces)."""
    assert peer.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await peer.stdout.receive_some(1)
        if not chunk:
            raise AssertionError(f"the peer exited before finishing a line; got {line!r}")
        line += chunk
    return line.decode()
