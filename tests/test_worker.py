"""The worker against the dev engine over real loopback sockets.

Every test talks to a real engine peer (``engine`` from the pytest plugin); nothing here mocks
iii_trio's own code.
"""

from __future__ import annotations

import contextvars
import os
import platform
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing
from restartable_engine import run_engine

import iii_trio
from iii_trio.testing import DevEngine, open_dev_engine

if TYPE_CHECKING:
    from conftest import Engine

FAST_BACKOFF = iii_trio.Backoff(initial=0.02, maximum=0.1, jitter=0.0)


@attrs.frozen
class Point:
    x: int
    y: int


@attrs.frozen
class Distance:
    squared: int


def tasks_under_this_one() -> set[trio.lowlevel.Task]:
    """Every task below the calling task (the engine fixture's tasks live elsewhere)."""
    found: set[trio.lowlevel.Task] = set()
    pending: list[trio.lowlevel.Task | None] = [trio.lowlevel.current_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


async def test_two_workers_call_each_other_both_ways(engine: Engine) -> None:
    async with (
        iii_trio.open_worker(engine.url, name="left") as left,
        iii_trio.open_worker(engine.url, name="right") as right,
    ):
        left.register_function("left::double", lambda n: n * 2)

        @right.function("right::inc")
        async def inc(n: int) -> int:
            return n + 1

        @left.function("left::inc_then_double")
        async def chain(n: int) -> Any:
            incremented = await left.trigger("right::inc", n)
            return await left.trigger("left::double", incremented)

        await left.wait_registered()
        await right.wait_registered()

        assert await left.trigger("right::inc", 1) == 2
        assert await right.trigger("left::double", 21) == 42
        assert await right.trigger("left::inc_then_double", 4) == 10


async def test_handler_exception_becomes_invocation_failed_and_worker_keeps_serving(
    worker: iii_trio.Worker,
) -> None:
    @worker.function("svc::fail")
    async def fail(payload: Any) -> None:
        raise ZeroDivisionError("division by zero")

    worker.register_function("svc::ok", lambda payload: "still here")

    with pytest.raises(iii_trio.InvocationError) as caught:
        await worker.trigger("svc::fail", {})
    assert caught.value.code == "invocation_failed"
    assert caught.value.message == "division by zero"
    assert caught.value.function_id == "svc::fail"
    assert caught.value.stacktrace is not None
    assert "ZeroDivisionError: division by zero" in caught.value.stacktrace
    assert "stacktrace" not in str(caught.value)
    assert await worker.trigger("svc::ok", {}) == "still here"


async def test_payload_that_fails_to_structure_is_invalid_payload(
    worker: iii_trio.Worker,
) -> None:
    @worker.function("geo::norm")
    async def norm(point: Point) -> Distance:
        return Distance(squared=point.x**2 + point.y**2)

    assert await worker.trigger("geo::norm", {"x": 3, "y": 4}) == {"squared": 25}
    with pytest.raises(iii_trio.InvocationError) as caught:
        await worker.trigger("geo::norm", {"x": "three"})
    assert caught.value.code == "invalid_payload"
    assert "payload.x" in caught.value.message
    assert "payload.y" in caught.value.message


async def test_schemas_are_derived_from_annotations(worker: iii_trio.Worker) -> None:
    @worker.function("geo::norm", description="Squared length")
    async def norm(point: Point) -> Distance:
        return Distance(squared=point.x**2 + point.y**2)

    functions = {info.function_id: info for info in await worker.list_functions()}
    info = functions["geo::norm"]
    assert info.description == "Squared length"
    assert info.request_format["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer"}}
    assert info.request_format["required"] == ["x", "y"]
    assert info.response_format["properties"] == {"squared": {"type": "integer"}}


async def test_sync_handler_runs_in_a_thread(worker: iii_trio.Worker) -> None:
    import threading

    main_thread = threading.get_ident()
    worker.register_function("svc::where", lambda payload: threading.get_ident())
    assert await worker.trigger("svc::where") != main_thread


