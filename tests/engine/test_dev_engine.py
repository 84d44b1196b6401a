"""The dev engine over real loopback WebSockets, driven with raw protocol frames."""

from __future__ import annotations

import functools
import itertools
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from iii_trio._protocol._codec import decode_reference, encode, encode_reference
from iii_trio._protocol._fastpath import encode_call, encode_result
from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
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
from iii_trio.testing._dev_engine import _WRITE_EVERY, CALL_LIMIT, _Server
from iii_trio.testing._engine import EngineState, EngineStatistics

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


#: Calls in a flood: more than CALL_LIMIT, and far more data than the socket buffers hold.
FLOOD_CALLS = CALL_LIMIT + 200


async def flood(worker: RawWorker, function_id: str) -> None:
    """Send :data:`FLOOD_CALLS` void calls of ``function_id`` of 16 KB each (``{"seq": n,
    "pad": ...}``, n counting from 0). Blocks once the engine no longer reads ``worker``."""
    pad = "x" * 16_000
    for start in range(0, FLOOD_CALLS, 50):
        await worker.send(
            *(
                InvokeFunction(function_id, data={"seq": n, "pad": pad}, action=VoidAction())
                for n in range(start, min(start + 50, FLOOD_CALLS))
            )
        )


async def wait_for_statistics(engine: DevEngine, check: Callable[[EngineStatistics], bool]) -> None:
    """Wait until the engine's counts pass ``check`` (they have no event to wait on)."""
    with trio.fail_after(PATIENCE):
        while not check(engine.statistics()):  # noqa: ASYNC110
            await trio.sleep(0.01)


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
    assert engine.http_url is not None
    assert engine.http_url.startswith("http://127.0.0.1:")


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


@pytest.mark.parametrize(
    "text",
    [b'{"type":"ping","note":"caf\xc3"}', b'{"type":"invocationresult","x":"\xff"}'],
    ids=["general-path", "routing-path"],
)
async def test_a_text_frame_that_is_not_utf8_fails_the_connection_with_1007(
    engine: DevEngine, connect: Connect, text: bytes
) -> None:
    # The engine's transport leaves the UTF-8 check to the JSON parser, which every frame goes
    # through; the connection must fail all the same, and only that one.
    bystander = await connect()
    worker = await connect()
    await worker.send_raw(text)
    with pytest.raises(TransportClosed) as closed:
        await worker.receive()
    assert closed.value.code == 1007
    await bystander.send(Ping())
    assert await bystander.receive() == Pong()


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

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood, flooder, "sleeper::take")
        # The engine's writer to the sleeper is stuck and the flooder is no longer read once
        # CALL_LIMIT of its calls wait for the sleeper; everything else keeps flowing.
        await wait_for_statistics(engine, lambda s: s.pending_invocations >= CALL_LIMIT)
        with trio.fail_after(PATIENCE):
            for n in range(10):
                assert "server::echo" in str(await bystander.result("engine::functions::list", {}))
                async with trio.open_nursery() as answering:
                    answering.start_soon(answer_calls, server)
                    assert (await bystander.result("server::echo", {"n": n}))["n"] == n
                assert engine.statistics().pending_invocations <= CALL_LIMIT + _WRITE_EVERY

        # Once the sleeper reads and answers again, the flooder is read again: every call
        # arrives, in order.
        with trio.fail_after(4 * PATIENCE):
            for expected in range(FLOOD_CALLS):
                delivered = await sleeper.receive()
                assert isinstance(delivered, InvokeFunction)
                assert delivered.data["seq"] == expected
                assert delivered.invocation_id is not None
                await sleeper.send(InvocationResult(delivered.invocation_id, "sleeper::take"))
    await wait_for_statistics(engine, lambda s: s.pending_invocations == 0)


