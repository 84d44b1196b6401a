"""A small HTTP/1.1 server on loopback, for the endpoints of HTTP-invoked functions in tests.

Served with h11 over trio sockets (start it with ``await nursery.start(serve_http_endpoint,
routes)``). Each path answers what its route returns; every request is recorded, headers as
they arrived, so tests can check what the engine sent.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping

import attrs
import h11
import trio


@attrs.frozen
class Received:
    method: str
    path: str
    #: Header names lowercased, in arrival order.
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name``; None when absent. Fails if it came more than once."""
        values = self.headers_named(name)
        assert len(values) <= 1, values
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


@attrs.frozen
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"


Route = Callable[[Received], Awaitable[Reply]]


@attrs.define
class HttpEndpoint:
    port: int
    received: list[Received] = attrs.Factory(list)
    #: Set each time a request has arrived (replaced by a fresh event after it fires).
    arrived: trio.Event = attrs.Factory(trio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def reply(status: int, body: bytes = b"", content_type: str | None = "application/json") -> Route:
    """A route that always answers the same."""

    async def route(_: Received) -> Reply:
        await trio.lowlevel.checkpoint()
        return Reply(status, body, content_type)

    return route


async def never_answer(_: Received) -> Reply:
    await trio.sleep_forever()


async def serve_http_endpoint(
    routes: Mapping[str, Route], *, task_status: trio.TaskStatus[HttpEndpoint]
) -> None:
    """Serve ``routes`` (path to route; 404 elsewhere) on a free loopback port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    endpoint = HttpEndpoint(listeners[0].socket.getsockname()[1])
    handler = functools.partial(_serve_connection, routes, endpoint)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(endpoint)


async def _serve_connection(
    routes: Mapping[str, Route], endpoint: HttpEndpoint, stream: trio.SocketStream
) -> None:
    connection = h11.Connection(h11.SERVER)
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                request = await _receive_request(connection, stream)
                if request is None:
                    return
                endpoint.received.append(request)
                endpoint.arrived.set()
                endpoint.arrived = trio.Event()
                route = routes.get(request.path)
                answer = await route(request) if route is not None else Reply(404, b"", None)
                headers = [("content-length", str(len(answer.body)))]
                if answer.content_type is not None:
                    headers.append(("content-type", answer.content_type))
                for event in (
                    h11.Response(status_code=answer.status, headers=headers),
                    h11.Data(data=answer.body),
                    h11.EndOfMessage(),
                ):
                    data = connection.send(event)
                    if data:
                        await stream.send_all(data)
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()


async def _receive_request(
    connection: h11.Connection, stream: trio.SocketStream
) -> Received | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some())
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return Received(
                method=head.method.decode(),
                path=head.target.decode(),
                headers=tuple(
                    (name.decode().lower(), value.decode("latin-1"))
                    for name, value in head.headers.raw_items()
                ),
                body=bytes(body),
            )
        else:  # ConnectionClosed, or PAUSED between cycles
            return None
