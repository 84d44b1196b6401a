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
budget. Whichever path a text message takes, it must be valid UTF-8: the sans-I/O protocol
leaves that check to its I/O layer, which is this one (an invalid one fails the connection with
1007).

Ownership. A :class:`WebSocket` has one reader (the task calling
:meth:`WebSocket.receive_messages`) and one :class:`FrameWriter`, which owns everything about the
output: the frames framed so far, the bytes the kernel did not take, whether to write right now
or wake the writer task, the writer task's wake-up and a high-water mark for producers. Any task
may frame a message (synchronously, :meth:`WebSocket.send_text`) and then ask the writer to get
it out (:meth:`FrameWriter.write_soon`). After :meth:`WebSocket.aclose` or
:meth:`WebSocket.abort` every send raises :class:`trio.ClosedResourceError`; the socket's file
descriptor number is never kept, so a closed WebSocket cannot write into a socket that reused it.

Closing follows RFC 6455 as websockets' protocol decides it: when it has sent a close frame
(because we close, because the peer did, or because the peer broke the protocol) the reader
reports the connection as closed at once, and :meth:`WebSocket.aclose` finishes the closing
handshake: it writes what is left, shuts the write side when websockets says so, waits for the
peer to close TCP and closes the stream, all within ``close_timeout`` seconds.

Errors of trio and websockets are translated here into :class:`TransportClosed` and
:class:`HandshakeFailed`; nothing above this module sees a foreign exception type. Nothing here
logs a header value, a URL's query or user info, or a frame's content: they can carry secrets.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, NoReturn, TypeAlias
from urllib.parse import parse_qs, urlsplit, urlunsplit

import attrs
import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SERVER, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

try:  # websockets' C version, as its own frames use
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "CLOSE_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "FrameWriter",
    "HandshakeFailed",
    "Payload",
    "StreamOpener",
    "TransportClosed",
    "UpgradeRequest",
    "WebSocket",
    "connect_websocket",
    "is_utf8",
    "redact_url",
    "serve_websocket_stream",
    "serve_websockets",
]

logger = logging.getLogger("iii_trio.transport")


