"""``engine::log::*``, the ``log`` trigger type and ``engine::health::check`` over loopback
(spec/engine.md sections 8 and 9 P2).

A real engine answers the calls the same way; its ``log`` trigger type exists only when its
observability worker is enabled and then also delivers the engine's own records, so the trigger
is checked against the dev engine alone.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import trio

import iii_trio
from iii_trio.testing import open_dev_engine
from iii_trio.testing._dev_engine import DEV_ENGINE_VERSION

if TYPE_CHECKING:
    from conftest import Engine

DEADLINE = 10.0


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def test_log_functions_answer_null(worker: iii_trio.Worker) -> None:
    with trio.fail_after(DEADLINE):
        answer = await worker.trigger("engine::log::info", {"message": "hello", "data": {"k": 1}})
        assert answer is None
        with pytest.raises(iii_trio.InvocationError) as caught:
            await worker.trigger("engine::log::info", {"data": 1})
    assert caught.value.code == "deserialization_error"
    assert caught.value.message == (
        "Failed to deserialize input for engine::log::info: missing field `message`"
    )


async def test_health_check_reports_its_components(worker: iii_trio.Worker) -> None:
    with trio.fail_after(DEADLINE):
        health = await worker.trigger("engine::health::check", {})
    assert sorted(health) == ["components", "status", "timestamp", "version"]
    assert sorted(health["components"]) == ["logs", "metrics", "otel", "spans"]
    assert health["status"] == "healthy"
    assert isinstance(health["timestamp"], int)


async def test_a_log_binding_receives_the_records_of_its_level(engine: Engine) -> None:
    if not isinstance(engine, iii_trio.testing.DevEngine):
        pytest.skip("a real engine's log trigger also delivers its own records")
    send, receive = trio.open_memory_channel[tuple[Any, Any]](16)
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url, name=unique("logs")) as worker:

            async def on_log(record: Any, metadata: Any) -> None:
                send.send_nowait((record, metadata))

            worker.register_function("logs::on-warn", on_log)
            await worker.wait_registered()
            await worker.register_trigger(
                "log", "logs::on-warn", {"level": "warn"}, metadata={"tag": "warnings"}
            )
            await worker.trigger("engine::log::info", {"message": "not for us"})
            await worker.trigger(
                "engine::log::warn",
                {"message": "disk low", "data": {"free_gb": 3}, "service_name": "disk"},
            )
            record, metadata = await receive.receive()
            health = await worker.trigger("engine::health::check", {})

    assert metadata == {"tag": "warnings"}
    assert record["body"] == "disk low"
    assert record["severity_text"] == "WARN"
    assert record["severity_number"] == 13
    assert record["attributes"] == {"free_gb": 3}
    assert record["service_name"] == "disk"
    assert record["instrumentation_scope_version"] == DEV_ENGINE_VERSION
    assert isinstance(record["timestamp_unix_nano"], int)
    assert health["version"] == DEV_ENGINE_VERSION
    assert health["components"]["logs"] == {"details": {"stored_logs": 2}, "status": "healthy"}


async def test_left_out_console_queries_are_not_found() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            open_dev_engine() as engine,
            iii_trio.open_worker(engine.url, name="console") as worker,
        ):
            with pytest.raises(iii_trio.FunctionNotFound) as caught:
                await worker.trigger("engine::logs::list", {})
    assert caught.value.message == "Function engine::logs::list not found in namespace default."
