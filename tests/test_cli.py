"""The ``iii-trio`` command line.

Payload rules, messages and help rendering are checked in-process (none of them needs an engine).
Everything else runs the installed ``iii-trio`` console script as a real subprocess against a dev
engine: in this process (``iii_engine``) for ``trigger``, or as ``iii-trio dev`` itself. The demo
functions ``trigger`` calls are served by an iii_trio worker in this process and, with the roles
swapped, by a worker built with the official SDK (``tests/cli_helpers/official_demo_worker.py``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from cli_helpers.demo_function import DEMO_DESCRIPTION, DEMO_REQUEST_FORMAT

import iii_trio
from iii_trio import _cli
from iii_trio.testing import DevEngine

CLI = Path(sys.executable).parent / "iii-trio"
OFFICIAL_PEER = Path(__file__).parent / "cli_helpers" / "official_demo_worker.py"

TIMEOUT_LINE = (
    "Error: Timed out waiting for the engine (no response within the timeout). "
    "Is the engine running at the given address and port?"
)
STATIC_HELP_TIP = (
    "Tip: `iii-trio trigger <fn-path> --help` queries a running engine for the\n"
    "  function's description and request schema.\n"
)


def _child_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("III_NAMESPACE", "III_URL", "III_WORKER_NAME", "III_TOKEN")
    }
    env["OTEL_ENABLED"] = "false"
    env["PATH"] = f"{CLI.parent}{os.pathsep}{env.get('PATH', '')}"
    # The children import the iii_trio under test, whichever checkout the script was installed
    # from.
    tested = str(Path(iii_trio.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tested, env.get("PYTHONPATH")]))
    return env


ENV = _child_env()


@attrs.frozen
class Ran:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def run(command: Sequence[str], *, limit: float = 20) -> Ran:
    started = trio.current_time()
    with trio.fail_after(limit):
        done = await trio.run_process(
            list(command), capture_stdout=True, capture_stderr=True, check=False, env=ENV
        )
    return Ran(
        done.returncode,
        done.stdout.decode(),
        done.stderr.decode(),
        trio.current_time() - started,
    )


async def cli(*args: str, limit: float = 20) -> Ran:
    """Run the installed ``iii-trio`` script."""
    return await run([str(CLI), *args], limit=limit)


async def trigger(port: int, *args: str, limit: float = 20) -> Ran:
    return await cli("trigger", *args, "--port", str(port), "--timeout-ms", "10000", limit=limit)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def error_body(stderr: str) -> Any:
    assert stderr.startswith("Error: {"), stderr
    return json.loads(stderr.removeprefix("Error: "))


class Output:
    """Collects a child's output as it arrives, so a test can wait for a line."""

    def __init__(self) -> None:
        self.text = ""
        self._changed = trio.Event()

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        async for chunk in stream:
            self.text += chunk.decode()
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_for(self, needle: str, *, count: int = 1) -> None:
        with trio.fail_after(10):
            await trio.lowlevel.checkpoint()
            while self.text.count(needle) < count:
                await self._changed.wait()


@asynccontextmanager
async def dev_engine_process(
    *options: str, port: int | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[trio.Process, Output, int]]:
    """``iii-trio dev OPTIONS`` on a free port: the process, its log (stderr) and the port.

    Without ``port``, ``--port`` a free one is added to the options; with it, the options must
    make the dev engine listen there. ``env`` adds to the child's environment. Killed on the way
    out if the test did not stop it.
    """
    if port is None:
        port = free_port()
        options = (*options, "--port", str(port))
    if "--http-port" not in options:
        options = (*options, "--http-port", "0")  # not the shared default 3111
    async with trio.open_nursery() as nursery:
        dev: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [str(CLI), "dev", *options],
                stderr=subprocess.PIPE,
                check=False,
                env={**ENV, **(env or {})},
            )
        )
        try:
            log = Output()
            assert dev.stderr is not None
            nursery.start_soon(log.pump, dev.stderr)
            await log.wait_for(f"ws://127.0.0.1:{port}")
            yield dev, log, port
        finally:
            if dev.returncode is None:
                dev.kill()


# -- who serves the demo functions ------------------------------------------------------------


def _echo(payload: Any) -> Any:
    return payload


async def _fail(payload: Any) -> Any:
    await trio.lowlevel.checkpoint()
    raise RuntimeError("order 42 is invalid")


async def _nothing(payload: Any) -> None:
    await trio.lowlevel.checkpoint()


