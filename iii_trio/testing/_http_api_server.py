"""The dev engine's REST API port (``iii-http``): HTTP/1.1 over trio sockets with h11, around
the sans-io :mod:`._engine._http_api` core, which routes and decides every response.

Task tree (under the dev engine's nursery)::

    serve_http_api                    trio.serve_tcp: one task per connection
    └── _HttpApiServer.connection     requests in turn (keep-alive); each is routed, begun in
        │                             the core, fed its body and answered by this task
        └── body feeder               only for a body still arriving: the rest of it into
                                      ``request_body``, then EOF

The engine itself is one end of each request's two channels: the shell attaches it in
process, so its frames go through the same bounded queue as a worker's, and a handler
attaches the other end over its WebSocket as usual. The connection task waits on the
``response`` channel alone: its frames and its writer's close come through it, and when the
core answers instead (a return value, an error, a middleware, the condition, the 504), the
engine's reading end is closed, which wakes the task (:class:`HttpExchange`). A request whose
body has arrived with its head, as most do, costs no task of its own.

Performance (``python -m benchmarks.http_api``): see benchmarks/RESULTS.md. A request used to
run a nursery with a body feeder and a frame forwarder, wait in a deadline scope and write
its response in three sends; the task hand-offs and cancel scopes cost more than the
routing.
"""

from __future__ import annotations

import contextlib
import http
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Final, Protocol

import attrs
import h11
import trio

from .._protocol._messages import JSON
from ._engine._http_api import (
    TIMED_OUT,
    HttpApi,
    HttpReply,
    RequestFacts,
    RouteMatch,
    control_frame,
    cors_headers,
    parse_json_body,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["HttpApiBridge", "HttpExchange", "serve_http_api"]

logger = logging.getLogger("iii_trio.dev_engine")

_READ_SIZE: Final = 65536
#: Seconds a client has to send a request's head (hyper's default header read timeout).
HEADER_READ_TIMEOUT: Final = 30.0
#: The largest request head, in bytes (hyper's default read buffer limit; larger: 431).
MAX_HEAD_SIZE: Final = 8192 + 4096 * 100
#: The most header fields a request may have (hyper's default; more: 431).
MAX_HEADERS: Final = 100
_REASONS: Final = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}

Frame = tuple[bool, bytes | bytearray | memoryview]


@attrs.define(eq=False)
class HttpExchange:
    """One routed request as the shell serves it: the engine's ends of its two channels,
    attached in process, and the core's reply once there is one.

    When the core answers instead of the ``response`` channel, the dev engine sets
    :attr:`reply` and closes :attr:`response`: the connection task, waiting on that channel,
    wakes with :class:`trio.ClosedResourceError`, and the handler's writer, if attached, loses
    its reader, as in the engine.
    """

    request_id: str
    #: Frames into ``request_body`` (the engine writes the request body).
    body: trio.MemorySendChannel[Frame]
    #: Frames out of ``response`` (the engine reads the streamed response).
    response: trio.MemoryReceiveChannel[Frame]
    request_body_id: str
    response_id: str
    reply: HttpReply | None = None


class HttpApiBridge(Protocol):
    """What the REST API needs of the rest of the dev engine's shell."""

    def begin_http(
        self, matched: RouteMatch, facts: RequestFacts, body: JSON, started_at: float
    ) -> HttpExchange:
        """Start a routed request in the core; ``default_timeout`` counts from
        ``started_at``."""
        ...

    def end_http(self, exchange: HttpExchange) -> None:
        """The ``response`` channel decided the response, or the request is given up: the core
        forgets the request and its channels (no effect once it answered)."""
        ...


class _ClientGone(Exception):
    """The client closed its connection or broke the protocol."""


