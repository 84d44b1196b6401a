"""Trigger types this worker provides (``Worker.register_trigger_type``) over loopback: the
provider's methods run when other workers bind and unbind, its answers reach the engine, and
nothing it does harms the worker.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

import iii_trio
from iii_trio import TriggerConfig
from iii_trio.testing import DevEngine

if TYPE_CHECKING:
    from conftest import Engine

FAST_BACKOFF = iii_trio.Backoff(initial=0.02, maximum=0.1, jitter=0.0)
DEADLINE = 10.0


def unique(prefix: str) -> str:
    """A name no other test run holds (a real engine may be shared)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@attrs.define
class Recorder:
    """A provider that reports each call it gets; ``refuse`` makes it reject configs that
    contain that key, ``hold`` keeps its register_trigger waiting until set."""

    calls: trio.MemorySendChannel[tuple[str, TriggerConfig]]
    refuse: str | None = None
    hold: trio.Event | None = None
    fail_unregister: bool = False
    cancelled: int = 0

    async def register_trigger(self, trigger: TriggerConfig) -> None:
        await self.calls.send(("start", trigger))
        if self.hold is not None:
            try:
                await self.hold.wait()
            except trio.Cancelled:
                self.cancelled += 1
                raise
        if self.refuse is not None and self.refuse in trigger.config:
            raise ValueError(f"{self.refuse} is not allowed here")

    async def unregister_trigger(self, trigger: TriggerConfig) -> None:
        await self.calls.send(("stop", trigger))
        if self.fail_unregister:
            raise RuntimeError("the provider's own bug")


@asynccontextmanager
async def recorder(**options: Any) -> AsyncIterator[tuple[Recorder, Calls]]:
    send, receive = trio.open_memory_channel[tuple[str, TriggerConfig]](64)
    async with send, receive:
        yield Recorder(send, **options), Calls(receive)


@attrs.define
class Calls:
    receive: trio.MemoryReceiveChannel[tuple[str, TriggerConfig]]

    async def next(self) -> tuple[str, TriggerConfig]:
        with trio.fail_after(DEADLINE):
            return await self.receive.receive()

    def none_pending(self) -> bool:
        try:
            self.receive.receive_nowait()
        except trio.WouldBlock:
            return True
        return False


async def fire(worker: iii_trio.Worker, trigger: TriggerConfig, payload: Any) -> Any:
    """What a provider does when its event happens."""
    return await worker.trigger(
        trigger.function_id, payload, metadata=trigger.metadata, namespace=trigger.namespace
    )


async def test_a_binding_starts_on_the_provider_which_fires_it(engine: Engine) -> None:
    hook = unique("hook")
    with trio.fail_after(DEADLINE):
        async with (
            recorder() as (provider, calls),
            iii_trio.open_worker(engine.url, name=unique("provider")) as providing,
            iii_trio.open_worker(engine.url, name=unique("consumer")) as consuming,
        ):
            ref = providing.register_trigger_type(hook, provider, description="a test hook")
            assert ref.id == hook
            await providing.wait_registered()

            @consuming.function("orders::on_hook")
            async def on_hook(payload: Any, metadata: Any) -> Any:
                return {"got": payload, "metadata": metadata}

            await consuming.wait_registered()
            bound = await consuming.register_trigger(
                hook, "orders::on_hook", {"path": "/orders"}, metadata={"tenant": "acme"}
            )
            kind, trigger = await calls.next()
            assert kind == "start"
            assert trigger == TriggerConfig(
                id=bound.id,
                function_id="orders::on_hook",
                config={"path": "/orders"},
                metadata={"tenant": "acme"},
                namespace="default",
            )
            assert await fire(providing, trigger, {"n": 1}) == {
                "got": {"n": 1},
                "metadata": {"tenant": "acme"},
            }
            await consuming.wait_registered()
            assert bound.rejection is None  # the provider said yes: nothing came back

            bound.unregister()
            assert await calls.next() == ("stop", trigger)


async def test_a_binding_made_before_the_provider_arrives_reaches_it(engine: Engine) -> None:
    hook = unique("parked")
    with trio.fail_after(DEADLINE):
        async with (
            recorder() as (provider, calls),
            iii_trio.open_worker(engine.url, name=unique("early")) as consuming,
        ):
            bound = await consuming.register_trigger(hook, "svc::later", {"every": "minute"})
            async with iii_trio.open_worker(engine.url, name=unique("late")) as providing:
                providing.register_trigger_type(hook, provider)
                kind, trigger = await calls.next()
                assert (kind, trigger.id, trigger.config) == (
                    "start",
                    bound.id,
                    {"every": "minute"},
                )