async def test_metadata_and_context_reach_the_handler(engine: Engine) -> None:
    seen: dict[str, Any] = {}
    async with (
        iii_trio.open_worker(engine.url, name="server") as server,
        iii_trio.open_worker(engine.url, name="caller") as caller,
    ):

        @server.function("svc::inspect")
        async def inspect_call(payload: dict[str, Any], metadata: Any = None) -> str:
            context = iii_trio.get_context()
            seen.update(
                payload=dict(payload),
                metadata=metadata,
                context_metadata=context.metadata,
                caller=context.caller_worker_id,
                function_id=context.function_id,
                invocation_id=context.invocation_id,
            )
            return "ok"

        await server.wait_registered()
        await caller.trigger("svc::inspect", {"a": 1}, metadata={"tenant": "acme"})
    assert seen["payload"] == {"a": 1}  # _caller_worker_id moved out of the payload
    assert seen["metadata"] == seen["context_metadata"] == {"tenant": "acme"}
    assert seen["caller"] is not None
    assert seen["function_id"] == "svc::inspect"
    assert seen["invocation_id"]


async def test_get_context_outside_a_handler_raises() -> None:
    with pytest.raises(RuntimeError, match="outside a function handler"):
        iii_trio.get_context()


async def test_unknown_function_raises_function_not_found(worker: iii_trio.Worker) -> None:
    with pytest.raises(iii_trio.FunctionNotFound) as caught:
        await worker.trigger("nope::missing", {})
    assert caught.value.code == "function_not_found"
    assert caught.value.message == "Function nope::missing not found in namespace default."


async def test_unregistered_function_is_no_longer_routable(worker: iii_trio.Worker) -> None:
    ref = worker.register_function("svc::temp", lambda payload: 1)
    assert await worker.trigger("svc::temp") == 1
    ref.unregister()
    with pytest.raises(iii_trio.FunctionNotFound):
        await worker.trigger("svc::temp")
    assert ref.id == "svc::temp"


async def test_duplicate_registration_is_refused(worker: iii_trio.Worker) -> None:
    worker.register_function("svc::once", lambda payload: 1)
    with pytest.raises(ValueError, match="already registered"):
        worker.register_function("svc::once", lambda payload: 2)


async def test_cancelled_trigger_leaves_no_pending_entry_and_late_result_is_dropped(
    worker: iii_trio.Worker,
) -> None:
    release = trio.Event()

    @worker.function("svc::slow")
    async def slow(payload: Any) -> str:
        await release.wait()
        return "late"

    with trio.move_on_after(0.05) as scope:
        await worker.trigger("svc::slow", {})
    assert scope.cancelled_caught
    session = worker._link.session
    assert session is not None
    assert session.calls.statistics().waiting == 0
    release.set()  # the late result arrives for an id nobody waits for
    worker.register_function("svc::fast", lambda payload: "fine")
    assert await worker.trigger("svc::fast") == "fine"
    statistics = session.calls.statistics()
    assert (statistics.waiting, statistics.dropped) == (0, 1)


async def test_invocation_timeout_raises_too_slow(engine: Engine) -> None:
    async with iii_trio.open_worker(engine.url, name="t", invocation_timeout=0.05) as worker:

        @worker.function("svc::sleepy")
        async def sleepy(payload: Any) -> None:
            await trio.sleep_forever()

        with pytest.raises(trio.TooSlowError):
            await worker.trigger("svc::sleepy")


async def test_leaving_the_block_cancels_handlers_and_closes_within_a_second(
    engine: Engine,
) -> None:
    started = trio.Event()
    cancelled = trio.Event()
    before = tasks_under_this_one()
    async with iii_trio.open_worker(engine.url, name="server") as server:

        @server.function("svc::forever")
        async def forever(payload: Any) -> None:
            started.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

        await server.wait_registered()
        async with iii_trio.open_worker(engine.url, name="client") as client:
            await client.trigger_void("svc::forever", {})
            await started.wait()
        exit_started = trio.current_time()
    assert trio.current_time() - exit_started < 1.0
    assert cancelled.is_set()
    assert tasks_under_this_one() == before
    assert server.connection_state is iii_trio.ConnectionState.CLOSED
    with pytest.raises(trio.ClosedResourceError):
        await server.trigger("svc::forever")
    with pytest.raises(trio.ClosedResourceError):
        server.register_function("svc::late", lambda payload: None)