async def test_a_worker_whose_queue_is_full_is_still_read(
    engine: DevEngine, connect: Connect
) -> None:
    # The engine spawns invocations, so a full queue toward a worker never stops it reading
    # that worker: answers it sends while not reading keep reaching their callers.
    sleeper = await connect()
    await sleeper.send(RegisterFunction(id="sleeper::take"), RegisterFunction(id="sleeper::work"))
    await sleeper.register("sleeper")
    caller = await connect()
    flooder = await connect()
    jobs = []
    for job in (1, 2):
        await caller.send(
            InvokeFunction("sleeper::work", data={"job": job}, invocation_id=str(uuid.uuid4()))
        )
        delivered = await sleeper.receive()
        assert isinstance(delivered, InvokeFunction)
        assert delivered.invocation_id is not None
        jobs.append(delivered.invocation_id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood, flooder, "sleeper::take")
        # CALL_LIMIT calls of 16 KB toward the sleeper: more than the socket buffers hold.
        await wait_for_statistics(engine, lambda s: s.pending_invocations >= CALL_LIMIT + 2)
        with trio.fail_after(PATIENCE):
            # Each answer in a read of its own: the engine must keep reading, not stop after one.
            for job, invocation_id in enumerate(jobs, start=1):
                await sleeper.send(InvocationResult(invocation_id, "sleeper::work", result=job))
                answer = await caller.receive()
                assert isinstance(answer, InvocationResult)
                assert answer.result == job
        nursery.cancel_scope.cancel()


async def test_a_caller_may_send_up_to_the_call_limit_before_reading(
    engine: DevEngine, connect: Connect
) -> None:
    # A worker must keep reading (protocol.md 2.1), but one that sends a burst of calls before
    # reading their answers still gets them all, as long as the burst stays under CALL_LIMIT:
    # far more data than the socket buffers hold, so the engine holds the answers until then.
    echo = await connect()
    await echo.send(RegisterFunction(id="echo::back"))
    await echo.register("echo")
    caller = await connect()
    count, pad = CALL_LIMIT - 1, "x" * 16_000
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with trio.fail_after(4 * PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(answer_calls, echo, times=count))
            for start in range(0, count, 50):
                await caller.send(
                    *(
                        InvokeFunction(
                            "echo::back", data={"seq": n, "pad": pad}, invocation_id=ids[n]
                        )
                        for n in range(start, min(start + 50, count))
                    )
                )
            for n in range(count):
                answer = await caller.receive()
                assert isinstance(answer, InvocationResult)
                assert (answer.invocation_id, answer.result["seq"]) == (ids[n], n)
    assert engine.statistics().pending_invocations == 0


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


@pytest.mark.parametrize("source", ["argument", "environment", "config file"])
async def test_namespace_grace_is_configurable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    if source == "environment":
        monkeypatch.setenv("III_NAMESPACE_GRACE_MS", "100")
        context = open_dev_engine()
    elif source == "config file":
        monkeypatch.delenv("III_NAMESPACE_GRACE_MS", raising=False)  # it would win
        config = tmp_path / "config.yaml"
        config.write_text("registration_namespace_grace_ms: 100\n", encoding="utf-8")
        context = open_dev_engine(config=config)
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


async def test_http_port_must_be_a_port_number() -> None:
    with pytest.raises(ValueError, match="http_port"):
        async with open_dev_engine(http_port=70000):
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


# --- the routing fast path (the shell's half) -----------------------------------------------------


