"""The worker against an engine peer that misbehaves on purpose.

The dev engine never sends malformed frames, so these tests use a small scripted peer built on
the same transport: it is the only way to check that a bad frame from the engine costs one
warning, not the worker.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio._protocol._codec import decode, encode
from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RegistrationRejected,
    WorkerRegistered,
)
from iii_trio._transport import TransportClosed, UpgradeRequest, WebSocket, serve_websockets

Script = Callable[[WebSocket, Any], Awaitable[None]]


async def _serve_scripted_engine(
    on_message: Callable[[WebSocket, Any], bool | None],
    *,
    greeting: list[bytes] | None = None,
    requests: list[UpgradeRequest] | None = None,
    task_status: trio.TaskStatus[str],
) -> None:
    async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
        if requests is not None:
            requests.append(request)
        for frame in greeting or []:
            websocket.send_text(frame)
        websocket.send_text(encode(WorkerRegistered(worker_id=str(uuid.uuid4()))))
        await websocket.flush()
        while True:
            try:
                frames = await websocket.receive_payloads()
            except TransportClosed:
                return
            for frame in frames:
                if on_message(websocket, decode(frame)):
                    await websocket.abort()  # hang up without a closing handshake
                    return
            await websocket.flush()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(
                serve_websockets, handler, lambda request: None, host="127.0.0.1", port=0
            )
        )
        task_status.started(f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}")


def _answer_register_then(
    respond: Callable[[WebSocket, InvokeFunction], bool | None],
) -> Callable[[WebSocket, Any], bool | None]:
    def on_message(websocket: WebSocket, message: Any) -> bool | None:
        if isinstance(message, InvokeFunction) and message.invocation_id is not None:
            if message.function_id != "engine::workers::register":
                return respond(websocket, message)
            websocket.send_text(
                encode(
                    InvocationResult(message.invocation_id, message.function_id, {"success": True})
                )
            )
        return None

    return on_message


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
        functools.partial(_serve_scripted_engine, _answer_register_then(respond), greeting=greeting)
    )
    caplog.set_level(logging.WARNING, logger="iii_trio")
    async with iii_trio.open_worker(url, name="tolerant") as worker:
        assert await worker.trigger("x::y", {}) == "fine"
        assert await worker.trigger("x::y", {}) == "fine"
    dropped = [r for r in caplog.records if "dropping a frame" in r.getMessage()]
    assert len(dropped) == 6  # three bad frames per call; the unknown type is only debug
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

    url = await nursery.start(_serve_scripted_engine, _answer_register_then(respond))
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

    url = await nursery.start(_serve_scripted_engine, on_message)
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

    url = await nursery.start(_serve_scripted_engine, on_message)
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

    url = await nursery.start(_serve_scripted_engine, _answer_register_then(respond))
    backoff = iii_trio.Backoff(initial=0.01, jitter=0)
    async with iii_trio.open_worker(url, name="dropped", backoff=backoff) as worker:
        first_id = worker.worker_id
        with pytest.raises(iii_trio.ConnectionLost):
            await worker.trigger("x::y", {})
        await worker.wait_connected()
        assert await worker.trigger("x::y", {}) == "back"
        assert worker.worker_id != first_id


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
            for frame in await websocket.receive_payloads():
                message = decode(frame)
                if isinstance(message, InvokeFunction) and message.invocation_id is not None:
                    result = InvocationResult(message.invocation_id, message.function_id, {})
                    websocket.send_text(encode(result))
                    announced = True
            await websocket.flush()
        await trio.sleep_forever()

    listeners = await nursery.start(
        functools.partial(serve_websockets, handler, lambda request: None, host="127.0.0.1", port=0)
    )
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    async with iii_trio.open_worker(url, name="quiet") as worker:
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
            assert 60 < connected_at[1] - connected_at[0] <= 81
            assert worker.worker_id != first_id


async def test_handshake_headers_and_token_reach_the_engine(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[UpgradeRequest] = []
    url = await nursery.start(
        functools.partial(
            _serve_scripted_engine, _answer_register_then(lambda ws, m: None), requests=requests
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
        for frame in await websocket.receive_payloads():
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
