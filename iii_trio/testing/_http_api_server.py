"""The dev engine's REST API port (``iii-http``): HTTP/1.1 over trio sockets with h11, around
the sans-io :mod:`._engine._http_api` core, which routes and decides every response.

Task tree (under the dev engine's nursery)::

    serve_http_api                    trio.serve_tcp: one task per connection
    └── _HttpApiServer.connection     requests in turn (keep-alive), each:
        ├── (main)                    route, begin, then wait for the outcome and the
        │                             ``response`` channel's frames (default_timeout)
        ├── body feeder               the request body into ``request_body``, then EOF
        └── frame reader              the ``response`` channel's frames to the main task

The engine itself is one end of each request's two channels: the shell attaches it in
process (:meth:`HttpApiBridge.attach_in_process`), so its frames go through the same bounded
queue as a worker's, and a handler attaches the other end over its WebSocket as usual.
"""

from __future__ import annotations

import contextlib
import http
import logging
import sys
from collections.abc import Callable, Sequence
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

__all__ = ["HttpApiBridge", "serve_http_api"]

logger = logging.getLogger("iii_trio.dev_engine")

_READ_SIZE: Final = 65536
#: Seconds a client has to send a request's head (hyper's default header read timeout).
HEADER_READ_TIMEOUT: Final = 30.0

Frame = tuple[bool, bytes | bytearray | memoryview]


class HttpApiBridge(Protocol):
    """What the REST API needs of the rest of the dev engine's shell."""

    def begin_http(
        self,
        matched: RouteMatch,
        facts: RequestFacts,
        body: JSON,
        on_outcome: Callable[[HttpReply | None], None],
    ) -> HttpRequestChannels:
        """Start a routed request in the core; its outcome goes to ``on_outcome``."""
        ...

    def end_http(self, channels: HttpRequestChannels) -> None:
        """The request is answered: release its channel ends and forget its outcome."""
        ...


@attrs.define(eq=False)
class HttpRequestChannels:
    """The engine's ends of one request's channels, attached in process."""

    request_id: str
    #: Frames into ``request_body`` (the engine writes the request body).
    body: trio.MemorySendChannel[Frame]
    #: Frames out of ``response`` (the engine reads the streamed response).
    response: trio.MemoryReceiveChannel[Frame]
    request_body_id: str
    response_id: str


@attrs.frozen
class _Outcome:
    reply: HttpReply | None


@attrs.frozen
class _Closed:
    """The handler closed its ``response`` writer."""


