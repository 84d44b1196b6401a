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

import http_function  # noqa: E402
import quickstart  # noqa: E402


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


async def test_http_function_main_calls_the_endpoint_through_the_engine(
    iii_engine: DevEngine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(http_function.SECRET_VARIABLE, "example-test-secret")
    await http_function.main(iii_engine.url)
    assert capsys.readouterr().out.splitlines() == [
        "quote::price(3 widgets) = {'item': 'widget', 'total': 29.97}",
        "quote::price(1 gizmo) failed: unknown_item - no price for 'gizmo'",
    ]


def test_http_function_script_runs_on_its_embedded_engine() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("III_URL", http_function.SECRET_VARIABLE)
    }
    # This checkout's package, wherever the interpreter's installed one comes from.
    env["PYTHONPATH"] = str(EXAMPLES.parent)
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "http_function.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "'total': 29.97" in completed.stdout
    assert "failed: unknown_item" in completed.stdout
    assert completed.stderr == ""