async def test_caller_gets_invocation_stopped_when_the_server_leaves(
    engine: Engine,
) -> None:
    started = trio.Event()
    server_scope = trio.CancelScope()

    async def serve(*, task_status: trio.TaskStatus[None]) -> None:
        with server_scope:
            async with iii_trio.open_worker(engine.url, name="server") as server:

                @server.function("svc::hang")
                async def hang(payload: Any) -> None:
                    started.set()
                    await trio.sleep_forever()

                await server.wait_registered()
                task_status.started()
                await trio.sleep_forever()

    async def leave_once_started() -> None:
        await started.wait()
        server_scope.cancel()

    async with (
        iii_trio.open_worker(engine.url, name="client") as client,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(serve)
        nursery.start_soon(leave_once_started)
        with pytest.raises(iii_trio.InvocationError) as caught:
            await client.trigger("svc::hang", {})
    assert caught.value.code == "invocation_stopped"
    assert caught.value.message == "Invocation stopped"


async def test_trigger_void_runs_the_handler(worker: iii_trio.Worker) -> None:
    received = trio.Event()

    @worker.function("svc::note")
    async def note(payload: Any) -> None:
        assert payload == {"n": 1}
        received.set()

    await worker.trigger_void("svc::note", {"n": 1})
    with trio.fail_after(2):
        await received.wait()


async def test_enqueue_without_a_queue_provider_is_an_enqueue_error() -> None:
    # As an engine without a queue worker (the official SDK tests' config) answers.
    async with (
        open_dev_engine(without=["iii-queue"]) as engine,
        iii_trio.open_worker(engine.url) as worker,
    ):
        with pytest.raises(iii_trio.InvocationError) as caught:
            await worker.enqueue("svc::job", {"n": 1}, queue="jobs")
    assert caught.value.code == "enqueue_error"
    assert "No queue provider is installed" in caught.value.message


async def test_namespaced_functions_are_called_with_the_namespace(engine: Engine) -> None:
    async with (
        iii_trio.open_worker(engine.url, name="billing", namespace="billing") as billing,
        iii_trio.open_worker(engine.url, name="shop") as shop,
    ):
        billing.register_function("invoice::total", lambda payload: 99)
        await billing.wait_registered()
        assert await billing.trigger("invoice::total") == 99  # own namespace by default
        assert await shop.trigger("invoice::total", namespace="billing") == 99
        with pytest.raises(iii_trio.FunctionNotFound) as caught:
            await shop.trigger("invoice::total")
        assert "It is registered in namespace(s): billing." in caught.value.message


async def test_blank_namespace_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="namespace"):
        async with iii_trio.open_worker("ws://127.0.0.1:9", namespace="  "):
            pass


async def test_worker_announces_itself(engine: Engine) -> None:
    async with iii_trio.open_worker(
        engine.url, name="announcer", description="does the talking"
    ) as worker:
        workers = {info.name: info for info in await worker.list_workers()}
    me = workers["announcer"]
    assert me.runtime == "python"
    assert me.version == iii_trio.__version__
    assert me.os == f"{platform.system()} {platform.release()} ({platform.machine()})"
    assert me.description == "does the talking"
    assert me.id == worker.worker_id or worker.worker_id is None
    details = await _worker_details(engine, "announcer")
    assert details["pid"] == os.getpid()


async def _worker_details(engine: DevEngine, name: str) -> dict[str, Any]:
    async with iii_trio.open_worker(engine.url, name=f"{name}-probe") as probe:
        await trio.lowlevel.checkpoint()
        async with iii_trio.open_worker(engine.url, name=name) as target:
            target.register_function(f"{name}::f", lambda payload: None)
            await target.wait_registered()
            info = await probe.trigger("engine::workers::info", {"name": name})
    return dict(info["worker"])


async def test_name_conflict_is_registration_rejected(engine: Engine) -> None:
    async with iii_trio.open_worker(engine.url, name="unique"):
        with pytest.raises(iii_trio.RegistrationRejected) as caught:
            async with iii_trio.open_worker(engine.url, name="unique"):
                pass  # pragma: no cover - entering must fail
    assert caught.value.code == "WORKER_NAMESPACE_CONFLICT"


async def test_unreachable_engine_raises_engine_unavailable_after_the_budget() -> None:
    with trio.fail_after(5), pytest.raises(iii_trio.EngineUnavailable, match="2 attempt"):
        async with iii_trio.open_worker(
            "ws://127.0.0.1:9",
            backoff=iii_trio.Backoff(initial=0.01, jitter=0, max_attempts=2),
        ):
            pass  # pragma: no cover - entering must fail


async def test_connection_states_are_watched_until_closed(engine: Engine) -> None:
    states: list[iii_trio.ConnectionState] = []
    async with (
        iii_trio.open_worker(engine.url, name="watched") as worker,
        worker.watch_connection_state() as watch,
        trio.open_nursery() as nursery,
    ):

        async def collect() -> None:
            async for state in watch:
                states.append(state)

        nursery.start_soon(collect)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert states == [iii_trio.ConnectionState.CONNECTED]


