"""The examples run against the dev engine, in-process and as the README runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iii_trio.testing import DevEngine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import quickstart  # noqa: E402
import streaming  # noqa: E402


async def test_quickstart_main_prints_the_results(
    iii_engine: DevEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await quickstart.main(iii_engine.url)
    assert capsys.readouterr().out.splitlines() == [
        "math::add(2, 3) = 5",
        "math::sum([1..5]) = 15.0",
        "math::add('two', 3) failed: invalid_payload",
    ]


def test_quickstart_script_runs_on_its_embedded_engine_in_under_five_seconds() -> None:
    env = {key: value for key, value in os.environ.items() if key != "III_URL"}
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    assert "math::sum([1..5]) = 15.0" in completed.stdout
    assert completed.stderr == ""
    assert elapsed < 5


async def test_streaming_main_streams_tokens_and_a_file(
    iii_engine: DevEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await streaming.main(iii_engine.url)
    size = (EXAMPLES / "streaming.py").stat().st_size
    assert capsys.readouterr().out.splitlines() == [
        "tokens: you said: hello",
        f"files::checksum: {size} bytes, sha256 matches: True",
    ]


def test_streaming_script_runs_on_its_embedded_engine() -> None:
    env = {key: value for key, value in os.environ.items() if key != "III_URL"}
    env["PYTHONPATH"] = str(EXAMPLES.parent)  # this checkout, ahead of an installed copy
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "streaming.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "sha256 matches: True" in completed.stdout
    assert completed.stderr == ""