_Event = _Outcome | Frame | _Closed


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
        self._timeout = api.settings.default_timeout_ms / 1000
        self._limiter = trio.CapacityLimiter(api.settings.concurrency_request_limit)

    async def connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Event | None = None
                # A client that never finishes its request head costs its own connection only,
                # and only for so long (hyper's header read timeout).
                with trio.move_on_after(HEADER_READ_TIMEOUT):
                    request = await _next_event(connection, stream)
                if not isinstance(request, h11.Request):
                    break
                async with self._limiter:
                    await self._request(connection, stream, request)
                if connection.our_state is not h11.DONE:
                    break
                # Whatever the handler left of the body is read (and dropped) before the
                # next request can be.
                while connection.their_state is h11.SEND_BODY:
                    if isinstance(await _next_event(connection, stream), h11.ConnectionClosed):
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
        buffered = facts.has_json_body()
        raw = b""
        if buffered:
            raw = await _read_body(connection, stream)
            body = parse_json_body(raw)
        send_events, receive_events = trio.open_memory_channel[_Event](1)

        def on_outcome(reply: HttpReply | None) -> None:
            # The first outcome fits in the channel: the main task reads only after it.
            try:
                send_events.send_nowait(_Outcome(reply))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pending.append(_Outcome(reply))

        pending: list[_Outcome] = []
        channels = self._bridge.begin_http(matched, facts, body, on_outcome)
        try:
            async with trio.open_nursery() as nursery:
                if buffered:
                    nursery.start_soon(_feed_buffered, channels.body, raw)
                else:
                    nursery.start_soon(_feed_streamed, connection, stream, channels.body)
                nursery.start_soon(_read_frames, channels.response, send_events.clone())
                await self._respond(connection, stream, method, cors, receive_events, pending)
                nursery.cancel_scope.cancel()
        finally:
            self._bridge.end_http(channels)

    async def _respond(
        self,
        connection: h11.Connection,
        stream: trio.SocketStream,
        method: str,
        cors: Sequence[tuple[str, str]],
        events: trio.MemoryReceiveChannel[_Event],
        pending: list[_Outcome],
    ) -> None:
        status = 200
        headers: list[tuple[str, str]] = []
        first_chunk: bytes | None = None
        # Until the response's head is known; sending it is not bounded by the timeout.
        decided: tuple[HttpReply, bool] = (TIMED_OUT, False)
        with trio.move_on_after(self._timeout):
            while True:
                if pending:
                    event: _Event = pending.pop()
                    await trio.lowlevel.checkpoint()
                else:
                    event = await events.receive()
                if isinstance(event, _Outcome):
                    if event.reply is not None:
                        decided = (event.reply, False)
                        break
                elif isinstance(event, _Closed):
                    # No data, so no content-length: an empty chunked body, as the engine.
                    decided = (HttpReply(status, tuple(headers)), True)
                    break
                else:
                    is_text, payload = event
                    if is_text:
                        new_status, new_headers = control_frame(bytes(payload))
                        if new_status is not None:
                            status = new_status
                        headers.extend(new_headers)
                    else:
                        first_chunk = bytes(payload)
                        break
        if first_chunk is None:
            reply, streamed = decided
            await _send_reply(connection, stream, reply, method, cors, stream_body=streamed)
            return
        # Streaming: headers now, then every binary frame until the writer closes.
        await _send(connection, stream, _response_head(status, headers, cors, stream=True))
        await _send(connection, stream, h11.Data(data=first_chunk))
        while True:
            event = await events.receive()
            if isinstance(event, _Closed):
                break
            if isinstance(event, tuple) and not event[0]:
                await _send(connection, stream, h11.Data(data=bytes(event[1])))
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
        reason=http.HTTPStatus(status).phrase.encode("ascii"),
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
    try:
        reason = http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    if stream:
        merged.pop("content-length", None)
    return h11.Response(status_code=status, headers=list(merged.values()), reason=reason)


async def _send_reply(
    connection: h11.Connection,
    stream: trio.SocketStream,
    reply: HttpReply,
    method: str,
    cors: Sequence[tuple[str, str]],
    *,
    stream_body: bool = False,
) -> None:
    headers = list(reply.headers)
    if not stream_body:
        headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
        headers.append(("content-length", str(len(reply.body))))
    await _send(
        connection, stream, _response_head(reply.status, headers, cors if reply.cors else ())
    )
    if reply.body and method != "HEAD" and reply.status not in (204, 304):
        await _send(connection, stream, h11.Data(data=reply.body))
    await _send(connection, stream, h11.EndOfMessage())


async def _send(connection: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
    try:
        data = connection.send(event)
    except h11.LocalProtocolError as exc:
        raise _ClientGone from exc
    if data:
        await stream.send_all(data)
    else:
        await trio.lowlevel.checkpoint()


async def _next_event(connection: h11.Connection, stream: trio.SocketStream) -> h11.Event:
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            raise _ClientGone from exc
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(_READ_SIZE))
            continue
        assert not isinstance(event, type)
        await trio.lowlevel.checkpoint()
        return event


async def _read_body(connection: h11.Connection, stream: trio.SocketStream) -> bytes:
    parts = []
    while True:
        event = await _next_event(connection, stream)
        if isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise _ClientGone


async def _feed_buffered(channel: trio.MemorySendChannel[Frame], raw: bytes) -> None:
    async with channel:
        if raw:
            await channel.send((False, raw))


async def _feed_streamed(
    connection: h11.Connection, stream: trio.SocketStream, channel: trio.MemorySendChannel[Frame]
) -> None:
    async with channel:
        while True:
            event = await _next_event(connection, stream)
            if isinstance(event, h11.Data):
                if event.data:
                    try:
                        await channel.send((False, bytes(event.data)))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
            else:
                return


async def _read_frames(
    channel: trio.MemoryReceiveChannel[Frame], events: trio.MemorySendChannel[_Event]
) -> None:
    async with events:
        async for frame in channel:
            await events.send(frame)
        await events.send(_Closed())