class _ProtocolLogger(logging.LoggerAdapter[logging.Logger]):
    """The logger handed to websockets' protocol objects.

    websockets logs every header and every frame (with its content) when its logger is enabled
    for DEBUG, and those carry tokens and reattach secrets; so it is told DEBUG is always off.
    What it still reports (connections opening and closing, at INFO) is per-connection noise for
    an SDK, so it is demoted to DEBUG under our own name.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(logging.DEBUG)

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.log(logging.DEBUG, msg, *args, **kwargs)  # type: ignore[arg-type]


_protocol_logger = _ProtocolLogger(logging.getLogger("iii_trio.transport.websocket"))

#: The engine's limits (tungstenite defaults): larger frames or messages end the connection.
MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
#: Seconds the closing handshake may take: the peer's close frame and its closing of TCP.
CLOSE_TIMEOUT: Final = 3.0
#: Seconds the opening handshake may take (TCP, TLS and the upgrade), as the official SDKs allow.
HANDSHAKE_TIMEOUT: Final = 10.0
#: Bytes framed but not yet written above which producers wait (see FrameWriter.wait_for_room).
HIGH_WATER: Final = 1024 * 1024

_RECEIVE_SIZE: Final = 256 * 1024

#: A received message's bytes, as the parser hands them over (no copy is made).
Payload: TypeAlias = bytes | bytearray | memoryview

#: Frame heads of an unfragmented text and binary frame without reserved bits.
_TEXT_HEAD: Final = 0x81
_BINARY_HEAD: Final = 0x82
_PLAIN_HEADS: Final = (_TEXT_HEAD, _BINARY_HEAD)
_MASK_BIT: Final = 0x80
_CLOSE_OPCODE: Final = 0x8
#: A frame larger than this that has not fully arrived goes to the protocol, which buffers it
#: without copying it over and over.
_HOLD_LIMIT: Final = _RECEIVE_SIZE
#: The handshake bytes kept to find where the frames begin; past this the fast path stays off.
_HANDSHAKE_KEEP: Final = 64 * 1024
#: Masking keys a client takes from the OS at a time.
_MASK_KEYS_FETCHED: Final = 256
#: Request headers whose values may be logged; any other value may be a credential.
_LOGGABLE_HEADERS: Final = frozenset(
    {"host", "upgrade", "connection", "sec-websocket-version", "user-agent", "origin"}
)
#: What a server answers to bytes that are not an HTTP request (as the engine's HTTP stack does).
_BAD_REQUEST: Final = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_INVALID_UTF8: Final = 1007
#: Seconds a server waits for a refused client to hang up before it closes the connection.
_REFUSAL_LINGER: Final = 1.0


class TransportClosed(trio.BrokenResourceError):
    """The WebSocket was closed by its peer, failed, or lost its connection.

    Attributes:
        code: the close code the peer sent, or the one we sent when we failed the connection
            (``None`` when the connection ended without one).
        reason: the close reason that came with ``code``.
        by_peer: the peer sent a close frame (a clean close on its side); False when we failed
            the connection or it was lost.
    """

    def __init__(
        self, message: str, *, code: int | None = None, reason: str = "", by_peer: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class HandshakeFailed(Exception):
    """The TCP connection, the TLS handshake or the WebSocket opening handshake failed.

    Attributes:
        status: the HTTP status when the server answered with something other than 101.
        permanent: retrying cannot help (the server's TLS certificate was rejected).
    """

    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.permanent = permanent


@attrs.frozen
class UpgradeRequest:
    """What a server needs to route an upgrade: the path, query and headers of the request."""

    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    peer_host: str | None


#: Opens the byte stream under a client WebSocket, given the URL's host and port.
StreamOpener: TypeAlias = Callable[[str, int], Awaitable[trio.abc.Stream]]


def redact_url(url: str) -> str:
    """``url`` fit for a log line or an error message: no user info, no query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    query = "&".join(f"{name}=…" for name in parse_qs(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class FrameWriter:
    """Owns one WebSocket's output and the only writes to its stream.

    Frames are appended to the output buffer (websockets' ``writes`` list) by
    :meth:`WebSocket.send_text` and friends; this class gets them onto the stream:

    - :meth:`send_now` tries one non-blocking write of everything buffered, as asyncio's
      transports do before buffering: the kernel nearly always takes it, which saves a task
      switch (plain TCP only: TLS must encrypt first);
    - :meth:`wake` has the writer task (:meth:`run`) write it all with one ``send_all``;
    - :meth:`write_soon` is the usual choice between the two; :meth:`write_burst` the choice for
      a producer that adds frames one at a time and wants them batched;
    - :meth:`wait_for_room` holds producers back while more than :attr:`high_water` bytes (or,
      when :attr:`max_frames` is set, that many frames) are framed and unsent.

    Without a writer task (:meth:`run` not running) whoever flushes does the writing.
    """

    def __init__(
        self, stream: trio.abc.Stream, protocol: ClientProtocol | ServerProtocol, high_water: int
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        # The trio socket, never its descriptor number: after close its fileno() is -1.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        #: Unsent bytes above which producers wait.
        self.high_water = high_water
        #: Unsent frames at which producers wait (None: no limit; the dev engine counts frames,
        #: as the engine's bounded queue does).
        self.max_frames: int | None = None
        self._lock = trio.StrictFIFOLock()
        #: Bytes and frames framed since the buffer was last taken (control frames not counted).
        self.framed = 0
        self.frames = 0
        #: Data frames written out in full since the start (the kernel took their last byte).
        self.frames_sent = 0
        self._frames_taken = 0
        self._unsent = b""
        self._unsent_frames = 0
        self._eof_due = False
        self._eof_sent = False
        self._closed = False
        #: Frames may still be written: not closed, broken, torn by an interrupted write, or
        #: past the end of the stream. (An attribute, not a property: every send reads it.)
        self.usable = True
        #: A write was interrupted part-way: the stream's frame boundaries are lost.
        self._torn = False
        self._broken: TransportClosed | None = None
        self._running = False
        self._woken = False
        self._wakeup = trio.Event()
        self._room = trio.Event()

    # -- state ---------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes framed or handed over but not yet written."""
        return self.framed + len(self._unsent)

    @property
    def frames_framed(self) -> int:
        """Data frames framed since the start: the frame just framed is number
        ``frames_framed``, and it is written out once :attr:`frames_sent` reaches that."""
        return self._frames_taken + self.frames

    @property
    def over_high_water(self) -> bool:
        """Producers must wait (:meth:`wait_for_room`) before framing more."""
        if self.framed + len(self._unsent) > self.high_water:
            return True
        return self.max_frames is not None and self.frames >= self.max_frames

    @property
    def is_woken(self) -> bool:
        """The writer task has been asked to write and has not started yet."""
        return self._woken

    def close(self) -> None:
        """Stop writing for good: later flushes raise :class:`trio.ClosedResourceError`, and
        producers waiting for room wake up to find out."""
        self._closed = True
        self.usable = False
        self._made_room()
        self.wake()

    # -- deciding how to write -----------------------------------------------------------------

    def send_now(self) -> bool:
        """One non-blocking write of everything buffered; True when nothing is left to write.

        Never blocks and never raises, so the reader may call it. What the kernel does not take
        waits for the next flush (:meth:`wake` or :meth:`flush`).
        """
        socket = self._socket
        if socket is None or self._unsent or self._lock.locked() or not self.usable:
            return False
        taken = self.frames
        chunks = self._take_buffer()
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            try:
                sent = os.write(socket.fileno(), data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                # Broken: keep the data, so that the next flush reports it the usual way.
                logger.debug("non-blocking send failed: %r", exc)
                sent = 0
            if sent < len(data):
                self._unsent = data[sent:]
                self._unsent_frames = taken
                return False
        self.frames_sent += taken
        return not self._eof_due

    def wake(self) -> None:
        """Have the writer task write everything buffered (at most once per wake-up)."""
        if not self._woken:
            self._woken = True
            self._wakeup.set()

    def write_soon(self) -> bool:
        """Write now if the kernel takes it all at once, else leave it to the writer task.

        Returns False when there is no writer task and the caller must :meth:`flush` itself.
        """
        if self._woken or self.send_now():
            return True
        if self._running:
            self.wake()
            return True
        return False

    def write_burst(self, every: int) -> None:
        """For a producer framing many messages in a row: leave them to the writer task, which
        writes them in one go, but write what is there every ``every`` frames (counted by
        the buffer's length) so that the peer can start on the first ones."""
        if not self._woken:
            self.wake()
        elif len(self._protocol.writes) >= every:
            self.send_now()

    async def wait_for_room(self) -> None:
        """Wait while more than the high-water mark is buffered (returns at once otherwise, or
        once the writer is closed or broken: the next send says so)."""
        while self.over_high_water and self.usable:
            await self._room.wait()
        await trio.lowlevel.checkpoint()

    # -- writing -------------------------------------------------------------------------------

    async def run(self, after_flush: Callable[[], None] | None = None) -> None:
        """The writer task: write whatever the wake-ups ask for, until the write side is shut.

        Returns when websockets has shut the write side (the closing handshake is over) or the
        writer was closed. ``after_flush`` is called after each write that went out in full.

        Raises:
            TransportClosed: the stream broke.
        """
        self._running = True
        try:
            await trio.lowlevel.checkpoint()
            while not self._eof_sent and not self._closed:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                self._woken = False
                try:
                    await self.flush()
                except trio.ClosedResourceError:
                    return
                if after_flush is not None:
                    after_flush()
        finally:
            self._running = False

    async def flush(self) -> None:
        """Write everything buffered with one ``send_all``; then shut the write side if
        websockets asked for it.

        Raises:
            trio.ClosedResourceError: the WebSocket was closed or aborted.
            TransportClosed: the stream broke, now or before.
        """
        async with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("this websocket is closed")
            if self._broken is not None:
                raise self._broken
            taken = self.frames + self._unsent_frames
            chunks = self._take_buffer()
            if self._unsent:
                chunks.insert(0, self._unsent)
                self._unsent = b""
                self._unsent_frames = 0
            if chunks and not self._torn:
                await self._send_all(b"".join(chunks) if len(chunks) > 1 else chunks[0])
                self.frames_sent += taken
            if self._eof_due and not self._eof_sent:
                self._eof_sent = True
                self.usable = False
                # If the peer closed first there is nothing left to shut.
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError
                ):
                    if isinstance(self._stream, trio.abc.HalfCloseableStream):
                        await self._stream.send_eof()
                    else:
                        # TLS cannot shut one direction: closing it all (with close_notify)
                        # is how the end of the stream is said there.
                        await self._stream.aclose()
            self._made_room()

    async def flush_quietly(self) -> None:
        """:meth:`flush`, for cleanup: a closed or broken stream is not an error there."""
        with contextlib.suppress(TransportClosed, trio.ClosedResourceError):
            await self.flush()
        await trio.lowlevel.checkpoint()  # also when the flush failed before its first one

    async def _send_all(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except trio.ClosedResourceError:
            self._closed = True
            self.usable = False
            raise
        except (trio.BrokenResourceError, OSError) as exc:
            self._broken = TransportClosed(f"connection lost while sending: {exc!r}")
            self.usable = False
            self._made_room()
            raise self._broken from exc
        except BaseException:
            # Cancelled part-way: some of the bytes may be on the wire, so nothing more may be
            # written (the next frame would start in the middle of this one).
            self._torn = True
            self.usable = False
            raise

    def _take_buffer(self) -> list[bytes]:
        chunks = self._protocol.data_to_send()
        self._frames_taken += self.frames
        self.framed = 0
        self.frames = 0
        if chunks and not chunks[-1]:
            # websockets' end-of-stream mark: shut the write side once the rest is out.
            chunks.pop()
            self._eof_due = True
        return chunks

    def _made_room(self) -> None:
        room, self._room = self._room, trio.Event()
        room.set()


class WebSocket:
    """One open WebSocket connection. Not constructed directly: see :func:`connect_websocket`
    and :func:`serve_websockets`.

    ``check_text=False`` hands the UTF-8 check of unfragmented text messages to the reader, for
    a reader that parses every text message with a parser that refuses invalid UTF-8 anyway
    (orjson does): reading every byte twice is much of a large message's cost. Such a reader
    must call :meth:`fail_invalid_text` when its parser refuses one, so that the connection
    fails with 1007 all the same.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: ClientProtocol | ServerProtocol,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        high_water: int = HIGH_WATER,
        fast_frames: bool = True,
        check_text: bool = True,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self.writer = FrameWriter(stream, protocol, high_water)
        self.close_timeout = close_timeout
        self._fast = _FastFrames(
            protocol, self._collect, enabled=fast_frames, check_text=check_text
        )
        self._fragments: list[Payload] = []
        self._fragment_opcode: Opcode | None = None
        # A fragmented text message is checked fragment by fragment, to fail as early as
        # the invalid bytes arrive.
        self._fragment_text = codecs.getincrementaldecoder("utf-8")()
        self._closing = False
        self._eof_received = False
        self._read_error: BaseException | None = None
        #: The opening handshake's Request (server) or Response (client), once received.
        self.handshake_event: Request | Response | None = None
        #: trio time of the last bytes received; keepalive logic reads it.
        self.last_received = trio.current_time()

    # -- sending -------------------------------------------------------------------------------

    def send_text(self, data: bytes) -> None:
        """Frame ``data`` (UTF-8 text) into the output buffer; the writer sends it.

        Raises:
            trio.ClosedResourceError: :meth:`aclose` or :meth:`abort` was called.
            TransportClosed: the connection is closing or closed.
        """
        protocol = self._protocol
        writer = self.writer
        if self._closing or protocol.state is not State.OPEN or not writer.usable:
            self._refuse_to_send()
        writer.frames += 1
        writer.framed += len(data)
        if self._fast.frame_text(data):
            return
        if len(data) <= MAX_FRAME_SIZE:
            protocol.send_text(data)
        else:
            # Larger messages go out as continuation frames, as the engine's frame limit requires.
            view = memoryview(data)
            protocol.send_text(view[:MAX_FRAME_SIZE], fin=False)
            for start in range(MAX_FRAME_SIZE, len(data), MAX_FRAME_SIZE):
                end = start + MAX_FRAME_SIZE
                protocol.send_continuation(view[start:end], fin=end >= len(data))

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Frame one binary message into the output buffer (raises as :meth:`send_text`).

        ``data`` may be kept, not copied, until the next write: leave it unchanged until then.
        """
        if self._closing or self._protocol.state is not State.OPEN or not self.writer.usable:
            self._refuse_to_send()
        if not self._fast.frame_binary(data):
            self._protocol.send_binary(data)
        self.writer.frames += 1
        self.writer.framed += len(data)

    def send_ping(self, data: bytes = b"") -> None:
        """Frame a ping, if the connection is still open (a no-op otherwise)."""
        if self._protocol.state is State.OPEN and not self._closing:
            self._protocol.send_ping(data)

    async def flush(self) -> None:
        """Write everything framed so far (:meth:`FrameWriter.flush`), for users with no writer
        task of their own.

        Raises:
            trio.ClosedResourceError: :meth:`aclose` or :meth:`abort` was called.
            TransportClosed: the connection broke.
        """
        await self.writer.flush()

    def _refuse_to_send(self) -> NoReturn:
        if self._closing:
            raise trio.ClosedResourceError("this websocket was closed")
        raise self._closed_error()

    # -- receiving -----------------------------------------------------------------------------

    async def receive_messages(self) -> list[tuple[bool, Payload]]:
        """Wait for at least one complete data message and return every message of that read.

        Each item is ``(is_text, payload)``; text payloads are valid UTF-8. Fragmented messages
        are reassembled; pings are answered; a close frame is answered.

        Raises:
            TransportClosed: the connection closed (cleanly or not) or failed before a message
                arrived; :meth:`aclose` finishes the closing handshake.
            trio.ClosedResourceError: :meth:`aclose` or :meth:`abort` was called.
        """
        if self._closing:
            raise trio.ClosedResourceError("this websocket was closed")
        parsed = self._fast.parsed
        if parsed:
            # Already parsed (frames that came with the handshake, or that the last read held
            # back because an earlier one needed no read): still a checkpoint, as every async
            # call must be.
            messages, self._fast.parsed = parsed, []
            await trio.lowlevel.checkpoint()
            return messages
        while True:
            if not self._reading():
                if self._must_write_myself():  # the answer to a close frame, or our own
                    await self.writer.flush_quietly()
                raise self._closed_error()
            await self._receive()
            parsed = self._fast.parsed
            if self._protocol.writes and self._must_write_myself():  # pongs, close frames
                await self.writer.flush_quietly()
            if parsed:
                self._fast.parsed = []
                return parsed

    def _reading(self) -> bool:
        protocol = self._protocol
        return (
            protocol.state is State.OPEN
            and protocol.close_rcvd is None
            and protocol.parser_exc is None
            and not self._eof_received
            and self._read_error is None
        )

    def _must_write_myself(self) -> bool:
        """Get what the protocol produced out without ever blocking the reader on a busy
        writer: a reader that blocked on a full socket would stop reading, and a peer that
        applies backpressure (the engine stops reading a connection it cannot write to) would
        wait for it forever. Only without a writer task must the reader write itself."""
        return not self.writer.write_soon() and self.writer.usable

    async def _receive(self) -> None:
        """Read once from the stream into the parser."""
        if self._closing:
            raise trio.ClosedResourceError("this websocket was closed")
        try:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        except trio.ClosedResourceError:
            raise
        except (trio.BrokenResourceError, OSError) as exc:
            self._read_error = exc
            self._fast.receive_eof()
            raise TransportClosed(f"connection lost while receiving: {exc!r}") from exc
        self.last_received = trio.current_time()
        if data:
            self._fast.receive_data(data)
        else:
            self._eof_received = True
            self._fast.receive_eof()

    def _collect(self, event: object, messages: list[tuple[bool, Payload]]) -> None:
        """Take one event the protocol parsed: a frame, or the opening handshake's message."""
        if not isinstance(event, Frame):
            if isinstance(event, Request | Response):
                self.handshake_event = event
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if event.fin:
                if opcode is Opcode.TEXT and not is_utf8(event.data):
                    self.fail_invalid_text()
                    return
                messages.append((opcode is Opcode.TEXT, event.data))
                return
            self._fragment_opcode = opcode
            self._fragments = []
            self._fragment_text.reset()
        elif opcode is not Opcode.CONT or self._fragment_opcode is None:
            return  # control frames: the protocol has answered them
        if self._fragment_opcode is Opcode.TEXT:
            try:
                self._fragment_text.decode(event.data, event.fin)
            except UnicodeDecodeError:
                self.fail_invalid_text()
                return
        self._fragments.append(event.data)
        if event.fin:
            messages.append((self._fragment_opcode is Opcode.TEXT, b"".join(self._fragments)))
            self._fragments = []
            self._fragment_opcode = None

    def fail_invalid_text(self) -> None:
        """Fail the connection with 1007 (a text message is not UTF-8): the reader's next
        :meth:`receive_messages` reports it closed, :meth:`aclose` finishes."""
        self._fragments = []
        self._fragment_opcode = None
        fail_invalid_text(self._protocol)

    def _closed_error(self) -> TransportClosed:
        protocol = self._protocol
        received = protocol.close_rcvd
        if received is not None:
            reason = f": {received.reason}" if received.reason else ""
            return TransportClosed(
                f"websocket closed by the peer ({received.code}{reason})",
                code=received.code,
                reason=received.reason,
                by_peer=True,
            )
        sent = protocol.close_sent
        if protocol.parser_exc is not None and not isinstance(protocol.parser_exc, EOFError):
            return TransportClosed(
                f"websocket protocol error: {protocol.parser_exc}",
                code=sent.code if sent is not None else None,
                reason=sent.reason if sent is not None else "",
            )
        if self._read_error is not None:
            return TransportClosed(f"connection lost: {self._read_error!r}")
        if sent is not None:
            return TransportClosed(f"websocket closed ({sent.code})", code=sent.code)
        return TransportClosed("connection closed without a close frame")

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self, code: int | None = 1000, reason: str = "") -> None:
        """Finish the closing handshake, then close the stream.

        Sends a close frame with ``code`` (``None``: a close frame without a status code, as
        the engine ends a channel's read socket) unless one was sent already, writes what is
        left, shuts the write side when the protocol says so and waits for the peer to close
        TCP, for at most :attr:`close_timeout` seconds. Idempotent; always releases the stream.

        Shielded from cancellation as a whole (and bounded in time), so that cleanup code
        awaiting it in ``finally`` never swaps the exception in flight for ``Cancelled``: a
        cancellation takes effect at the caller's next checkpoint.
        """
        with trio.CancelScope(shield=True):
            if self._closing:
                await trio.lowlevel.checkpoint()
                return
            try:
                with trio.move_on_after(self.close_timeout) as scope:
                    await self._finish_closing(code, reason)
                if scope.cancelled_caught:
                    logger.debug("the peer did not finish the closing handshake in time")
            finally:
                self._closing = True
                self.writer.close()
                await trio.aclose_forcefully(self._stream)

    async def _finish_closing(self, code: int | None, reason: str) -> None:
        protocol = self._protocol
        await trio.lowlevel.checkpoint()
        if not self.writer.usable:
            return
        if protocol.state is State.OPEN:
            protocol.send_close(code, reason)
        try:
            await self.writer.flush()
            while protocol.close_expected() and not self._eof_received and self._read_error is None:
                await self._receive()
                self._fast.parsed = []  # data after our close frame is of no interest
                if protocol.writes:
                    await self.writer.flush()
        except (TransportClosed, trio.ClosedResourceError):
            pass

    async def abort(self) -> None:
        """Drop the stream without a closing handshake (what the engine does at shutdown).

        Idempotent; never blocks; shielded, as :meth:`aclose` is.
        """
        self._closing = True
        self.writer.close()
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)


def fail_invalid_text(protocol: ClientProtocol | ServerProtocol) -> None:
    """Fail the connection for a text message that is not UTF-8 (RFC 6455 section 8.1)."""
    if protocol.state is State.OPEN:
        protocol.fail(_INVALID_UTF8, "invalid UTF-8 in a text message")


def is_utf8(data: Payload) -> bool:
    """Whether ``data`` is valid UTF-8."""
    if isinstance(data, memoryview):  # websockets' type allows it; its parser gives bytes
        data = data.tobytes()
    if data.isascii():
        return True
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


class _FastFrames:
    """The fast path for plain data frames, in front of one protocol object.

    Reading: until the handshake is over every byte goes to the protocol, and a copy is kept.
    Then, if the bytes that came after the handshake ended on a frame boundary (nearly always:
    usually there are none), :meth:`receive_data` splits what arrives into frames. An
    unfragmented text or binary frame without reserved bits, masked as the protocol requires
    and within its size limit, is unmasked here and queued in :attr:`parsed` (a text frame only
    if it is UTF-8: otherwise the connection fails with 1007, as websockets' protocol would
    leave to us); any other frame is fed to the protocol whole (or, if it has not fully arrived,
    as far as it goes, the rest following as it comes), so the protocol always resumes at a
    frame boundary, and what it makes of the frame goes to :attr:`parsed` in order through
    ``collect``. Once the protocol is no longer open everything goes to it again.
    """

    def __init__(
        self,
        protocol: ClientProtocol | ServerProtocol,
        collect: Callable[[object, list[tuple[bool, Payload]]], None],
        *,
        enabled: bool,
        check_text: bool,
    ) -> None:
        self._protocol = protocol
        self._collect = collect
        self._mask = _MASK_BIT if protocol.side is SERVER else 0
        self._enabled = enabled
        self._check_text = check_text
        #: Bytes received while the handshake ran, until the fast path is decided on.
        self._handshake: bytearray | None = bytearray() if enabled else None
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

    def receive_data(self, data: bytes | bytearray) -> None:
        """Take bytes received from the network."""
        if not self._reading and (self._handshake is None or not self._start_reading()):
            self._to_protocol(data)
            if self._handshake is not None:
                self._keep_handshake(data)
            return
        if self._owed:
            taken = min(self._owed, len(data))
            self._owed -= taken
            self._to_protocol(data[:taken] if taken < len(data) else data)
            data = data[taken:]
            if not data:
                return
            if not self._reading:
                self._to_protocol(data)
                return
        held = self._held
        if held:
            owed = _bytes_to_frame_end(held, 0)
            if 0 < owed < len(data):
                # Complete the held frame with just the bytes it lacks and parse the rest of
                # this read where it lies: appending the whole read to the held bytes would
                # copy every byte of a stream of large frames once more.
                held += memoryview(data)[:owed]
                position = self._parse(held, 0)
                if position is None:
                    return
                held.clear()
                if not self._reading:
                    self._to_protocol(data[owed:])
                    return
                self._keep_rest(data, self._parse(data, owed))
                return
            held += data
            position = self._parse(held, 0)
            if position is not None:
                del held[:position]
            return
        self._keep_rest(data, self._parse(data, 0))

    def _keep_rest(self, data: bytes | bytearray, position: int | None) -> None:
        """Hold what :meth:`_parse` left of ``data``: the start of a frame still arriving."""
        if position is not None and position < len(data):
            self._held += memoryview(data)[position:]

    def _parse(self, buffer: bytes | bytearray, position: int) -> int | None:
        """Take the frames of ``buffer`` from ``position`` on (see the class docstring); return
        where the frame that has not fully arrived starts, or None when the connection failed
        and nothing more is to be parsed."""
        end = len(buffer)
        limit = self._size_limit()
        protocol = self._protocol
        parsed = self.parsed
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
                    if self._mask:
                        # Unmasked straight out of the buffer: one copy, not two.
                        payload: Payload = apply_mask(
                            memoryview(buffer)[start:stop], buffer[start - 4 : start]
                        )
                    else:
                        payload = buffer[start:stop]
                    if head == _TEXT_HEAD and self._check_text and not is_utf8(payload):
                        self._fail_invalid_text()
                        return None
                    parsed.append((head == _TEXT_HEAD, payload))
                    position = stop
                    continue
                if length <= _HOLD_LIMIT:
                    break  # the rest is on its way
            # Not a frame for the fast path, or a large one not all here: the protocol's.
            if head & 0x0F == _CLOSE_OPCODE and protocol.current_size is not None:
                # RFC 6455 5.4 lets control frames, a close frame too, come between the
                # fragments of a message; websockets refuses a close there (1002). The
                # unfinished message is abandoned either way: let the close be a close.
                protocol.current_size = None
            taken = min(stop, end)
            self._owed = stop - taken
            self._to_protocol(buffer[position:taken])
            position = taken
            if not self._reading:
                if position < end:
                    self._to_protocol(buffer[position:])
                position = end
                break
        return position

    def receive_eof(self) -> None:
        """The peer closed its side: the protocol decides what that means."""
        if self._held:
            # An unfinished frame: let the protocol see it, so that it reports the same error.
            self._to_protocol(bytes(self._held))
            self._held.clear()
        self._reading = False
        self._protocol.receive_eof()
        self._collect_events()

    def _fail_invalid_text(self) -> None:
        # Only whole, unfragmented frames take the fast path: no fragments to forget here.
        self._held.clear()
        self._owed = 0
        self._reading = False
        fail_invalid_text(self._protocol)

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

    def _to_protocol(self, data: bytes | bytearray) -> None:
        protocol = self._protocol
        protocol.receive_data(data)
        self._collect_events()
        if not _parsing_frames(protocol):
            self._reading = False

    def _collect_events(self) -> None:
        collect = self._collect
        for event in self._protocol.events_received():
            collect(event, self.parsed)

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

    def frame_binary(self, data: bytes | bytearray | memoryview) -> bool:
        """Frame a binary message of at most one frame's size into the protocol's output, the
        payload as it is (a server's) or masked in one copy (a client's); False (and nothing
        done) when the protocol must do it. websockets copies a frame's payload three times
        on its way out, which a stream of large frames feels."""
        length = len(data)
        protocol = self._protocol
        if (
            length > MAX_FRAME_SIZE
            or not self._enabled
            or protocol.extensions
            or protocol.expect_continuation_frame
        ):
            return False
        mask_bit = 0 if self._mask else _MASK_BIT  # a server's frames are not masked
        if length < 126:
            head = bytes((_BINARY_HEAD, mask_bit | length))
        elif length < 65536:
            head = struct.pack("!BBH", _BINARY_HEAD, mask_bit | 126, length)
        else:
            head = struct.pack("!BBQ", _BINARY_HEAD, mask_bit | 127, length)
        writes = protocol.writes
        if mask_bit:
            key = self._mask_key()
            writes.append(head + key)
            if length:
                writes.append(apply_mask(data, key))
        else:
            writes.append(head)
            if length:  # an empty chunk would read as websockets' end-of-stream mark
                writes.append(data)  # type: ignore[arg-type]
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


_default_ssl_context: ssl.SSLContext | None = None


def _system_ssl_context() -> ssl.SSLContext:
    # Loading the system's certificates takes milliseconds: once per process is enough.
    global _default_ssl_context
    if _default_ssl_context is None:
        _default_ssl_context = ssl.create_default_context()
    return _default_ssl_context


async def _open_tcp_stream(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


async def connect_websocket(
    url: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    open_stream: StreamOpener | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
    max_message_size: int = MAX_MESSAGE_SIZE,
    max_frame_size: int = MAX_FRAME_SIZE,
    check_text: bool = True,
) -> WebSocket:
    """Open a TCP connection (TLS for ``wss://``) and perform the client handshake.

    No subprotocol is requested, as the engine requires. Frames the server sends right behind
    its ``101`` answer (even a close frame) are kept for :meth:`WebSocket.receive_messages`.

    Args:
        url: a ``ws://`` or ``wss://`` URL.
        headers: extra handshake headers.
        ssl_context: for ``wss://``; default: the system's trusted certificates, verified.
        open_stream: opens the byte stream instead of a TCP connection (tests run over
            in-memory streams with it).
        handshake_timeout: seconds for the TCP connection, the TLS handshake and the upgrade.
        close_timeout: the :class:`WebSocket`'s bound on its closing handshake.
        max_message_size: larger incoming messages fail the connection (1009).
        max_frame_size: larger incoming frames fail the connection (1009); the engine sends a
            channel's messages unfragmented, so a channel reader allows its message size here.
        check_text: see :class:`WebSocket`.

    Raises:
        HandshakeFailed: the host is unreachable, the TLS handshake failed (``permanent`` when
            the certificate was rejected), the server refused the upgrade or did not answer in
            time.
        ValueError: ``url`` is not a ws:// or wss:// URL.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(f"not a websocket URL: {redact_url(url)} ({exc})") from None
    where = f"{uri.host}:{uri.port}"
    with trio.move_on_after(handshake_timeout):
        try:
            stream = await (open_stream or _open_tcp_stream)(uri.host, uri.port)
        except OSError as exc:
            raise HandshakeFailed(f"cannot connect to {where}: {exc}") from exc
        try:
            if uri.secure:
                stream = await _start_tls(stream, ssl_context, uri.host, where)
            protocol = ClientProtocol(
                uri, max_size=(max_message_size, max_frame_size), logger=_protocol_logger
            )
            websocket = WebSocket(
                stream, protocol, close_timeout=close_timeout, check_text=check_text
            )
            await _client_handshake(websocket, protocol, headers, redact_url(url))
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return websocket
    raise HandshakeFailed(
        f"no answer to the websocket upgrade from {where} in {handshake_timeout:g} s"
    )


async def _start_tls(
    stream: trio.abc.Stream, context: ssl.SSLContext | None, host: str, where: str
) -> trio.SSLStream[trio.abc.Stream]:
    secure = trio.SSLStream(stream, context or _system_ssl_context(), server_hostname=host)
    try:
        await secure.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise HandshakeFailed(
                f"the TLS certificate of {where} was rejected: {cause.verify_message}"
                " (pass ssl= a context that trusts it)",
                permanent=True,
            ) from cause
        raise HandshakeFailed(f"TLS handshake with {where} failed: {cause or exc}") from exc
    return secure


async def _client_handshake(
    websocket: WebSocket,
    protocol: ClientProtocol,
    headers: Iterable[tuple[str, str]],
    shown_url: str,
) -> None:
    request = protocol.connect()
    for name, value in headers:
        request.headers[name] = value
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("upgrade request to %s: %s", shown_url, _loggable_headers(request.headers))
    protocol.send_request(request)
    try:
        await websocket.writer.flush()
        while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
            await websocket._receive()
    except TransportClosed as exc:
        raise HandshakeFailed(
            f"{shown_url} closed the connection during the handshake: {exc}"
        ) from exc
    failure = protocol.handshake_exc
    if failure is not None:
        status = _status_of(failure)
        if status is None and websocket._eof_received:
            raise HandshakeFailed(
                f"{shown_url} closed the connection during the handshake"
            ) from failure
        raise HandshakeFailed(
            f"websocket handshake with {shown_url} failed: {failure}", status=status
        ) from failure


def _loggable_headers(headers: Headers) -> str:
    return ", ".join(
        f"{name}: {value if name.lower() in _LOGGABLE_HEADERS else '<redacted>'}"
        for name, value in headers.raw_items()
    )


def _status_of(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


#: What a route decides for an upgrade request: ``None`` to accept, or ``(status, body)``.
Rejection = tuple[int, str] | None
WebSocketHandler = Callable[[WebSocket, UpgradeRequest], Awaitable[None]]
Router = Callable[[UpgradeRequest], Rejection]


async def serve_websockets(
    handler: WebSocketHandler,
    route: Router,
    *,
    host: str,
    port: int,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    check_text: bool = True,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Accept WebSocket upgrades on ``host:port`` and run ``handler`` for each accepted one.

    ``route`` sees each upgrade request first and may refuse it with an HTTP status and body.
    Requests must finish their headers within ``handshake_timeout`` seconds. Starts with
    ``nursery.start``, which returns the listeners (so port 0 tells its real port). No client
    can stop the server: see :func:`serve_websocket_stream`. ``check_text`` is as for
    :class:`WebSocket`.
    """

    async def serve_connection(stream: trio.SocketStream) -> None:
        await serve_websocket_stream(
            stream,
            handler,
            route,
            handshake_timeout=handshake_timeout,
            peer_host=_peer_of(stream),
            check_text=check_text,
        )

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners)
    await trio.serve_listeners(serve_connection, listeners)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


async def serve_websocket_stream(
    stream: trio.abc.Stream,
    handler: WebSocketHandler,
    route: Router,
    *,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    peer_host: str | None = None,
    check_text: bool = True,
) -> None:
    """Serve one connection on any byte stream: the opening handshake, then ``handler``.

    Whatever the client sends (nothing, garbage, half a request, a refused upgrade, frames it
    then abandons) ends this connection alone: failures of the connection are logged at DEBUG
    and never raised. The stream is always closed on return, after the closing handshake when
    there was a WebSocket.
    """
    websocket: WebSocket | None = None
    try:
        accepted = None
        with trio.move_on_after(handshake_timeout):
            accepted = await _accept(stream, route, peer_host, check_text)
        if accepted is not None:
            websocket, request = accepted
            await handler(websocket, request)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.debug("connection from %s ended: %r", peer_host, exc)
    finally:
        if websocket is not None:
            await websocket.aclose()
        else:
            await trio.aclose_forcefully(stream)


def _peer_of(stream: trio.SocketStream) -> str | None:
    try:
        peer = stream.socket.getpeername()[0]
    except OSError:  # the peer left in between
        return None
    return peer if isinstance(peer, str) else None


async def _accept(
    stream: trio.abc.Stream, route: Router, peer_host: str | None, check_text: bool
) -> tuple[WebSocket, UpgradeRequest] | None:
    """The server's opening handshake; None when it did not end in an open WebSocket (after
    answering the client as the engine would, if it sent anything)."""
    protocol = ServerProtocol(max_size=(MAX_MESSAGE_SIZE, MAX_FRAME_SIZE), logger=_protocol_logger)
    websocket = WebSocket(stream, protocol, check_text=check_text)
    request: Request | None = None
    while request is None:
        try:
            await websocket._receive()
        except TransportClosed:
            break  # the peer left before finishing its request
        event = websocket.handshake_event
        request = event if isinstance(event, Request) else None
        if request is None and (protocol.handshake_exc is not None or websocket._eof_received):
            if protocol.handshake_exc is not None and protocol.writes == [b""]:
                # Not an HTTP request at all: websockets only asks to end the stream.
                protocol.writes.insert(0, _BAD_REQUEST)
            await _answer_and_close(websocket)
            return None
    if request is None:
        await websocket.abort()
        return None
    path, _, query = request.path.partition("?")
    upgrade = UpgradeRequest(
        path=path,
        query=parse_qs(query, keep_blank_values=True),
        headers={name.lower(): value for name, value in request.headers.raw_items()},
        peer_host=peer_host,
    )
    rejection = route(upgrade)
    response = protocol.accept(request) if rejection is None else protocol.reject(*rejection)
    protocol.send_response(response)
    if protocol.state is not State.OPEN:
        await _answer_and_close(websocket)
        return None
    await websocket.writer.flush()
    return websocket, upgrade


async def _answer_and_close(websocket: WebSocket) -> None:
    """Write the refusal websockets framed (and the end of the stream), give the client a
    moment to read it and hang up, then close: closing with unread input would reset the
    connection and could destroy the answer before the client reads it."""
    with contextlib.suppress(TransportClosed, trio.ClosedResourceError):
        await websocket.writer.flush()
        if not websocket._eof_received:
            with trio.move_on_after(_REFUSAL_LINGER):
                await websocket._receive()
                while not websocket._eof_received:
                    await websocket._receive()
    await websocket.abort()
