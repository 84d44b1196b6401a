"""``iii-cron`` in the dev engine core (spec/engine.md section 4, engine-observed.md section 6),
driven by hand: a fake clock whose wall time starts at 2026-11-29 16:56:15.5 UTC.

The job loop is the engine's: a fire time strictly after now, the condition, the handler awaited,
then the next fire time after the run, so runs never overlap and missed ticks are skipped.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest

from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from iii_trio.testing._engine import Output
from iii_trio.testing._engine._builtins import BlockError
from iii_trio.testing._engine._cron import Cron, CronSettings, format_rfc3339, read_cron_block

from .engine_driver import Engine, Worker, messages_to

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 11, 29, 16, 56, 15, 500000, tzinfo=UTC).timestamp()


def at(hms: str) -> float:
    """The Unix time of ``HH:MM:SS[.fff]`` on the test's day."""
    moment = datetime.datetime.fromisoformat(f"2026-11-29T{hms}+00:00")
    return moment.timestamp()


@pytest.fixture
def engine() -> Engine:
    # Its clock starts at 100; the functions poll is out of the way.
    return Engine(plugins=[Cron()], wall_clock_offset=START - 100.0, poll=1e9)


def armed(engine: Engine) -> float | None:
    """The deadline of the cron timer, if one is armed."""
    deadline = engine.state.next_deadline()
    return deadline if deadline is not None and deadline < 1e8 else None


def advance_to(engine: Engine, unix_time: float) -> list[Output]:
    return engine.advance(unix_time - engine.state.unix_time())


def invocations(outputs: list[Output], worker: Worker) -> list[InvokeFunction]:
    return [m for m in messages_to(outputs, worker.id) if isinstance(m, InvokeFunction)]


def answer(worker: Worker, invocation: InvokeFunction, **outcome: Any) -> list[Output]:
    assert invocation.invocation_id is not None
    return worker.send(
        InvocationResult(invocation.invocation_id, invocation.function_id, **outcome)
    )


def ticker(engine: Engine, *functions: str, namespace: str | None = None) -> Worker:
    worker = engine.worker("ticker", namespace=namespace)
    for function_id in functions or ("job::tick",):
        worker.send(RegisterFunction(id=function_id))
    return worker


def bind(
    worker: Worker,
    config: Any,
    *,
    binding_id: str = "job-1",
    function_id: str = "job::tick",
    metadata: Any = None,
) -> list[Output]:
    return worker.send(
        RegisterTrigger(
            id=binding_id,
            trigger_type="cron",
            function_id=function_id,
            config=config,
            metadata=metadata,
        )
    )


def refusal(outputs: list[Output], worker: Worker) -> str:
    (result,) = [
        m for m in messages_to(outputs, worker.id) if isinstance(m, TriggerRegistrationResult)
    ]
    assert result.error is not None
    assert result.error.code == "trigger_registration_failed"
    return result.error.message


# -- firing ----------------------------------------------------------------------------------------


def test_a_job_fires_at_each_matching_second_with_the_engines_payload(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "*/2 * * * * *"}, metadata={"tag": "every2s"})
    assert invocations(advance_to(engine, at("16:56:15.999")), worker) == []

    (first,) = invocations(advance_to(engine, at("16:56:16")), worker)
    assert first.function_id == "job::tick"
    assert first.metadata == {"tag": "every2s"}
    # Exactly these keys (no _caller_worker_id), in the engine's (sorted) order.
    assert first.data == {
        "actual_time": "2026-11-29T16:56:16+00:00",
        "job_id": "job-1",
        "scheduled_time": "2026-11-29T16:56:16+00:00",
        "trigger": "cron",
    }
    assert list(first.data) == ["actual_time", "job_id", "scheduled_time", "trigger"]

    answer(worker, first, result=None)
    (second,) = invocations(advance_to(engine, at("16:56:18.25")), worker)
    assert second.data["scheduled_time"] == "2026-11-29T16:56:18+00:00"
    assert second.data["actual_time"] == "2026-11-29T16:56:18.250+00:00"


def test_the_first_fire_is_the_next_matching_second(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "0 0 9 * * SUN"})
    deadline = armed(engine)
    assert deadline is not None
    # 16:56 on a Sunday: the next Sunday, 09:00.
    assert engine.state.unix_time(deadline) == at("09:00:00") + 7 * 86400


