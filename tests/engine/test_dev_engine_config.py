"""The dev engine started from an engine config file: listeners, overrides, what it notes.

Reading the file itself is tested without sockets in test_config.py. Every listener here is on
loopback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio.testing import ConfigError, EngineConfig, load_config, open_dev_engine

TWO_LISTENERS = """\
workers:
  - name: iii-worker-manager
    config:
      port: ${MAIN_PORT:0}
  - name: iii-exec                  # not emulated
    config: {port: 3111}
  - name: iii-worker-manager
    config: {port: 0, handshake_timeout_ms: 200}
  - name: iii-exec
  - name: my-worker
    image: ghcr.io/example/my-worker:1
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def dev_engine_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "iii_trio.dev_engine"]


async def test_workers_on_different_listeners_call_each_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAIN_PORT", raising=False)
    caplog.set_level(logging.INFO, logger="iii_trio.dev_engine")
    with trio.fail_after(10):
        async with open_dev_engine(config=write(tmp_path, TWO_LISTENERS)) as engine:
            assert len(engine.urls) == 2
            assert engine.urls[0] == engine.url == f"ws://127.0.0.1:{engine.port}"
            assert engine.host == "127.0.0.1"
            assert engine.port != 0
            assert engine.urls[1] != engine.url
            assert not engine.urls[1].endswith(":0")
            async with (
                iii_trio.open_worker(engine.urls[0], name="callee") as callee,
                iii_trio.open_worker(engine.urls[1], name="caller") as caller,
            ):
                callee.register_function("math::double", lambda payload: payload * 2)
                await callee.wait_registered()
                assert await caller.trigger("math::double", 21) == 42
    logs = dev_engine_logs(caplog)
    for name in ("iii-exec", "my-worker"):
        note = f"config: worker '{name}' is not emulated by the dev engine; ignored"
        assert logs.count(note) == 1
    assert sum("dev engine listening on 127.0.0.1:" in line for line in logs) == 2


async def test_every_listener_is_checked_for_exposure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[list[str]] = []
    monkeypatch.setattr("iii_trio.testing._dev_engine.warn_if_exposed", checked.append)
    path = write(
        tmp_path,
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config: {port: 0}\n"
        "  - name: iii-worker-manager\n"
        "    config: {host: '::1', port: 0}\n",
    )
    try:
        async with open_dev_engine(config=path) as engine:
            assert engine.urls[1].startswith("ws://[::1]:")
    except OSError:  # pragma: no cover - a machine without IPv6 loopback
        pytest.skip("no ::1 here")
    assert checked == [["127.0.0.1", "::1"]]


async def test_explicit_host_and_port_override_the_main_listener(tmp_path: Path) -> None:
    # The file's main port is taken, so the engine can only start if port=0 replaces it.
    taken = await trio.open_tcp_listeners(0, host="127.0.0.1")
    taken_port = taken[0].socket.getsockname()[1]
    path = write(
        tmp_path,
        "workers:\n"
        "  - name: iii-worker-manager\n"
        f"    config: {{host: localhost, port: {taken_port}}}\n"
        "  - name: iii-worker-manager\n"
        "    config: {port: 0}\n",
    )
    try:
        with trio.fail_after(10):
            async with open_dev_engine(config=path, host="127.0.0.1", port=0) as engine:
                assert engine.host == "127.0.0.1"
                assert engine.port not in (0, taken_port)
                assert len(engine.urls) == 2
                for url in engine.urls:
                    async with iii_trio.open_worker(url, name="probe") as worker:
                        assert await worker.list_functions() == []
            # Without the override, the file's port is used.
            with pytest.raises(OSError, match="in use"):
                async with open_dev_engine(config=path):
                    pass  # pragma: no cover
    finally:
        for listener in taken:
            await listener.aclose()


async def test_a_listener_applies_its_handshake_timeout(tmp_path: Path) -> None:
    async with open_dev_engine(config=write(tmp_path, TWO_LISTENERS)) as engine:
        quick_port = int(engine.urls[1].rpartition(":")[2])
        silent = await trio.open_tcp_stream("127.0.0.1", quick_port)
        patient = await trio.open_tcp_stream("127.0.0.1", engine.port)
        with trio.fail_after(5):
            assert await silent.receive_some() == b""  # closed after its 200 ms
        with trio.move_on_after(0.5) as waited:
            await patient.receive_some()  # pragma: no cover - 10 s on the main listener
        assert waited.cancelled_caught
        await silent.aclose()
        await patient.aclose()


async def test_a_loaded_config_can_be_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "workers:\n  - name: iii-worker-manager\n    config: {port: 0}\n")
    loaded = load_config(path)
    assert isinstance(loaded, EngineConfig)
    async with open_dev_engine(config=loaded) as first, open_dev_engine(config=loaded) as second:
        assert first.port != second.port
        assert (first.urls, second.urls) == ((first.url,), (second.url,))

    monkeypatch.setenv("GRACE", "250")
    grace = load_config(write(tmp_path, "registration_namespace_grace_ms: ${GRACE}\n", "g.yaml"))
    assert grace.namespace_grace_ms == 250
    assert load_config(path, environ={}).listeners == loaded.listeners


async def test_without_listeners_in_the_file_the_engine_defaults_apply(tmp_path: Path) -> None:
    async with open_dev_engine(config=write(tmp_path, "workers: []\n")) as engine:
        assert engine.host == "127.0.0.1"
        assert engine.urls == (engine.url,)
        assert engine.port != 0


async def test_a_bad_file_is_one_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "workers:\n  - name: iii-worker-manager\n    config: {port: 99999}\n")
    with pytest.raises(ConfigError, match=r"workers\[0\]\.config\.port: expected an integer"):
        async with open_dev_engine(config=path):
            pass  # pragma: no cover
    with pytest.raises(FileNotFoundError):
        async with open_dev_engine(config=tmp_path / "missing.yaml"):
            pass  # pragma: no cover


@pytest.mark.parametrize("config", [42, {"workers": []}])
async def test_config_must_be_a_path_or_an_engine_config(config: Any) -> None:
    with pytest.raises(TypeError, match="config must be"):
        async with open_dev_engine(config=config):
            pass  # pragma: no cover


async def test_no_config_means_one_listener() -> None:
    async with open_dev_engine() as engine:
        assert engine.urls == (engine.url,)


@pytest.mark.parametrize(
    ("without", "error", "named"),
    [
        (["iii-nothing"], ValueError, "without: 'iii-nothing' is not a built-in worker"),
        ("iii-queue", TypeError, "without must be a collection of worker names"),
    ],
)
async def test_without_must_name_built_in_workers(
    without: Any, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        async with open_dev_engine(without=without):
            pass


async def test_a_config_file_runs_iii_cron_only_if_it_lists_it_and_observability_always(
    tmp_path: Path,
) -> None:
    listed = write(
        tmp_path,
        "workers:\n"
        "  - name: iii-cron\n"
        "    config: {adapter: {name: kv}}\n"
        "  - name: iii-observability\n"
        "    config: {enabled: false}\n",
    )
    unlisted = write(tmp_path, "workers: []\n", "empty.yaml")
    with trio.fail_after(10):
        for path, expected in ((listed, ["cron"]), (unlisted, ["log"])):
            async with (
                open_dev_engine(config=path) as engine,
                iii_trio.open_worker(engine.url, name="lister") as worker,
            ):
                types = [t.id for t in await worker.list_trigger_types()]
                assert types == expected
                health = await worker.trigger("engine::health::check", {})
                assert health["status"] == "healthy"
