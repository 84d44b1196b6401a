"""Interop with the official Python SDK (PyPI ``iii-sdk``, asyncio): a worker built with it
connects to the dev engine, calls an iii_trio worker's functions and is called by it.

This proves the dev engine is usable as a real engine by a peer we did not write. Skipped only
when the official package cannot be imported.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio.testing import DevEngine

pytest.importorskip("iii", reason="the official iii-sdk package is not installed")

PEER = Path(__file__).parent / "peers" / "official_sdk_worker.py"


async def test_official_sdk_worker_and_iii_trio_worker_call_each_other(
    iii_engine: DevEngine,
) -> None:
    async with iii_trio.open_worker(iii_engine.url, name="trio-side") as worker:

        @worker.function("trio::add")
        async def add(payload: dict[str, Any]) -> int:
            return int(payload["a"] + payload["b"])

        @worker.function("trio::fail")
        async def fail(payload: Any) -> None:
            raise RuntimeError("trio side refuses")

        await worker.wait_registered()
        env = {**os.environ, "OTEL_ENABLED": "false"}
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                peer: trio.Process = await nursery.start(
                    functools.partial(
                        trio.run_process,
                        [sys.executable, str(PEER), iii_engine.url],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                        check=False,
                    )
                )
                assert peer.stdout is not None
                assert peer.stdin is not None
                report = json.loads(await _read_line(peer.stdout))
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


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"peer exited before reporting; got {buffer!r}")
        buffer += chunk
    return buffer.decode()
