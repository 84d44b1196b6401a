"""Trigger bindings (``Worker.register_trigger`` and ``TriggerRef``) over loopback.

The trigger type's provider is a raw-frame worker (tests/engine/_raw.py), so what reaches it is
exactly what the engine forwards. Refusals the dev engine has no way to produce from the public
API (its only synchronous one, ``INVALID_NAMESPACE``, needs a blank namespace that
``register_trigger`` never sends) come from a scripted engine.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing
from engine._raw import RawWorker
from restartable_engine import run_engine
from scripted_engine import serve_scripted_engine

import iii_trio
from iii_trio._protocol._codec import encode
from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from iii_trio._transport import WebSocket
from iii_trio.testing import DevEngine, open_dev_engine

if TYPE_CHECKING:
    from conftest import Engine

FAST_BACKOFF = iii_trio.Backoff(initial=0.02, maximum=0.1, jitter=0.0)
#: Every test finishes in well under a second on loopback; this bounds a hang.
DEADLINE = 10.0

CONNECTED = iii_trio.ConnectionState.CONNECTED
RECONNECTING = iii_trio.ConnectionState.RECONNECTING


@attrs.frozen
class Route:
    path: str
    method: str


def unique(prefix: str) -> str:
    """A name no other test run holds (a real engine may be shared)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def open_provider(url: str, trigger_type: str) -> tuple[RawWorker, list[Message]]:
    """A raw worker that provides ``trigger_type``, once the engine has applied it, and the
    parked bindings the engine started on it then."""
    provider = await RawWorker.connect(url)
    await provider.register(unique("provider"))
    await provider.send(RegisterTriggerType(id=trigger_type, description="test provider"))
    return provider, await handled(provider)


async def handled(raw: RawWorker) -> list[Message]:
    """What the engine sent ``raw`` before handling everything ``raw`` has sent so far.

    The engine handles one connection's frames in order and answers a ``ping`` in that order,
    so the messages before the ``pong`` are all it had queued for ``raw`` by then.
    """
    await raw.send(Ping())
    seen: list[Message] = []
    while not isinstance(message := await raw.receive(), Pong):
        seen.append(message)
    return seen


def binding(ref: iii_trio.TriggerRef, config: Any, **fields: Any) -> RegisterTrigger:
    """The ``registertrigger`` the engine sends a provider for ``ref``."""
    return RegisterTrigger(
        id=ref.id,
        trigger_type=ref.trigger_type,
        function_id=ref.function_id,
        config=config,
        **fields,
    )


def worker_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "iii_trio.worker" and record.levelno >= logging.WARNING
    ]


async def wait_until_reconnected(states: AsyncIterator[iii_trio.ConnectionState]) -> None:
    seen: list[iii_trio.ConnectionState] = []
    async for state in states:
        seen.append(state)
        if seen[-2:] == [RECONNECTING, CONNECTED]:
            return


# --- against the dev engine (and a real one when III_ENGINE_URL is set) --------------------------


async def test_a_binding_reaches_the_provider_with_its_id_config_and_metadata(
    engine: Engine,
) -> None:
    hook = unique("hook")
    with trio.fail_after(DEADLINE):
        provider, activated = await open_provider(engine.url, hook)
        assert activated == []
        async with iii_trio.open_worker(engine.url, name=unique("binder")) as worker:
            full = await worker.register_trigger(
                hook, "svc::on_hook", {"path": "/orders"}, metadata={"tenant": "acme"}
            )
            bare = await worker.register_trigger(hook, "svc::on_hook", None)
            typed = await worker.register_trigger(hook, "svc::on_hook", Route("/a", "POST"))
            # The engine drops a registertrigger without "config": an empty one arriving
            # shows the key was sent.
            assert await handled(provider) == [
                binding(full, {"path": "/orders"}, metadata={"tenant": "acme"}),
                binding(bare, {}),
                binding(typed, {"path": "/a", "method": "POST"}),
            ]
        await provider.aclose()
    assert (full.trigger_type, full.function_id) == (hook, "svc::on_hook")
    ids = [full.id, bare.id, typed.id]
    assert all(uuid.UUID(trigger_id).version == 4 for trigger_id in ids)
    assert len(set(ids)) == 3
    assert full.rejection is None
    assert full.id in repr(full)


async def test_a_binding_nobody_provides_is_parked_and_reaches_a_later_provider(
    engine: Engine,
) -> None:
    hook = unique("later")
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url, name=unique("early")) as worker:
            ref = await worker.register_trigger(hook, "svc::on_later", {"every": "minute"})
            assert ref.rejection is None
            provider, activated = await open_provider(engine.url, hook)
            assert activated == [binding(ref, {"every": "minute"})]
        await provider.aclose()


async def test_a_namespaced_worker_binds_the_function_in_its_namespace(engine: Engine) -> None:
    hook = unique("billing-hook")
    with trio.fail_after(DEADLINE):
        provider, activated = await open_provider(engine.url, hook)
        assert activated == []
        async with iii_trio.open_worker(
            engine.url, name=unique("biller"), namespace="billing"
        ) as worker:
            ref = await worker.register_trigger(hook, "invoice::issue", {})
            assert await handled(provider) == [binding(ref, {}, namespace="billing")]
        await provider.aclose()


