"""WebSocket connections over trio streams, driven by websockets' sans-I/O protocol objects.

This is the only module that imports ``websockets``. Measured on the per-call path (one worker
echoing, 256 calls in flight, 100-byte payloads), driving the sans-I/O protocol straight from trio
streams is 3-9x faster than trio-websocket, whose per-message memory channel and task hand-offs
dominate at these message sizes; writing everything that is ready with a single ``send_all`` is
where most of the gain comes from. The same driver serves the dev engine (see
:func:`serve_websockets`) for the same reason.

Plain data frames skip the protocol object in both directions once the handshake is over: the
reader splits what it receives into frames itself and hands the protocol only the others
(control frames, fragments, anything it would refuse, frames too large to hold back), whole,
at frame boundaries, so that the protocol still answers pings, runs the closing handshake and
fails the connection exactly as before; unmasked/masked text frames of less than 64 KiB are
written without it too. websockets' parser costs about 2 µs per frame, most of a small call's
budget (see the dev engine's module docstring for the measurement).

A :class:`WebSocket` has one reader and any number of senders: senders frame messages
synchronously into the protocol's output buffer (:meth:`WebSocket.send_text`) and one ``flush``
writes everything buffered so far in a single ``send_all``. Control frames the protocol answers by
itself (pongs, the closing handshake) are flushed by the reader.

Errors of trio and websockets are translated here into :class:`TransportClosed` and
:class:`HandshakeFailed`; nothing above this module sees a foreign exception type.
"""

from __future__ import annotations

import logging
import os
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, NoReturn, TypeAlias
from urllib.parse import parse_qs

import attrs
import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import SERVER, Event, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

try:  # websockets' C version, as its own frames use
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "HandshakeFailed",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "Payload",
    "TransportClosed",
    "UpgradeRequest",
    "WebSocket",
    "connect_websocket",
    "serve_websockets",
]

logger = logging.getLogger("iii_trio.transport")


