"""The engine's state and streams end to end: iii_trio workers over loopback, through the
``iii_trio.State`` and ``iii_trio.Streams``, against the dev engine (and a real engine
whose config runs ``iii-state`` and ``iii-stream``, when ``III_ENGINE_URL`` names one)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from conftest import Engine

import iii_trio
from iii_trio.testing import DevEngine, load_config, open_dev_engine

_names = itertools.count()


def unique(prefix: str) -> str:
    # A real engine keeps what earlier runs stored.
    return f"{prefix}-{os.getpid()}-{next(_names)}"


# --- state ----------------------------------------------------------------------------------------


async def test_state_set_get_update_delete_and_list(worker: iii_trio.Worker) -> None:
    state = iii_trio.State(worker)
    scope = unique("users")
    assert await state.get(scope, "u1") is None
    assert await state.set(scope, "u1", {"name": "Ada", "logins": 0}) == iii_trio.SetResult(
        None, {"name": "Ada", "logins": 0}
    )
    assert await state.set(scope, "u2", "plain") == iii_trio.SetResult(None, "plain")
    updated = await state.update(
        scope,
        "u1",
        [
            iii_trio.UpdateOp.increment("logins"),
            iii_trio.UpdateOp.merge({"lang": "en"}),
            iii_trio.UpdateOp.append(7, path="visits"),
            iii_trio.UpdateOp.append("admin", path="role"),
            iii_trio.UpdateOp.increment("name"),
        ],
    )
    assert updated.old_value == {"name": "Ada", "logins": 0}
    # A missing key becomes [value], except that a string stays a string (concatenation).
    assert updated.new_value == {
        "name": "Ada",
        "logins": 1,
        "lang": "en",
        "visits": [7],
        "role": "admin",
    }
    assert [(e.op_index, e.code) for e in updated.errors] == [(4, "increment.not_number")]
    assert await state.get(scope, "u1") == updated.new_value
    assert await state.list(scope) == [updated.new_value, "plain"]
    assert scope in await state.list_groups()
    assert await state.delete(scope, "u2") == "plain"
    # A missing key is not an error: the engine's answer is null.
    assert await state.delete(scope, "u2") is None
    assert await state.get(scope, "u2") is None
    counter = await state.update(scope, "hits", [iii_trio.UpdateOp.increment("", by=5)])
    assert counter == iii_trio.UpdateResult(None, 5)


async def test_state_client_reach_the_default_namespace_from_any_worker(engine: Engine) -> None:
    async with iii_trio.open_worker(engine.url, name=unique("ns"), namespace="team") as worker:
        state = iii_trio.State(worker)
        scope = unique("ns-scope")
        await state.set(scope, "k", 1)
        assert await state.get(scope, "k") == 1


async def test_a_state_trigger_calls_a_worker_function_with_a_state_event(
    worker: iii_trio.Worker,
) -> None:
    scope = unique("watched")
    heard, events = trio.open_memory_channel[tuple[iii_trio.StateEvent, Any]](8)

    function_id = unique("on::state")

    @worker.function(function_id)
    async def on_change(event: iii_trio.StateEvent, metadata: Any) -> None:
        await heard.send((event, metadata))

    await worker.wait_registered()
    trigger = await worker.register_trigger(
        "state", function_id, {"scope": scope}, metadata={"from": "test"}
    )
    state = iii_trio.State(worker)
    await state.set(scope, "k", 1)
    await state.update(scope, "k", [iii_trio.UpdateOp.set("", 2)])
    await state.delete(scope, "k")
    await state.set(unique("unwatched"), "k", 1)
    with trio.fail_after(10):
        got = [await events.receive() for _ in range(3)]
    assert got == [
        (iii_trio.StateEvent("state:created", scope, "k", None, 1), {"from": "test"}),
        (iii_trio.StateEvent("state:updated", scope, "k", 1, 2), {"from": "test"}),
        (iii_trio.StateEvent("state:deleted", scope, "k", 2, None), {"from": "test"}),
    ]
    trigger.unregister()
    await worker.wait_registered()
    await state.set(scope, "k", 3)
    with trio.move_on_after(0.3):
        await events.receive()
        pytest.fail("an unregistered trigger still fired")


async def test_a_bad_state_trigger_config_is_refused(worker: iii_trio.Worker) -> None:
    worker.register_function(unique("on::bad"), lambda payload: None)
    with pytest.raises(iii_trio.TriggerRegistrationError) as refused:
        await worker.register_trigger("state", "on::bad", {"scope": 5})
    assert refused.value.message.startswith("Failed to parse trigger config: invalid type")


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        (lambda s: s.get(1, "k"), TypeError, "scope must be a string"),
        (lambda s: s.set("s", None, 1), TypeError, "key must be a string"),
        (lambda s: s.set("s", "k", {1, 2}), TypeError, "value is not JSON"),
        (lambda s: s.update("s", "k", iii_trio.UpdateOp.remove("a")), TypeError, "ops must be"),
        (lambda s: s.update("s", "k", [{"type": "remove"}]), TypeError, "UpdateOp"),
    ],
)
async def test_bad_state_arguments_are_refused_before_anything_is_sent(
    worker: iii_trio.Worker, call: Any, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        await call(iii_trio.State(worker))


@pytest.mark.parametrize(
    ("build", "error", "named"),
    [
        (lambda: iii_trio.UpdateOp.increment("n", by=1.5), TypeError, "by must be an int"),
        (lambda: iii_trio.UpdateOp.increment("n", by=True), TypeError, "by must be an int"),
        (lambda: iii_trio.UpdateOp.decrement("n", by=2**63), ValueError, "64 bits"),
        (lambda: iii_trio.UpdateOp.merge([("a", 1)]), TypeError, "merge value must be a mapping"),
        (lambda: iii_trio.UpdateOp.append(1, path=["a", 2]), TypeError, "path must be"),
        (lambda: iii_trio.UpdateOp.set(("a",), 1), TypeError, "path must be a string"),
        (lambda: iii_trio.State("worker"), TypeError, "State needs an iii_trio.Worker"),
        (lambda: iii_trio.Streams(None), TypeError, "Streams needs an iii_trio.Worker"),
        (lambda: iii_trio.UpdateOp("bogus"), ValueError, "UpdateOp type must be one of"),
    ],
)
def test_bad_update_ops_are_refused_when_built(
    build: Any, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        build()


def test_update_ops_are_sent_as_the_engine_reads_them() -> None:
    assert [
        op.to_json()
        for op in (
            iii_trio.UpdateOp.set("a", {"b": 1}),
            iii_trio.UpdateOp.merge({"m": 1}),
            iii_trio.UpdateOp.merge({"m": 1}, path=("x", "y")),
            iii_trio.UpdateOp.increment("n"),
            iii_trio.UpdateOp.decrement("n", by=3),
            iii_trio.UpdateOp.append("t", path="s"),
            iii_trio.UpdateOp.remove("gone"),
        )
    ] == [
        {"type": "set", "path": "a", "value": {"b": 1}},
        {"type": "merge", "value": {"m": 1}},
        {"type": "merge", "path": ["x", "y"], "value": {"m": 1}},
        {"type": "increment", "path": "n", "by": 1},
        {"type": "decrement", "path": "n", "by": 3},
        {"type": "append", "path": "s", "value": "t"},
        {"type": "remove", "path": "gone"},
    ]


# --- streams --------------------------------------------------------------------------------------


async def test_stream_set_get_list_update_delete_and_send(worker: iii_trio.Worker) -> None:
    streams = iii_trio.Streams(worker)
    name = unique("todo")
    assert await streams.get(name, "inbox", "i1") is None
    assert await streams.set(name, "inbox", "i1", {"title": "milk"}) == iii_trio.SetResult(
        None, {"title": "milk"}
    )
    await streams.set(name, "done", "i2", {"title": "bread"})
    assert await streams.get(name, "inbox", "i1") == {"title": "milk"}
    assert await streams.list(name, "inbox") == [{"title": "milk"}]
    assert sorted(await streams.list_groups(name)) == ["done", "inbox"]
    assert (await streams.list_all())[name] == ["done", "inbox"]
    updated = await streams.update(name, "inbox", "i1", [iii_trio.UpdateOp.set("done", True)])
    assert updated.new_value == {"title": "milk", "done": True}
    assert await streams.delete(name, "inbox", "i1") == {"title": "milk", "done": True}
    assert await streams.delete(name, "inbox", "i1") is None
    await streams.send(name, "inbox", "ping", {"p": 1}, item_id="i1")


async def test_a_stream_trigger_calls_a_worker_function_with_a_stream_event(
    worker: iii_trio.Worker,
) -> None:
    name = unique("feed")
    heard, events = trio.open_memory_channel[tuple[iii_trio.StreamEvent, Any]](8)
    function_id = unique("on::stream")

    @worker.function(function_id)
    async def on_event(event: iii_trio.StreamEvent, metadata: Any) -> None:
        await heard.send((event, metadata))

    await worker.wait_registered()
    await worker.register_trigger(
        "stream", function_id, {"stream_name": name, "group_id": "g1"}, metadata={"m": 1}
    )
    streams = iii_trio.Streams(worker)
    await streams.set(name, "g2", "x", "elsewhere")
    await streams.set(name, "g1", "a", {"v": 1})
    await streams.set(name, "g1", "a", {"v": 2})
    await streams.delete(name, "g1", "a")
    await streams.send(name, "g1", "ping", 7)
    with trio.fail_after(10):
        got = [await events.receive() for _ in range(4)]
    assert all(metadata == {"m": 1} for _, metadata in got)
    assert all(event.timestamp > 1_700_000_000_000 for event, _ in got)
    assert [attrs.evolve(event, timestamp=0) for event, _ in got] == [
        iii_trio.StreamEvent(name, "g1", "a", "create", {"v": 1}),
        iii_trio.StreamEvent(name, "g1", "a", "update", {"v": 2}),
        iii_trio.StreamEvent(name, "g1", "a", "delete", {"v": 2}),
        iii_trio.StreamEvent(name, "g1", None, "event", 7, event_type="ping"),
    ]


async def test_a_stream_event_is_the_engines_payload_both_ways(worker: iii_trio.Worker) -> None:
    worker.register_function("svc::echo_event", lambda event: event)
    sent = iii_trio.StreamEvent("s", "g", None, "event", {"p": 1}, 5, event_type="ping")
    wire = {
        "type": "stream",
        "timestamp": 5,
        "streamName": "s",
        "groupId": "g",
        "id": None,
        "event": {"type": "event", "event": {"type": "ping", "data": {"p": 1}}},
    }
    assert await worker.trigger("svc::echo_event", sent) == wire

    @worker.function("svc::typed_event")
    async def typed(event: iii_trio.StreamEvent) -> str:
        return f"{event.change}:{event.item_id}:{event.data}"

    changed = {**wire, "id": "i", "event": {"type": "update", "data": 3}}
    assert await worker.trigger("svc::typed_event", changed) == "update:i:3"
    with pytest.raises(iii_trio.InvocationError) as refused:
        await worker.trigger("svc::typed_event", {**wire, "groupId": 5})
    assert refused.value.code == "invalid_payload"
    (info,) = [f for f in await worker.list_functions() if f.function_id == "svc::typed_event"]
    assert info.request_format is not None
    assert set(info.request_format["properties"]) >= {"streamName", "groupId", "event"}


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        (lambda s: s.get("s", "g", 3), TypeError, "item_id must be a string"),
        (lambda s: s.set("s", "g", "i", {1, 2}), TypeError, "data is not JSON"),
        (lambda s: s.list(b"s", "g"), TypeError, "stream_name must be a string"),
        (lambda s: s.send("s", "g", 5, {}), TypeError, "event_type must be a string"),
        (lambda s: s.send("s", "g", "t", {}, item_id=1), TypeError, "item_id must be a string"),
        (lambda s: s.update("s", "g", "i", "ops"), TypeError, "ops must be"),
    ],
)
async def test_bad_stream_arguments_are_refused_before_anything_is_sent(
    worker: iii_trio.Worker, call: Any, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        await call(iii_trio.Streams(worker))


async def test_a_stream_trigger_without_stream_name_is_refused(iii_worker: iii_trio.Worker) -> None:
    # The dev engine only: the real one panics on this binding and stops serving the
    # connection that sent it (engine-observed 0.1), so no answer ever comes.
    iii_worker.register_function(unique("on::nameless"), lambda payload: None)
    with pytest.raises(iii_trio.TriggerRegistrationError, match="stream"):
        await iii_worker.register_trigger("stream", "on::nameless", None)


class DictStream:
    """A custom stream kept in a dict, with what it was asked."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Any] = {}
        self.calls: list[str] = []

    async def get(self, group_id: str, item_id: str) -> Any:
        self.calls.append("get")
        return self.items.get((group_id, item_id))

    async def set(self, group_id: str, item_id: str, data: Any) -> iii_trio.SetResult:
        self.calls.append("set")
        old = self.items.get((group_id, item_id))
        self.items[(group_id, item_id)] = data
        return iii_trio.SetResult(old, data)

    async def delete(self, group_id: str, item_id: str) -> Any:
        self.calls.append("delete")
        return self.items.pop((group_id, item_id), None)

    async def list(self, group_id: str) -> list[Any]:
        self.calls.append("list")
        return [value for (group, _), value in self.items.items() if group == group_id]

    async def list_groups(self) -> list[str]:
        self.calls.append("list_groups")
        return sorted({group for group, _ in self.items})


