"""The dev engine over real loopback WebSockets, driven with raw protocol frames."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing
import trio_websocket

from iii_trio._protocol._codec import encode
from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterTrigger,
    VoidAction,
)
from iii_trio._transport import HandshakeFailed, TransportClosed, connect_websocket
from iii_trio.testing import DevEngine, open_dev_engine, serve_dev_engine

from ._raw import PATIENCE, RawWorker, http_get


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


Connect = Callable[..., Awaitable[RawWorker]]


@pytest.fixture
async def connect(engine: DevEngine) -> AsyncIterator[Connect]:
    """Open raw workers (to ``engine`` unless given a URL); all are closed after the test."""
    opened: list[RawWorker] = []

    async def connect_one(url: str | None = None) -> RawWorker:
        worker = await RawWorker.connect(url or engine.url)
        opened.append(worker)
        return worker

    try:
        yield connect_one
    finally:
        for worker in opened:
            await worker.aclose()


def all_tasks() -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is not None:
            found.add(task)
            for nursery in task.child_nurseries:
                pending.extend(nursery.child_tasks)
    return found


async def watch_workers(connect: Connect) -> RawWorker:
    """A worker bound to ``engine::workers-available``: its inbox is the event stream."""
    watcher = await connect()
    await watcher.register("watcher")
    await watcher.send(
        RegisterFunction(id="watch::workers"),
        RegisterTrigger(
            id="watch",
            trigger_type="engine::workers-available",
            function_id="watch::workers",
            config={},
        ),
        Ping(),
    )
    assert await watcher.receive() == Pong()  # the binding is in place
    return watcher


async def wait_for_worker_event(watcher: RawWorker, event: str, worker_id: str) -> None:
    while True:
        delivery = await watcher.receive()
        assert isinstance(delivery, InvokeFunction)
        assert delivery.invocation_id is not None
        await watcher.send(InvocationResult(delivery.invocation_id, delivery.function_id))
        if delivery.data == {"event": event, "worker_id": worker_id}:
            return


async def answer_calls(worker: RawWorker, *, times: int = 1) -> None:
    """Reply to ``times`` invocations with their own data."""
    for _ in range(times):
        invocation = await worker.receive()
        assert isinstance(invocation, InvokeFunction)
        assert invocation.invocation_id is not None
        await worker.send(
            InvocationResult(
                invocation.invocation_id, invocation.function_id, result=invocation.data
            )
        )


# --- connecting and routes (sections 1, 2.1) ------------------------------------------------------


async def test_url_and_ports(engine: DevEngine) -> None:
    assert engine.url == f"ws://127.0.0.1:{engine.port}"
    assert engine.port > 0
    assert engine.http_url is None


async def test_workerregistered_comes_first_with_fresh_ids(
    engine: DevEngine, connect: Connect
) -> None:
    first = await connect()
    second = await connect()
    assert len({first.worker_id, second.worker_id, first.reattach_token}) == 3
    assert engine.statistics().connections == 2


async def test_no_subprotocol_is_negotiated_and_websocket_pings_are_answered(
    engine: DevEngine,
) -> None:
    async with trio_websocket.open_websocket_url(engine.url) as websocket:
        assert websocket.subprotocol is None
        with trio.fail_after(PATIENCE):
            await websocket.ping(b"are you there")
            assert '"type":"workerregistered"' in await websocket.get_message()


async def test_otel_socket_takes_telemetry_and_never_registers(engine: DevEngine) -> None:
    websocket = await connect_websocket(engine.url + "/otel")
    websocket.send_binary(b'OTLP{"resourceSpans":[]}')
    websocket.send_text(encode(Ping()))
    await websocket.flush()
    with trio.move_on_after(0.2) as nothing:
        await websocket.receive_messages()
    assert nothing.cancelled_caught
    assert engine.statistics().connections == 0
    await websocket.aclose()


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/ws/channels/abc?key=k&dir=read", 404, "Channel not found"),
        ("/ws/channels/abc?key=k&dir=write", 404, "Channel not found"),
        (
            "/ws/channels/abc?dir=read",
            400,
            "Failed to deserialize query string: missing field `key`",
        ),
        ("/ws/channels/abc?key=k", 400, "Failed to deserialize query string: missing field `dir`"),
        (
            "/ws/channels/abc?key=k&dir=sideways",
            400,
            "Failed to deserialize query string: unknown variant `sideways`, expected `read` or "
            "`write`",
        ),
        ("/ws/channels/", 404, ""),
        ("/elsewhere", 404, ""),
        ("/otel/more", 404, ""),
    ],
)
async def test_other_routes_are_refused(
    engine: DevEngine, path: str, status: int, body: str
) -> None:
    assert await http_get(engine.port, path) == (status, body)


async def test_a_refused_upgrade_fails_the_client_handshake(engine: DevEngine) -> None:
    with pytest.raises(HandshakeFailed) as caught:
        await connect_websocket(engine.url + "/nowhere")
    assert caught.value.status == 404


async def test_ipv6_loopback_url_has_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        context = open_dev_engine(host="::1")
        engine = await context.__aenter__()
    except OSError:
        pytest.skip("::1 is not available")
    try:
        assert engine.url == f"ws://[::1]:{engine.port}"
        worker = await RawWorker.connect(engine.url)
        await worker.aclose()
    finally:
        await context.__aexit__(None, None, None)


# --- frames (sections 1.3, 3.10, 3.15) ------------------------------------------------------------


async def test_malformed_frames_are_dropped_and_the_connection_stays_open(
    engine: DevEngine, connect: Connect
) -> None:
    worker = await connect()
    for garbage in (
        b"not json",
        b"[]",
        b"{}",
        b'{"type":"Ping"}',
        b'{"type":"invokefunction","function_id":"engine::functions::list"}',
        b'{"type":"invokefunction","function_id":"f","data":NaN,"invocation_id":null}',
        b'{"type":"registertrigger","id":"t","trigger_type":"x","function_id":"f"}',
        b"   ",
        b"",
        b'{"type":"workerregistered","worker_id":"x"}',
        b'{"type":"unregistertriggertype","id":"t"}',
        b'{"type":"observe"}',
    ):
        await worker.send_raw(garbage)
    await worker.send_raw(b'MTRC{"resourceMetrics":[]}', binary=True)
    await worker.send_raw(b'{"type":"ping"}', binary=True)  # binary JSON is parsed too
    assert await worker.receive() == Pong()
    await worker.send(Ping())
    assert await worker.receive() == Pong()


# --- routing through the shell (section 4) -------------------------------------------------------


async def test_a_call_is_routed_and_answered(engine: DevEngine, connect: Connect) -> None:
    server = await connect()
    await server.send(RegisterFunction(id="echo::it"))
    await server.register("server")
    client = await connect()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_calls, server)
        answer = await client.call("echo::it", {"x": 1}, metadata={"m": 2})
    assert answer.function_id == "echo::it"
    assert answer.result == {"x": 1, "_caller_worker_id": client.worker_id}


async def test_callers_learn_when_the_executor_leaves(engine: DevEngine, connect: Connect) -> None:
    server = await connect()
    await server.send(RegisterFunction(id="slow::it"))
    await server.register("server")
    client = await connect()
    await client.send(InvokeFunction("slow::it", data={}, invocation_id=CALL_ID))
    assert isinstance(await server.receive(), InvokeFunction)
    await server.aclose()
    answer = await client.receive()
    assert answer == InvocationResult(
        CALL_ID, "slow::it", error=ErrorBody("invocation_stopped", "Invocation stopped")
    )


CALL_ID = "6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e"


async def test_a_worker_that_stops_reading_stalls_nobody_else(
    engine: DevEngine, connect: Connect
) -> None:
    sleeper = await connect()
    await sleeper.send(RegisterFunction(id="sleeper::take"))
    await sleeper.register("sleeper")
    server = await connect()
    await server.send(RegisterFunction(id="server::echo"))
    await server.register("server")
    flooder = await connect()
    bystander = await connect()

    # Far more than the socket buffers and the engine's queue of 64 can hold: the engine's
    # writer to the sleeper is stuck, yet everything else keeps flowing.
    count, pad = 600, "x" * 16_000
    for start in range(0, count, 50):
        await flooder.send(
            *(
                InvokeFunction("sleeper::take", data={"seq": n, "pad": pad}, action=VoidAction())
                for n in range(start, start + 50)
            )
        )
    with trio.fail_after(PATIENCE):
        assert "server::echo" in str(await flooder.result("engine::functions::list", {}))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_calls, server)
            assert (await bystander.result("server::echo", {"n": 1}))["n"] == 1
        assert engine.statistics().pending_invocations == count

    # Once it reads again, everything arrives, in order.
    for expected in range(count):
        delivered = await sleeper.receive()
        assert isinstance(delivered, InvokeFunction)
        assert delivered.data["seq"] == expected


# --- registration through the shell (sections 2.4-2.7) --------------------------------------------


async def test_a_name_conflict_is_rejected_then_closed(engine: DevEngine, connect: Connect) -> None:
    watcher = await watch_workers(connect)
    holder = await connect()
    await holder.register("unique")
    newcomer = await connect()
    await newcomer.send(
        InvokeFunction(
            "engine::workers::register",
            data={"name": "unique"},
            invocation_id=CALL_ID,
        )
    )
    assert await newcomer.receive() == RegistrationRejected(
        code="WORKER_NAMESPACE_CONFLICT",
        namespace="default",
        owner_worker_id=holder.worker_id,
        worker_name="unique",
    )
    with pytest.raises(TransportClosed) as closed:
        await newcomer.receive()
    assert closed.value.code == 1000  # a close frame, not a dropped socket
    await wait_for_worker_event(watcher, "worker_disconnected", newcomer.worker_id)


@pytest.mark.parametrize("source", ["argument", "environment"])
async def test_namespace_grace_is_configurable(
    monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "environment":
        monkeypatch.setenv("III_NAMESPACE_GRACE_MS", "100")
        context = open_dev_engine()
    else:
        monkeypatch.setenv("III_NAMESPACE_GRACE_MS", "999999")
        context = open_dev_engine(namespace_grace=0.1)
    async with context as engine:
        silent = await RawWorker.connect(engine.url)
        await silent.send(RegisterFunction(id="silent::fn"))
        caller = await RawWorker.connect(engine.url)
        assert (await caller.call("silent::fn", {})).error is not None
        await trio.sleep(0.15)
        await caller.send(InvokeFunction("silent::fn", data={}, invocation_id=CALL_ID))
        assert isinstance(await silent.receive(), InvokeFunction)
        await silent.aclose()
        await caller.aclose()


async def test_reattach_drops_the_old_socket_without_a_close_frame(
    engine: DevEngine, connect: Connect
) -> None:
    old = await connect()
    await old.send(RegisterFunction(id="phoenix::fn"))
    await old.register("phoenix")
    new = await connect()
    await new.send(Reattach(previous_worker_id=old.worker_id, reattach_token=old.reattach_token))
    with pytest.raises(TransportClosed) as closed:
        await old.receive()
    assert closed.value.code is None
    await new.send(RegisterFunction(id="phoenix::fn"))
    await new.register("phoenix")  # the name and the function are free again
    caller = await connect()
    await caller.send(InvokeFunction("phoenix::fn", data={}, invocation_id=CALL_ID))
    assert isinstance(await new.receive(), InvokeFunction)


# --- lifetime, logging, API -----------------------------------------------------------------------


async def test_leaving_the_block_drops_every_connection_quickly() -> None:
    before = all_tasks()
    async with open_dev_engine() as engine:
        workers = [await RawWorker.connect(engine.url) for _ in range(3)]
        await workers[0].send(RegisterFunction(id="a::b"))
        await workers[0].register("a")
        started = trio.current_time()
    assert trio.current_time() - started < 1.0
    assert all_tasks() == before
    for worker in workers:
        with pytest.raises(TransportClosed) as closed:
            await worker.receive()
        assert closed.value.code is None  # dropped like the engine does, no close frame
        await worker.aclose()


async def test_an_exception_in_the_block_comes_out_unwrapped() -> None:
    with pytest.raises(KeyError, match="boom"):
        async with open_dev_engine():
            raise KeyError("boom")


async def test_cancellation_of_the_block_is_not_wrapped() -> None:
    with trio.move_on_after(0.05) as scope:
        async with open_dev_engine():
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_http_port_is_not_supported_yet() -> None:
    with pytest.raises(TypeError, match="http_port"):
        async with open_dev_engine(http_port=3111):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_serve_dev_engine_is_startable(nursery: trio.Nursery) -> None:
    engine: DevEngine = await nursery.start(serve_dev_engine, "127.0.0.1", 0)
    worker = await RawWorker.connect(engine.url)
    assert await worker.result("engine::functions::list", {"prefix": "x"}) == {"functions": []}
    await worker.aclose()
    nursery.cancel_scope.cancel()


async def test_workers_coming_and_going_are_logged(
    engine: DevEngine, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iii_trio.dev_engine")
    watcher = await watch_workers(connect)
    worker = await connect()
    await worker.register("logged", namespace="orders")
    await worker.aclose()
    await wait_for_worker_event(watcher, "worker_disconnected", worker.worker_id)
    messages = [r.getMessage() for r in caplog.records if r.name == "iii_trio.dev_engine"]
    assert f"worker connected: id={worker.worker_id} peer=127.0.0.1" in messages
    assert f"worker registered: id={worker.worker_id} name=logged namespace=orders" in messages
    assert f"worker left: id={worker.worker_id} name=logged namespace=orders" in messages


# --- triggers through the shell (sections 3.1-3.4, 5, 7.3) ----------------------------------------


async def test_a_provider_gets_bindings_and_answers_register_trigger(
    engine: DevEngine, connect: Connect
) -> None:
    provider = await connect()
    await provider.register("provider")
    await provider.send(RegisterTriggerType(id="webhook", description="Webhooks"))
    owner = await connect()
    await owner.register("owner")
    binding = RegisterTrigger(id="b1", trigger_type="webhook", function_id="svc::f", config={})
    await owner.send(binding)
    assert await provider.receive() == binding

    caller = await connect()
    data = {"trigger_type": "webhook", "function_id": "svc::g", "config": {"path": "/g"}}
    await caller.send(InvokeFunction("engine::register_trigger", data=data, invocation_id=CALL_ID))
    request = await provider.receive()
    assert isinstance(request, RegisterTrigger)
    assert request.config == {"path": "/g"}
    await provider.send(
        TriggerRegistrationResult(id=request.id, trigger_type="webhook", function_id="svc::g")
    )
    answer = await caller.receive()
    assert answer == InvocationResult(
        CALL_ID, "engine::register_trigger", result={"id": request.id}
    )

    await owner.aclose()
    assert await provider.receive() == UnregisterTrigger(id="b1", trigger_type="webhook")


async def test_a_taken_port_is_an_os_error(engine: DevEngine) -> None:
    with pytest.raises(OSError, match="in use"):
        async with open_dev_engine(port=engine.port):
            pass  # pragma: no cover
