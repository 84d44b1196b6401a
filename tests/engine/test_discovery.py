"""Discovery through an iii_trio worker: the engine's listings as api.md's value types.

The trigger-type provider here is a raw worker: it registers the type with the protocol's own
message, as any SDK's provider does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from restartable_engine import run_engine

import iii_trio
from iii_trio._protocol._messages import Reattach, RegisterTrigger, RegisterTriggerType
from iii_trio.testing import DevEngine, open_dev_engine

from ._raw import RawWorker

WEBHOOK_CONFIG = {"type": "object", "properties": {"url": {"type": "string"}}}
WEBHOOK_CALL = {"type": "object", "properties": {"body": {}}}


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


async def provider(engine: DevEngine) -> RawWorker:
    hooks = await RawWorker.connect(engine.url)
    await hooks.register("hooks")
    await hooks.send(
        RegisterTriggerType(
            id="webhook",
            description="Calls a function for each POST to a URL",
            trigger_request_format=WEBHOOK_CONFIG,
            call_request_format=WEBHOOK_CALL,
        )
    )
    return hooks


async def test_workers_are_listed_with_their_functions(engine: DevEngine) -> None:
    async with (
        iii_trio.open_worker(engine.url, name="maths") as maths,
        iii_trio.open_worker(engine.url, name="lister") as lister,
    ):
        maths.register_function("math::add", lambda payload: 0)
        maths.register_function("math::mul", lambda payload: 0)
        await maths.wait_registered()
        workers = {info.name: info for info in await lister.list_workers()}
    assert sorted(workers["maths"].functions) == ["math::add", "math::mul"]
    assert workers["maths"].function_count == 2
    assert workers["lister"].functions == ()
    # The engine's own workers are listed too, with what they provide.
    assert "engine::functions::list" in workers["iii-engine-functions"].functions


async def test_a_worker_without_a_name_is_listed_without_functions(engine: DevEngine) -> None:
    anonymous = await RawWorker.connect(engine.url)
    assert await anonymous.result("engine::workers::register", {"pid": 7}) == {"success": True}
    async with iii_trio.open_worker(engine.url, name="lister") as lister:
        (listed,) = [info for info in await lister.list_workers() if info.id == anonymous.worker_id]
    assert listed.name is None
    assert listed.functions == ()
    await anonymous.aclose()


async def test_trigger_types_are_listed_with_schemas_and_binding_counts(
    engine: DevEngine,
) -> None:
    hooks = await provider(engine)
    async with iii_trio.open_worker(engine.url, name="lister") as lister:
        lister.register_function("site::on-post", lambda payload: None)
        await lister.wait_registered()
        (webhook,) = [t for t in await lister.list_trigger_types() if t.id == "webhook"]
        assert webhook == iii_trio.TriggerTypeInfo(
            id="webhook",
            description="Calls a function for each POST to a URL",
            namespace="default",
            worker_name="hooks",
            configuration_schema=WEBHOOK_CONFIG,
            request_schema=WEBHOOK_CALL,
            instance_count=0,
        )
        await hooks.send(
            RegisterTrigger(
                id="b-1",
                trigger_type="webhook",
                function_id="site::on-post",
                config={"url": "/posts"},
            )
        )
        await hooks.receive()  # the engine hands the binding to its provider
        (webhook,) = [t for t in await lister.list_trigger_types() if t.id == "webhook"]
        assert webhook.instance_count == 1
    await hooks.aclose()


async def test_registered_triggers_are_listed(engine: DevEngine) -> None:
    hooks = await provider(engine)
    await hooks.send(
        RegisterTrigger(
            id="b-1", trigger_type="webhook", function_id="site::on-post", config={"url": "/a"}
        ),
        # No provider for this type: parked, so not listed.
        RegisterTrigger(id="b-2", trigger_type="nobody", function_id="site::x", config=None),
    )
    async with iii_trio.open_worker(engine.url, name="lister") as lister:
        assert await lister.list_triggers() == [
            iii_trio.TriggerInfo(
                id="b-1",
                trigger_type="webhook",
                function_id="site::on-post",
                config={"url": "/a"},
                worker_name="hooks",
            )
        ]
    await hooks.aclose()


# --- watching -------------------------------------------------------------------------------------


async def next_matching(
    snapshots: AsyncIterator[list[Any]], wanted: Callable[[list[Any]], bool]
) -> list[Any]:
    """The first snapshot that passes ``wanted`` (events may bring several in between)."""
    with trio.fail_after(WATCH_PATIENCE):
        async for snapshot in snapshots:
            if wanted(snapshot):
                return snapshot
    raise AssertionError("the watch ended")


def names(workers: list[iii_trio.WorkerInfo]) -> set[str | None]:
    return {info.name for info in workers}


async def test_watch_workers_follows_workers_coming_and_going(engine: DevEngine) -> None:
    async with iii_trio.open_worker(engine.url, name="watcher") as watcher:
        async with watcher.watch_workers() as snapshots:
            first = await anext(snapshots)
            assert "watcher" in names(first)
            assert "newcomer" not in names(first)
            async with iii_trio.open_worker(engine.url, name="newcomer"):
                await next_matching(snapshots, lambda workers: "newcomer" in names(workers))
            await next_matching(snapshots, lambda workers: "newcomer" not in names(workers))
        # Leaving the block removes the watcher's hidden function and its binding.
        assert await watcher.list_triggers() == []
        described = await watcher.trigger("engine::functions::list", {"include_internal": True})
        assert not [f for f in described["functions"] if "watch" in f["function_id"]]


async def test_watch_functions_reports_a_new_function(engine: DevEngine) -> None:
    def ids(functions: list[iii_trio.FunctionInfo]) -> set[str]:
        return {info.function_id for info in functions}

    async with (
        iii_trio.open_worker(engine.url, name="watcher") as watcher,
        watcher.watch_functions() as snapshots,
    ):
        first = await anext(snapshots)
        assert "late::arrival" not in ids(first)
        assert not [f for f in ids(first) if "watch" in f]  # its own listener stays hidden
        async with iii_trio.open_worker(engine.url, name="late") as late:
            late.register_function("late::arrival", lambda payload: None)
            await late.wait_registered()
            # The engine polls its function table every 5 s before it reports a change.
            await next_matching(snapshots, lambda functions: "late::arrival" in ids(functions))


async def test_a_watch_brings_a_fresh_list_after_a_reconnect(engine: DevEngine) -> None:
    async with (
        iii_trio.open_worker(
            engine.url, name="watcher", backoff=iii_trio.Backoff(initial=0.05)
        ) as watcher,
        watcher.watch_workers() as snapshots,
    ):
        await anext(snapshots)
        first_id = watcher.worker_id
        assert first_id is not None
        # A reattach with the worker's own identity evicts its connection, as a real
        # engine evicts a connection that another one takes over.
        thief = await RawWorker.connect(engine.url)
        identity = engine._state.connections[first_id]
        await thief.send(
            Reattach(previous_worker_id=first_id, reattach_token=identity.reattach_token)
        )
        fresh = await next_matching(
            snapshots, lambda workers: watcher.worker_id not in (None, first_id)
        )
        assert "watcher" in names(fresh)
        await thief.aclose()


WATCH_PATIENCE = 15.0  # the engine's 5 s functions poll, with room to spare


async def test_services_reach_the_engine_and_come_back_after_it_restarts(
    nursery: trio.Nursery,
) -> None:
    # No engine::* function lists services (the engine keeps them for its console only), so
    # the dev engine's own count is what shows them arriving.
    with trio.fail_after(10):
        first = trio.CancelScope()
        engine = await nursery.start(run_engine, 0, first)
        backoff = iii_trio.Backoff(initial=0.02, maximum=0.1, jitter=0.0)
        async with iii_trio.open_worker(engine.url, name="grouped", backoff=backoff) as worker:
            worker.register_service("billing", description="Money in")
            worker.register_service("billing.refunds", parent_service_id="billing")
            with pytest.raises(ValueError, match="already registered"):
                worker.register_service("billing")
            await worker.wait_registered()
            assert engine.statistics().services == 2
            first.cancel()
            restarted = await nursery.start(run_engine, engine.port, trio.CancelScope())
            assert restarted.statistics().services == 0
            while True:  # the worker may not have seen the old connection close yet
                try:
                    await worker.wait_registered()
                    break
                except iii_trio.ConnectionLost:
                    pass
            assert restarted.statistics().services == 2
