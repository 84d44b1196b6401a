"""Every Python block of the README runs as shown.

A block with ``trio.run(`` is a whole program: it runs as a script against a dev engine, with
``III_URL`` pointing at it, and what it prints must match its ``# ...`` output comments. A
pytest block runs in a throw-away project. Every other block is a snippet of a worker's code:
the README says they assume ``worker`` (a connected worker) and ``url`` (the engine's URL), and
here each runs as the body of an async function given exactly those.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
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


#: The README's ``iii-trio trigger`` blocks call the engine on its default address.
DEFAULT_PORT = 49134
TRIGGER_BLOCKS = [
    block
    for block in re.findall(r"```sh\n(.*?)```", TEXT, flags=re.S)
    if "iii-trio trigger" in block
]


def default_port_is_free() -> bool:
    with socket.socket() as probe:
        # As the engine binds: a recently closed connection's TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            return False
    return True


async def test_the_trigger_command_lines_run_against_an_engine_on_the_default_port(
    tmp_path: Path,
) -> None:
    if not default_port_is_free():
        pytest.skip(f"port {DEFAULT_PORT} is taken: an engine of your own is running")
    assert TRIGGER_BLOCKS
    env = {**os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
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