async def test_a_provider_refusing_later_is_logged_and_kept_on_the_ref(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio")
    hook = unique("picky")
    with trio.fail_after(DEADLINE):
        provider, activated = await open_provider(engine.url, hook)
        assert activated == []
        async with iii_trio.open_worker(engine.url, name=unique("refused")) as worker:
            ref = await worker.register_trigger(hook, "svc::on_picky", {"url": ""})
            assert await handled(provider) == [binding(ref, {"url": ""})]
            error = ErrorBody("trigger_registration_failed", "url must not be empty")
            await provider.send(TriggerRegistrationResult(ref.id, hook, "svc::on_picky", error))
            await handled(provider)  # the engine has forwarded the refusal to the worker
            await worker.wait_registered()  # ... and the worker has read it
            rejection = ref.rejection
            assert isinstance(rejection, iii_trio.TriggerRegistrationError)
            assert (rejection.code, rejection.message) == (
                "trigger_registration_failed",
                "url must not be empty",
            )
            assert (rejection.trigger_id, rejection.trigger_type, rejection.function_id) == (
                ref.id,
                hook,
                "svc::on_picky",
            )
            # Still registered: the engine parks it, and a new provider of the type takes it up.
            successor, activated = await open_provider(engine.url, hook)
            assert activated == [binding(ref, {"url": ""})]
        await provider.aclose()
        await successor.aclose()
    warnings = worker_warnings(caplog)
    assert len(warnings) == 1
    assert ref.id in warnings[0].getMessage()
    assert "url must not be empty" in warnings[0].getMessage()


async def test_unregister_reaches_the_provider_once_and_is_idempotent(engine: Engine) -> None:
    hook = unique("brief")
    with trio.fail_after(DEADLINE):
        provider, activated = await open_provider(engine.url, hook)
        assert activated == []
        async with iii_trio.open_worker(engine.url, name=unique("unbinder")) as worker:
            ref = await worker.register_trigger(hook, "svc::on_brief", {})
            assert await handled(provider) == [binding(ref, {})]
            ref.unregister()
            ref.unregister()
            await worker.wait_registered()
            assert await handled(provider) == [UnregisterTrigger(id=ref.id, trigger_type=hook)]
            assert ref.rejection is None
        await provider.aclose()
    with pytest.raises(trio.ClosedResourceError):
        ref.unregister()
    with pytest.raises(trio.ClosedResourceError):
        await worker.register_trigger(hook, "svc::on_brief", {})


# --- reconnecting (dev engine: the engine side must drop the connection) --------------------------


@pytest.fixture
async def dev_engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


async def evict(engine: DevEngine, worker: iii_trio.Worker) -> RawWorker:
    """Have the engine drop ``worker``'s connection: another connection takes over its identity
    (a ``reattach``), which makes the engine close the old one and forget what it registered."""
    identity = worker._link.identity
    assert identity is not None
    usurper = await RawWorker.connect(engine.url)
    await usurper.send(
        Reattach(previous_worker_id=identity.worker_id, reattach_token=identity.reattach_token)
    )
    return usurper


async def test_bindings_are_replayed_once_per_connection_under_the_same_id(
    dev_engine: DevEngine,
) -> None:
    with trio.fail_after(DEADLINE):
        provider, activated = await open_provider(dev_engine.url, "webhook")
        assert activated == []
        async with iii_trio.open_worker(
            dev_engine.url, name="replayed", backoff=FAST_BACKOFF
        ) as worker:
            config = {"n": 1}
            kept = await worker.register_trigger("webhook", "svc::a", config)
            config["n"] = 99  # the binding keeps its own copy
            gone = await worker.register_trigger("webhook", "svc::b", {"n": 2})
            gone.unregister()
            await worker.wait_registered()
            assert await handled(provider) == [
                binding(kept, {"n": 1}),
                binding(gone, {"n": 2}),
                UnregisterTrigger(id=gone.id, trigger_type="webhook"),
            ]
            for _ in range(2):
                async with worker.watch_connection_state() as states:
                    usurper = await evict(dev_engine, worker)
                    await wait_until_reconnected(states)
                await worker.wait_registered()
                # The old connection's binding ends with it; the new one brings it back.
                assert await handled(provider) == [
                    UnregisterTrigger(id=kept.id, trigger_type="webhook"),
                    binding(kept, {"n": 1}),
                ]
                assert kept.rejection is None
                await usurper.aclose()
        await provider.aclose()


async def test_a_binding_made_while_reconnecting_waits_and_is_sent_once() -> None:
    first_engine = trio.CancelScope()
    bound: list[iii_trio.TriggerRef] = []
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            engine = await nursery.start(run_engine, 0, first_engine)
            async with iii_trio.open_worker(
                engine.url, name="patient", backoff=FAST_BACKOFF
            ) as worker:
                async with worker.watch_connection_state() as states:
                    first_engine.cancel()
                    async for state in states:
                        if state is RECONNECTING:
                            break

                async def bind() -> None:
                    bound.append(await worker.register_trigger("webhook", "svc::a", None))

                async with trio.open_nursery() as binders:
                    binders.start_soon(bind)
                    await trio.testing.wait_all_tasks_blocked()
                    assert bound == []  # still waiting for a connection
                    second = await nursery.start(run_engine, engine.port, trio.CancelScope())
                    # The worker may be back before the provider: then its binding is parked
                    # and started as the provider registers the type.
                    provider, activated = await open_provider(second.url, "webhook")
                await worker.wait_registered()
                # Sent twice (replayed, then sent again), the provider would see it replaced.
                assert activated + await handled(provider) == [binding(bound[0], {})]
                await provider.aclose()
            nursery.cancel_scope.cancel()


# --- refusals the dev engine cannot be made to send (a scripted engine) ---------------------------


class RefusingEngine:
    """A scripted engine that answers the announce and pings, and refuses the bindings
    ``refuse(connection_number, binding)`` picks with ``FORBIDDEN``, as RBAC would."""

    def __init__(self, refuse: Callable[[int, RegisterTrigger], bool]) -> None:
        self.connections: list[list[Any]] = []
        self.hang_up_at_next_ping = False
        self._refuse = refuse
        self._numbers: dict[WebSocket, int] = {}

    def bindings(self, connection: int) -> list[RegisterTrigger]:
        return [m for m in self.connections[connection] if isinstance(m, RegisterTrigger)]

    def on_message(self, websocket: WebSocket, message: Any) -> bool | None:
        number = self._numbers.setdefault(websocket, len(self.connections))
        if number == len(self.connections):
            self.connections.append([])
        self.connections[number].append(message)
        reply: Message | None = None
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            reply = InvocationResult(message.invocation_id, message.function_id, {"success": True})
        elif isinstance(message, RegisterTrigger) and self._refuse(number, message):
            error = ErrorBody("FORBIDDEN", f"trigger type {message.trigger_type!r} is not allowed")
            reply = TriggerRegistrationResult(
                message.id, message.trigger_type, message.function_id, error
            )
        elif isinstance(message, Ping):
            if self.hang_up_at_next_ping:
                self.hang_up_at_next_ping = False
                return True
            reply = Pong()
        if reply is not None:
            websocket.send_text(encode(reply))
        return None


async def reconnect(worker: iii_trio.Worker, engine: RefusingEngine) -> None:
    """Have the scripted engine hang up, and wait until the worker is back."""
    engine.hang_up_at_next_ping = True
    with pytest.raises(iii_trio.ConnectionLost):
        await worker.wait_registered()
    await worker.wait_connected()
    await worker.wait_registered()  # the new connection's replay has been handled


async def test_a_refusal_the_engine_decides_at_once_is_raised_and_the_binding_dropped(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio")
    engine = RefusingEngine(lambda connection, message: message.trigger_type == "secret")
    url = await nursery.start(serve_scripted_engine, engine.on_message)
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(url, name="forbidden", backoff=FAST_BACKOFF) as worker:
            kept = await worker.register_trigger("webhook", "svc::a", {"n": 1})
            with pytest.raises(iii_trio.TriggerRegistrationError) as refused:
                await worker.register_trigger("secret", "svc::b", {"n": 2}, metadata={"m": 1})
            error = refused.value
            assert (error.code, error.message) == (
                "FORBIDDEN",
                "trigger type 'secret' is not allowed",
            )
            assert str(error) == "FORBIDDEN: trigger type 'secret' is not allowed"
            assert (error.trigger_type, error.function_id) == ("secret", "svc::b")
            await reconnect(worker, engine)
    first, second = engine.bindings(0), engine.bindings(1)
    assert [(m.id, m.trigger_type, m.config, m.metadata) for m in first] == [
        (kept.id, "webhook", {"n": 1}, None),
        (error.trigger_id, "secret", {"n": 2}, {"m": 1}),
    ]
    # Withdrawn at the engine too, and not replayed.
    assert UnregisterTrigger(id=error.trigger_id, trigger_type="secret") in engine.connections[0]
    assert second == first[:1]
    assert kept.rejection is None
    assert worker_warnings(caplog) == []  # raised instead


async def test_a_refusal_of_a_replayed_binding_is_logged_and_kept_on_the_ref(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio")
    engine = RefusingEngine(lambda connection, message: connection == 1)
    url = await nursery.start(serve_scripted_engine, engine.on_message)
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(url, name="replayed", backoff=FAST_BACKOFF) as worker:
            ref = await worker.register_trigger("webhook", "svc::a", {})
            await reconnect(worker, engine)
            rejection = ref.rejection
            assert rejection is not None
            assert (rejection.code, rejection.trigger_id) == ("FORBIDDEN", ref.id)
            # Kept for the next connection, which accepts it and forgets the refusal.
            await reconnect(worker, engine)
            assert ref.rejection is None
    assert [m.id for m in engine.bindings(2)] == [ref.id]
    warnings = worker_warnings(caplog)
    assert len(warnings) == 1
    assert ref.id in warnings[0].getMessage()
    assert "FORBIDDEN" in warnings[0].getMessage()