async def test_a_refusing_provider_reaches_the_binder_and_the_worker_keeps_serving(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    hook = unique("picky")
    with trio.fail_after(DEADLINE):
        async with (
            recorder(refuse="url") as (provider, calls),
            iii_trio.open_worker(engine.url, name=unique("provider")) as providing,
            iii_trio.open_worker(engine.url, name=unique("consumer")) as consuming,
        ):
            providing.register_trigger_type(hook, provider)
            providing.register_function("svc::alive", lambda payload: "alive")
            await providing.wait_registered()
            bound = await consuming.register_trigger(hook, "svc::a", {"url": ""})
            assert (await calls.next())[0] == "start"
            while bound.rejection is None:  # noqa: ASYNC110 - no event: the refusal is forwarded
                await trio.sleep(0.01)
            assert bound.rejection.code == "trigger_registration_failed"
            assert bound.rejection.message == "url is not allowed here"

            # A durable binding made through the engine waits for the provider's answer.
            with pytest.raises(iii_trio.InvocationError) as refused:
                await consuming.trigger(
                    "engine::register_trigger",
                    {"trigger_type": hook, "function_id": "svc::a", "config": {"url": "x"}},
                )
            assert refused.value.code == "trigger_registration_failed"
            assert "url is not allowed here" in refused.value.message
            assert (await calls.next())[0] == "start"

            assert await consuming.trigger("svc::alive") == "alive"
    assert any("refused binding" in record.getMessage() for record in caplog.records)


async def test_stops_follow_their_starts_even_when_a_start_is_slow(engine: Engine) -> None:
    hook = unique("slow")
    hold = trio.Event()
    with trio.fail_after(DEADLINE):
        async with (
            recorder(hold=hold) as (provider, calls),
            iii_trio.open_worker(engine.url, name=unique("provider")) as providing,
            iii_trio.open_worker(engine.url, name=unique("consumer")) as consuming,
        ):
            providing.register_trigger_type(hook, provider)
            await providing.wait_registered()
            bound = await consuming.register_trigger(hook, "svc::a", {})
            kind, trigger = await calls.next()
            assert kind == "start"
            bound.unregister()
            await consuming.wait_registered()
            # The engine has sent the stop; the provider is still busy starting.
            await trio.sleep(0.05)
            assert calls.none_pending()
            hold.set()
            assert await calls.next() == ("stop", trigger)


async def test_a_binders_departure_and_a_withdrawn_type_stop_the_bindings(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    hook = unique("leaving")
    with trio.fail_after(DEADLINE):
        async with (
            recorder(fail_unregister=True) as (provider, calls),
            iii_trio.open_worker(engine.url, name=unique("provider")) as providing,
        ):
            ref = providing.register_trigger_type(hook, provider)
            await providing.wait_registered()
            async with iii_trio.open_worker(engine.url, name=unique("consumer")) as consuming:
                await consuming.register_trigger(hook, "svc::a", {"n": 1})
                _kind, first = await calls.next()
            assert await calls.next() == ("stop", first)

            async with iii_trio.open_worker(engine.url, name=unique("consumer")) as consuming:
                await consuming.register_trigger(hook, "svc::b", {"n": 2})
                _kind, second = await calls.next()
                assert second.config == {"n": 2}
                ref.unregister()
                ref.unregister()  # idempotent
                assert await calls.next() == ("stop", second)
                providing.register_function("svc::alive", lambda payload: "alive")
                await providing.wait_registered()
                assert await consuming.trigger("svc::alive") == "alive"
    failures = [r for r in caplog.records if "failed to stop binding" in r.getMessage()]
    assert len(failures) == 2


class CuttableStreams:
    """Opens the worker's TCP connections, and can drop them all at once: a lost connection
    the engine does not cause, so it sends the worker nothing about it."""

    def __init__(self) -> None:
        self.streams: list[trio.SocketStream] = []
        self.refusing = False

    async def open(self, host: str, port: int) -> trio.abc.Stream:
        if self.refusing:
            await trio.lowlevel.checkpoint()
            raise OSError("the test keeps this worker offline")
        stream = await trio.open_tcp_stream(host, port)
        self.streams.append(stream)
        return stream

    async def cut(self) -> None:
        for stream in self.streams:
            await trio.aclose_forcefully(stream)


async def test_a_lost_connection_stops_the_bindings_and_the_engine_hands_them_back(
    iii_engine: DevEngine,
) -> None:
    streams = CuttableStreams()
    with trio.fail_after(DEADLINE):
        async with (
            recorder() as (provider, calls),
            iii_trio.open_worker(
                iii_engine.url, name="provider", backoff=FAST_BACKOFF, _open_stream=streams.open
            ) as providing,
            iii_trio.open_worker(iii_engine.url, name="consumer") as consuming,
        ):
            providing.register_trigger_type("webhook", provider)
            await providing.wait_registered()
            bound = await consuming.register_trigger("webhook", "svc::a", {"n": 1})
            _kind, trigger = await calls.next()
            streams.refusing = True
            await streams.cut()
            # Stopped by the worker itself, while it cannot reconnect.
            assert await calls.next() == ("stop", trigger)
            streams.refusing = False
            assert await calls.next() == ("start", trigger)
            assert trigger.id == bound.id
            assert len(streams.streams) == 2


async def test_leaving_the_block_cancels_a_provider_call_in_progress(engine: Engine) -> None:
    hook = unique("stuck")
    with trio.fail_after(DEADLINE):  # a provider call left running would hang the exit
        async with (
            recorder(hold=trio.Event()) as (provider, calls),
            iii_trio.open_worker(engine.url, name=unique("consumer")) as consuming,
        ):
            async with iii_trio.open_worker(engine.url, name=unique("provider")) as providing:
                providing.register_trigger_type(hook, provider)
                await providing.wait_registered()
                await consuming.register_trigger(hook, "svc::a", {})
                assert (await calls.next())[0] == "start"
            assert provider.cancelled == 1
            # Nothing ran after the worker left: no stop for the binding it was starting.
            assert calls.none_pending()


@attrs.frozen
class HookConfig:
    path: str
    retries: int = 3


async def test_discovery_shows_the_type_with_its_schemas(engine: Engine) -> None:
    hook = unique("listed")
    async with (
        recorder() as (provider, _),
        iii_trio.open_worker(engine.url, name=unique("provider")) as providing,
    ):
        providing.register_trigger_type(
            hook,
            provider,
            description="listed hook",
            trigger_request_format=HookConfig,
            call_request_format={"type": "object"},
        )
        await providing.wait_registered()
        listed = {info.id: info for info in await providing.list_trigger_types()}
    info = listed[hook]
    assert info.description == "listed hook"
    assert info.request_schema == {"type": "object"}
    assert info.configuration_schema["properties"]["path"] == {"type": "string"}
    assert info.configuration_schema["required"] == ["path"]


class NoStop:
    async def register_trigger(self, trigger: TriggerConfig) -> None:
        pass


class SyncMethods:
    def register_trigger(self, trigger: TriggerConfig) -> None:
        pass

    def unregister_trigger(self, trigger: TriggerConfig) -> None:
        pass


@pytest.mark.parametrize(
    ("arguments", "options", "error", "named"),
    [
        (("", "provider"), {}, ValueError, "trigger_type_id"),
        ((7, "provider"), {}, TypeError, "trigger_type_id must be a string"),
        (("hook", NoStop()), {}, TypeError, "async unregister_trigger"),
        (("hook", SyncMethods()), {}, TypeError, "provider.register_trigger must be an async"),
        (("hook", "provider"), {"description": None}, TypeError, "description"),
        (("hook", "provider"), {"trigger_request_format": {"x": math.nan}}, TypeError, "format"),
        (("hook", "provider"), {"call_request_format": object}, TypeError, "call_request_format"),
    ],
)
async def test_register_trigger_type_refuses_bad_arguments_before_sending_anything(
    engine: Engine,
    worker: iii_trio.Worker,
    arguments: tuple[Any, Any],
    options: dict[str, Any],
    error: type[Exception],
    named: str,
) -> None:
    async with recorder() as (provider, _):
        trigger_type_id, given = arguments
        with pytest.raises(error, match=named):
            worker.register_trigger_type(
                trigger_type_id, provider if given == "provider" else given, **options
            )
        hook = unique("hook")
        worker.register_trigger_type(hook, provider)
        with pytest.raises(ValueError, match="already registered"):
            worker.register_trigger_type(hook, provider)
        await worker.wait_registered()
        ids = {info.id for info in await worker.list_trigger_types()}
    assert hook in ids
    assert "hook" not in ids


async def test_a_worker_that_left_refuses_new_trigger_types(engine: Engine) -> None:
    async with (
        recorder() as (provider, _),
        iii_trio.open_worker(engine.url, name=unique("gone")) as gone,
    ):
        ref = gone.register_trigger_type(unique("hook"), provider)
    with pytest.raises(trio.ClosedResourceError):
        gone.register_trigger_type(unique("hook"), provider)
    with pytest.raises(trio.ClosedResourceError):
        ref.unregister()


async def test_namespaces_choose_the_provider_and_the_function(iii_engine: DevEngine) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            recorder() as (provider, calls),
            iii_trio.open_worker(iii_engine.url, name="tenant", namespace="tenant-a") as providing,
            iii_trio.open_worker(iii_engine.url, name="consumer") as consuming,
        ):
            providing.register_trigger_type("hook", provider)
            await providing.wait_registered()
            # Strictly in another namespace: parked, the provider hears nothing.
            await consuming.register_trigger(
                "hook", "svc::a", {}, namespace="tenant-a", trigger_namespace="tenant-b"
            )
            bound = await consuming.register_trigger(
                "hook", "svc::a", {}, namespace="tenant-a", trigger_namespace="tenant-a"
            )
            kind, trigger = await calls.next()
            assert (kind, trigger.id, trigger.namespace) == ("start", bound.id, "tenant-a")
            assert calls.none_pending()
            with pytest.raises(ValueError, match="trigger_namespace"):
                await consuming.register_trigger("hook", "svc::a", {}, trigger_namespace=" ")
            with pytest.raises(TypeError, match="namespace must be a string"):
                await consuming.register_trigger("hook", "svc::a", {}, namespace=3)  # type: ignore[arg-type]