class CapturingOutbox:
    """Stands in for a connection's outbox: keeps every frame pushed to it."""

    is_full = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)

    push_answer = push

    def answers_unsent(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


FAST_PATH_IDS = [str(uuid.UUID(int=(0xFEED << 112) + n)) for n in range(40)]


def fast_path_frames() -> tuple[list[bytes], list[bytes]]:
    """Frames a caller and an executor send: the common case with every optional field, and
    variants the codec decodes differently or refuses (each must be handled as decode() does)."""
    ids = iter(FAST_PATH_IDS)
    calls: list[dict[str, Any]] = [
        {"function_id": "svc::echo", "data": {"a": 1}},
        {"function_id": "svc::echo", "data": [1], "traceparent": "tp", "metadata": {"m": 1}},
        {"function_id": "svc::echo", "data": None, "baggage": "k=v", "namespace": "default"},
        {"function_id": "svc::echo", "data": {}, "action": None, "unknown": 1},
        {"function_id": "svc::echo", "data": {}, "namespace": "orders"},
        {"function_id": "svc::echo", "data": {}, "namespace": " "},
        {"function_id": "svc::echo", "data": {}, "action": {"type": "void"}},
        {"function_id": "svc::echo"},
        {"function_id": 5, "data": {}},
        {"function_id": "svc::echo", "data": {}, "traceparent": 5},
        {"function_id": "svc::echo", "data": {}, "baggage": ["x"]},
        {"function_id": "svc::echo", "data": {}, "namespace": 1},
        {"function_id": "nope::fn", "data": {}},
        {"function_id": "engine::functions::list", "data": {}},
    ]
    caller_frames: list[bytes] = []
    server_frames: list[bytes] = []
    for fields in calls:
        invocation_id = next(ids)
        caller_frames.append(
            orjson.dumps({"type": "invokefunction", "invocation_id": invocation_id, **fields})
        )
        # Each call's results in another order, so that each kind comes first for some call.
        results: list[dict[str, Any]] = [
            {"result": {"r": 1}},
            {"result": None, "traceparent": "other", "error": None},
            {"error": {"code": "E", "message": "failed"}},
            {"traceparent": 1},
            {"function_id": None},
        ]
        turn = len(caller_frames) % len(results)
        for extra in results[turn:] + results[:turn]:
            server_frames.append(
                orjson.dumps(
                    {
                        "type": "invocationresult",
                        "invocation_id": invocation_id,
                        "function_id": "svc::echo",
                        **extra,
                    }
                )
            )
    caller_frames.append(
        b'{"type":"invokefunction","function_id":"svc::echo","data":{},"invocation_id":5}'
    )
    caller_frames.append(b'{"type":"invokefunction","function_id":"svc::echo","data":NaN}')
    server_frames.append(b'{"type":"invocationresult","invocation_id":"x","function_id":"f"}')
    return caller_frames, server_frames


def next_uuid(counter: Iterator[int]) -> uuid.UUID:
    return uuid.UUID(int=next(counter))


def counting(method: Callable[..., object], outcomes: list[object]) -> Callable[..., object]:
    def wrapper(*args: object) -> object:
        outcome = method(*args)
        outcomes.append(outcome)
        return outcome

    return wrapper


async def test_the_fast_path_routes_frames_as_the_general_path_does() -> None:
    # The general path is forced by the codec logging at DEBUG (see _Server._route_frames).
    codec_logger = logging.getLogger("iii_trio.protocol")
    outcomes = []
    for level in (logging.DEBUG, logging.WARNING):
        counter = itertools.count(1)
        state = EngineState(grace=0.0, new_uuid=functools.partial(next_uuid, counter))
        server = _Server(state)
        caller_id, _ = state.connect(peer_host=None, now=0.0, connected_at_ms=0)
        executor_id, _ = state.connect(peer_host=None, now=0.0, connected_at_ms=0)
        state.tick(1.0)
        state.receive(executor_id, RegisterFunction(id="svc::echo"), 1.0)
        outboxes = {caller_id: CapturingOutbox(), executor_id: CapturingOutbox()}
        server._outboxes = outboxes  # type: ignore[assignment]
        taken: list[object] = []
        for name in ("route_invocation", "route_result"):
            setattr(state, name, counting(getattr(state, name), taken))
        caller_frames, server_frames = fast_path_frames()
        previous = codec_logger.level
        codec_logger.setLevel(level)
        try:
            for sender, frames in ((caller_id, caller_frames), (executor_id, server_frames)):
                batch: list[tuple[bool, bytes | bytearray | memoryview]] = [
                    (True, frame) for frame in frames
                ]
                routed = server._route_frames(sender, outboxes[sender], batch, 0)  # type: ignore[arg-type]
                assert routed == (len(batch), None)
        finally:
            codec_logger.setLevel(previous)
        outcomes.append(
            (
                {key: [orjson.loads(f) for f in box.frames] for key, box in outboxes.items()},
                state.statistics(),
            )
        )
        accepted = [outcome for outcome in taken if outcome is not None and outcome is not False]
        # The four calls, and the three of their results that come first without an error.
        assert len(accepted) == (0 if level == logging.DEBUG else 7)
    assert outcomes[0] == outcomes[1]
    delivered = outcomes[0][0]
    assert len(delivered[executor_id]) == 5  # svc::echo in default, with or without action
    assert len(delivered[caller_id]) == 8


@pytest.mark.parametrize(
    "message",
    [
        InvokeFunction("f", data={"a": [1]}, invocation_id=CALL_ID),
        InvokeFunction("f", data=None, invocation_id=CALL_ID, traceparent="t", baggage="b"),
        InvokeFunction("f", data=[], invocation_id=CALL_ID, metadata={"m": None}),
    ],
)
def test_the_fast_invocation_frame_is_what_the_converter_writes(message: InvokeFunction) -> None:
    # The engine's side of the comparison tests/protocol/test_fastpath.py makes on generated
    # messages, with the arguments _route_invocation passes.
    assert message.invocation_id is not None
    frame = encode_call(
        message.function_id,
        message.data,
        message.invocation_id,
        traceparent=message.traceparent,
        baggage=message.baggage,
        metadata=message.metadata,
    )
    assert orjson.loads(frame) == orjson.loads(encode_reference(message))
    assert decode_reference(frame) == message


@pytest.mark.parametrize(
    "message",
    [
        InvocationResult(CALL_ID, "f", result={"a": 1}),
        InvocationResult(CALL_ID, "f"),
        InvocationResult(CALL_ID, "f", result=0, traceparent="t", baggage="b"),
    ],
)
def test_the_fast_result_frame_is_what_the_converter_writes(message: InvocationResult) -> None:
    frame = encode_result(
        message.invocation_id,
        message.function_id,
        message.result,
        traceparent=message.traceparent,
        baggage=message.baggage,
    )
    assert orjson.loads(frame) == orjson.loads(encode_reference(message))
    assert decode_reference(frame) == message


async def test_a_burst_is_routed_in_order_among_other_messages(
    engine: DevEngine, connect: Connect
) -> None:
    # More frames in one read than the shell routes between two writes, with messages of the
    # general path for the same connection in between: the executor gets them all in order.
    server = await connect()
    await server.send(RegisterFunction(id="svc::echo"), RegisterTriggerType("tick", "Ticks"))
    await server.register("server")
    client = await connect()
    await client.register("client")
    ids = [str(uuid.UUID(int=(0xC0FFEE << 96) + n)) for n in range(3 * _WRITE_EVERY)]
    burst: list[Message] = []
    for n, invocation_id in enumerate(ids):
        burst.append(InvokeFunction("svc::echo", data={"n": n}, invocation_id=invocation_id))
        if n % 10 == 5:
            burst.append(
                RegisterTrigger(id=f"b{n}", trigger_type="tick", function_id="x::f", config={})
            )
    await client.send(*burst)
    with trio.fail_after(PATIENCE):
        for message in burst:
            delivered = await server.receive()
            if isinstance(message, InvokeFunction):
                assert isinstance(delivered, InvokeFunction)
                assert delivered.invocation_id == message.invocation_id
            else:
                assert delivered == message
        await server.send(*(InvocationResult(i, "svc::echo", result=n) for n, i in enumerate(ids)))
        for n, invocation_id in enumerate(ids):
            assert await client.receive() == InvocationResult(invocation_id, "svc::echo", result=n)
    assert engine.statistics().pending_invocations == 0