async def serve_http_api(  # noqa: ASYNC128 - serve_tcp calls task_status.started
    api: HttpApi,
    bridge: HttpApiBridge,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST API on ``host:port`` until cancelled."""
    server = _HttpApiServer(api, bridge)
    await trio.serve_tcp(server.connection, port, host=host, task_status=task_status)


class _HttpApiServer:
    def __init__(self, api: HttpApi, bridge: HttpApiBridge) -> None:
        self._api = api
        self._bridge = bridge
        self._limiter = trio.CapacityLimiter(api.settings.concurrency_request_limit)

    async def connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        limiter = self._limiter
        try:
            # A client that never finishes its request head costs its own connection only,
            # and only for so long (hyper's header read timeout): the deadline is set while a
            # head is awaited and lifted while its request is served (one scope for the
            # connection costs less than one per request).
            with trio.CancelScope() as head_timeout:
                while True:
                    head_timeout.deadline = trio.current_time() + HEADER_READ_TIMEOUT
                    request = await _next_event(connection, stream)
                    head_timeout.deadline = math.inf
                    if not isinstance(request, h11.Request):
                        break
                    if len(request.headers) > MAX_HEADERS:
                        too_many = h11.RemoteProtocolError(
                            f"more than {MAX_HEADERS} header fields", error_status_hint=431
                        )
                        await _answer_bad_request(connection, stream, too_many)
                        break
                    try:
                        limiter.acquire_nowait()
                    except trio.WouldBlock:
                        await limiter.acquire()
                    try:
                        await self._request(connection, stream, request)
                    finally:
                        limiter.release()
                    if connection.our_state is not h11.DONE:
                        break
                    if connection.their_state is h11.SEND_BODY:
                        # Whatever the handler left of the body is read (and dropped) before
                        # the next request can be, in the time a head would have.
                        head_timeout.deadline = trio.current_time() + HEADER_READ_TIMEOUT
                        while connection.their_state is h11.SEND_BODY:
                            event = await _next_event(connection, stream)
                            if isinstance(event, h11.ConnectionClosed):
                                break
                    if (connection.our_state, connection.their_state) != (h11.DONE, h11.DONE):
                        break  # MUST_CLOSE: HTTP/1.0, "connection: close", or a broken body
                    connection.start_next_cycle()
        except _ClientGone as gone:
            if isinstance(gone.__cause__, h11.RemoteProtocolError):
                await _answer_bad_request(connection, stream, gone.__cause__)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as failure:
            # A request's tasks fail as a group; a client gone mid-request is routine, and
            # nothing one connection does may stop the engine.
            if not _client_went_away(failure):
                logger.warning("REST API connection failed", exc_info=failure)
        finally:
            await stream.aclose()

    async def _request(
        self, connection: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        started = trio.current_time()
        method = request.method.decode("ascii", "replace").upper()
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        facts = RequestFacts(
            method=method,
            path=path,
            query=query,
            headers=[(name.decode("latin-1").lower(), value) for name, value in request.headers],
        )
        origin = next(
            (value.decode("latin-1") for name, value in facts.headers[::-1] if name == "origin"),
            None,
        )
        cors = cors_headers(self._api.settings.cors, origin, preflight=False)
        if method == "OPTIONS":
            preflight = cors_headers(self._api.settings.cors, origin, preflight=True)
            await _send_reply(connection, stream, self._api.preflight(path), method, preflight)
            return
        matched = self._api.match(method, path)
        if isinstance(matched, HttpReply):
            await _send_reply(connection, stream, matched, method, cors)
            return
        body: JSON = None
        if facts.has_json_body():
            # Read under default_timeout, which counts from here, as the engine's does.
            raw: bytes | None = None
            with trio.move_on_at(started + self._api.timeout):
                raw = await _read_body(connection, stream)
            if raw is None:
                await _send_reply(connection, stream, TIMED_OUT, method, cors)
                return
            body = parse_json_body(raw)
            chunks, complete = ([raw] if raw else []), True
        else:
            chunks, complete = _body_received(connection)
        exchange = self._bridge.begin_http(matched, facts, body, started)
        try:
            chunks = _queue_now(exchange.body, chunks)
            if complete and not chunks:
                exchange.body.close()
                await self._respond(connection, stream, method, cors, exchange)
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        _feed_body, connection, stream, exchange.body, chunks, complete
                    )
                    await self._respond(connection, stream, method, cors, exchange)
                    nursery.cancel_scope.cancel()
        finally:
            exchange.body.close()
            exchange.response.close()
            self._bridge.end_http(exchange)

    async def _respond(
        self,
        connection: h11.Connection,
        stream: trio.SocketStream,
        method: str,
        cors: Sequence[tuple[str, str]],
        exchange: HttpExchange,
    ) -> None:
        """Answer with the core's reply, or with what the ``response`` channel carries: its
        control frames until its first binary frame, then every binary frame until its writer
        closes (engine.md 2.4). Sending is not bounded by ``default_timeout``."""
        status = 200
        headers: list[tuple[str, str]] = []
        response = exchange.response
        try:
            while True:
                is_text, payload = await response.receive()
                if not is_text:
                    break
                new_status, new_headers = control_frame(bytes(payload))
                if new_status is not None:
                    status = new_status
                headers.extend(new_headers)
        except trio.ClosedResourceError:
            # The core answered instead: see HttpExchange.
            assert exchange.reply is not None
            await _send_reply(connection, stream, exchange.reply, method, cors)
            return
        except trio.EndOfChannel:
            self._bridge.end_http(exchange)
            # No data, so no content-length: an empty chunked body, as the engine.
            reply = HttpReply(status, tuple(headers))
            await _send_reply(connection, stream, reply, method, cors, stream_body=True)
            return
        self._bridge.end_http(exchange)
        # Streaming: headers and the first chunk now, then every binary frame until the
        # writer closes, as many at a time as have arrived.
        data = _encode(connection, _response_head(status, headers, cors, stream=True))
        if method == "HEAD":
            # A response to HEAD has no body (hyper drops it): the writer's frames are read
            # and let go, so that it is not held back, until it closes.
            await _write(stream, data)
            async for _ in response:
                pass
            await _send(connection, stream, h11.EndOfMessage())
            return
        data += _encode(connection, h11.Data(data=bytes(payload)))
        await _write(stream, data)
        async for is_text, payload in response:
            data = b"" if is_text else _encode(connection, h11.Data(data=bytes(payload)))
            while True:
                try:
                    is_text, payload = response.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if not is_text:
                    data += _encode(connection, h11.Data(data=bytes(payload)))
            if data:
                await _write(stream, data)
        await _send(connection, stream, h11.EndOfMessage())


def _client_went_away(failure: BaseException) -> bool:
    if isinstance(failure, BaseExceptionGroup):
        return all(_client_went_away(each) for each in failure.exceptions)
    return isinstance(failure, (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError))


async def _answer_bad_request(  # noqa: ASYNC910 - send_all checkpoints or raises
    connection: h11.Connection, stream: trio.SocketStream, error: h11.RemoteProtocolError
) -> None:
    """A request h11 cannot parse gets a bare 400 (431 for a head too large) and the connection
    closes, as hyper answers; a response already under way is just cut."""
    if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        await trio.lowlevel.checkpoint()
        return
    status = error.error_status_hint
    response = h11.Response(
        status_code=status,
        headers=[("content-length", "0"), ("connection", "close")],
        reason=_REASONS.get(status, b""),
    )
    try:
        data = connection.send(response) or b""
        data += connection.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        data = b""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


def _response_head(
    status: int,
    headers: Sequence[tuple[str, str]],
    cors: Sequence[tuple[str, str]],
    *,
    stream: bool = False,
) -> h11.Response:
    merged: dict[str, tuple[str, str]] = {}
    for name, value in headers:
        merged[name.lower()] = (name, value)
    for name, value in cors:
        merged.setdefault(name, (name, value))
    if stream:
        merged.pop("content-length", None)
    return h11.Response(
        status_code=status, headers=list(merged.values()), reason=_REASONS.get(status, b"")
    )


async def _send_reply(
    connection: h11.Connection,
    stream: trio.SocketStream,
    reply: HttpReply,
    method: str,
    cors: Sequence[tuple[str, str]],
    *,
    stream_body: bool = False,
) -> None:
    """Send a whole response, in one write."""
    headers = list(reply.headers)
    if not stream_body:
        headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
        headers.append(("content-length", str(len(reply.body))))
    data = _encode(connection, _response_head(reply.status, headers, cors if reply.cors else ()))
    if reply.body and method != "HEAD" and reply.status not in (204, 304):
        data += _encode(connection, h11.Data(data=reply.body))
    data += _encode(connection, h11.EndOfMessage())
    await _write(stream, data)


def _encode(connection: h11.Connection, event: h11.Event) -> bytes:
    try:
        return connection.send(event) or b""
    except h11.LocalProtocolError as exc:
        raise _ClientGone from exc


async def _send(connection: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
    data = _encode(connection, event)
    if data:
        await _write(stream, data)
    else:
        await trio.lowlevel.checkpoint()


async def _write(stream: trio.SocketStream, data: bytes) -> None:
    """``stream.send_all(data)``, after one non-blocking write that usually takes it all:
    that spares the scheduling round ``send_all`` costs. Every caller has waited for its
    request's head or response already, so the request has its checkpoint."""
    try:
        sent = os.write(stream.socket.fileno(), data)
    except OSError:  # full, or broken: send_all says which
        sent = 0
    if sent < len(data):
        await stream.send_all(data[sent:])
    return  # noqa: ASYNC910 - see the docstring


async def _next_event(connection: h11.Connection, stream: trio.SocketStream) -> h11.Event:
    """The client's next event, reading as much as it takes. A checkpoint either way, but
    never two: after a read, another would cost a scheduling round per request."""
    read = False
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            raise _ClientGone from exc
        if event is not h11.NEED_DATA:
            break
        connection.receive_data(await stream.receive_some(_READ_SIZE))
        read = True
    if not read:
        await trio.lowlevel.checkpoint()
    assert not isinstance(event, type)
    return event  # noqa: ASYNC910 - receive_some checkpointed, or the checkpoint above


async def _read_body(connection: h11.Connection, stream: trio.SocketStream) -> bytes:
    """The whole request body; one that breaks off (the client leaves, or sends a malformed
    chunk) ends there, as the engine's read stops at the first error."""
    parts = []
    while True:
        try:
            event = await _next_event(connection, stream)
        except _ClientGone:
            await trio.lowlevel.checkpoint()  # it may have failed without one
            break
        if not isinstance(event, h11.Data):
            break
        parts.append(bytes(event.data))
    return b"".join(parts)


def _body_received(connection: h11.Connection) -> tuple[list[bytes], bool]:
    """The request body bytes h11 holds already, and whether they are all of it (a body that
    breaks off ends there, as in :func:`_read_body`)."""
    chunks: list[bytes] = []
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            return chunks, True
        if event is h11.NEED_DATA:
            return chunks, False
        if not isinstance(event, h11.Data):
            return chunks, True
        if event.data:
            chunks.append(bytes(event.data))


def _queue_now(channel: trio.MemorySendChannel[Frame], chunks: list[bytes]) -> list[bytes]:
    """Queue as many of ``chunks`` into ``request_body`` as fit now; the others (none when
    nobody can read them any more)."""
    for index, chunk in enumerate(chunks):
        try:
            channel.send_nowait((False, chunk))
        except trio.WouldBlock:
            return chunks[index:]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return []
    return []


async def _feed_body(
    connection: h11.Connection,
    stream: trio.SocketStream,
    channel: trio.MemorySendChannel[Frame],
    chunks: list[bytes],
    complete: bool,
) -> None:
    """Send ``chunks``, then, unless ``complete``, the rest of the body as it arrives, into
    ``request_body``; then EOF. Stops when nobody will read it any more."""
    async with channel:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for chunk in chunks:
                await channel.send((False, chunk))
            while not complete:
                try:
                    event = await _next_event(connection, stream)
                except _ClientGone:
                    break  # a malformed body ends there
                if not isinstance(event, h11.Data):
                    break
                if event.data:
                    await channel.send((False, bytes(event.data)))
