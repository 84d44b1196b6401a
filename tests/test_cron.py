"""The ``cron`` trigger type over loopback (spec/engine.md section 4): an ``iii_trio`` worker's
function called on schedule with the engine's payload and the binding's metadata, runs that
never overlap, and the engine's refusal of an expression it cannot parse.

These scenarios hold for a real engine with ``iii-cron`` too (``III_ENGINE_URL``); each waits
for a few one-second ticks at most.
"""

from __future__ import annotations

import datetime
import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import trio

import iii_trio
from iii_trio.testing import open_dev_engine

if TYPE_CHECKING:
    from conftest import Engine

DEADLINE = 10.0


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def instant(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


async def test_a_cron_job_calls_its_function_every_second(engine: Engine) -> None:
    function_id = f"{unique('cron')}::tick"
    send, receive = trio.open_memory_channel[tuple[Any, Any]](16)
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url, name=unique("cron-worker")) as worker:

            async def tick(payload: Any, metadata: Any) -> None:
                send.send_nowait((payload, metadata))

            worker.register_function(function_id, tick)
            await worker.wait_registered()
            job = await worker.register_trigger(
                "cron", function_id, {"expression": "* * * * * *"}, metadata={"tag": "tick"}
            )
            first, metadata = await receive.receive()
            second, _ = await receive.receive()
            job.unregister()

    assert metadata == {"tag": "tick"}
    assert sorted(first) == ["actual_time", "job_id", "scheduled_time", "trigger"]
    assert first["trigger"] == "cron"
    assert first["job_id"] == job.id
    scheduled = instant(first["scheduled_time"])
    assert scheduled.microsecond == 0
    assert first["scheduled_time"].endswith("+00:00")
    assert "." not in first["scheduled_time"]
    # The next tick (or a later one, had a run been slow on a loaded machine).
    gap = instant(second["scheduled_time"]) - scheduled
    assert gap >= datetime.timedelta(seconds=1)
    assert gap.microseconds == 0
    assert instant(first["actual_time"]) >= scheduled


async def test_runs_of_a_slow_job_never_overlap(engine: Engine) -> None:
    function_id = f"{unique('cron')}::slow"
    send, receive = trio.open_memory_channel[str](16)
    running = 0
    overlapped = False
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url, name=unique("cron-worker")) as worker:

            async def slow(payload: Any) -> None:
                nonlocal running, overlapped
                running += 1
                overlapped = overlapped or running > 1
                send.send_nowait(payload["scheduled_time"])
                await trio.sleep(1.1)
                running -= 1

            worker.register_function(function_id, slow)
            await worker.wait_registered()
            job = await worker.register_trigger("cron", function_id, {"expression": "* * * * * *"})
            first = await receive.receive()
            second = await receive.receive()
            job.unregister()

    assert not overlapped
    # The tick during the 1.1 s run was skipped, not caught up.
    assert instant(second) - instant(first) >= datetime.timedelta(seconds=2)


async def test_an_expression_that_does_not_parse_is_refused(engine: Engine) -> None:
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url, name=unique("cron-worker")) as worker:
            with pytest.raises(iii_trio.TriggerRegistrationError) as caught:
                await worker.register_trigger("cron", "svc::never", {"expression": "0 0 0 * * 0"})
            with pytest.raises(iii_trio.TriggerRegistrationError) as missing:
                await worker.register_trigger("cron", "svc::never", {"cron": "* * * * * *"})
    assert caught.value.code == "trigger_registration_failed"
    assert caught.value.message == (
        "Invalid cron expression '0 0 0 * * 0': 0 0 0 * * 0\n          ^\n"
        "Days of Week must be greater than or equal to 1. ('0' specified.)"
    )
    assert missing.value.message == "Cron expression is required"


async def test_without_iii_cron_a_cron_binding_waits_for_a_provider() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            open_dev_engine(without=["iii-cron"]) as engine,
            iii_trio.open_worker(engine.url, name="no-cron") as worker,
        ):
            # As on an engine whose config does not list iii-cron: parked, not refused.
            job = await worker.register_trigger("cron", "svc::never", {"expression": "bad"})
            assert job.rejection is None
            types = [t.id for t in await worker.list_trigger_types()]
            assert "cron" not in types


async def test_on_a_mock_clock_an_hourly_job_fires_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The dev engine's wall clock moves with trio's clock; the worker talks to it over an
    # in-memory stream, as sockets and a jumping clock do not mix.
    send, receive = trio.open_memory_channel[Any](16)

    async def hourly(payload: Any) -> None:
        send.send_nowait(payload)

    async with (
        open_dev_engine() as engine,
        iii_trio.open_worker(
            engine.url, name="hourly", _open_stream=engine._open_memory_stream
        ) as worker,
    ):
        worker.register_function("jobs::hourly", hourly)
        await worker.wait_registered()
        started = trio.current_time()
        await worker.register_trigger("cron", "jobs::hourly", {"expression": "@hourly"})
        first = await receive.receive()
        second = await receive.receive()
        waited = trio.current_time() - started
    scheduled = instant(first["scheduled_time"])
    assert (scheduled.minute, scheduled.second) == (0, 0)
    assert instant(second["scheduled_time"]) - scheduled == datetime.timedelta(hours=1)
    assert 3600 < waited <= 7200