async def test_a_custom_stream_serves_the_engines_stream_functions(engine: Engine) -> None:
    name = unique("custom")
    backend = DictStream()
    heard, events = trio.open_memory_channel[Any](8)
    async with (
        iii_trio.open_worker(engine.url, name=unique("backend")) as server,
        iii_trio.open_worker(engine.url, name=unique("client")) as client,
    ):
        refs = iii_trio.Streams(server).serve(name, backend)
        assert [ref.id for ref in refs] == [
            f"stream::{op}({name})" for op in ("get", "set", "delete", "list", "list_groups")
        ]

        function_id = unique("on::custom")

        @server.function(function_id)
        async def on_event(payload: Any) -> None:
            await heard.send(payload["event"])

        await server.wait_registered()
        await server.register_trigger("stream", function_id, {"stream_name": name})
        streams = iii_trio.Streams(client)
        assert await streams.set(name, "g", "i", {"v": 1}) == iii_trio.SetResult(None, {"v": 1})
        assert await streams.get(name, "g", "i") == {"v": 1}
        assert await streams.list(name, "g") == [{"v": 1}]
        assert await streams.list_groups(name) == ["g"]
        assert await streams.delete(name, "g", "i") == {"v": 1}
        assert backend.calls == ["set", "get", "list", "list_groups", "delete"]
        # update is left to the engine's own store, as with the official SDKs.
        updated = await streams.update(name, "g", "j", [iii_trio.UpdateOp.set("a", 1)])
        assert updated.new_value == {"a": 1}
        assert backend.items == {}
        with trio.fail_after(10):
            got = [await events.receive() for _ in range(3)]
        assert got == [
            {"type": "create", "data": {"v": 1}},
            {"type": "delete", "data": {"v": 1}},
            {"type": "create", "data": {"a": 1}},
        ]
        for ref in refs:
            ref.unregister()
        await server.wait_registered()
        assert await streams.get(name, "g", "i") is None
        assert backend.calls[-1] == "delete"


