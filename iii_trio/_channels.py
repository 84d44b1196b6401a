"""Channels: streams of bytes and text messages between workers, through the engine
(spec/protocol.md section 6).

A channel has two ends. :class:`ChannelWriter` is a :class:`trio.abc.SendStream` (plus
:meth:`~ChannelWriter.send_message` for text); :class:`ChannelReader` is a
:class:`trio.abc.ReceiveStream` (plus :meth:`~ChannelReader.receive_message`). Each end opens
its own WebSocket to the engine the first time it is used, with the worker's handshake headers
and TLS context, and that socket carries nothing but the channel's frames: binary frames are
data (at most 64 KiB each), text frames are messages, order is kept, and the writer's close is
the reader's end of stream.

Backpressure comes from the sockets. The engine queues ``buffer_size`` frames per channel and
stops reading the writer's socket while its queue is full; a reader reads its socket only when
asked to. So a slow reader slows the writer down through TCP, and neither end holds more than
one socket read's worth of frames (the reader) or about 1 MiB of frames not yet written (the
writer) in memory. A writer's frames are written by a task of its own, many at a time: one
write per 64 KiB chunk would cost as much again as everything else a send does.

Ownership. Every end belongs to the worker that made it (:meth:`Worker.create_channel`, or a
payload or result that carried a ref). :class:`ChannelHub` is the worker's side of that: how to
reach the engine, the task that watches each writer's socket, and the sockets to close when the
worker's block exits. The ends a handler received are closed when the handler returns (or
fails, or is cancelled): see :func:`close_ends`.

Why a writer's socket is watched: the engine sends nothing to a writer unless something is
wrong. It closes the socket at once when that end was attached already, and drops it when the
reader has gone. A send into the kernel's buffer would still succeed after either, so a task
reads the writer's socket and remembers why it ended; the next send, and the writer's close,
report it as :class:`~iii_trio.ChannelClosed` instead of data silently going nowhere. The reader
needs no such task: it reads its socket itself, and the engine never reads a reader's socket
(so no ping is ever answered there, and none is sent: channel sockets have no keepalive).
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, final

import attrs
import trio

from ._exceptions import ChannelClosed, UnexpectedFrame
from ._protocol._channels import CHUNK_SIZE, channel_url
from ._transport import (
    MAX_MESSAGE_SIZE,
    HandshakeFailed,
    Payload,
    StreamOpener,
    TransportClosed,
    WebSocket,
    connect_websocket,
)
from ._types import ChannelRef

__all__ = ["Channel", "ChannelHub", "ChannelReader", "ChannelWriter", "close_ends"]

logger = logging.getLogger("iii_trio.channels")

#: Seconds the worker's exit and a handler's end give a channel socket to close.
_ABORT_GRACE: Final = 0.5


class _ChannelEnd:
    """What both ends share: the ref, the hub, the socket once opened, and the closing."""

    def __init__(self, ref: ChannelRef, hub: ChannelHub) -> None:
        self._ref = ref
        self._hub = hub
        self._websocket: WebSocket | None = None
        self._opening = False
        self._closed = False
        self._busy = False

    @property
    def ref(self) -> ChannelRef:
        """This end's ref. Putting the end itself in a payload sends this ref: the end is
        handed over to the function called (an end can be opened once, by one holder)."""
        return self._ref

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._websocket is not None else "unused"
        return f"<{type(self).__name__} {self._ref.channel_id} {state}>"

    def _enter(self, what: str) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"this channel {what} is closed")
        if self._busy:
            raise trio.BusyResourceError(f"another task is using this channel {what}")
        self._busy = True

    async def _open(self) -> WebSocket:
        """Open the socket (the caller checked it is not open yet)."""
        websocket = await self._hub.connect(self)
        if self._closed:  # closed by another task (or the worker's exit) meanwhile
            await websocket.abort()
            raise trio.ClosedResourceError("the channel end was closed while it opened")
        self._websocket = websocket
        return websocket

    def _abort_now(self) -> WebSocket | None:
        """Mark the end closed; return its socket, which the caller must abort."""
        self._closed = True
        self._hub.forget(self)
        websocket, self._websocket = self._websocket, None
        return websocket

    async def _abort(self) -> None:
        """Close at once: what is queued goes out only if the kernel takes it right now."""
        websocket = self._abort_now()
        if websocket is not None:
            websocket.writer.send_now()
            await websocket.abort()
        else:
            await trio.lowlevel.checkpoint()


@final
class ChannelWriter(_ChannelEnd, trio.abc.SendStream):
    """The sending end of a channel: a :class:`trio.abc.SendStream` of bytes, plus text
    messages.

    :meth:`send_all` sends bytes as binary frames of at most 64 KiB; it returns once they are
    written or queued (up to about 1 MiB), and waits while the engine's queue for the channel
    is full (backpressure).
    :meth:`send_message` sends one text frame. :meth:`aclose` ends the stream: the reader gets
    ``b""`` once it has read everything before. Use it as an async context manager to be sure
    the stream ends.

    Made by :meth:`Worker.create_channel` or arrived in a payload; not constructed directly.
    Only one task may send at a time (another gets :class:`trio.BusyResourceError`).
    """

    def __init__(self, ref: ChannelRef, hub: ChannelHub) -> None:
        super().__init__(ref, hub)
        #: Why the engine closed or dropped the socket, as the watcher found out.
        self._broken: ChannelClosed | None = None
        #: ``_broken`` was raised to the user already: closing does not raise it again.
        self._reported = False
        self._watcher: trio.CancelScope | None = None
        self._watcher_done = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as binary frames of at most 64 KiB.

        Returns once the data is written, or queued behind what is being written: a writer
        holds at most about 1 MiB that the kernel has not taken yet, and waits for room
        beyond that (which is how the engine's backpressure reaches it). The queue is
        written out by the end's own task, and :meth:`aclose` sends it all before the end of
        the stream. Opens the socket first if this is the end's first use. Sending ``b""``
        sends nothing.

        Cancellation: the frames queued so far are still sent.

        Raises:
            TypeError: ``data`` is not bytes-like.
            ChannelClosed: the channel cannot be opened, or the engine closed or dropped this
                end (the reader went away, or the end was attached elsewhere already).
            trio.BusyResourceError: another task is sending on this end.
            trio.ClosedResourceError: this end was closed (or the worker's block exited).
        """
        view = _bytes_view(data)
        self._enter("writer")
        try:
            if not len(view):
                await trio.lowlevel.checkpoint()
                return
            websocket = self._websocket or await self._open_writer()
            writer = websocket.writer
            for start in range(0, len(view), CHUNK_SIZE):
                if writer.over_high_water:
                    await self._write_out(websocket)
                self._check_broken()
                self._frame(websocket, view[start : start + CHUNK_SIZE], text=False)
            await self._write_out(websocket)
        finally:
            self._busy = False

    async def send_message(self, text: str) -> None:
        """Send ``text`` as one text frame (a message, not data: the reader takes it with
        :meth:`ChannelReader.receive_message`, in order with the data around it).

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: ``text`` is more than 64 MiB in UTF-8, the engine's limit for one
                message; nothing was sent (stream large data with :meth:`send_all`).
            ChannelClosed, trio.BusyResourceError, trio.ClosedResourceError: as
                :meth:`send_all`.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            encoded = text.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(f"text is not valid Unicode: {exc}") from None
        if len(encoded) > MAX_MESSAGE_SIZE:
            raise ValueError(
                f"text is {len(encoded)} bytes in UTF-8; a channel message is at most "
                f"{MAX_MESSAGE_SIZE} bytes (send large data with send_all)"
            )
        self._enter("writer")
        try:
            websocket = self._websocket or await self._open_writer()
            if websocket.writer.over_high_water:
                await self._write_out(websocket)
            self._check_broken()
            self._frame(websocket, encoded, text=True)
            await self._write_out(websocket)
        finally:
            self._busy = False

    async def wait_send_all_might_not_block(self) -> None:
        """Return when :meth:`send_all` might not block: when this end's queue of unwritten
        frames has room (at once if the end is not open yet).

        Raises:
            ChannelClosed: as :meth:`send_all`.
            trio.ClosedResourceError: this end was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this channel writer is closed")
        if self._websocket is not None:
            await self._websocket.writer.wait_for_room()
        else:
            await trio.lowlevel.checkpoint()
        self._check_broken()

    async def aclose(self) -> None:
        """End the stream: send the close frame after everything sent so far and wait (at most
        a few seconds) for the engine to confirm it. Idempotent.

        A writer never used opens its socket here, to end the stream: the reader then gets
        ``b""`` at once.

        Cancellation: the socket is dropped at once; the reader sees that as the end of the
        stream too.

        Raises:
            ChannelClosed: the engine had closed or dropped this end before the stream ended,
                so some of what was sent may not have reached the reader (unless a send
                raised it already); or the end of a writer never used could not be opened.
                The end is closed anyway.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        if self._websocket is None and not self._busy:
            try:
                await self._open_writer()
            except trio.ClosedResourceError:
                pass  # the worker's block exited: nothing left to end
            except BaseException:
                self._abort_now()
                raise
        websocket = self._abort_now()
        if websocket is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            await self._stop_watching()
            await websocket.aclose()
        if self._broken is not None and not self._reported:
            self._reported = True
            raise self._broken

    async def _release(self) -> None:
        """A handler is done with this writer: end the stream if it was used; if not, only
        forget it (it may have been handed on to another function, which writes instead)."""
        if self._websocket is None:
            self._abort_now()
            await trio.lowlevel.checkpoint()
        else:
            await self.aclose()

    # -- internals -----------------------------------------------------------------------------

    async def _open_writer(self) -> WebSocket:
        """Open the socket (the caller checked it is not open yet) and start its tasks: the
        watcher, and the writer that writes out what sends queue."""
        websocket = await self._open()
        # The scope exists before the task runs: cancelled before it starts, the watcher
        # stops at its first checkpoint, before it reads anything.
        self._watcher = trio.CancelScope()
        self._hub.spawn(self._watch, websocket)
        self._hub.spawn(self._write, websocket)
        return websocket

    async def _write(self, websocket: WebSocket) -> None:
        """Write out what the sends queue (:meth:`FrameWriter.run`) until the end closes."""
        try:
            await websocket.writer.run()
        except TransportClosed as exc:
            self._broken = self._broken or self._closed_error(exc)
            await trio.lowlevel.checkpoint()

    async def _write_out(self, websocket: WebSocket) -> None:
        """Have the writer task write what is queued, and wait while more than the writer's
        high-water mark (1 MiB) is queued.

        A cancel point but not a schedule point while there is room: a task sending chunk
        after chunk frames up to 1 MiB before the writer task writes it all in one go, which
        costs a third of writing each 64 KiB chunk on its own (one system call per chunk, on
        loopback, cost as much as the rest of the send). Whatever is queued goes out as soon
        as the sending task next waits for anything.
        """
        writer = websocket.writer
        writer.wake()
        if writer.over_high_water:
            await writer.wait_for_room()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        self._check_broken()

    async def _watch(self, websocket: WebSocket) -> None:
        """Read the socket until it ends; remember why (see the module docstring)."""
        assert self._watcher is not None
        try:
            with self._watcher:
                # The engine sends nothing but a close frame here; anything else is ignored.
                while True:
                    await websocket.receive_messages()
        except TransportClosed as exc:
            self._broken = self._closed_error(exc)
            logger.debug("channel %s: writer socket ended: %s", self._ref.channel_id, exc)
            await trio.lowlevel.checkpoint()
        except trio.ClosedResourceError:
            await trio.lowlevel.checkpoint()
        finally:
            self._watcher_done.set()

    async def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with trio.move_on_after(_ABORT_GRACE):
                await self._watcher_done.wait()
        await trio.lowlevel.checkpoint()

    def _closed_error(self, exc: TransportClosed) -> ChannelClosed:
        channel_id = self._ref.channel_id
        if exc.by_peer:
            text = (
                f"the engine closed the writer of channel {channel_id}: that end was attached "
                "already (each end can be opened once), or the channel was swept"
            )
        else:
            text = (
                f"the engine dropped the writer of channel {channel_id}: the reader went away, "
                f"or the connection was lost ({exc})"
            )
        return ChannelClosed(text, channel_id=channel_id)

    def _check_broken(self) -> None:
        if self._broken is not None:
            self._reported = True
            raise self._broken

    def _frame(self, websocket: WebSocket, data: Payload, *, text: bool) -> None:
        try:
            if text:
                websocket.send_text(bytes(data))
            else:
                websocket.send_binary(data)
        except TransportClosed as exc:
            self._broken = self._broken or self._closed_error(exc)
            self._reported = True
            raise self._broken from None


@final
class ChannelReader(_ChannelEnd, trio.abc.ReceiveStream):
    """The receiving end of a channel: a :class:`trio.abc.ReceiveStream` of bytes, plus text
    messages.

    :meth:`receive_some` returns the next data (``b""`` once the writer has ended the stream),
    ``async for chunk in reader`` iterates the data, :meth:`receive_message` returns the next
    text message. Frames come in the order they were sent; asking for one kind while the other
    is next raises :class:`~iii_trio.UnexpectedFrame` and consumes nothing. The socket is read
    only when asked, so a reader that stops reading holds the writer back.

    Made by :meth:`Worker.create_channel` or arrived in a payload; not constructed directly.
    Only one task may receive at a time (another gets :class:`trio.BusyResourceError`).
    """

    def __init__(self, ref: ChannelRef, hub: ChannelHub) -> None:
        super().__init__(ref, hub)
        self._frames: deque[tuple[bool, Payload]] = deque()
        #: How much of the first binary frame was returned already.
        self._offset = 0
        self._ended = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next data: at most ``max_bytes`` (default: the rest of the next binary frame,
        64 KiB at most from an iii writer), or ``b""`` at the end of the stream.

        Opens the socket first if this is the end's first use.

        Raises:
            UnexpectedFrame: the next frame is a text message (read it with
                :meth:`receive_message`); nothing was consumed.
            ChannelClosed: the channel cannot be opened (it does not exist, was swept, or the
                key is wrong), or the connection to the engine was lost mid-stream.
            TypeError, ValueError: ``max_bytes`` is not a positive int or None.
            trio.BusyResourceError: another task is receiving on this end.
            trio.ClosedResourceError: this end was closed (or the worker's block exited).
        """
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
                raise TypeError(f"max_bytes must be an int or None, got {max_bytes!r}")
            if max_bytes < 1:
                raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self._enter("reader")
        try:
            frames = self._frames
            while True:
                while frames:
                    is_text, payload = frames[0]
                    if is_text:
                        raise UnexpectedFrame(
                            f"the next frame of channel {self._ref.channel_id} is a text "
                            "message: read it with receive_message()",
                            channel_id=self._ref.channel_id,
                            is_text=True,
                        )
                    if len(payload) > self._offset:
                        # A cancel point only: the socket read, at least once per 256 KiB,
                        # is the schedule point (as for the writer, a task switch per 64 KiB
                        # frame would cost much of what reading it does).
                        await trio.lowlevel.checkpoint_if_cancelled()
                        return self._take(payload, max_bytes)
                    frames.popleft()  # an empty binary frame carries no data
                    self._offset = 0
                if self._ended:
                    await trio.lowlevel.checkpoint()
                    return b""
                await self._fill()
        finally:
            self._busy = False

    async def receive_message(self) -> str:
        """The next text message.

        Raises:
            trio.EndOfChannel: the writer has ended the stream (and every frame before the end
                was read).
            UnexpectedFrame: the next frame is binary data (read it with
                :meth:`receive_some`); nothing was consumed.
            ChannelClosed, trio.BusyResourceError, trio.ClosedResourceError: as
                :meth:`receive_some`.
        """
        self._enter("reader")
        try:
            frames = self._frames
            while True:
                if frames:
                    is_text, payload = frames[0]
                    if is_text:
                        frames.popleft()
                        await trio.lowlevel.checkpoint()
                        return bytes(payload).decode()  # the transport checked it is UTF-8
                    if len(payload) > self._offset:
                        raise UnexpectedFrame(
                            f"the next frame of channel {self._ref.channel_id} is binary "
                            "data: read it with receive_some()",
                            channel_id=self._ref.channel_id,
                            is_text=False,
                        )
                    frames.popleft()  # an empty binary frame carries nothing to read
                    self._offset = 0
                    continue
                if self._ended:
                    await trio.lowlevel.checkpoint()
                    raise trio.EndOfChannel(f"channel {self._ref.channel_id} has ended")
                await self._fill()
        finally:
            self._busy = False

    async def aclose(self) -> None:
        """Stop reading (idempotent). Before the end of the stream this drops the socket: the
        engine notices when it next writes to it, and then drops the writer's socket too, so
        the writer gets :class:`~iii_trio.ChannelClosed` (the engine never reads a reader's
        socket, so a close frame would tell it nothing)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        ended = self._ended
        websocket = self._abort_now()
        self._frames.clear()
        if websocket is None:
            await trio.lowlevel.checkpoint()
        elif ended:
            await websocket.aclose()
        else:
            await websocket.abort()

    async def _release(self) -> None:
        await self.aclose()

    # -- internals -----------------------------------------------------------------------------

    def _take(self, payload: Payload, max_bytes: int | None) -> bytes:
        start = self._offset
        end = len(payload) if max_bytes is None else min(len(payload), start + max_bytes)
        if end == len(payload):
            self._frames.popleft()
            self._offset = 0
            if start == 0 and type(payload) is bytes:
                return payload
        else:
            self._offset = end
        return bytes(payload[start:end])

    async def _fill(self) -> None:
        """Read the socket once; mark the end of the stream when the engine closes it."""
        websocket = self._websocket or await self._open()
        try:
            self._frames.extend(await websocket.receive_messages())
        except TransportClosed as exc:
            if not exc.by_peer:
                raise ChannelClosed(
                    f"the connection of channel {self._ref.channel_id}'s reader to the engine "
                    f"was lost mid-stream ({exc})",
                    channel_id=self._ref.channel_id,
                ) from None
            # The engine's close frame (with no status code) is the end of the stream.
            self._ended = True
            await trio.lowlevel.checkpoint()


def _bytes_view(data: object) -> memoryview:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    raise TypeError(f"data must be bytes-like, got {type(data).__name__}")


@attrs.frozen
class Channel:
    """A new channel, as :meth:`Worker.create_channel` returns it: both live ends, and both
    refs.

    Keep one end and hand the other over by putting its ref (or the end itself) in a payload:
    keep :attr:`writer` and send :attr:`reader_ref` to have another function read what you
    write, or keep :attr:`reader` and send :attr:`writer_ref` to read what it writes.

    Attributes:
        writer: the sending end, a live :class:`ChannelWriter` of this worker.
        reader: the receiving end, a live :class:`ChannelReader` of this worker.
        writer_ref: the sending end's ref, to hand it to another function.
        reader_ref: the receiving end's ref, to hand it to another function.
    """

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: ChannelRef
    reader_ref: ChannelRef


class ChannelHub:
    """A worker's channel ends' common ground: the engine's address, handshake headers and TLS
    context, the nursery of the writers' watchers, and every open socket, closed when the
    worker's block exits (:meth:`serve`)."""

    def __init__(
        self,
        *,
        url: str,
        headers: Iterable[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
        open_stream: StreamOpener | None,
    ) -> None:
        self._url = url
        self._headers = list(headers)
        self._ssl_context = ssl_context
        self._open_stream = open_stream
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._ends: dict[_ChannelEnd, None] = {}

    @property
    def closed(self) -> bool:
        """The worker's block has exited: no socket opens any more."""
        return self._closed

    def end(self, ref: ChannelRef) -> ChannelReader | ChannelWriter:
        """A live end for ``ref``: a reader for a ``read`` ref, a writer for a ``write`` ref."""
        return ChannelReader(ref, self) if ref.direction == "read" else ChannelWriter(ref, self)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the writers' watchers until cancelled; then drop every socket still open."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closed = True
            self._nursery = None
            ends = list(self._ends)
            self._ends.clear()
            with trio.move_on_after(_ABORT_GRACE, shield=True):
                await trio.lowlevel.checkpoint()
                for end in ends:
                    await end._abort()

    async def connect(self, end: _ChannelEnd) -> WebSocket:
        """Open ``end``'s socket (see :func:`channel_url`) and keep it for the exit.

        Raises:
            ChannelClosed: the engine refused it (404: no such channel, or a wrong key) or
                could not be reached.
            trio.ClosedResourceError: the worker's block has exited.
        """
        if self._closed:
            raise trio.ClosedResourceError("the worker's open_worker() block has exited")
        ref = end.ref
        try:
            websocket = await connect_websocket(
                channel_url(self._url, ref),
                headers=self._headers,
                ssl_context=self._ssl_context,
                open_stream=self._open_stream,
                # The engine forwards each message whole: a reader takes what a writer may send.
                max_frame_size=MAX_MESSAGE_SIZE,
            )
        except HandshakeFailed as exc:
            raise _refused(ref, exc) from exc
        if self.closed:  # the worker's block exited while the handshake ran
            await websocket.abort()
            raise trio.ClosedResourceError("the worker's open_worker() block has exited")
        self._ends[end] = None
        return websocket

    def spawn(self, watcher: Callable[[WebSocket], Awaitable[None]], websocket: WebSocket) -> None:
        """Start the watcher of a writer's socket (see the module docstring)."""
        if self._nursery is not None:  # else the worker is closing: the socket is dropped
            self._nursery.start_soon(watcher, websocket)

    def forget(self, end: _ChannelEnd) -> None:
        """``end`` closed its socket itself."""
        self._ends.pop(end, None)


def _refused(ref: ChannelRef, exc: HandshakeFailed) -> ChannelClosed:
    channel_id = ref.channel_id
    if exc.status == 404:
        text = (
            f"channel {channel_id} not found: it does not exist, was swept (an end unused for "
            "5 minutes), or the access key is wrong"
        )
    elif exc.status is not None:
        text = f"the engine refused to open channel {channel_id} (HTTP {exc.status}): {exc}"
    else:
        text = f"cannot open channel {channel_id}: {exc}"
    return ChannelClosed(text, channel_id=channel_id)


async def close_ends(ends: Iterable[ChannelReader | ChannelWriter], *, gracefully: bool) -> None:
    """Close the ends a handler received, once it is done with them.

    ``gracefully`` (the handler returned or raised): writers it used end their streams after
    everything they queued, readers stop reading. Otherwise (it was cancelled) every socket is
    dropped at once; a reader sees a dropped writer as the end of the stream all the same, as
    the engine reports it. Closing never raises: what a handler left unfinished is logged at
    DEBUG. The caller shields it (it runs as the handler's cleanup) and bounds it in time.
    """
    await trio.lowlevel.checkpoint()
    for end in ends:
        if gracefully:
            try:
                await end._release()
            except ChannelClosed as exc:
                logger.debug("closing a handler's channel end: %s", exc)
        else:
            await end._abort()