class _ProtocolLogger(logging.LoggerAdapter[logging.Logger]):
    """websockets reports every connection opening and closing at INFO; for an SDK that is
    per-connection noise, so its records are demoted to DEBUG under our own logger name."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)  # type: ignore[arg-type]


_protocol_logger = _ProtocolLogger(logging.getLogger("iii_trio.transport.websocket"))

#: The engine's limits (tungstenite defaults): larger frames or messages end the connection.
MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
MAX_FRAME_SIZE: Final = 16 * 1024 * 1024

_RECEIVE_SIZE: Final = 256 * 1024

#: A received message's bytes, as the parser hands them over (no copy is made).
Payload: TypeAlias = bytes | bytearray | memoryview

#: Frame heads of an unfragmented text and binary frame without reserved bits.
_TEXT_HEAD: Final = 0x81
_BINARY_HEAD: Final = 0x82
_PLAIN_HEADS: Final = (_TEXT_HEAD, _BINARY_HEAD)
_MASK_BIT: Final = 0x80
#: A frame larger than this that has not fully arrived goes to the protocol, which buffers it
#: without copying it over and over.
_HOLD_LIMIT: Final = _RECEIVE_SIZE
#: The handshake bytes kept to find where the frames begin; past this the fast path stays off.
_HANDSHAKE_KEEP: Final = 64 * 1024
#: Masking keys a client takes from the OS at a time.
_MASK_KEYS_FETCHED: Final = 256
_CLOSE_TIMEOUT: Final = 0.5


class TransportClosed(Exception):
    """The WebSocket is closed or broken; ``code``/``reason`` come from the close frame if any."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class HandshakeFailed(Exception):
    """The TCP connection or the WebSocket opening handshake failed.

    ``status`` is the HTTP status when the server answered with something other than 101.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class UpgradeRequest:
    """What a server needs to route an upgrade: the path, query and headers of the request."""

    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    peer_host: str | None


class WebSocket:
    """One open WebSocket connection. Not constructed directly: see :func:`connect_websocket`
    and :func:`serve_websockets`."""

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol | ServerProtocol) -> None:
        self._stream = stream
        self._protocol = protocol
        self._send_lock = trio.Lock()
        self._unsent = b""  # what a non-blocking send_now() could not write
        # Plain TCP only: a TLS stream must encrypt what it writes, so it always takes flush().
        self._fileno = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._fragments: list[Payload] = []
        self._fragment_opcode: Opcode | None = None
        self._closed = False
        self._early_events: list[Event] = []
        #: Called (from the reader) when buffered output could not be sent without blocking; the
        #: owner's writer task must then flush. Without it the reader flushes itself.
        self.on_unsent: Callable[[], None] | None = None
        self._fast = _FastFrames(protocol)
        #: trio time of the last bytes received; keepalive logic reads it.
        self.last_received = trio.current_time()

    @property
    def is_open(self) -> bool:
        return self._protocol.state is State.OPEN and not self._closed

    @property
    def buffered_output(self) -> int:
        """Number of framed-but-unsent chunks; lets senders apply backpressure."""
        return len(self._protocol.writes) + bool(self._unsent)

    # -- sending -------------------------------------------------------------------------------

    def send_text(self, data: bytes) -> None:
        """Frame ``data`` (UTF-8 JSON or text) into the output buffer; :meth:`flush` sends it.

        Raises:
            TransportClosed: the connection is no longer open.
        """
        protocol = self._protocol
        if protocol.state is not State.OPEN:
            raise TransportClosed("websocket is closed")
        if self._fast.frame_text(data):
            return
        if len(data) <= MAX_FRAME_SIZE:
            protocol.send_text(data)
            return
        # Larger messages go out as continuation frames, as the engine's frame limit requires.
        view = memoryview(data)
        self._protocol.send_text(view[:MAX_FRAME_SIZE], fin=False)
        for start in range(MAX_FRAME_SIZE, len(data), MAX_FRAME_SIZE):
            end = start + MAX_FRAME_SIZE
            self._protocol.send_continuation(view[start:end], fin=end >= len(data))

    def send_binary(self, data: bytes) -> None:
        """Frame one binary message into the output buffer."""
        if self._protocol.state is not State.OPEN:
            raise TransportClosed("websocket is closed")
        self._protocol.send_binary(data)

    def send_ping(self, data: bytes = b"") -> None:
        if self._protocol.state is State.OPEN:
            self._protocol.send_ping(data)

    def send_now(self) -> bool:
        """Try to write the buffered output right away, without blocking.

        One non-blocking ``send`` on the socket, as asyncio's transports do before buffering: it
        saves a task switch whenever the kernel takes the data at once, which is nearly always.
        Returns True when nothing is left to send; otherwise the rest waits for :meth:`flush`
        (which must then be called). Never blocks, so a task that must keep reading may use it.
        """
        if self._fileno < 0 or self._send_lock.locked() or self._unsent:
            return False
        chunks = self._protocol.data_to_send()
        if not chunks:
            return True
        data = b"".join(chunks)
        try:
            sent = os.write(self._fileno, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            # Broken: keep the data so flush() reports it the usual way.
            logger.debug("non-blocking send failed: %r", exc)
            sent = 0
        self._unsent = data[sent:]
        return not self._unsent

    async def flush(self) -> None:
        """Write everything buffered so far with one ``send_all``.

        Raises:
            TransportClosed: the peer is gone.
        """
        if not await self.send_buffered():
            raise TransportClosed("connection lost while sending")

    async def send_buffered(self) -> bool:
        """Like :meth:`flush`, but returns False instead of raising when the connection broke."""
        async with self._send_lock:
            chunks = self._protocol.data_to_send()
            if self._unsent:
                chunks.insert(0, self._unsent)
                self._unsent = b""
            if not chunks:
                await trio.lowlevel.checkpoint()
                return True
            try:
                await self._stream.send_all(b"".join(chunks))
                return True
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                logger.debug("send failed: %r", exc)
                self._closed = True
        await trio.lowlevel.checkpoint()
        return False

    # -- receiving -----------------------------------------------------------------------------

    async def receive_messages(self) -> list[tuple[bool, Payload]]:
        """Wait for at least one complete data message and return every message of that read.

        Each item is ``(is_text, payload)``. Fragmented messages are reassembled; pings are
        answered; a close frame is acknowledged.

        Raises:
            TransportClosed: the connection closed (cleanly or not) before a message arrived.
        """
        messages: list[tuple[bool, Payload]] = []
        self._take_messages(messages)
        if messages:
            # Already parsed (frames that came with the handshake): no read needed, but this
            # is still a checkpoint, as every async call must be.
            await trio.lowlevel.checkpoint()
        else:
            while True:
                # A received close frame ends the connection for us at once: waiting for the
                # peer's EOF would keep a server's handler (and its peer, which waits for the
                # server to close first) alive for nothing.
                if (
                    self._protocol.state is State.CLOSED
                    or self._closed
                    or self._protocol.close_rcvd is not None
                ):
                    if self._protocol.writes and not self._send_without_blocking():
                        await self._flush_quietly()  # the reply to a close frame
                    raise self._closed_error()
                await self._receive_into_protocol()
                self._take_messages(messages)
                if messages:
                    break
                if self._protocol.writes and not self._send_without_blocking():
                    # A ping came alone: answer it now, the next data may be minutes away.
                    await self._flush_quietly()
        if self._protocol.writes and not self._send_without_blocking():
            await self._flush_quietly()  # pongs the protocol produced while parsing
        return messages

    def _send_without_blocking(self) -> bool:
        """Send what is buffered (pongs, close replies, other senders' frames) without ever
        blocking the reader: one non-blocking write, the rest handed to the owner's writer.

        A reader that blocked on a full socket would stop reading, and a peer that applies
        backpressure (the engine stops reading a connection it cannot write to) would then wait
        for it forever. Returns False only when there is no writer to hand the rest to.
        """
        if self.send_now():
            return True
        if self.on_unsent is None:
            return False
        self.on_unsent()
        return True

    async def receive_payloads(self) -> list[Payload]:
        """Like :meth:`receive_messages`, ignoring whether a frame was text or binary (the
        engine parses JSON from either)."""
        return [payload for _, payload in await self.receive_messages()]

    def _take_messages(self, messages: list[tuple[bool, Payload]]) -> None:
        # The handshake's Request/Response events come through here too (frames that arrived
        # in the same read as the handshake stay queued behind them); only frames matter.
        events = self._protocol.events_received()
        if self._early_events:
            events = self._early_events + events
            self._early_events = []
        for event in events:
            if isinstance(event, Frame):
                self._collect(event, messages)
        parsed = self._fast.parsed
        if parsed:
            messages.extend(parsed)
            parsed.clear()

    def _collect(self, frame: Frame, messages: list[tuple[bool, Payload]]) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                messages.append((opcode is Opcode.TEXT, frame.data))
            else:
                self._fragment_opcode = opcode
                self._fragments = [frame.data]
        elif opcode is Opcode.CONT and self._fragment_opcode is not None:
            self._fragments.append(frame.data)
            if frame.fin:
                messages.append((self._fragment_opcode is Opcode.TEXT, b"".join(self._fragments)))
                self._fragments = []
                self._fragment_opcode = None

    async def _receive_into_protocol(self) -> None:
        try:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._closed = True
            raise TransportClosed(f"connection lost while receiving: {exc!r}") from None
        self.last_received = trio.current_time()
        if data:
            self._fast.receive_data(data, self._collect)
        else:
            self._fast.receive_eof()
            self._closed = self._closed or not self._protocol.events

    def _closed_error(self) -> TransportClosed:
        received = self._protocol.close_rcvd
        if received is not None:
            return TransportClosed(
                f"websocket closed by peer ({received.code})",
                code=received.code,
                reason=received.reason,
            )
        if self._protocol.parser_exc is not None:
            return TransportClosed(f"websocket protocol error: {self._protocol.parser_exc}")
        return TransportClosed("connection closed without a close frame")

    async def _flush_quietly(self) -> None:
        await self.send_buffered()

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close politely (close frame, brief wait for the reply), then drop the TCP stream.

        Idempotent; always releases the socket, even when cancelled.
        """
        try:
            if self._protocol.state is State.OPEN and not self._closed:
                with trio.move_on_after(_CLOSE_TIMEOUT, shield=True) as scope:
                    self._protocol.send_close(code, reason)
                    await self.flush()
                    while not self._is_closed():
                        await self._receive_into_protocol()
                        self._protocol.events_received()
                if scope.cancelled_caught:
                    logger.debug("peer did not answer the close frame in time")
        except TransportClosed:
            pass
        finally:
            self._closed = True
            await trio.aclose_forcefully(self._stream)

    def _is_closed(self) -> bool:
        return self._protocol.state is State.CLOSED

    async def abort(self) -> None:
        """Drop the TCP stream without a closing handshake (what the engine does at shutdown)."""
        self._closed = True
        await trio.aclose_forcefully(self._stream)


class _FastFrames:
    """The fast path for plain data frames, in front of one protocol object.

    Reading: until the handshake is over every byte goes to the protocol, and a copy is kept.
    Then, if the bytes that came after the handshake ended on a frame boundary (nearly always:
    usually there are none), :meth:`receive_data` splits what arrives into frames. An
    unfragmented text or binary frame without reserved bits, masked as the protocol requires
    and within its size limit, is unmasked here and queued in :attr:`parsed`; any other frame
    is fed to the protocol whole (or, if it has not fully arrived, as far as it goes, the rest
    following as it comes), so the protocol always resumes at a frame boundary, and what it
    makes of the frame goes to :attr:`parsed` in order. Once the protocol is no longer open
    everything goes to it again. With websockets' debug logging on, the fast path stays off,
    so that every frame is still logged.
    """

    def __init__(self, protocol: ClientProtocol | ServerProtocol) -> None:
        self._protocol = protocol
        self._mask = _MASK_BIT if protocol.side is SERVER else 0
        self._enabled = not protocol.debug
        #: Bytes received while the handshake ran, until the fast path is decided on.
        self._handshake: bytearray | None = bytearray() if self._enabled else None
        self._reading = False
        #: The start of a frame that has not fully arrived (grown in place as more comes).
        self._held = bytearray()
        #: Bytes the protocol still needs to finish the frame it was given the start of.
        self._owed = 0
        #: Messages received, in order, as ``(is_text, payload)``.
        self.parsed: list[tuple[bool, Payload]] = []
        # A client's masking keys, four bytes each from the OS's random source (as websockets
        # takes them), fetched many at a time: one system call per key cost ~0.3 µs a frame.
        self._keys = b""
        self._next_key = 0

    # -- receiving -----------------------------------------------------------------------------

    def receive_data(
        self,
        data: bytes | bytearray,
        collect: Callable[[Frame, list[tuple[bool, Payload]]], None],
    ) -> None:
        """Take bytes received from the network."""
        if not self._reading and (self._handshake is None or not self._start_reading()):
            self._protocol.receive_data(data)
            if self._handshake is not None:
                self._keep_handshake(data)
            return
        protocol = self._protocol
        if self._owed:
            taken = min(self._owed, len(data))
            self._owed -= taken
            self._to_protocol(data[:taken] if taken < len(data) else data, collect)
            data = data[taken:]
            if not data:
                return
            if not self._reading:
                self._to_protocol(data, collect)
                return
        held = self._held
        if held:
            held += data
            buffer: bytes | bytearray = held
        else:
            buffer = data
        end = len(buffer)
        limit = self._size_limit()
        parsed = self.parsed
        position = 0
        while end - position >= 2:
            head, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            start = position + 2
            if length == 126:
                start += 2
                if start > end:
                    break
                (length,) = struct.unpack_from("!H", buffer, position + 2)
            elif length == 127:
                start += 8
                if start > end:
                    break
                (length,) = struct.unpack_from("!Q", buffer, position + 2)
            if second & _MASK_BIT:
                start += 4
                if start > end:
                    break
            stop = start + length
            if (
                head in _PLAIN_HEADS
                and second & _MASK_BIT == self._mask
                and length <= limit
                and protocol.current_size is None
            ):
                if stop <= end:
                    payload = buffer[start:stop]
                    if self._mask:
                        payload = apply_mask(payload, buffer[start - 4 : start])
                    parsed.append((head == _TEXT_HEAD, payload))
                    position = stop
                    continue
                if length <= _HOLD_LIMIT:
                    break  # the rest is on its way
            # Not a frame for the fast path, or a large one not all here: the protocol's.
            taken = min(stop, end)
            self._owed = stop - taken
            self._to_protocol(buffer[position:taken], collect)
            position = taken
            if not self._reading:
                if position < end:
                    self._to_protocol(buffer[position:], collect)
                position = end
                break
        if buffer is held:
            del held[:position]
        elif position < end:
            held += memoryview(buffer)[position:]

    def receive_eof(self) -> None:
        """The peer closed its side: the protocol decides what that means."""
        if self._held:
            # An unfinished frame: let the protocol see it, so that it reports the same error.
            self._protocol.receive_data(bytes(self._held))
            self._held.clear()
        self._reading = False
        self._protocol.receive_eof()

    def _start_reading(self) -> bool:
        protocol = self._protocol
        handshake = self._handshake
        assert handshake is not None
        if protocol.state is State.CONNECTING:
            return False
        self._handshake = None
        if not _parsing_frames(protocol) or protocol.extensions:
            return False
        # What came after the handshake has been parsed already: the fast path takes over at
        # the end of the frame the protocol is in, if the bytes so far tell where that is.
        head_end = handshake.find(b"\r\n\r\n")
        owed = _bytes_to_frame_end(handshake, head_end + 4) if head_end >= 0 else -1
        if owed < 0:
            return False
        self._owed = owed
        self._reading = True
        return True

    def _keep_handshake(self, data: bytes | bytearray) -> None:
        handshake = self._handshake
        assert handshake is not None
        if len(handshake) + len(data) > _HANDSHAKE_KEEP:
            self._handshake = None
        else:
            handshake += data

    def _to_protocol(
        self,
        data: bytes | bytearray,
        collect: Callable[[Frame, list[tuple[bool, Payload]]], None],
    ) -> None:
        protocol = self._protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                collect(event, self.parsed)
        if not _parsing_frames(protocol):
            self._reading = False

    def _size_limit(self) -> int:
        limits = [
            limit
            for limit in (self._protocol.max_message_size, self._protocol.max_fragment_size)
            if limit is not None
        ]
        return min(limits) if limits else MAX_MESSAGE_SIZE

    # -- sending -------------------------------------------------------------------------------

    def frame_text(self, data: bytes) -> bool:
        """Frame a text message of less than 64 KiB into the protocol's output; False (and
        nothing done) when the protocol must do it."""
        length = len(data)
        protocol = self._protocol
        if (
            length >= 65536
            or not self._enabled
            or protocol.extensions
            or protocol.expect_continuation_frame
        ):
            return False
        if self._mask:  # a server's frames are not masked
            if length < 126:
                protocol.writes.append(bytes((_TEXT_HEAD, length)) + data)
            else:
                protocol.writes.append(struct.pack("!BBH", _TEXT_HEAD, 126, length) + data)
            return True
        key = self._mask_key()
        if length < 126:
            head = bytes((_TEXT_HEAD, _MASK_BIT | length))
        else:
            head = struct.pack("!BBH", _TEXT_HEAD, _MASK_BIT | 126, length)
        protocol.writes.append(head + key + apply_mask(data, key))
        return True

    def _mask_key(self) -> bytes:
        start = self._next_key
        if start == len(self._keys):
            self._keys = os.urandom(_MASK_KEYS_FETCHED * 4)
            start = 0
        self._next_key = start + 4
        return self._keys[start : start + 4]


def _parsing_frames(protocol: ClientProtocol | ServerProtocol) -> bool:
    """Whether the protocol is open and still parses frames (it discards bytes once it failed
    or received a close frame, which can happen before the handshake is over)."""
    return (
        protocol.state is State.OPEN and protocol.parser_exc is None and protocol.close_rcvd is None
    )


def _bytes_to_frame_end(data: bytearray, position: int) -> int:
    """How many more bytes the WebSocket frames in ``data[position:]`` need to end on a frame
    boundary: 0 if they already do, -1 if the last one is cut within its head."""
    end = len(data)
    while position < end:
        if end - position < 2:
            return -1
        second = data[position + 1]
        length = second & 0x7F
        start = position + 2
        if length == 126:
            start += 2
            if start > end:
                return -1
            (length,) = struct.unpack_from("!H", data, position + 2)
        elif length == 127:
            start += 8
            if start > end:
                return -1
            (length,) = struct.unpack_from("!Q", data, position + 2)
        if second & _MASK_BIT:
            start += 4
        position = start + length
    return position - end


async def connect_websocket(
    url: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> WebSocket:
    """Open a TCP (or TLS for ``wss://``) connection and perform the client handshake.

    No subprotocol is requested, as the engine requires.

    Raises:
        HandshakeFailed: the host is unreachable or the server refused the upgrade.
        ValueError: ``url`` is not a ws:// or wss:// URL.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(f"not a websocket URL: {url!r} ({exc})") from None
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(uri.host, uri.port)
    except OSError as exc:
        raise HandshakeFailed(f"cannot connect to {uri.host}:{uri.port}: {exc}") from None
    if uri.secure:
        stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=uri.host)
    protocol = ClientProtocol(
        uri, max_size=(max_message_size, MAX_FRAME_SIZE), logger=_protocol_logger
    )
    websocket = WebSocket(stream, protocol)
    opened = False
    try:
        request = protocol.connect()
        for name, value in headers:
            request.headers[name] = value
        protocol.send_request(request)
        await websocket.flush()
        while protocol.state is State.CONNECTING:
            await websocket._receive_into_protocol()
        if protocol.handshake_exc is not None:
            raise HandshakeFailed(
                f"websocket handshake with {url} failed: {protocol.handshake_exc}",
                status=_status_of(protocol.handshake_exc),
            )
        if protocol.state is not State.OPEN:
            raise HandshakeFailed(f"{url} closed the connection during the handshake")
        opened = True
    except TransportClosed as exc:
        raise HandshakeFailed(f"{url} closed the connection during the handshake: {exc}") from None
    finally:
        if not opened:
            await trio.aclose_forcefully(stream)
    return websocket


def _status_of(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


#: What a route decides for an upgrade request: ``None`` to accept, or ``(status, body)``.
Rejection = tuple[int, str] | None
WebSocketHandler = Callable[[WebSocket, UpgradeRequest], Awaitable[None]]


async def serve_websockets(
    handler: WebSocketHandler,
    route: Callable[[UpgradeRequest], Rejection],
    *,
    host: str,
    port: int,
    handshake_timeout: float = 10.0,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Accept WebSocket upgrades on ``host:port`` and run ``handler`` for each accepted one.

    ``route`` sees each upgrade request first and may refuse it with an HTTP status and body.
    Requests must finish their headers within ``handshake_timeout`` seconds. Starts with
    ``nursery.start``, which returns the listeners (so port 0 tells its real port).
    """

    async def handle_stream(stream: trio.SocketStream) -> None:
        websocket = None
        try:
            with trio.move_on_after(handshake_timeout):
                websocket, request = await _accept(stream, route)
            if websocket is None:
                return
            await handler(websocket, request)
        except TransportClosed:
            pass
        finally:
            if websocket is not None:
                await websocket.aclose()
            else:
                await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners)
    await trio.serve_listeners(handle_stream, listeners)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


async def _accept(
    stream: trio.SocketStream, route: Callable[[UpgradeRequest], Rejection]
) -> tuple[WebSocket | None, UpgradeRequest]:
    protocol = ServerProtocol(max_size=(MAX_MESSAGE_SIZE, MAX_FRAME_SIZE), logger=_protocol_logger)
    websocket = WebSocket(stream, protocol)
    request: Request | None = None
    while request is None:
        await websocket._receive_into_protocol()
        for event in protocol.events_received():
            if isinstance(event, Request):
                request = event
            else:  # frames a client sent right behind its request
                websocket._early_events.append(event)
        if request is None and (protocol.handshake_exc is not None or websocket._closed):
            # Not an upgrade request at all: answer like the engine (400) and give up.
            protocol.send_response(protocol.reject(400, "Bad Request\n"))
            await websocket._flush_quietly()
            return None, UpgradeRequest("", {}, {}, None)
    path, _, query = request.path.partition("?")
    try:
        peer = stream.socket.getpeername()[0]
    except OSError:  # pragma: no cover - the peer left in between
        peer = None
    upgrade = UpgradeRequest(
        path=path,
        query=parse_qs(query, keep_blank_values=True),
        headers=_headers_dict(request.headers),
        peer_host=peer if isinstance(peer, str) else None,
    )
    rejection = route(upgrade)
    response = protocol.accept(request) if rejection is None else protocol.reject(*rejection)
    protocol.send_response(response)
    await websocket._flush_quietly()
    if rejection is not None or protocol.state is not State.OPEN:
        return None, upgrade
    return websocket, upgrade


def _headers_dict(headers: Headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.raw_items()}