async def test_a_worker_outside_default_cannot_serve_a_stream(engine: Engine) -> None:
    async with iii_trio.open_worker(engine.url, name=unique("ns"), namespace="team") as worker:
        with pytest.raises(ValueError, match="namespace 'default'"):
            iii_trio.Streams(worker).serve("s", DictStream())


# --- the dev engine's config --------------------------------------------------------------------


@pytest.fixture
async def configured(tmp_path: Path) -> AsyncIterator[DevEngine]:
    config = tmp_path / "config.yaml"
    config.write_text(
        "workers:\n"
        "  - name: iii-state\n"
        "    config: {triggers_enabled: false, max_value_bytes: 16}\n",
        encoding="utf-8",
    )
    async with open_dev_engine(config=load_config(config, environ={})) as engine:
        yield engine


async def test_the_config_block_sets_limits_and_only_listed_workers_run(
    configured: DevEngine,
) -> None:
    async with iii_trio.open_worker(configured.url, name="configured") as worker:
        state = iii_trio.State(worker)
        with pytest.raises(iii_trio.InvocationError) as refused:
            await state.set("s", "k", "x" * 20)
        assert refused.value.code == "VALUE_TOO_LARGE"
        await state.set("s", "k", "short")
        with pytest.raises(iii_trio.FunctionNotFound):
            await iii_trio.Streams(worker).get("s", "g", "i")


async def test_without_iii_state_its_functions_are_not_found() -> None:
    async with (
        open_dev_engine(without=["iii-state"]) as engine,
        iii_trio.open_worker(engine.url, name="no-state") as worker,
    ):
        with pytest.raises(iii_trio.FunctionNotFound):
            await iii_trio.State(worker).get("s", "k")
        assert await iii_trio.Streams(worker).get("s", "g", "i") is None
