"""A scripted engine: a peer that speaks the protocol only as far as each test tells it to.

The dev engine never misbehaves, so tests of a worker facing a broken, hostile or refusing
engine use this one. It is served on loopback (:func:`serve_scripted_engine`, started with
``nursery.start``) or over in-memory streams (:func:`scripted_engine_opener`, for
``open_worker(_open_stream=...)`` on trio's mock clock). Each connection sends
``workerregistered`` (after an optional greeting), then hands every decoded message to the
test's ``on_message``, which answers through the WebSocket and returns True to hang up.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
import trio.testing

from iii_trio._protocol._codec import decode, encode
from iii_trio._protocol._messages import InvocationResult, InvokeFunction, WorkerRegistered
from iii_trio._transport import (
    TransportClosed,
    UpgradeRequest,
    WebSocket,
    serve_websocket_stream,
    serve_websockets,
)

OnMessage = Callable[[WebSocket, Any], "bool | None"]
Opener = Callable[[str, int], Awaitable[trio.abc.Stream]]


def scripted_handler(
    on_message: OnMessage,
    *,
    greeting: Sequence[bytes] = (),
    requests: list[UpgradeRequest] | None = None,
    registered: bool = True,
) -> Callable[[WebSocket, UpgradeRequest], Awaitable[None]]:
    async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
        if requests is not None:
            requests.append(request)
        for frame in greeting:
            websocket.send_text(frame)
        if registered:
            websocket.send_text(
                encode(WorkerRegistered(worker_id=str(uuid.uuid4()), reattach_token="rt"))
            )
        await websocket.flush()
        while True:
            try:
                frames = [payload for _, payload in await websocket.receive_messages()]
            except (TransportClosed, trio.ClosedResourceError):
                return
            for frame in frames:
                if on_message(websocket, decode(frame)):
                    await websocket.abort()  # hang up without a closing handshake
                    return
            await websocket.flush()

    return handler


async def serve_scripted_engine(
    on_message: OnMessage,
    *,
    greeting: Sequence[bytes] = (),
    requests: list[UpgradeRequest] | None = None,
    task_status: trio.TaskStatus[str],
) -> None:
    """Serve on a loopback port; ``task_status.started`` gets its URL."""
    handler = scripted_handler(on_message, greeting=greeting, requests=requests)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(
                serve_websockets, handler, lambda request: None, host="127.0.0.1", port=0
            )
        )
        task_status.started(f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}")


def memory_opener(
    nursery: trio.Nursery, serve: Callable[[trio.abc.Stream], Awaitable[None]]
) -> tuple[Opener, list[trio.abc.Stream]]:
    """An ``open_stream`` hook: each connection is a memory stream pair whose far end ``serve``
    runs in ``nursery``. Also returns the list of far ends, in connection order."""
    far_ends: list[trio.abc.Stream] = []

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        far_ends.append(server)
        nursery.start_soon(serve, server)
        await trio.lowlevel.checkpoint()
        return client

    return open_stream, far_ends


def scripted_engine_opener(
    nursery: trio.Nursery,
    on_message: OnMessage,
    *,
    greeting: Sequence[bytes] = (),
    requests: list[UpgradeRequest] | None = None,
) -> Opener:
    """The scripted engine over in-memory streams (no socket: fit for the mock clock)."""
    handler = scripted_handler(on_message, greeting=greeting, requests=requests)
    opener, _ = memory_opener(
        nursery,
        lambda stream: serve_websocket_stream(stream, handler, lambda request: None),
    )
    return opener


def answer_register_then(
    respond: Callable[[WebSocket, InvokeFunction], bool | None],
) -> OnMessage:
    """Answer ``engine::workers::register`` calls; hand every other call to ``respond``."""

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


def answer_with(value: Any) -> OnMessage:
    """Answer every call with ``value``."""

    def respond(websocket: WebSocket, message: InvokeFunction) -> None:
        assert message.invocation_id is not None
        websocket.send_text(encode(InvocationResult(message.invocation_id, "x", value)))

    return answer_register_then(respond)
