"""Every Python block of the README runs as shown.

A block with ``trio.run(`` is a whole program: it runs as a script against a dev engine, with
``III_URL`` pointing at it, and what it prints must match its ``# ...`` output comments. A
pytest block runs in a throw-away project. Every other block is a snippet of a worker's code:
the README says they assume ``worker`` (a connected worker) and ``url`` (the engine's URL), and
here each runs as the body of an async function given exactly those.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio.testing import DevEngine, open_dev_engine

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
#: A block the tests cannot run says why, right above it: ``<!-- not run: reason -->``.
NOT_RUN = re.compile(r"<!-- not run: (\S[^>]*)-->\n```python\n(.*?)```", flags=re.S)
SKIPPED = {block: reason.strip() for reason, block in NOT_RUN.findall(TEXT)}
BLOCKS = [
    block for block in re.findall(r"```python\n(.*?)```", TEXT, flags=re.S) if block not in SKIPPED
]
PROGRAMS = [block for block in BLOCKS if "trio.run(" in block]
PYTEST_BLOCKS = [block for block in BLOCKS if re.search(r"^async def test_", block, re.M)]
SNIPPETS = [block for block in BLOCKS if block not in PROGRAMS and block not in PYTEST_BLOCKS]
#: What a snippet may use without importing it, besides ``worker`` and ``url``.
SNIPPET_GLOBALS = "import logging\nimport ssl\n\nimport attrs\nimport trio\n\nimport iii_trio\n"


def block_id(block: str) -> str:
    return block.strip().splitlines()[0][:40]


def expected_output(program: str) -> list[str]:
    """The ``# ...`` comments after ``print(...)`` calls, in order."""
    return re.findall(r"print\(.*\)\s+#\s*(.+)$", program, flags=re.M)


def test_the_readme_has_each_kind_of_block_and_few_it_cannot_run() -> None:
    assert PROGRAMS
    assert PYTEST_BLOCKS
    assert SNIPPETS
    assert len(SKIPPED) <= 1, SKIPPED


@pytest.mark.parametrize("program", PROGRAMS, ids=block_id)
async def test_a_program_runs_and_prints_what_its_comments_say(
    iii_engine: DevEngine, program: str, tmp_path: Path
) -> None:
    script = tmp_path / "program.py"
    script.write_text(program, encoding="utf-8")
    env = {**os.environ, "III_URL": iii_engine.url}
    with trio.fail_after(30):
        ran = await trio.run_process(
            [sys.executable, str(script)], capture_stdout=True, capture_stderr=True, env=env
        )
    lines = ran.stdout.decode().splitlines()
    assert lines == expected_output(program), ran.stderr.decode()


@pytest.mark.parametrize("snippet", SNIPPETS, ids=block_id)
async def test_a_snippet_runs_given_a_worker_and_the_url(
    iii_engine: DevEngine, iii_worker: iii_trio.Worker, snippet: str
) -> None:
    source = SNIPPET_GLOBALS + "\n\nasync def snippet(worker, url):\n"
    source += textwrap.indent(snippet, "    ") + "\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, f"README snippet {block_id(snippet)!r}", "exec"), namespace)
    with trio.fail_after(10):
        await namespace["snippet"](iii_worker, iii_engine.url)


@pytest.mark.parametrize("block", PYTEST_BLOCKS, ids=block_id)
def test_a_pytest_block_passes_in_a_plain_project(pytester: pytest.Pytester, block: str) -> None:
    pytester.makepyfile(test_readme_block=block)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(re.findall(r"^async def test_", block, re.M)))