def test_runs_never_overlap_and_ticks_missed_meanwhile_are_skipped(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"})
    (run,) = invocations(advance_to(engine, at("16:56:16")), worker)

    # The handler has not answered: the ticks of :17 to :19 pass without a second run.
    assert invocations(advance_to(engine, at("16:56:19.5")), worker) == []
    assert armed(engine) is None

    # It answers at :19.5; the next run is the first tick after that, not a catch-up.
    assert invocations(answer(worker, run, result={"ok": True}), worker) == []
    (after,) = invocations(advance_to(engine, at("16:56:20")), worker)
    assert after.data["scheduled_time"] == "2026-11-29T16:56:20+00:00"


def test_a_late_timer_runs_once_for_its_tick(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"})
    # The shell was busy for five seconds: one run, for the tick it was armed for.
    (late,) = invocations(advance_to(engine, at("16:56:21.125")), worker)
    assert late.data["scheduled_time"] == "2026-11-29T16:56:16+00:00"
    assert late.data["actual_time"] == "2026-11-29T16:56:21.125+00:00"
    answer(worker, late, result=None)
    (next_run,) = invocations(advance_to(engine, at("16:56:22")), worker)
    assert next_run.data["scheduled_time"] == "2026-11-29T16:56:22+00:00"


def test_an_answer_in_the_same_second_waits_for_the_next_tick(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"})
    (run,) = invocations(advance_to(engine, at("16:56:16")), worker)
    answer(worker, run, result=None)  # at :16.000: the next tick is :17, not :16 again
    assert invocations(advance_to(engine, at("16:56:16.5")), worker) == []
    (again,) = invocations(advance_to(engine, at("16:56:17")), worker)
    assert again.data["scheduled_time"] == "2026-11-29T16:56:17+00:00"


def test_a_failing_handler_is_logged_and_the_job_goes_on(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"})
    (run,) = invocations(advance_to(engine, at("16:56:16")), worker)
    with caplog.at_level(logging.WARNING, logger="iii_trio.dev_engine"):
        answer(worker, run, error=ErrorBody("boom", "handler failed"))
    assert "job-1" in caplog.text
    assert "boom" in caplog.text
    assert len(invocations(advance_to(engine, at("16:56:17")), worker)) == 1


def test_a_missing_function_skips_the_tick_only(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"}, function_id="job::later")
    assert invocations(advance_to(engine, at("16:56:16")), worker) == []
    worker.send(RegisterFunction(id="job::later"))
    (run,) = invocations(advance_to(engine, at("16:56:17")), worker)
    assert run.function_id == "job::later"


def test_a_namespaced_worker_s_job_calls_its_own_namespace(engine: Engine) -> None:
    worker = ticker(engine, namespace="orders")
    worker.send(
        RegisterTrigger(
            id="job-ns",
            trigger_type="cron",
            function_id="job::tick",
            config={"expression": "* * * * * *"},
            namespace="orders",
        )
    )
    (run,) = invocations(advance_to(engine, at("16:56:16")), worker)
    assert run.function_id == "job::tick"


# -- conditions ------------------------------------------------------------------------------------


def test_a_condition_sees_the_payload_and_false_skips_the_handler(engine: Engine) -> None:
    worker = ticker(engine, "job::tick", "job::allow")
    bind(
        worker,
        {"expression": "* * * * * *", "condition_function_id": "job::allow"},
        metadata={"tag": 1},
    )
    (asked,) = invocations(advance_to(engine, at("16:56:16")), worker)
    assert asked.function_id == "job::allow"
    assert asked.metadata is None
    assert asked.data["scheduled_time"] == "2026-11-29T16:56:16+00:00"
    assert invocations(answer(worker, asked, result=False), worker) == []

    (asked_again,) = invocations(advance_to(engine, at("16:56:17")), worker)
    assert asked_again.function_id == "job::allow"
    (run,) = invocations(answer(worker, asked_again, result=None), worker)
    assert run.function_id == "job::tick"
    assert run.data == asked_again.data
    assert run.metadata == {"tag": 1}


def test_a_failing_condition_skips_the_handler_and_the_job_goes_on(engine: Engine) -> None:
    worker = ticker(engine, "job::tick", "job::allow")
    bind(worker, {"expression": "* * * * * *", "condition_function_id": "job::allow"})
    (asked,) = invocations(advance_to(engine, at("16:56:16")), worker)
    assert invocations(answer(worker, asked, error=ErrorBody("no", "nope")), worker) == []
    (again,) = invocations(advance_to(engine, at("16:56:17")), worker)
    assert again.function_id == "job::allow"


# -- stopping --------------------------------------------------------------------------------------


def test_unregistering_stops_the_job(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"})
    (run,) = invocations(advance_to(engine, at("16:56:16")), worker)
    worker.send(UnregisterTrigger(id="job-1", trigger_type="cron"))
    # The run in progress is not waited for, and its answer arms nothing.
    answer(worker, run, result=None)
    assert armed(engine) is None
    assert invocations(advance_to(engine, at("16:56:30")), worker) == []

    bind(worker, {"expression": "* * * * * *"})  # the same id may be used again
    assert len(invocations(advance_to(engine, at("16:56:31")), worker)) == 1


def test_a_job_ends_with_its_worker(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"})
    worker.disconnect()
    assert armed(engine) is None


def test_a_job_whose_function_leaves_mid_run_goes_on(engine: Engine) -> None:
    owner = engine.worker("scheduler")
    executor = ticker(engine)
    bind(owner, {"expression": "* * * * * *"})
    assert len(invocations(advance_to(engine, at("16:56:16")), executor)) == 1
    executor.disconnect()  # the run ends with invocation_stopped
    assert armed(engine) is not None
    replacement = ticker(engine)
    assert len(invocations(advance_to(engine, at("16:56:17")), replacement)) == 1


def test_a_schedule_without_a_future_registers_and_never_fires(engine: Engine) -> None:
    worker = ticker(engine)
    outputs = bind(worker, {"expression": "0 0 0 30 2 *"})
    assert messages_to(outputs, worker.id) == []
    assert armed(engine) is None


# -- registration errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [{}, {"expression": ""}, {"expression": 5}, {"cron": "* * * * * *"}, None, ["* * * * * *"]],
)
def test_a_binding_without_an_expression_is_refused(engine: Engine, config: Any) -> None:
    worker = ticker(engine)
    assert refusal(bind(worker, config), worker) == "Cron expression is required"
    assert armed(engine) is None


def test_an_expression_that_does_not_parse_is_refused_with_the_parsers_message(
    engine: Engine,
) -> None:
    worker = ticker(engine)
    assert refusal(bind(worker, {"expression": "0 0 0 * * 0"}), worker) == (
        "Invalid cron expression '0 0 0 * * 0': 0 0 0 * * 0\n          ^\n"
        "Days of Week must be greater than or equal to 1. ('0' specified.)"
    )
    assert refusal(bind(worker, {"expression": "* * * * *"}), worker) == (
        "Invalid cron expression '* * * * *': * * * * *\n         ^\n"
    )
    assert engine.state.bindings == {}


def test_the_same_id_twice_is_refused_and_the_first_job_goes_on(engine: Engine) -> None:
    worker = ticker(engine)
    bind(worker, {"expression": "* * * * * *"})
    second = bind(worker, {"expression": "0 0 0 * * *"})
    assert refusal(second, worker) == "Cron job 'job-1' is already registered"
    (run,) = invocations(advance_to(engine, at("16:56:16")), worker)
    assert run.data["job_id"] == "job-1"


def test_a_durable_binding_is_checked_the_same_way(engine: Engine) -> None:
    worker = ticker(engine)
    error = worker.error(
        "engine::register_trigger",
        {"trigger_type": "cron", "function_id": "job::tick", "config": {"expression": "@often"}},
    )
    assert error.code == "trigger_registration_failed"
    assert error.message == "Invalid cron expression '@often': @often\n^\n"
    made = worker.result(
        "engine::register_trigger",
        {"trigger_type": "cron", "function_id": "job::tick", "config": {"expression": "@hourly"}},
    )
    assert engine.state.bindings[made["id"]].trigger_type == "cron"
    (run,) = invocations(advance_to(engine, at("17:00:00")), worker)
    assert run.data["job_id"] == made["id"]


def test_cron_is_an_engine_trigger_type_of_iii_cron(engine: Engine) -> None:
    worker = ticker(engine)
    listed = worker.result("engine::triggers::list", {})["triggers"]
    (cron,) = [t for t in listed if t["id"] == "cron"]
    assert cron["worker_name"] == "iii-cron"


# -- the payload's times ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "2026-11-29T16:56:16+00:00"),
        (1_000_000, "2026-11-29T16:56:16.001+00:00"),
        (250_000_000, "2026-11-29T16:56:16.250+00:00"),
        (1_000, "2026-11-29T16:56:16.000001+00:00"),
        (1_266_000, "2026-11-29T16:56:16.001266+00:00"),
        (1_266_823, "2026-11-29T16:56:16.001266823+00:00"),
    ],
)
def test_times_are_written_as_chrono_writes_rfc3339(nanos: int, text: str) -> None:
    assert format_rfc3339(int(at("16:56:16")) * 1_000_000_000 + nanos) == text


# -- the config block ------------------------------------------------------------------------------


def test_the_block_takes_an_adapter_the_engine_knows() -> None:
    assert read_cron_block(None) == CronSettings(adapter="kv")
    assert read_cron_block({}) == CronSettings(adapter="kv")
    assert read_cron_block({"adapter": {"name": "redis", "config": {"url": "x"}}}).adapter == (
        "redis"
    )


@pytest.mark.parametrize(
    ("block", "key", "problem"),
    [
        ([], "", "expected a mapping, got a list"),
        ({"lock_ttl_ms": 5}, "lock_ttl_ms", "unknown key (an iii-cron block takes adapter)"),
        ({"adapter": "kv"}, "adapter", "expected a mapping with a `name`, got a string ('kv')"),
        ({"adapter": {}}, "adapter.name", "expected a string, got null"),
        (
            {"adapter": {"name": "memory"}},
            "adapter.name",
            "cron adapter 'memory' is not registered (the engine has kv, redis)",
        ),
        (
            {"adapter": {"name": "kv", "ttl": 1}},
            "adapter.ttl",
            "unknown key (an adapter takes name and config)",
        ),
    ],
)
def test_a_bad_block_names_its_key(block: Any, key: str, problem: str) -> None:
    with pytest.raises(BlockError) as caught:
        read_cron_block(block)
    assert (caught.value.key, caught.value.problem) == (key, problem)