@asynccontextmanager
async def serving_with_iii_trio(engine: DevEngine) -> AsyncIterator[None]:
    """The demo functions served by an iii_trio worker in this process."""
    async with iii_trio.open_worker(engine.url, name="trio-demo") as worker:
        worker.register_function(
            "demo::echo",
            _echo,
            description=DEMO_DESCRIPTION,
            request_format=DEMO_REQUEST_FORMAT,
        )
        worker.register_function("demo::fail", _fail)
        worker.register_function("demo::nothing", _nothing)
        await worker.wait_registered()
        yield


@asynccontextmanager
async def serving_with_official_sdk(engine: DevEngine) -> AsyncIterator[None]:
    """The same functions served by an official iii-sdk worker in a subprocess."""
    pytest.importorskip("iii", reason="the official iii-sdk package is not installed")
    async with trio.open_nursery() as nursery:
        peer: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(OFFICIAL_PEER), engine.url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=ENV,
                check=False,
            )
        )
        assert peer.stdin is not None
        assert peer.stdout is not None
        try:
            with trio.fail_after(20):
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await peer.stdout.receive_some()
                    assert chunk, f"the official worker exited early: {line!r}"
                    line += chunk
            assert line == b"ready\n"
            yield
        finally:
            await peer.stdin.aclose()  # the peer shuts down when its stdin closes
            with trio.move_on_after(5, shield=True):
                await peer.wait()
            nursery.cancel_scope.cancel()  # terminates it if it did not stop in time


SERVERS = {"iii_trio": serving_with_iii_trio, "official": serving_with_official_sdk}


@pytest.fixture(params=sorted(SERVERS))
async def demo_engine(
    request: pytest.FixtureRequest, iii_engine: DevEngine
) -> AsyncIterator[DevEngine]:
    """A dev engine where the demo functions are served by either kind of worker."""
    async with SERVERS[request.param](iii_engine):
        yield iii_engine


# -- in-process: payloads, messages, exit codes -------------------------------------------


