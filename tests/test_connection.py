"""The worker against an engine peer that misbehaves on purpose.

The dev engine never sends malformed frames, so these tests use a scripted peer
(tests/scripted_engine.py): it is the only way to check that a bad frame from the engine costs
a warning, not the worker, and that refusals, failures and silences are reported as they
should be. Timed cases run over in-memory streams on trio's mock clock.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from scripted_engine import (
    answer_register_then,
    memory_opener,
    serve_scripted_engine,
)
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

import iii_trio
from iii_trio._dispatch import prepare_handler
from iii_trio._protocol._codec import decode, encode
from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    RegisterFunction,
    RegistrationRejected,
    WorkerRegistered,
)
from iii_trio._transport import (
    CLOSE_TIMEOUT,
    TransportClosed,
    UpgradeRequest,
    WebSocket,
    serve_websocket_stream,
    serve_websockets,
)
from iii_trio.testing import DevEngine, open_dev_engine


async def test_bad_frames_from_the_engine_are_dropped_and_the_worker_carries_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def respond(websocket: WebSocket, message: InvokeFunction) -> None:
        assert message.invocation_id is not None
        websocket.send_text(b"{not json")
        websocket.send_text(b'{"type": "invocationresult", "invocation_id": 7}')
        websocket.send_text(b'["a", "list"]')
        websocket.send_text(b'{"type": "observerstatechanged", "observer_id": "o"}')
        websocket.send_text(encode(InvocationResult(message.invocation_id, "x::y", "fine")))

    greeting = [b'{"type":"error","error":{"code":"AUTH_ERROR","message":"ignored here"}}']
    url = await nursery.start(
        functools.partial(serve_scripted_engine, answer_register_then(respond), greeting=greeting)
    )
    caplog.set_level(logging.WARNING, logger="iii_trio")
    async with iii_trio.open_worker(url, name="tolerant") as worker:
        assert await worker.trigger("x::y", {}) == "fine"
        assert await worker.trigger("x::y", {}) == "fine"
    dropped = [r for r in caplog.records if "dropping a frame" in r.getMessage()]
    assert len(dropped) == 3  # the first three bad frames; the unknown type is only debug
    assert any("dropped 6 bad frames" in r.getMessage() for r in caplog.records)
    assert any("AUTH_ERROR" in r.getMessage() for r in caplog.records)


async def test_results_of_every_shape_reach_their_callers(nursery: trio.Nursery) -> None:
    # Successes take the reader's shortcut; failures and unusual frames the full decoder.
    def respond(websocket: WebSocket, message: InvokeFunction) -> None:
        invocation_id = message.invocation_id
        frames = {
            "x::object": {"result": {"a": [1, None]}, "traceparent": "t", "later_field": True},
            "x::absent": {},
            "x::null": {"result": None, "error": None},
            "x::failed": {"error": {"code": "boom", "message": "it broke", "stacktrace": "s"}},
        }
        fields = {"invocation_id": invocation_id, "function_id": message.function_id}
        frame = {"type": "invocationresult", **fields, **frames[message.function_id]}
        websocket.send_text(json.dumps(frame).encode())

    url = await nursery.start(serve_scripted_engine, answer_register_then(respond))
    async with iii_trio.open_worker(url, name="shapes") as worker:
        assert await worker.trigger("x::object", {}) == {"a": [1, None]}
        assert await worker.trigger("x::absent", {}) is None
        assert await worker.trigger("x::null", {}) is None
        with pytest.raises(iii_trio.InvocationError) as caught:
            await worker.trigger("x::failed", {})
    assert (caught.value.code, caught.value.message) == ("boom", "it broke")
    assert caught.value.function_id == "x::failed"


async def test_an_announce_the_engine_refuses_fails_open_worker_without_retrying(
    nursery: trio.Nursery,
) -> None:
    connections = 0

    def on_message(websocket: WebSocket, message: Any) -> None:
        nonlocal connections
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            connections += 1
            refusal = {"code": "FORBIDDEN", "message": "namespace 'private' is not allowed"}
            frame = InvocationResult(
                message.invocation_id, message.function_id, error=ErrorBody(**refusal)
            )
            websocket.send_text(encode(frame))

    url = await nursery.start(serve_scripted_engine, on_message)
    backoff = iii_trio.Backoff(initial=0.01, jitter=0)
    with pytest.raises(iii_trio.RegistrationRejected) as caught:
        async with iii_trio.open_worker(url, name="refused", backoff=backoff):
            pytest.fail("the worker must not start")  # pragma: no cover
    assert caught.value.code == "FORBIDDEN"
    assert "not allowed" in str(caught.value)
    assert connections == 1


async def test_a_function_conflict_is_a_warning_not_a_failure(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def on_message(websocket: WebSocket, message: Any) -> None:
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            websocket.send_text(
                encode(
                    RegistrationRejected(
                        code="FUNCTION_NAMESPACE_CONFLICT",
                        namespace="default",
                        owner_worker_id="other",
                        function_id="x::taken",
                    )
                )
            )
            websocket.send_text(
                encode(InvocationResult(message.invocation_id, message.function_id, {}))
            )

    url = await nursery.start(serve_scripted_engine, on_message)
    caplog.set_level(logging.WARNING, logger="iii_trio")
    async with iii_trio.open_worker(url, name="conflicted") as worker:
        assert worker.connection_state is iii_trio.ConnectionState.CONNECTED
    assert any("FUNCTION_NAMESPACE_CONFLICT" in r.getMessage() for r in caplog.records)


async def test_pending_call_fails_with_connection_lost_and_the_worker_reconnects(
    nursery: trio.Nursery,
) -> None:
    calls = 0

    def respond(websocket: WebSocket, message: InvokeFunction) -> bool:
        nonlocal calls
        calls += 1
        assert message.invocation_id is not None
        if calls == 1:
            return True  # hang up instead of answering the first call
        websocket.send_text(encode(InvocationResult(message.invocation_id, "x::y", "back")))
        return False

    url = await nursery.start(serve_scripted_engine, answer_register_then(respond))
    backoff = iii_trio.Backoff(initial=0.01, jitter=0)
    async with iii_trio.open_worker(url, name="dropped", backoff=backoff) as worker:
        first_id = worker.worker_id
        with pytest.raises(iii_trio.ConnectionLost):
            await worker.trigger("x::y", {})
        await worker.wait_connected()
        assert await worker.trigger("x::y", {}) == "back"
        assert worker.worker_id != first_id


async def test_a_registration_made_during_a_reconnects_handshake_is_sent_on_that_connection(
    nursery: trio.Nursery,
) -> None:
    # A connection's replay is a snapshot taken when it opens. Here the engine answers the
    # second connection's announce only once the function registered after that snapshot has
    # arrived, so the worker gets back only if it sends it there.
    connections: dict[WebSocket, list[Any]] = {}
    announce_held = trio.Event()
    held: list[InvokeFunction] = []
    hang_up = False

    def on_message(websocket: WebSocket, message: Any) -> bool:
        nonlocal hang_up
        seen = connections.setdefault(websocket, [])
        seen.append(message)
        second = list(connections).index(websocket) == 1
        reply: Any = None
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            if second:
                held.append(message)
                announce_held.set()
            else:
                reply = InvocationResult(message.invocation_id, message.function_id, {})
        elif isinstance(message, RegisterFunction) and message.id == "svc::late" and held:
            announce = held.pop()
            assert announce.invocation_id is not None
            reply = InvocationResult(announce.invocation_id, announce.function_id, {})
        elif isinstance(message, Ping):
            if hang_up:
                hang_up = False
                return True
            reply = Pong()
        if reply is not None:
            websocket.send_text(encode(reply))
        return False

    def describe(message: Any) -> tuple[str, str | None]:
        name = getattr(message, "id", None) or getattr(message, "function_id", None)
        return type(message).__name__, name

    url = await nursery.start(serve_scripted_engine, on_message)
    backoff = iii_trio.Backoff(initial=0.01, jitter=0)
    with trio.fail_after(10):
        async with iii_trio.open_worker(url, name="late", backoff=backoff) as worker:
            worker.register_function("svc::early", lambda payload: None)
            hang_up = True
            with pytest.raises(iii_trio.ConnectionLost):
                await worker.wait_registered()
            await announce_held.wait()
            assert worker.connection_state is iii_trio.ConnectionState.RECONNECTING
            worker.register_function("svc::late", lambda payload: None)
            await worker.wait_connected()
            await worker.wait_registered()
    assert [describe(message) for message in list(connections.values())[1]] == [
        ("Reattach", None),
        ("InvokeFunction", "engine::workers::register"),
        ("RegisterFunction", "svc::early"),
        ("RegisterFunction", "svc::late"),
        ("Ping", None),
    ]


@pytest.mark.parametrize("answers_pings", [False, True], ids=["silent", "answers-pings"])
async def test_a_link_silent_for_a_minute_is_dropped_and_pings_keep_a_quiet_one(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, answers_pings: bool
) -> None:
    # After the handshake this engine sends nothing of its own. The worker pings it every 20 s;
    # more than 60 s without any frame means a dead link, dropped at the next ping time (80 s)
    # and replaced at once. An engine that keeps reading answers the pings, which is enough.
    connected_at: list[float] = []
    reconnected = trio.Event()

    async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
        connected_at.append(trio.current_time())
        if len(connected_at) == 2:
            reconnected.set()
        websocket.send_text(encode(WorkerRegistered(worker_id=str(uuid.uuid4()))))
        await websocket.flush()
        announced = False
        while not announced or answers_pings:  # reading is what answers pings
            for _, frame in await websocket.receive_messages():
                message = decode(frame)
                if isinstance(message, InvokeFunction) and message.invocation_id is not None:
                    result = InvocationResult(message.invocation_id, message.function_id, {})
                    websocket.send_text(encode(result))
                    announced = True
            await websocket.flush()
        await trio.sleep_forever()

    opener, _ = memory_opener(
        nursery, lambda stream: serve_websocket_stream(stream, handler, lambda request: None)
    )
    async with iii_trio.open_worker(
        "ws://engine.test", name="quiet", _open_stream=opener
    ) as worker:
        first_id = worker.worker_id
        if answers_pings:
            with trio.move_on_after(300):
                await reconnected.wait()
            assert len(connected_at) == 1
            assert worker.worker_id == first_id
        else:
            with trio.fail_after(200):
                await reconnected.wait()
                await worker.wait_connected()
            assert connected_at[1] - connected_at[0] == 80
            assert worker.worker_id != first_id


async def test_handshake_headers_and_token_reach_the_engine(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[UpgradeRequest] = []
    url = await nursery.start(
        functools.partial(
            serve_scripted_engine, answer_register_then(lambda ws, m: None), requests=requests
        )
    )
    monkeypatch.setenv("III_TOKEN", "s3cret")
    async with iii_trio.open_worker(url, name="h", headers={"X-Tenant": "acme"}):
        pass
    async with iii_trio.open_worker(url, name="h2", headers={"authorization": "Basic abc"}):
        pass
    first, second = requests
    assert first.path == "/"
    assert first.headers["x-tenant"] == "acme"
    assert first.headers["authorization"] == "Bearer s3cret"
    assert second.headers["authorization"] == "Basic abc"  # an explicit one wins


async def test_the_reader_keeps_reading_while_the_engine_does_not_read(
    nursery: trio.Nursery,
) -> None:
    # The engine stops reading this connection (as a real engine does when it applies
    # backpressure) while the worker has far more output than the socket buffers hold. The
    # worker's reader must go on reading: it answers a ping and serves an invocation meanwhile.
    stalled = trio.Event()
    invoked = trio.Event()

    async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
        websocket.send_text(encode(WorkerRegistered(worker_id=str(uuid.uuid4()))))
        await websocket.flush()
        for _, frame in await websocket.receive_messages():
            message = decode(frame)
            if isinstance(message, InvokeFunction) and message.invocation_id is not None:
                websocket.send_text(
                    encode(InvocationResult(message.invocation_id, message.function_id, {}))
                )
        await websocket.flush()
        await stalled.wait()  # from now on nothing is read from the worker
        websocket.send_ping(b"are you there")
        websocket.send_text(
            encode(
                InvokeFunction(function_id="svc::noted", data={}, invocation_id=str(uuid.uuid4()))
            )
        )
        await websocket.flush()
        await trio.sleep_forever()

    listeners = await nursery.start(
        functools.partial(serve_websockets, handler, lambda request: None, host="127.0.0.1", port=0)
    )
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    async with iii_trio.open_worker(url, name="reader") as worker:

        @worker.function("svc::noted")
        async def noted(payload: Any) -> None:
            invoked.set()

        async with trio.open_nursery() as flooders:
            for _ in range(8):  # 8 x 2 MiB: more than loopback socket buffers take
                flooders.start_soon(worker.trigger_void, "svc::sink", "x" * (2 * 1024 * 1024))
        stalled.set()
        with trio.fail_after(5):
            await invoked.wait()


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["AUTH_ERROR", "FORBIDDEN"])
async def test_an_auth_refusal_sent_with_the_101_raises_registration_rejected_at_once(
    nursery: trio.Nursery, code: str
) -> None:
    # The engine's auth function said no: it answers the upgrade, then sends an error frame and
    # a close frame, all in one write, and never sends workerregistered (protocol.md 2.2).
    connections = 0
    refusal = {"type": "error", "error": {"code": code, "message": "token expired"}}

    async def refusing_engine(stream: trio.abc.Stream) -> None:
        nonlocal connections
        connections += 1
        protocol = ServerProtocol()
        while not (events := protocol.events_received()):
            protocol.receive_data(await stream.receive_some())
        protocol.send_response(protocol.accept(events[0]))
        protocol.send_text(json.dumps(refusal).encode())
        protocol.send_close()
        await stream.send_all(b"".join(protocol.data_to_send()))
        with contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some():
                pass
        await stream.aclose()

    opener, _ = memory_opener(nursery, refusing_engine)
    backoff = iii_trio.Backoff(initial=0.01, jitter=0)
    with trio.fail_after(5), pytest.raises(iii_trio.RegistrationRejected) as caught:
        async with iii_trio.open_worker(
            "ws://engine.test", name="refused", backoff=backoff, _open_stream=opener
        ):
            pytest.fail("the worker must not start")  # pragma: no cover
    assert (caught.value.code, caught.value.message) == (code, "token expired")
    assert connections == 1


async def test_a_refused_worker_fails_pending_calls_and_ends_in_failed(
    nursery: trio.Nursery,
) -> None:
    # A name conflict decided later (the engine closes after it): state FAILED, no reconnect.
    def respond(websocket: WebSocket, message: InvokeFunction) -> bool:
        websocket.send_text(
            encode(
                RegistrationRejected(
                    code="WORKER_NAMESPACE_CONFLICT",
                    namespace="default",
                    worker_name="w",
                    owner_worker_id="other",
                )
            )
        )
        return False

    url = await nursery.start(serve_scripted_engine, answer_register_then(respond))
    states: list[iii_trio.ConnectionState] = []

    async def call_and_watch() -> None:
        async with iii_trio.open_worker(url, name="w") as worker:
            async with worker.watch_connection_state() as watched:
                with pytest.raises(iii_trio.RegistrationRejected):
                    await worker.trigger("x::y", {})
                async for state in watched:
                    states.append(state)
                    if state is not iii_trio.ConnectionState.CONNECTED:
                        break
            assert worker.connection_state is iii_trio.ConnectionState.FAILED

    with pytest.raises(iii_trio.RegistrationRejected, match="WORKER_NAMESPACE_CONFLICT"):
        await call_and_watch()
    assert states == [iii_trio.ConnectionState.CONNECTED, iii_trio.ConnectionState.FAILED]


# --- failures are reported and replaced within the close timeout ---------------------------------


async def test_a_failed_connection_is_reported_at_once_and_replaced_without_waiting(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # The first connection's engine breaks the protocol (a masked frame from a server) when
    # called, then never closes TCP. The worker must not sit on the dead session: the pending
    # call fails at once, the state says so, the next connection is opened at once, and the old
    # socket is closed within the close timeout.
    served: list[float] = []
    old_closed_at: list[float] = []

    async def break_the_protocol(websocket: WebSocket, stream: trio.abc.Stream) -> None:
        await stream.send_all(Frame(Opcode.TEXT, b"{}").serialize(mask=True))
        with contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some():
                pass  # read, answer nothing, never close
        old_closed_at.append(trio.current_time())
        await trio.sleep_forever()

    opener, _ = memory_opener(nursery, _engine_misbehaving_once(break_the_protocol, served))
    async with iii_trio.open_worker("ws://engine.test", name="f", _open_stream=opener) as worker:
        with pytest.raises(iii_trio.ConnectionLost):
            await worker.trigger("x::y", {})
        assert trio.current_time() == 0
        assert worker.connection_state is not iii_trio.ConnectionState.CONNECTED
        await worker.wait_connected()
        assert trio.current_time() == 0
        assert await worker.trigger("x::y", {}) == "ok"
        await trio.sleep(CLOSE_TIMEOUT + 1)
        assert old_closed_at == [CLOSE_TIMEOUT]
    assert len(served) == 2


async def test_leaving_the_block_closes_within_a_second_even_if_the_engine_is_deaf(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def deaf_after_handshake(stream: trio.abc.Stream) -> None:
        async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
            websocket.send_text(encode(WorkerRegistered(worker_id=str(uuid.uuid4()))))
            await websocket.flush()
            for _, frame in await websocket.receive_messages():
                message = decode(frame)
                if isinstance(message, InvokeFunction) and message.invocation_id:
                    result = InvocationResult(message.invocation_id, message.function_id, {})
                    websocket.send_text(encode(result))
            await websocket.flush()
            await trio.sleep_forever()  # reads nothing more: never answers the close frame

        await serve_websocket_stream(stream, handler, lambda request: None)

    opener, _ = memory_opener(nursery, deaf_after_handshake)
    async with iii_trio.open_worker("ws://engine.test", name="d", _open_stream=opener):
        entered = trio.current_time()
    assert trio.current_time() - entered <= 1


# --- a handler's BaseException ends the program, not just the call --------------------------------


def _exiting_handler(kind: type[BaseException], *, suspends: bool) -> Callable[[Any], Any]:
    if suspends:

        async def after_a_checkpoint(payload: Any) -> None:
            await trio.lowlevel.checkpoint()
            raise kind(3)

        return after_a_checkpoint

    async def at_once(payload: Any) -> None:
        raise kind(3)  # no await: the reader itself runs this handler

    assert prepare_handler("svc::exit", at_once).call_inline is not None
    return at_once


@pytest.mark.parametrize("suspends", [True, False], ids=["handler-task", "inline"])
@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
async def test_a_handler_raising_a_base_exception_ends_open_worker_with_it(
    engine: DevEngine, kind: type[BaseException], suspends: bool
) -> None:
    # What the caller sees meanwhile: its call fails (the session is gone) and the state says
    # FAILED at that moment, not CONNECTED or RECONNECTING; then the exception arrives.
    seen: list[iii_trio.ConnectionState] = []

    async def serve_and_call() -> None:
        async with iii_trio.open_worker(engine.url, name="exiting") as worker:
            worker.register_function("svc::exit", _exiting_handler(kind, suspends=suspends))
            try:
                await worker.trigger("svc::exit", {})
            except iii_trio.ConnectionLost:
                seen.append(worker.connection_state)
                raise

    with pytest.raises(kind) as raised:
        await serve_and_call()
    assert raised.value.args == (3,)
    assert seen == [iii_trio.ConnectionState.FAILED]


def test_a_program_whose_handler_calls_sys_exit_exits_with_that_status() -> None:
    script = textwrap.dedent(
        """
        import sys, trio, iii_trio
        from iii_trio.testing import open_dev_engine

        async def main():
            async with open_dev_engine() as engine:
                async with iii_trio.open_worker(engine.url, name="exits") as worker:
                    async def stop(payload):
                        await trio.sleep(0)
                        sys.exit(3)
                    worker.register_function("svc::stop", stop)
                    await worker.trigger("svc::stop", {})

        trio.run(main)
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 3, ran.stderr


