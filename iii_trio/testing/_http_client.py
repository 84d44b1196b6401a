"""The dev engine's HTTP client: sends the requests of HTTP-invoked functions.

The only module of the package that imports httpx. The core decides what to send and what the
answer means (:mod:`._engine._http_functions`); this module sends each
:class:`~._engine.HttpRequest` and reports its :data:`~._engine._http_functions.HttpOutcome`.

Each request runs in a task of the engine's nursery, at most :data:`HTTP_CONCURRENCY` at once;
past :data:`HTTP_BACKLOG` waiting for a turn, a request fails at once instead of queueing
without bound. Its ``timeout`` bounds the whole of it (name resolution, connecting, sending,
reading the body), as the engine's does, and the body read is capped at the protocol's message
limit. Redirects are not followed and proxy settings of the environment are not read: the dev
engine talks to the endpoint directly. Each request has a client of its own, so nothing outlives
it; the TLS settings (the system's trusted certificates) are built once, on the first request.
"""

from __future__ import annotations

import ipaddress
import ssl
import sys
import time
from collections.abc import Callable
from typing import Final, final

# ASYNC127 suggests httpx2; the project depends on httpx, and this module is its one importer.
import httpx  # noqa: ASYNC127
import trio

from .._transport import MAX_MESSAGE_SIZE
from ._engine import HttpRequest
from ._engine._http_functions import (
    DNS_LOOKUP_FAILED,
    HTTP_REQUEST_FAILED,
    HTTP_RESPONSE_FAILED,
    PRIVATE_IP_BLOCKED,
    URL_VALIDATION_FAILED,
    HttpFailure,
    HttpOutcome,
    HttpResponse,
    is_private_address,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["HTTP_BACKLOG", "HTTP_CONCURRENCY", "HttpCaller"]

#: Requests sent at the same time.
HTTP_CONCURRENCY: Final = 64
#: Requests that may wait for one of those places; more fail at once.
HTTP_BACKLOG: Final = 1024
_TIMED_OUT: Final = "operation timed out"


@final
class HttpCaller:
    """Sends :class:`HttpRequest` outputs in tasks of ``nursery`` and hands each outcome to
    ``report(request_id, outcome)``. Cancelling the nursery abandons the requests in flight;
    their outcomes are then never reported."""

    def __init__(self, nursery: trio.Nursery, report: Callable[[str, HttpOutcome], None]) -> None:
        self._nursery = nursery
        self._report = report
        self._limiter = trio.CapacityLimiter(HTTP_CONCURRENCY)
        self._waiting = 0
        self._tls: ssl.SSLContext | None = None
        self._tls_lock = trio.Lock()

    def start(self, request: HttpRequest) -> None:
        """Send ``request`` in a task of its own; never blocks."""
        self._nursery.start_soon(self._run, request, name=f"http {request.request_id}")

    async def _run(self, request: HttpRequest) -> None:
        if self._waiting >= HTTP_BACKLOG:
            outcome: HttpOutcome = HttpFailure(
                HTTP_REQUEST_FAILED,
                f"the dev engine already has {HTTP_BACKLOG} HTTP requests waiting to be sent",
            )
            await trio.lowlevel.checkpoint()
        else:
            self._waiting += 1
            try:
                await self._limiter.acquire()
            finally:
                self._waiting -= 1
            try:
                outcome = await self._send(request)
            finally:
                self._limiter.release()
        self._report(request.request_id, outcome)

    async def _send(self, request: HttpRequest) -> HttpOutcome:
        timestamp = int(time.time())  # Unix seconds for x-iii-Timestamp: the wall clock
        tls = await self._tls_settings()
        progress = _Progress(request.url)
        try:
            with trio.fail_after(request.timeout):
                if request.check_host is not None:
                    await _check_host(request.check_host)
                return await _exchange(request, tls, timestamp, progress)
        except trio.TooSlowError:
            return progress.failure(_TIMED_OUT)
        except _HostRefused as exc:
            return HttpFailure(URL_VALIDATION_FAILED, str(exc))
        except _BodyTooLarge as exc:
            return HttpFailure(HTTP_RESPONSE_FAILED, str(exc))
        except Exception as exc:
            # Network and protocol errors, and a URL or header httpx will not send: what
            # failed is the endpoint's or the registration's, never the engine's, so every
            # one is the call's outcome.
            return progress.failure(_error_text(exc))

    async def _tls_settings(self) -> ssl.SSLContext:
        # Loading the trusted certificates takes tens of milliseconds: off the event loop, once.
        async with self._tls_lock:
            if self._tls is None:
                self._tls = await trio.to_thread.run_sync(ssl.create_default_context)
        return self._tls


class _BodyTooLarge(Exception):
    pass


class _Progress:
    """How far a request got, which decides the code of its failure (the engine's)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reading_body = False

    def failure(self, text: str) -> HttpFailure:
        if self.reading_body:
            return HttpFailure(HTTP_RESPONSE_FAILED, f"error reading response body: {text}")
        return HttpFailure(
            HTTP_REQUEST_FAILED, f"error sending request for url ({self.url}): {text}"
        )


async def _exchange(
    request: HttpRequest, tls: ssl.SSLContext, timestamp: int, progress: _Progress
) -> HttpResponse:
    async with (
        httpx.AsyncClient(
            verify=tls,
            trust_env=False,
            timeout=None,  # the caller's cancel scope is the timeout
            follow_redirects=False,
        ) as client,
        client.stream(
            request.method,
            request.url,
            headers=request.headers_at(timestamp),
            content=request.body,
        ) as response,
    ):
        progress.reading_body = True
        body = await _read_body(response)
    return HttpResponse(response.status_code, body)


async def _read_body(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_MESSAGE_SIZE:
            raise _BodyTooLarge(
                f"the response body is larger than the dev engine's limit of "
                f"{MAX_MESSAGE_SIZE} bytes"
            )
    return bytes(body)


class _HostRefused(Exception):
    """The URL's host breaks ``block_private_ips``; the message is the engine's."""


async def _check_host(host: str) -> None:
    """The engine's ``block_private_ips`` rule for a host name: resolve it and refuse it if
    any of its addresses is private.

    Raises:
        _HostRefused: the name does not resolve, or resolves to a private address.
    """
    try:
        found = await trio.socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise _HostRefused(DNS_LOOKUP_FAILED) from exc
    for *_, address in found:
        text = str(address[0]).partition("%")[0]  # an IPv6 scope is not part of the address
        if is_private_address(ipaddress.ip_address(text)):
            raise _HostRefused(PRIVATE_IP_BLOCKED)


def _error_text(exc: BaseException) -> str:
    """``exc`` and its causes, joined by ``": "`` as the engine joins an error's sources.

    A group's own text only counts its members, so the members stand in for it; a text that
    repeats the one before (a wrapper of the same error) is left out.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            members = current.exceptions
            if len(members) != 1:
                parts.append("; ".join(_error_text(member) for member in members))
                break
            current = members[0]
            continue
        text = str(current) or type(current).__name__
        if not parts or not parts[-1].startswith(text):
            parts.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(parts)