def test_the_command_lines_name_real_commands() -> None:
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", TEXT, flags=re.S))
    commands = set(re.findall(r"^iii-trio (\w+)", shell, flags=re.M))
    assert commands == {"dev", "trigger"}
    for command in commands:
        ran = subprocess.run(
            [sys.executable, "-m", "iii_trio", command, "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert ran.returncode == 0, (command, ran.stderr)


#: The README's command lines use the engine's default addresses.
DEFAULT_PORT = 49134
SHELL_BLOCKS = re.findall(r"```sh\n(.*?)```", TEXT, flags=re.S)
TRIGGER_BLOCKS = [block for block in SHELL_BLOCKS if "iii-trio trigger" in block]
DEV_BLOCKS = [block for block in SHELL_BLOCKS if "iii-trio dev" in block]
#: The engine config file that ``iii-trio dev --config config.yaml`` reads.
CONFIG_FILE = next(
    block
    for block in re.findall(r"```yaml\n(.*?)```", TEXT, flags=re.S)
    if "iii-worker-manager" in block
)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the engine binds: a recently closed connection's TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def shell_env() -> dict[str, str]:
    """The test's environment, with this interpreter's ``iii-trio`` and ``python`` first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


async def test_the_trigger_command_lines_run_against_an_engine_on_the_default_port(
    tmp_path: Path,
) -> None:
    if not port_is_free(DEFAULT_PORT):
        pytest.skip(f"port {DEFAULT_PORT} is taken: an engine of your own is running")
    assert TRIGGER_BLOCKS
    env = shell_env()
    async with (
        open_dev_engine(port=DEFAULT_PORT) as engine,
        iii_trio.open_worker(engine.url, name="orders") as orders,
        iii_trio.open_worker(engine.url, name="billing", namespace="billing") as billing,
    ):
        orders.register_function(
            "orders::process", lambda order: {"processed": order}, description="Process an order"
        )
        billing.register_function("billing::total", lambda payload: 42)
        await orders.wait_registered()
        await billing.wait_registered()
        for block in TRIGGER_BLOCKS:
            with trio.fail_after(60):
                ran = await trio.run_process(
                    ["sh", "-c", f"set -e\n{block}"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                    cwd=tmp_path,
                )
            assert ran.returncode == 0, (block, ran.stderr.decode())
            assert b'"processed"' in ran.stdout or b"42" in ran.stdout


def command_lines(block: str) -> list[tuple[str, str]]:
    """Each command of a shell block with its ``#`` comment, continuation lines included."""
    commands: list[tuple[str, str]] = []
    for line in block.splitlines():
        code, _, comment = line.partition(" #")
        if code.strip():
            commands.append((code.strip(), comment.strip()))
        elif commands:  # a comment-only line goes on with the command above it
            command, earlier = commands[-1]
            commands[-1] = (command, f"{earlier} {line.strip().lstrip('#').strip()}")
    return commands


def ports_named(comment: str) -> list[int]:
    return [int(port) for port in re.findall(r"(?<![\d.])(\d{4,5})\b", comment)]


DEV_PORTS = {DEFAULT_PORT, 3111}.union(
    *(ports_named(comment) for block in DEV_BLOCKS for _, comment in command_lines(block))
)


def server_log(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_until_listening(process: trio.Process, ports: Sequence[int], log: Path) -> None:
    for port in ports:
        while True:
            assert process.returncode is None, server_log(log)
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
            else:
                await stream.aclose()
                break


async def wait_for_a_line(process: trio.Process, log: Path) -> None:
    assert process.stdout is not None
    while b"\n" not in await process.stdout.receive_some(1):
        assert process.returncode is None, server_log(log)


async def interrupt(process: trio.Process, log: Path) -> None:
    """Ctrl-C, as the README tells the reader to stop a server: it must end cleanly."""
    process.send_signal(signal.SIGINT)
    with trio.fail_after(15):
        await process.wait()
    assert process.returncode == 0, server_log(log)


async def run_as_typed(block: str, cwd: Path) -> list[bytes]:
    """Run a block one line at a time, as a reader types it, and return what the foreground
    commands printed.

    ``iii-trio dev`` (in the background or not) counts as started once the ports its comment
    names accept connections, any other background command once it prints a line. A server
    started in the foreground is stopped with Ctrl-C before the next line, as the reader must;
    background ones at the end of the block.
    """
    printed: list[bytes] = []
    async with trio.open_nursery() as nursery:
        background: list[tuple[trio.Process, Path]] = []
        for number, (command, comment) in enumerate(command_lines(block)):
            words = shlex.split(command.removesuffix("&"))
            env = shell_env()
            while re.match(r"^[A-Z_]+=", words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            serves = words[:2] == ["iii-trio", "dev"] or command.endswith("&")
            if not serves:
                with trio.fail_after(30):
                    ran = await trio.run_process(
                        words, capture_stdout=True, capture_stderr=True, env=env, cwd=cwd
                    )
                printed.append(ran.stdout)
                continue
            log = cwd / f"line-{number}.log"
            with log.open("wb") as log_file:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        words,
                        stdout=subprocess.PIPE,
                        stderr=log_file,
                        check=False,
                        env=env,
                        cwd=cwd,
                    )
                )
            with trio.fail_after(30):
                if words[:2] == ["iii-trio", "dev"]:
                    await wait_until_listening(process, ports_named(comment) or [DEFAULT_PORT], log)
                else:
                    await wait_for_a_line(process, log)
            if command.endswith("&"):
                background.append((process, log))
            else:
                await interrupt(process, log)
        for process, log in reversed(background):
            await interrupt(process, log)
    return printed


@pytest.mark.parametrize("block", DEV_BLOCKS, ids=block_id)
async def test_the_dev_command_lines_serve_where_their_comments_say(
    block: str, tmp_path: Path
) -> None:
    taken = sorted(port for port in DEV_PORTS if not port_is_free(port))
    if taken:
        pytest.skip(f"ports {taken} are taken: an engine of your own is running")
    (tmp_path / "config.yaml").write_text(CONFIG_FILE, encoding="utf-8")
    (tmp_path / "examples").symlink_to(README.parent / "examples")
    for output in await run_as_typed(block, tmp_path):
        answer = json.loads(output)  # what curl printed: the API's JSON, not an error envelope
        assert isinstance(answer, dict)
        assert "error" not in answer, answer