# --- logging ------------------------------------------------------------------------------------


async def test_the_first_failed_attempt_warns_with_the_url_and_the_rest_are_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="iii_trio")
    port = _free_port()
    backoff = iii_trio.Backoff(initial=0.001, jitter=0, max_attempts=4)
    with pytest.raises(iii_trio.EngineUnavailable) as failed:
        async with iii_trio.open_worker(f"ws://127.0.0.1:{port}", name="x", backoff=backoff):
            pass  # pragma: no cover
    connection = [r for r in caplog.records if r.name == "iii_trio.connection"]
    warnings = [r for r in connection if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"127.0.0.1:{port}" in warnings[0].getMessage()
    retries = [r for r in connection if r.levelno == logging.DEBUG and "attempt" in r.getMessage()]
    assert len(retries) == 2  # attempts 2 and 3; the 4th ends the budget
    assert (failed.value.url, failed.value.attempts) == (f"ws://127.0.0.1:{port}", 4)
    assert failed.value.__cause__ is not None
    assert "cannot connect" in str(failed.value.__cause__)


async def test_connecting_is_logged_at_info(
    engine: DevEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iii_trio.connection")
    async with iii_trio.open_worker(engine.url, name="logged") as worker:
        worker_id = worker.worker_id
    (connected,) = [r for r in caplog.records if "connected" in r.getMessage()]
    assert connected.levelno == logging.INFO
    assert str(worker_id) in connected.getMessage()


async def test_a_flood_of_bad_frames_costs_a_few_log_lines(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def respond(websocket: WebSocket, message: InvokeFunction) -> None:
        assert message.invocation_id is not None
        for _ in range(10_000):
            websocket.send_text(b"")
        for n in range(100):
            websocket.send_text(b"{broken %d" % n)
        websocket.send_text(encode(InvocationResult(message.invocation_id, "x::y", "fine")))

    url = await nursery.start(serve_scripted_engine, answer_register_then(respond))
    caplog.set_level(logging.INFO, logger="iii_trio")
    async with iii_trio.open_worker(url, name="flooded") as worker:
        assert await worker.trigger("x::y", {}) == "fine"
    lines = [r for r in caplog.records if r.name == "iii_trio.connection"]
    assert len([r for r in lines if r.levelno >= logging.WARNING]) <= 4
    assert any("dropped 10100 bad frames" in r.getMessage() for r in lines)


async def test_no_secret_reaches_any_log_record_at_any_level(
    engine: DevEngine,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Secrets planted everywhere a worker carries one: the token from the environment, an
    # explicit Authorization header, a custom header, user info and query in the URL, and the
    # reattach token, which the worker sends on every reconnect (forced here by a proxy that
    # cuts the connection).
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("III_TOKEN", "planted-env-token")
    proxy = await nursery.start(_serve_cutting_proxy, engine.port)
    secrets = {"planted-env-token", "planted-api-key", "planted-pass", "planted-query"}
    reattach_tokens: set[str] = set()
    url = f"ws://user:planted-pass@127.0.0.1:{proxy.port}/?token=planted-query"
    async with iii_trio.open_worker(
        url, name="secretive", headers={"X-Api-Key": "planted-api-key"}
    ) as worker:
        worker.register_function("svc::echo", lambda payload: payload)
        assert await worker.trigger("svc::echo", {"a": 1}) == {"a": 1}
        identity = worker._link.identity
        assert identity is not None
        assert identity.reattach_token
        reattach_tokens.add(identity.reattach_token)
        async with worker.watch_connection_state() as states:
            await proxy.cut()
            with trio.fail_after(10):
                async for state in states:
                    if state is iii_trio.ConnectionState.RECONNECTING:
                        break
                await worker.wait_connected()  # the reattach frame carried the token
        assert await worker.trigger("svc::echo", {"a": 2}) == {"a": 2}
    async with iii_trio.open_worker(
        f"ws://127.0.0.1:{engine.port}",
        name="bearer",
        headers={"Authorization": "Bearer planted-auth"},
    ):
        pass
    secrets |= reattach_tokens | {"planted-auth"}
    assert proxy.connections == 2
    logged = "\n".join(_everything_in(record) for record in caplog.records)
    assert "X-Api-Key: <redacted>" in logged  # the handshake was logged, values withheld
    for secret in secrets:
        assert secret not in logged


# --- helpers ------------------------------------------------------------------------------------


def _engine_misbehaving_once(
    misbehave: Callable[[WebSocket, trio.abc.Stream], Awaitable[None]],
    served: list[float],
    *,
    close_codes: list[int | None] | None = None,
) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """An engine that answers every call with "ok", except the first connection's call of
    ``x::y``, to which it does ``misbehave`` (given the WebSocket and its raw stream).

    ``served`` gets the time each connection starts; ``close_codes`` the code each connection
    ended with, as the engine saw it.
    """

    async def engine(stream: trio.abc.Stream) -> None:
        first = not served
        served.append(trio.current_time())

        async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
            websocket.send_text(encode(WorkerRegistered(worker_id=str(uuid.uuid4()))))
            await websocket.flush()
            try:
                while True:
                    for _, frame in await websocket.receive_messages():
                        message = decode(frame)
                        if not isinstance(message, InvokeFunction) or not message.invocation_id:
                            continue
                        if first and message.function_id == "x::y":
                            await misbehave(websocket, stream)
                            continue
                        result = InvocationResult(message.invocation_id, message.function_id, "ok")
                        websocket.send_text(encode(result))
                    await websocket.flush()
            except TransportClosed as closed:
                if close_codes is not None:
                    close_codes.append(closed.code)

        await serve_websocket_stream(stream, handler, lambda request: None)

    return engine


def _everything_in(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), record.exc_text or ""]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    parts.extend(repr(value) for value in vars(record).values())
    return " ".join(parts)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class _CuttingProxy:
    """A TCP proxy in front of the engine that can cut every connection through it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self._scopes: list[trio.CancelScope] = []

    async def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        await trio.lowlevel.checkpoint()


async def _serve_cutting_proxy(
    target_port: int, *, task_status: trio.TaskStatus[_CuttingProxy]
) -> None:
    async def forward(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some():
                await sink.send_all(data)

    async def relay(client: trio.SocketStream) -> None:
        proxy.connections += 1
        with trio.CancelScope() as scope:
            proxy._scopes.append(scope)
            upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
            async with client, upstream, trio.open_nursery() as pipes:
                pipes.start_soon(forward, client, upstream)
                pipes.start_soon(forward, upstream, client)
        await trio.aclose_forcefully(client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy = _CuttingProxy(listeners[0].socket.getsockname()[1])
    task_status.started(proxy)
    await trio.serve_listeners(relay, listeners)


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


async def test_text_from_the_engine_that_is_not_utf8_fails_the_connection_with_1007(
    nursery: trio.Nursery,
) -> None:
    # The session leaves the UTF-8 check to orjson, which parses every frame anyway; the
    # connection must fail all the same, and the worker reconnect.
    close_codes: list[int | None] = []

    async def send_bad_text(websocket: WebSocket, stream: trio.abc.Stream) -> None:
        websocket.send_text(b'{"type":"pong","note":"caf\xc3"}')

    opener, _ = memory_opener(
        nursery, _engine_misbehaving_once(send_bad_text, [], close_codes=close_codes)
    )
    backoff = iii_trio.Backoff(initial=0.01, jitter=0)
    async with iii_trio.open_worker(
        "ws://engine.test", name="u", backoff=backoff, _open_stream=opener
    ) as worker:
        with pytest.raises(iii_trio.ConnectionLost):
            await worker.trigger("x::y", {})
        await worker.wait_connected()
        assert await worker.trigger("x::y", {}) == "ok"
    assert close_codes[0] == 1007