async def test_reconnects_and_replays_registrations_after_the_engine_restarts() -> None:
    first_engine_scope = trio.CancelScope()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            engine = await nursery.start(run_engine, 0, first_engine_scope)
            async with iii_trio.open_worker(
                engine.url, name="phoenix", backoff=FAST_BACKOFF
            ) as worker:
                worker.register_function("svc::ping", lambda payload: "pong")
                first_id = worker.worker_id
                assert await worker.trigger("svc::ping") == "pong"
                async with worker.watch_connection_state() as watch:
                    first_engine_scope.cancel()
                    async for state in watch:
                        if state is iii_trio.ConnectionState.RECONNECTING:
                            break
                await nursery.start(run_engine, engine.port, trio.CancelScope())
                await worker.wait_connected()
                assert worker.worker_id not in (None, first_id)
                assert await worker.trigger("svc::ping") == "pong"
            nursery.cancel_scope.cancel()


async def test_a_registration_made_while_connected_is_routable_at_once(
    worker: iii_trio.Worker,
) -> None:
    for number in range(20):
        worker.register_function(f"svc::n{number}", lambda payload, n=number: n)
    results = [await worker.trigger(f"svc::n{number}") for number in range(20)]
    assert results == list(range(20))


async def test_non_json_result_fails_the_call_not_the_worker(worker: iii_trio.Worker) -> None:
    worker.register_function("svc::bad", lambda payload: object())
    with pytest.raises(iii_trio.InvocationError) as caught:
        await worker.trigger("svc::bad")
    assert caught.value.code == "invocation_failed"
    worker.register_function("svc::good", lambda payload: [1, 2])
    assert await worker.trigger("svc::good") == [1, 2]


_request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="unset")


async def test_context_variables_do_not_leak_between_invocations(
    worker: iii_trio.Worker,
) -> None:
    # Handler tasks are reused between calls; each call must still start from a clean context.
    @worker.function("svc::tag")
    async def tag(payload: str) -> str:
        before = _request_tag.get()
        _request_tag.set(payload)
        await trio.lowlevel.checkpoint()
        return before

    seen = [await worker.trigger("svc::tag", f"call-{n}") for n in range(5)]
    assert seen == ["unset"] * 5
    assert _request_tag.get() == "unset"


async def test_many_concurrent_calls_are_served_while_handlers_block(
    worker: iii_trio.Worker,
) -> None:
    release = trio.Event()
    all_waiting = trio.Event()
    waiting = 0

    @worker.function("svc::gate")
    async def gate(payload: int) -> int:
        nonlocal waiting
        waiting += 1
        if waiting == 300:
            all_waiting.set()
        await release.wait()
        return payload

    results: list[int] = []

    async def call(n: int) -> None:
        results.append(await worker.trigger("svc::gate", n))

    async with trio.open_nursery() as nursery:
        for n in range(300):
            nursery.start_soon(call, n)
        await all_waiting.wait()  # 300 handlers blocked at once: none waits for another
        release.set()
    assert sorted(results) == list(range(300))


async def test_a_burst_of_calls_to_a_handler_served_inline_all_come_back(
    worker: iii_trio.Worker,
) -> None:
    # Hundreds of invocations arrive in a few reads; the reader answers them itself, writing
    # as it goes, and every answer must reach its own caller.
    @worker.function("svc::double")
    async def double(payload: int) -> int:
        return payload * 2

    results: dict[int, iii_trio.JSONValue] = {}

    async def call(n: int) -> None:
        results[n] = await worker.trigger("svc::double", n)

    async with trio.open_nursery() as nursery:
        for n in range(500):
            nursery.start_soon(call, n)
    assert results == {n: n * 2 for n in range(500)}


async def test_inline_handlers_do_not_leak_context_variables_either(
    worker: iii_trio.Worker,
) -> None:
    @worker.function("svc::tag_inline")
    async def tag(payload: str) -> str:  # no await: served inline by the reader
        before = _request_tag.get()
        _request_tag.set(payload)
        return before

    seen = [await worker.trigger("svc::tag_inline", f"call-{n}") for n in range(5)]
    assert seen == ["unset"] * 5


async def test_a_reply_larger_than_one_write_arrives_intact(worker: iii_trio.Worker) -> None:
    big = "x" * (12 * 1024 * 1024)  # more than the kernel takes in one non-blocking send

    @worker.function("svc::big")
    async def echo(payload: str) -> str:
        return payload + big

    result = await worker.trigger("svc::big", "head-")
    assert len(result) == len(big) + 5
    assert result.startswith("head-x")
