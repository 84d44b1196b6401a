"""The examples run against the dev engine, in-process and as the README runs them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import iii_trio
from iii_trio.testing import DevEngine, engine_url

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import http_api  # noqa: E402
import http_function  # noqa: E402
import queue_dead_letter  # noqa: E402
import quickstart  # noqa: E402
import streaming  # noqa: E402
import trigger_type  # noqa: E402
import two_workers  # noqa: E402


def run_example(script: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``examples/<script>`` as the README says, on its embedded engine; also how long
    it took."""
    env = {key: value for key, value in os.environ.items() if key != "III_URL"}
    # The example imports the iii_trio of this checkout, as the tests do.
    env["PYTHONPATH"] = os.pathsep.join(
        path for path in (str(EXAMPLES.parent), os.environ.get("PYTHONPATH")) if path
    )
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    return completed, time.monotonic() - started


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
    completed, elapsed = run_example("quickstart.py")
    assert completed.returncode == 0, completed.stderr
    assert "math::sum([1..5]) = 15.0" in completed.stdout
    assert completed.stderr == ""
    assert elapsed < 5


TICKS = ["demo: tick 1 of 3", "demo: tick 2 of 3", "demo: tick 3 of 3", "unbound ticker::every"]


async def test_trigger_type_main_ticks_three_times_then_unbinds(
    iii_engine: DevEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await trigger_type.main(iii_engine.url)
    assert capsys.readouterr().out.splitlines() == TICKS


def test_trigger_type_script_runs_on_its_embedded_engine() -> None:
    completed, _ = run_example("trigger_type.py")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == TICKS
    assert completed.stderr == ""


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
    completed, _ = run_example("http_function.py")
    assert completed.returncode == 0, completed.stderr
    assert "'total': 29.97" in completed.stdout
    assert "failed: unknown_item" in completed.stdout
    assert completed.stderr == ""


DEAD_LETTER_RUN = [
    "attempt 1: card processor down",
    "attempt 2: card processor down",
    "attempt 3: card processor down",
    "dead letter: {'order': 42, 'amount': 1999} after 3 attempts (function call failed)",
    "card processor back: redrive -> {'queue': 'payments', 'redriven': 1}",
    "charged order 42: 1999",
    "dead letters left: 0",
]


async def test_queue_dead_letter_main_parks_the_failing_charge_then_redrives_it(
    iii_engine: DevEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await queue_dead_letter.main(iii_engine.url)
    assert capsys.readouterr().out.splitlines() == DEAD_LETTER_RUN


def test_queue_dead_letter_script_runs_on_its_embedded_engine() -> None:
    completed, _ = run_example("queue_dead_letter.py")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == DEAD_LETTER_RUN
    # The dev engine's one warning: the message went to the dead-letter queue.
    (warning,) = completed.stderr.splitlines()
    assert warning.endswith("moved to the dead-letter queue: function call failed")


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
    completed, _ = run_example("streaming.py")
    assert completed.returncode == 0, completed.stderr
    assert "sha256 matches: True" in completed.stdout
    assert completed.stderr == ""


ORDERS = [
    "{'item': 'apple', 'reserved': 4, 'total': 2.0}",
    "{'item': 'pear', 'reserved': 2, 'total': 1.5}",
]


async def test_two_workers_main_call_each_other(
    iii_engine: DevEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await two_workers.main(iii_engine.url)
    assert capsys.readouterr().out.splitlines() == ORDERS


def test_two_workers_script_runs_on_its_embedded_engine() -> None:
    completed, _ = run_example("two_workers.py")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ORDERS
    assert completed.stderr == ""


def test_the_worker_test_example_passes_in_a_plain_project(pytester: pytest.Pytester) -> None:
    for name in ("test_stock_worker.py", "two_workers.py"):
        (pytester.path / name).write_text((EXAMPLES / name).read_text(encoding="utf-8"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_cli_script_drives_the_dev_engine_with_trigger() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PORT": str(port)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    completed = subprocess.run(
        ["sh", str(EXAMPLES / "cli_trigger.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.split("\n}\n")[0] + "}") == {
        "new_value": "hello",
        "old_value": None,
    }
    assert '"hello"\n[\n  "hello"\n]' in completed.stdout


async def test_engine_url_is_iii_url_when_set_else_a_dev_engine_for_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("III_URL", "ws://engine.example:49134")
    async with engine_url() as url:
        assert url == "ws://engine.example:49134"
    monkeypatch.setenv("III_URL", "  ")
    async with engine_url() as url, iii_trio.open_worker(url, name="probe") as worker:
        assert url.startswith("ws://127.0.0.1:")
        assert worker.connection_state is iii_trio.ConnectionState.CONNECTED


HTTP_API_RUN = [
    '201 {"id":"1","title":"milk","done":false}',
    '200 {"id":"1","title":"milk","done":false}',
    '404 {"error":"no such todo"}',
    "200 1. milk",
]


async def test_http_api_demo_answers_as_curl_would(
    iii_engine: DevEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    http_api.todos.clear()
    assert iii_engine.http_url is not None
    await http_api.demo(iii_engine.url, iii_engine.http_url)
    assert capsys.readouterr().out.splitlines() == HTTP_API_RUN


def test_http_api_script_runs_on_its_embedded_engine() -> None:
    completed, _ = run_example("http_api.py")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == HTTP_API_RUN


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_line(process: subprocess.Popen[str], needle: str) -> None:
    """Read the process's output until a line contains ``needle`` (bounded by the caller's
    kill on failure: the process is killed if it dies or the line never comes)."""
    assert process.stdout is not None
    deadline = time.monotonic() + 15
    for line in process.stdout:
        if needle in line:
            return
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"never saw {needle!r}")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_against_iii_trio_dev_reaches_the_http_api_example() -> None:
    port, http_port = _free_port(), _free_port()
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES.parent), III_URL=f"ws://127.0.0.1:{port}")
    cli = Path(sys.executable).parent / "iii-trio"
    dev = subprocess.Popen(
        [str(cli), "dev", "--port", str(port), "--http-port", str(http_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    worker = None
    try:
        dev.stdout = dev.stderr  # the dev engine logs on stderr
        _wait_for_line(dev, "REST API (http triggers) at")
        worker = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "http_api.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        _wait_for_line(worker, "todo API registered")
        base = f"http://127.0.0.1:{http_port}"

        def curl(*args: str) -> str:
            return subprocess.run(
                ["curl", "-sS", "-w", " %{http_code}", *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout

        created = curl(
            "-X", "POST", f"{base}/todos",
            "-H", "content-type: application/json", "-d", '{"title":"milk"}',
        )  # fmt: skip
        fetched = curl(f"{base}/todos/1")
        exported = curl(f"{base}/todos/export")
    finally:
        for process in (worker, dev):
            if process is not None:
                process.kill()
                process.wait(timeout=10)
                for stream in (process.stdout, process.stderr):
                    if stream is not None:
                        stream.close()
    assert created == '{"id":"1","title":"milk","done":false} 201'
    assert fetched == '{"id":"1","title":"milk","done":false} 200'
    assert exported == "1. milk\n 200"