@pytest.mark.parametrize(
    ("raw_json", "tokens", "expected"),
    [
        (None, [], {}),
        ('{"a": 1}', [], {"a": 1}),
        ("[1, 2]", [], [1, 2]),
        ('"text"', [], "text"),
        ("null", [], None),
        (
            None,
            ["n=10", "ok=true", "none=null", 'q="x"', 'o={"k": [1]}', "s=hello", "e="],
            {"n": 10, "ok": True, "none": None, "q": "x", "o": {"k": [1]}, "s": "hello", "e": ""},
        ),
        (None, ["expr=a=b"], {"expr": "a=b"}),
        (None, ["n=1", "n=2"], {"n": 2}),
        ('{"a": 1, "b": 2}', ["b=3", "c=x"], {"a": 1, "b": 3, "c": "x"}),
    ],
)
def test_payload_rules(raw_json: str | None, tokens: list[str], expected: Any) -> None:
    assert _cli.build_payload(raw_json, tokens) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "novalue"], "Error: expected key=value, got `novalue`\n"),
        (["x", "=1"], "Error: payload key must not be empty (got `=1`)\n"),
        (
            ["x", "a=1", "--json", "[1]"],
            "Error: --json must be an object when combined with kv pairs\n",
        ),
        (
            ["--function-id", "x", "--payload", "3", "a=1"],
            "Error: --payload must be an object when combined with kv pairs\n",
        ),
        (
            [],
            "Error: iii-trio trigger: missing FUNCTION_PATH. "
            "Try: `iii-trio trigger <fn-path> [args]`\n",
        ),
    ],
)
def test_payload_and_path_errors_exit_1(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli.main(["trigger", *args, "--port", "1"]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", message)


@pytest.mark.parametrize("flag", ["--json", "--payload"])
def test_invalid_json_message(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["trigger", "--function-id", "x", flag, "{bad", "--port", "1"]) == 1
    first, blank, caused_by, detail, *rest = capsys.readouterr().err.split("\n")
    assert first == f"Error: {flag}: invalid JSON `{{bad`"
    assert (blank, caused_by) == ("", "Caused by:")
    assert detail.startswith("    ")
    assert "line 1 column 2" in detail
    assert rest == [""]


@pytest.mark.parametrize(
    "args",
    [
        ["trigger", "x", "--bogus"],
        ["trigger", "x", "--json", "1", "--payload", "2"],
        ["trigger", "x", "--port", "http"],
        ["trigger", "x", "--port", "70000"],
        ["trigger", "x", "--timeout-ms", "0"],
        ["trigger", "x", "-n", " "],
        ["launch"],
        [],
        ["dev", "--port", "-1"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli.main(args)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage:" in captured.err


def test_pretty_json_matches_the_engine_cli() -> None:
    value = {"b": [1, {"z": None, "a": "é"}], "a": {}, "c": []}
    assert _cli.render_json(value) == (
        '{\n  "a": {},\n  "b": [\n    1,\n    {\n      "a": "é",\n      "z": null\n    }\n'
        '  ],\n  "c": []\n}'
    )
    assert _cli.render_error_body("function_not_found", "gone", None) == (
        '{\n  "code": "function_not_found",\n  "message": "gone",\n  "stacktrace": null\n}'
    )


def test_function_help_page_from_schema() -> None:
    detail = {
        "function_id": "demo::echo",
        "namespace": "default",
        "description": "Line one\u202e.\nLine\x07 two.",
        "request_schema": DEMO_REQUEST_FORMAT,
    }
    page = _cli.render_function_help("demo::echo", detail, prog="iii-trio", options="Options:\n")
    assert page == (
        "demo::echo (default)\n"
        "\n"
        "Line one.\n"
        "Line two.\n"
        "\n"
        "Usage: iii-trio trigger demo::echo [key=value ...] [--json '<obj>']\n"
        "\n"
        "Parameters:\n"
        "  name   type          required  description\n"
        "  name   string        yes       who is asking\n"
        "  count  integer|null  no        how many times\n"
        "  extra  any           no\n"
        "\n"
        "Options:\n"
    )


@pytest.mark.parametrize(
    ("detail", "line"),
    [
        ({}, "  *(no request schema published)*"),
        ({"request_schema": None}, "  *(no request schema published)*"),
        (
            {"request_format": {"properties": {"id": {"type": "string"}}}},
            "  id    string  no",
        ),
        ({"request_schema": {"type": "integer"}}, "of type integer"),
    ],
)
def test_function_help_without_properties(detail: dict[str, Any], line: str) -> None:
    page = _cli.render_function_help("f::g", detail, prog="iii-trio", options="Options:\n")
    assert line in page


# -- subprocess: trigger against the dev engine ----------------------------------------------


async def test_static_help() -> None:
    ran = await cli("trigger", "--help")
    assert ran.returncode == 0
    assert ran.stdout.startswith("usage: iii-trio trigger [OPTIONS] [FUNCTION_PATH] [KEY=VALUE]")
    for flag in ("--json", "--payload", "--function-id", "--address", "--port", "--timeout-ms"):
        assert flag in ran.stdout
    assert ran.stdout.endswith(STATIC_HELP_TIP)
    assert ran.stderr == ""


async def test_documented_flags(demo_engine: DevEngine) -> None:
    ran = await trigger(
        demo_engine.port, "--function-id=demo::echo", '--payload={"a": 1, "z": ["é", null]}'
    )
    assert (ran.returncode, ran.stderr) == (0, "")
    assert ran.stdout == '{\n  "a": 1,\n  "z": [\n    "é",\n    null\n  ]\n}\n'


async def test_engine_cli_form(demo_engine: DevEngine) -> None:
    ran = await cli(
        "trigger",
        "demo::echo",
        "name=ada",
        "--json",
        '{"count": 1, "keep": true}',
        "count=10",
        "--address",
        "127.0.0.1",
        "--port",
        str(demo_engine.port),
        "--timeout-ms",
        "10000",
        "tag=x=y",
    )
    assert (ran.returncode, ran.stderr) == (0, "")
    assert ran.stdout == pretty({"count": 10, "keep": True, "name": "ada", "tag": "x=y"})


async def test_null_result_prints_nothing(demo_engine: DevEngine) -> None:
    ran = await trigger(demo_engine.port, "demo::nothing")
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")


async def test_function_error_body(demo_engine: DevEngine) -> None:
    ran = await trigger(demo_engine.port, "demo::fail", "order=42")
    assert (ran.returncode, ran.stdout) == (1, "")
    body = error_body(ran.stderr)
    assert list(body) == ["code", "message", "stacktrace"]
    assert body["code"] == "invocation_failed"
    assert body["message"] == "order 42 is invalid"
    assert "RuntimeError: order 42 is invalid" in body["stacktrace"]
    assert ran.stderr.startswith('Error: {\n  "code": "invocation_failed",\n')


async def test_shell_loop_of_the_docs(demo_engine: DevEngine) -> None:
    script = (
        "for id in 1 2 3; do\n"
        '  iii-trio trigger --function-id=\'demo::echo\' --payload="{\\"order\\": $id}"'
        f" --port {demo_engine.port} || exit $?\n"
        "done\n"
    )
    ran = await run(["sh", "-c", script])
    assert (ran.returncode, ran.stderr) == (0, "")
    assert ran.stdout == "".join(pretty({"order": n}) for n in (1, 2, 3))


async def test_function_help_from_the_engine(demo_engine: DevEngine) -> None:
    ran = await trigger(demo_engine.port, "demo::echo", "--help")
    assert (ran.returncode, ran.stderr) == (0, "")
    assert ran.stdout.startswith(
        "demo::echo (default)\n\nEcho the payload back.\nUsed by the CLI tests.\n\n"
        "Usage: iii-trio trigger demo::echo [key=value ...] [--json '<obj>']\n\n"
        "Parameters:\n"
        "  name   type          required  description\n"
        "  name   string        yes       who is asking\n"
        "  count  integer|null  no        how many times\n"
        "  extra  any           no\n\n"
        "Options:\n"
    )
    assert "--timeout-ms" in ran.stdout
    assert "Tip:" not in ran.stdout


async def test_function_not_found(iii_engine: DevEngine) -> None:
    ran = await trigger(iii_engine.port, "orders::process", "--json", "{}")
    assert (ran.returncode, ran.stdout) == (1, "")
    assert ran.stderr == (
        "Error: {\n"
        '  "code": "function_not_found",\n'
        '  "message": "Function orders::process not found in namespace default.",\n'
        '  "stacktrace": null\n'
        "}\n"
    )


async def test_function_help_for_unknown_function(iii_engine: DevEngine) -> None:
    ran = await trigger(iii_engine.port, "orders::process", "--help")
    assert (ran.returncode, ran.stdout) == (1, "")
    assert ran.stderr == (
        "error: function `orders::process` not found in engine registry.\n"
        "  hint: run `iii-trio trigger engine::functions::list` to see registered functions.\n"
    )


async def test_function_help_without_an_engine() -> None:
    port = free_port()
    ran = await cli(
        "trigger", "orders::process", "--help", "--port", str(port), "--timeout-ms", "300"
    )
    assert ran.returncode == 0
    warning, showing, blank, *_ = ran.stderr.split("\n")
    assert warning.startswith("warning: could not query engine for `orders::process`: Timed out")
    assert f"ws://localhost:{port}" in warning
    assert (showing, blank) == ("Showing static CLI help only.", "")
    assert ran.stdout.startswith("usage: iii-trio trigger")
    assert ran.stdout.endswith(STATIC_HELP_TIP)


async def test_invalid_json_fails_before_connecting() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        ran = await cli(
            "trigger", "demo::echo", "--json", "{oops", "--port", str(port), "--timeout-ms", "60000"
        )
        assert (ran.returncode, ran.stdout) == (1, "")
        assert ran.stderr.startswith("Error: --json: invalid JSON `{oops`\n\nCaused by:\n    ")
        assert ran.seconds < 5  # did not wait for the timeout
        with trio.move_on_after(0.05) as nobody_came:
            stream = await listeners[0].accept()
            await stream.aclose()
        assert nobody_came.cancelled_caught, "the CLI connected before reporting the error"
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_engine_not_running() -> None:
    port = free_port()
    ran = await cli("trigger", "demo::echo", "--port", str(port), "--timeout-ms", "600")
    assert (ran.returncode, ran.stdout) == (1, "")
    first, blank, caused_by, cause, end = ran.stderr.split("\n")
    assert (first, blank, caused_by, end) == (TIMEOUT_LINE, "", "Caused by:", "")
    assert cause.startswith(f"    no connection to the engine at ws://localhost:{port} (")
    assert ran.seconds < 5


async def test_function_that_never_answers_times_out(iii_engine: DevEngine) -> None:
    async with iii_trio.open_worker(iii_engine.url, name="sleeper") as worker:
        worker.register_function("demo::hang", _sleep_forever)
        await worker.wait_registered()
        ran = await cli(
            "trigger", "demo::hang", "--port", str(iii_engine.port), "--timeout-ms", "400"
        )
    assert (ran.returncode, ran.stdout, ran.stderr) == (1, "", TIMEOUT_LINE + "\n")


async def _sleep_forever(payload: Any) -> None:
    await trio.sleep_forever()


async def test_connection_closing_before_the_result() -> None:
    called = trio.Event()

    async def hang(payload: Any) -> None:
        called.set()
        await trio.sleep_forever()

    outcome: list[Ran] = []
    async with dev_engine_process() as (dev, _, port):
        quick = iii_trio.Backoff(initial=0.01, maximum=0.05, jitter=0.0)
        url = f"ws://127.0.0.1:{port}"
        async with iii_trio.open_worker(url, name="dropper", backoff=quick) as worker:
            worker.register_function("demo::hang", hang)
            await worker.wait_registered()

            async def run_cli() -> None:
                outcome.append(await trigger(port, "demo::hang"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_cli)
                with trio.fail_after(10):
                    await called.wait()
                dev.kill()  # the engine dies with the call in flight
    [ran] = outcome
    assert (ran.returncode, ran.stdout) == (1, "")
    assert ran.stderr == (
        f"Error: the connection to the engine at ws://localhost:{port} "
        "closed unexpectedly before the result arrived\n"
    )
    assert ran.seconds < 5


async def test_ctrl_c_while_waiting_exits_130(iii_engine: DevEngine) -> None:
    called = trio.Event()

    async def hang(payload: Any) -> None:
        called.set()
        await trio.sleep_forever()

    async with iii_trio.open_worker(iii_engine.url, name="interrupted") as worker:
        worker.register_function("demo::hang", hang)
        await worker.wait_registered()
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    [str(CLI), "trigger", "demo::hang", "--port", str(iii_engine.port)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                    env=ENV,
                )
            )
            try:
                with trio.fail_after(10):
                    await called.wait()
                    process.send_signal(signal.SIGINT)
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
            assert process.stderr is not None
            stderr = await process.stderr.receive_some()
    assert process.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr


async def test_namespace_flag(iii_engine: DevEngine) -> None:
    async with iii_trio.open_worker(iii_engine.url, name="billing", namespace="billing") as worker:
        worker.register_function("invoices::total", lambda payload: 42)
        await worker.wait_registered()
        missed = await trigger(iii_engine.port, "invoices::total")
        found = await trigger(iii_engine.port, "invoices::total", "-n", "billing")
    assert error_body(missed.stderr)["message"] == (
        "Function invoices::total not found in namespace default. "
        "It is registered in namespace(s): billing."
    )
    assert (found.returncode, found.stdout, found.stderr) == (0, "42\n", "")


async def test_overlapping_invocations_both_succeed(iii_engine: DevEngine) -> None:
    # Both connect as "iii-cli:trigger"; the one refused the name retries under a unique name.
    arrived = 0
    both_arrived = trio.Event()
    names_while_both_ran: set[str | None] = set()
    async with iii_trio.open_worker(iii_engine.url, name="meeting-point") as worker:

        @worker.function("demo::meet")
        async def meet(payload: Any) -> Any:
            nonlocal arrived
            arrived += 1
            if arrived == 2:
                names_while_both_ran.update(info.name for info in await worker.list_workers())
                both_arrived.set()
            await both_arrived.wait()
            return payload

        await worker.wait_registered()
        results: dict[int, Ran] = {}

        async def one(n: int) -> None:
            results[n] = await trigger(iii_engine.port, "demo::meet", f"n={n}")

        async with trio.open_nursery() as nursery:
            for n in (1, 2):
                nursery.start_soon(one, n)
    assert {n: (ran.returncode, ran.stdout) for n, ran in results.items()} == {
        n: (0, pretty({"n": n})) for n in (1, 2)
    }
    cli_names = {name for name in names_while_both_ran if name and name.startswith("iii-cli:")}
    assert len(cli_names) == 2
    assert "iii-cli:trigger" in cli_names
    assert all(name.startswith("iii-cli:trigger:") for name in cli_names - {"iii-cli:trigger"})


async def test_python_dash_m(iii_engine: DevEngine) -> None:
    port = str(iii_engine.port)
    async with serving_with_iii_trio(iii_engine):
        ran = await run(
            [sys.executable, "-m", "iii_trio", "trigger", "demo::echo", "a=1", "--port", port]
        )
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, pretty({"a": 1}), "")


# -- subprocess: iii-trio dev ----------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_dev_serves_logs_workers_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    async with dev_engine_process() as (dev, log, port):
        async with iii_trio.open_worker(f"ws://127.0.0.1:{port}", name="on-dev") as worker:
            worker.register_function("dev::ping", lambda payload: "pong")
            await worker.wait_registered()
            ran = await trigger(port, "dev::ping")
            assert (ran.returncode, ran.stdout) == (0, '"pong"\n')
        await log.wait_for("worker left", count=2)
        dev.send_signal(stop_signal)
        with trio.fail_after(10):
            await dev.wait()
    assert dev.returncode == 0
    assert "Traceback" not in log.text
    assert "worker registered: id=" in log.text
    assert "name=on-dev namespace=default" in log.text
    assert "name=iii-cli:trigger namespace=default" in log.text
    assert log.text.count("worker left") == 2


async def test_dev_port_in_use() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        ran = await cli("dev", "--port", str(port))
    finally:
        for listener in listeners:
            await listener.aclose()
    assert ran.returncode == 1
    assert ran.stderr.startswith(f"Error: cannot serve the dev engine on 127.0.0.1:{port}: ")
    assert "Traceback" not in ran.stderr


async def test_dev_serves_the_rest_api_of_http_triggers() -> None:
    import httpx

    with trio.fail_after(20):
        async with (
            dev_engine_process() as (_, log, port),
            iii_trio.open_worker(f"ws://127.0.0.1:{port}") as worker,
        ):
            await log.wait_for("REST API (http triggers) at http://127.0.0.1:")
            line = next(line for line in log.text.splitlines() if "(http triggers) at" in line)
            http_url = line.rsplit(" ", 1)[1]
            worker.register_function("demo::hello", lambda request: {"body": {"hi": 1}})
            await worker.register_trigger("http", "demo::hello", {"api_path": "hello"})
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{http_url}/hello")
    assert response.status_code == 200
    assert response.json() == {"hi": 1}


# -- subprocess: iii-trio dev --config ---------------------------------------------------------

DEV_CONFIG = """\
workers:
  - name: iii-worker-manager
    config:
      port: ${DEV_PORT:0}
  - name: iii-exec                  # not emulated: noted, not an error
    config: {watch: []}
"""


async def test_dev_serves_the_listener_of_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(DEV_CONFIG, encoding="utf-8")
    port = free_port()
    process = dev_engine_process("--config", str(config), port=port, env={"DEV_PORT": str(port)})
    async with process as (dev, log, _):
        ran = await trigger(port, "engine::functions::list")
        assert (ran.returncode, ran.stdout) == (0, pretty({"functions": []}))
        dev.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await dev.wait()
    assert dev.returncode == 0
    assert "Traceback" not in log.text
    assert log.text.count("config: worker 'iii-exec' is not emulated by the dev engine") == 1


async def test_dev_flags_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(DEV_CONFIG, encoding="utf-8")
    from_file, from_flag = free_port(), free_port()
    options = ("--config", str(config), "--port", str(from_flag))
    process = dev_engine_process(*options, port=from_flag, env={"DEV_PORT": str(from_file)})
    async with process as (dev, log, _):
        dev.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await dev.wait()
    assert dev.returncode == 0
    assert f"127.0.0.1:{from_file}" not in log.text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "cannot read the config file {path}: No such file or directory"),
        ("workers: [\n", "{path}: invalid YAML at line 2, column 1: "),
        ("workers:\n  - name: ${NO_SUCH_VARIABLE}\n", "{path}: environment variable 'NO_SUCH"),
        (
            "workers:\n  - name: iii-worker-manager\n    config: {port: abc}\n",
            "{path}: workers[0].config.port: expected an integer from 0 to 65535, got a string",
        ),
    ],
    ids=["missing", "yaml", "variable", "port"],
)
async def test_dev_with_a_bad_config_file_is_a_usage_error(
    tmp_path: Path, text: str | None, problem: str
) -> None:
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    ran = await cli("dev", "--config", str(path))
    assert ran.returncode == 2
    assert ran.stderr.startswith("Error: " + problem.format(path=path))
    assert ran.stderr.count("\n") == 1
    assert ran.stdout == ""


async def test_dev_without_an_unknown_worker_is_a_usage_error() -> None:
    ran = await cli("dev", "--without", "iii-nothing")
    assert ran.returncode == 2
    assert ran.stderr.startswith("Error: --without: 'iii-nothing' is not a built-in worker")
    assert ran.stdout == ""
