"""The engine connection: :class:`EngineLink` keeps one session open, :class:`EngineSession` is
one WebSocket to the engine and everything that lives as long as it does.

::

    EngineLink.supervise          supervisor: connect → handshake → serve → reconnect with backoff
    └── EngineSession.serve       session nursery: a lost connection takes its handlers with it
        ├── reader                one read's worth of frames → decode → results / invocations
        ├── writer                the WebSocket's FrameWriter task: one send_all per wake-up
        ├── keepalive             WebSocket ping every 20 s; 60 s of silence means a dead link
        └── handler tasks         parked and reused, one invocation at a time each

The engine has already answered the callers of a lost connection's invocations with
``invocation_stopped``, so cancelling their handlers loses nothing.

Hot-path notes: frames are encoded and framed by the task that produces them (the handler task,
or the caller of ``trigger``), so the writer only writes; a pending call is a parked task
(:class:`~._waiting.Waiters`) rescheduled directly by the reader, with no event or channel per
call.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Final, NoReturn, Protocol

import outcome
import trio

from ._context import run_in_fresh_context
from ._exceptions import ConnectionLost, EngineUnavailable, ProtocolError, RegistrationRejected
from ._groups import is_cancellation
from ._protocol._backoff import delays
from ._protocol._codec import (
    JSONDecodeError,
    decode,
    decode_parsed,
    encode,
    loads,
    successful_result_id,
)
from ._protocol._messages import (
    JSON,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    UnknownMessage,
    WorkerRegistered,
)
from ._protocol._messages import RegistrationRejected as RegistrationRejectedMessage
from ._protocol._registry import ConnectionIdentity
from ._transport import (
    HandshakeFailed,
    StreamOpener,
    TransportClosed,
    WebSocket,
    connect_websocket,
    is_utf8,
    redact_url,
)
from ._types import Backoff, ConnectionState
from ._waiting import AbortFunction, Waiters

__all__ = ["CallFailed", "EngineLink", "EngineSession", "SessionOwner"]

logger = logging.getLogger("iii_trio.connection")

_PING_INTERVAL: Final = 20.0
_SILENCE_LIMIT: Final = 60.0
#: Leaving the worker's block closes the connection within a second (api.md); the engine
#: answers a close frame at once, so this only bounds an engine that does not.
_EXIT_CLOSE_TIMEOUT: Final = 0.5
_NON_FATAL_REJECTION: Final = "FUNCTION_NAMESPACE_CONFLICT"
# Calls framed during one burst before they are written without waiting for the writer.
_EARLY_WRITE_FRAMES: Final = 16
_UNPARSED: Final = object()  # a frame that is not JSON: decode() says why
# Handler tasks kept parked after a burst; beyond this they end instead.
_MAX_IDLE_HANDLER_TASKS: Final = 1024
_STATE_BACKLOG: Final = 64
#: Bad frames reported at WARNING per session; the rest go to DEBUG (a broken engine must not
#: flood the log), with a count when the session ends.
_WARNED_BAD_FRAMES: Final = 3


class CallFailed(Exception):
    """The engine answered a call with an error; the worker turns it into its public error."""

    def __init__(self, error: ErrorBody) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class SessionOwner(Protocol):
    """What a session needs from the worker it serves."""

    def opening_messages(
        self, previous: ConnectionIdentity | None
    ) -> tuple[InvokeFunction, list[Message]]:
        """The announce call (with an invocation id) and the registrations to replay after it."""
        ...

    async def serve_invocation(self, session: EngineSession, message: InvokeFunction) -> None:
        """Serve one incoming invocation; its result goes back through ``session.send_result``."""
        ...

    def serve_inline(self, message: InvokeFunction) -> bytes | None:
        """The result frame, if the invocation's handler can run to completion right here
        (it cannot suspend); None to have it served by a handler task."""
        ...

    def registration_refused(self, error: RegistrationRejected) -> None:
        """The engine refused one registration (a function id another worker holds)."""
        ...

    def handle_message(self, session: EngineSession, message: Message) -> None:
        """Any other engine message (trigger provider traffic and the like)."""
        ...

    def session_ended(self, session: EngineSession) -> None:
        """``session`` stopped serving: what the engine gave it is void."""
        ...


class EngineSession:
    """One open WebSocket to the engine and everything that lives as long as it does."""

    def __init__(
        self,
        websocket: WebSocket,
        owner: SessionOwner,
        on_end: Callable[[EngineSession], None],
    ) -> None:
        self._websocket = websocket
        self._writer = websocket.writer
        self._owner = owner
        self._on_end = on_end
        #: Calls waiting for their result, by invocation id.
        self.calls: Waiters[str, JSON] = Waiters()
        self._pongs: Waiters[int, None] = Waiters()
        self._pings_sent = 0
        self._pongs_received = 0
        self._nursery: trio.Nursery | None = None
        self._identified = trio.Event()
        self._ended = trio.Event()
        self._handlers_running = 0
        # Parked handler tasks, most recently parked last (an ordered dict used as a set).
        self._idle_handler_tasks: dict[trio.lowlevel.Task, None] = {}
        self._bad_frames = 0
        # An error frame that came before workerregistered: the engine's refusal if the
        # connection then closes without one (protocol.md 2.2).
        self._early_error: RegistrationRejected | None = None
        self.identity: ConnectionIdentity | None = None
        #: Why the session stopped serving (None while it serves).
        self.ended_because: str | None = None
        #: The failure that ended it, if any (the cause of a later EngineUnavailable).
        self.ended_by: BaseException | None = None
        #: The engine refused this worker: fatal, no reconnect.
        self.refusal: RegistrationRejected | None = None
        #: A task of the session raised (a handler's SystemExit, say): the exception is on its
        #: way out of the worker, and nothing reconnects.
        self.crashed = False

    # -- sending -------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Frame a (control) message; the writer sends it at its next turn with whatever else
        is ready.

        Raises:
            ConnectionLost: the session is over.
        """
        self.send_frame(encode(message))

    def send_frame(self, frame: bytes) -> None:
        """:meth:`send` for a frame already encoded."""
        try:
            self._websocket.send_text(frame)
        except (TransportClosed, trio.ClosedResourceError) as exc:
            raise ConnectionLost("the engine connection is closed") from exc
        self._writer.wake()

    async def send_result(self, frame: bytes) -> None:
        """Send a result frame; waits only while too much output is unsent.

        Sending is a cancel point but, on the common path, not a schedule point: the handler
        task ends right after, so yielding to the scheduler here would only cost time.
        """
        self._handlers_running -= 1
        writer = self._writer
        try:
            self._websocket.send_text(frame)
        except (TransportClosed, trio.ClosedResourceError):
            # The caller was told invocation_stopped when the connection went; nothing to do.
            logger.debug("result dropped: the connection it belongs to is closed")
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        if self._handlers_running == 0 and not writer.is_woken and writer.send_now():
            # Nobody else is about to produce output: sending now saves the writer's turn,
            # which is most of the latency when one call is in flight.
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        writer.wake()
        if writer.over_high_water:
            await writer.wait_for_room()
        await trio.lowlevel.checkpoint_if_cancelled()

    def result_dropped(self) -> None:
        """An invocation ended without a result to send."""
        self._handlers_running -= 1

    def start_call(self, invocation_id: str, frame: bytes) -> AbortFunction | None:
        """Send ``frame``, an invocation carrying ``invocation_id``, and make the current task
        the one its result reschedules: with the result, or :class:`CallFailed` or
        :class:`ConnectionLost` raised.

        Returns the abort function to pass to ``trio.lowlevel.wait_task_rescheduled``, which
        must follow with no checkpoint in between; None, having done nothing, when too much
        output is unsent: use :meth:`call_frame`, which waits for room.

        Raises:
            ConnectionLost: the session is over.
        """
        writer = self._writer
        if writer.over_high_water:
            return None
        if self.ended_because is not None:
            raise ConnectionLost(self.ended_because)
        lone_call = not self.calls and not writer.is_woken
        try:
            self._websocket.send_text(frame)
        except (TransportClosed, trio.ClosedResourceError) as exc:
            raise ConnectionLost("the engine connection is closed") from exc
        if lone_call:
            writer.write_soon()
        else:
            # Many calls at once share one write; a long burst (many tasks woken by one read)
            # is written every few frames, so the engine and the callee start on the first
            # ones while the rest are framed.
            writer.write_burst(_EARLY_WRITE_FRAMES)
        return self.calls.park(invocation_id)

    async def call_frame(self, invocation_id: str, frame: bytes) -> JSON:
        """:meth:`call` for an invocation already encoded.

        The frame is not kept once written, so a waiting call holds no copy of its payload.
        """
        while True:
            abort = self.start_call(invocation_id, frame)
            if abort is not None:
                break
            await self._writer.wait_for_room()
        del frame
        result: JSON = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def call(self, message: InvokeFunction, *, followed_by: Iterable[Message] = ()) -> JSON:
        """Send an invocation that carries an ``invocation_id`` and return its result.

        ``followed_by`` frames are sent right after it, before waiting.

        Cancellation: the call is forgotten; a result arriving later is dropped.

        Raises:
            CallFailed: the engine answered with an error.
            ConnectionLost: the connection ended before the result arrived.
        """
        assert message.invocation_id is not None
        while self._writer.over_high_water:
            await self._writer.wait_for_room()
        abort = self.start_call(message.invocation_id, encode(message))
        assert abort is not None
        for extra in followed_by:
            self.send(extra)
        result: JSON = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def round_trip(self) -> None:
        """Return once the engine has handled every frame sent before this call.

        The engine handles one connection's frames strictly in order and answers a protocol
        ``ping`` with a ``pong`` in that order too, so counting pongs is exact.

        Raises:
            ConnectionLost: the connection ended first.
        """
        if self.ended_because is not None:
            raise ConnectionLost(self.ended_because)
        self.send(Ping())
        self._pings_sent += 1
        await self._pongs.wait(self._pings_sent)

    # -- running -------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run reader, writer and keepalive until the connection ends or is cancelled; then fail
        the waiting calls and close the socket (shielded and bounded in time).

        ``task_status.started()`` is called once the tasks run (before the handshake).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._keepalive_loop)
                nursery.start_soon(self._read_loop)
                task_status.started()
        except BaseException as exc:
            self.crashed = not is_cancellation(exc)
            raise
        finally:
            self._nursery = None
            if self.ended_because is None and not self.crashed:
                # Cancelled from outside: the worker's block is exiting.
                self._websocket.close_timeout = min(
                    self._websocket.close_timeout, _EXIT_CLOSE_TIMEOUT
                )
            self._stop("a handler stopped the worker" if self.crashed else "the worker is closing")
            await self._websocket.aclose()

    def end(self, reason: str, error: BaseException | None = None) -> None:
        """Stop the session (idempotent); :meth:`serve` returns soon after."""
        if self.ended_by is None:
            self.ended_by = error
        self._stop(reason)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel(reason=reason)

    def refuse(self, refusal: RegistrationRejected) -> None:
        """The engine refused this worker: end the session for good."""
        if self.refusal is None:
            self.refusal = refusal
        self.end(f"the engine refused this worker: {refusal}", refusal)

    def _stop(self, reason: str) -> None:
        if self.ended_because is not None:
            return
        self.ended_because = reason
        refusal = self.refusal
        if refusal is not None:
            self.calls.fail_all(lambda: refusal)
        else:
            self.calls.fail_all(lambda: ConnectionLost(reason))
        self._pongs.fail_all(lambda: ConnectionLost(reason))
        self._identified.set()
        self._ended.set()
        if self._bad_frames > _WARNED_BAD_FRAMES:
            logger.warning("dropped %d bad frames from the engine in all", self._bad_frames)
        self._on_end(self)

    async def wait_ended(self) -> None:
        """Return once the session has stopped serving (its socket may still be closing)."""
        await self._ended.wait()

    async def wait_identity(self) -> ConnectionIdentity:
        """The identity ``workerregistered`` gave this connection.

        Raises:
            ConnectionLost: the session ended without one.
        """
        await self._identified.wait()
        if self.identity is None:
            raise ConnectionLost(self.ended_because or "the engine connection ended")
        return self.identity

    async def _read_loop(self) -> None:
        websocket = self._websocket
        nursery = self._nursery
        assert nursery is not None
        idle = self._idle_handler_tasks
        serve_inline = self._owner.serve_inline
        resolve = self.calls.resolve
        writer = self._writer
        closed: TransportClosed | trio.ClosedResourceError | None = None
        while True:
            try:
                frames = await websocket.receive_messages()
            except (TransportClosed, trio.ClosedResourceError) as exc:
                closed = exc
                break
            replies = 0
            for is_text, frame in frames:  # the engine's JSON counts in binary frames too
                try:
                    raw = loads(frame)
                except JSONDecodeError:
                    if is_text and not is_utf8(frame):
                        # orjson refuses text that is not UTF-8; the transport leaves that
                        # check to it (check_text=False), and the connection fails with 1007.
                        websocket.fail_invalid_text()
                        break
                    raw = _UNPARSED
                if type(raw) is dict and raw.get("type") == "invocationresult":
                    # A successful result needs no message object: its id and value will do.
                    invocation_id = successful_result_id(raw)
                    if invocation_id is not None:
                        resolve(invocation_id, raw.get("result"))
                        continue
                try:
                    message = decode(frame) if raw is _UNPARSED else decode_parsed(raw, frame)
                except ProtocolError as exc:
                    self._bad_frame(frame, exc)
                    continue
                if type(message) is InvocationResult:
                    if message.error is None:
                        resolve(message.invocation_id, message.result)
                    else:
                        self.calls.fail(message.invocation_id, CallFailed(message.error))
                elif type(message) is InvokeFunction:
                    reply = serve_inline(message)
                    if reply is not None:
                        if self._send_reply(websocket, reply):
                            replies += 1
                            if replies % _EARLY_WRITE_FRAMES == 0 and not writer.is_woken:
                                # As for calls: the engine starts on the first replies while
                                # this read's later invocations are served.
                                writer.send_now()
                        continue
                    self._handlers_running += 1
                    if idle:
                        trio.lowlevel.reschedule(idle.popitem()[0], _value(message))
                    else:
                        nursery.start_soon(self._handler_task, message)
                else:
                    self._handle_control(message)
            if replies:
                # Replies the reader produced itself go out in one write for the whole read;
                # whatever the kernel does not take at once is the writer's.
                writer.write_soon()
            if self.ended_because is not None:
                break
        if closed is not None:
            await self._connection_closed(closed)
        await trio.lowlevel.checkpoint()  # leaving through the except branch skipped one

    async def _connection_closed(self, closed: TransportClosed | trio.ClosedResourceError) -> None:
        """The reader saw the connection end: say so at once, then let the writer send what is
        left (our answer to a close frame, or the close frame of a failure) before the session
        is cancelled. Cancelling a writer in the middle of a write would cut a frame, and then
        no close frame could follow."""
        if self.identity is None and self._early_error is not None:
            self.refusal = self._early_error
            reason = f"the engine refused this worker: {self.refusal}"
            error: BaseException = self.refusal
        else:
            reason = f"the engine closed the connection ({closed})"
            error = closed
        self.ended_by = self.ended_by or error
        self._stop(reason)
        with trio.move_on_after(self._websocket.close_timeout):
            await self._writer.flush_quietly()
        self.end(reason, error)

    def _bad_frame(self, frame: object, error: ProtocolError) -> None:
        # One bad frame must not take the worker down: report it and carry on. The engine skips
        # empty frames silently, and so do we.
        self._bad_frames += 1
        empty = isinstance(frame, bytes | bytearray | memoryview) and not bytes(frame).strip()
        if self._bad_frames <= _WARNED_BAD_FRAMES and not empty:
            logger.warning("dropping a frame the engine sent: %s", error)
        else:
            logger.debug("dropping a frame the engine sent: %s", error)

    def _send_reply(self, websocket: WebSocket, frame: bytes) -> bool:
        try:
            websocket.send_text(frame)
        except (TransportClosed, trio.ClosedResourceError):
            return False
        return True

    async def _handler_task(self, message: InvokeFunction) -> None:
        """Serve invocations: this one, then whichever the reader hands over while parked.

        Waking a parked task costs less than half of spawning one and letting it end, and a
        task is spawned per call only while every existing one is busy.
        """
        idle = self._idle_handler_tasks
        serve = self._owner.serve_invocation
        this_task = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            idle.pop(this_task, None)
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            await run_in_fresh_context(serve(self, message))
            if len(idle) >= _MAX_IDLE_HANDLER_TASKS:
                return
            idle[this_task] = None
            message = await trio.lowlevel.wait_task_rescheduled(abort)

    def _handle_control(self, message: Message) -> None:
        if isinstance(message, WorkerRegistered):
            self.identity = ConnectionIdentity(message.worker_id, message.reattach_token)
            self._identified.set()
            if self._early_error is not None:
                logger.warning("the engine sent an error frame: %s", self._early_error)
                self._early_error = None
        elif isinstance(message, RegistrationRejectedMessage):
            error = RegistrationRejected(
                message.code,
                namespace=message.namespace,
                worker_name=message.worker_name,
                function_id=message.function_id,
                owner_worker_id=message.owner_worker_id,
            )
            if message.code == _NON_FATAL_REJECTION:
                logger.warning("the engine refused a function registration: %s", error)
                self._owner.registration_refused(error)
            else:
                self.refuse(error)
        elif isinstance(message, Ping):
            self.send(Pong())
        elif isinstance(message, Pong):
            self._pongs_received += 1
            self._pongs.resolve(self._pongs_received, None)
        elif isinstance(message, UnknownMessage):
            self._unknown_message(message)
        else:
            self._owner.handle_message(self, message)

    def _unknown_message(self, message: UnknownMessage) -> None:
        if message.type != "error":
            logger.debug("ignoring message of unknown type %r", message.type)
            return
        error = message.fields.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        text = error.get("message") if isinstance(error, dict) else None
        if self.identity is None and isinstance(code, str):
            # The engine refuses a connection (its auth function said no) with this frame and a
            # close frame instead of workerregistered (protocol.md 2.2): known once it closes.
            self._early_error = RegistrationRejected(
                code, message=text if isinstance(text, str) else None
            )
        else:
            logger.warning("the engine sent an error frame: %s", error)

    async def _write_loop(self) -> None:
        try:
            await self._writer.run()
        except TransportClosed as exc:
            self.end("the engine connection broke while sending", exc)
        await trio.lowlevel.checkpoint()  # the failure path may not have reached one

    async def _keepalive_loop(self) -> None:
        websocket = self._websocket
        while True:
            await trio.sleep(_PING_INTERVAL)
            if trio.current_time() - websocket.last_received > _SILENCE_LIMIT:
                error = TransportClosed(f"no frame from the engine for {_SILENCE_LIMIT:.0f} s")
                self.end(str(error), error)
                return
            websocket.send_ping()
            self._writer.wake()


_value: Final = outcome.Value  # a parked handler task is rescheduled with its next invocation


class _StateWatcher:
    """Async iterator over one watcher's backlog of connection states."""

    def __init__(self, link: EngineLink, backlog: deque[ConnectionState]) -> None:
        self._link = link
        self._backlog = backlog
        self._finished = False

    def __aiter__(self) -> _StateWatcher:
        return self

    async def __anext__(self) -> ConnectionState:
        if self._finished:
            raise StopAsyncIteration
        while not self._backlog:
            await self._link._state_changed.wait()
        state = self._backlog.popleft()
        self._finished = state is ConnectionState.CLOSED
        await trio.lowlevel.checkpoint()
        return state


class EngineLink:
    """The worker's side of the engine connection: the connection state, the current session,
    and :meth:`supervise`, the supervisor that keeps a session open."""

    def __init__(
        self,
        owner: SessionOwner,
        *,
        url: str,
        headers: Iterable[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
        backoff: Backoff,
        rng: random.Random,
        open_stream: StreamOpener | None,
    ) -> None:
        self._owner = owner
        self._url = url
        self._shown_url = redact_url(url)
        self._headers = list(headers)
        self._ssl_context = ssl_context
        self._backoff = backoff
        self._rng = rng
        self._open_stream = open_stream
        self._session: EngineSession | None = None
        self._state = ConnectionState.CONNECTING
        self._state_changed = trio.Event()
        self._watchers: list[deque[ConnectionState]] = []  # one backlog per watcher

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def session(self) -> EngineSession | None:
        """The session calls go to: set only while CONNECTED."""
        return self._session if self._state is ConnectionState.CONNECTED else None

    @property
    def open_session(self) -> EngineSession | None:
        """The session registrations go to: the current one while it serves, ready or still in
        its handshake. Its replay snapshot was taken when it became current, so whatever is
        registered or unregistered after that must be sent to it, or the engine would not hear
        of it before the next connection."""
        session = self._session
        return session if session is not None and session.ended_because is None else None

    @property
    def identity(self) -> ConnectionIdentity | None:
        return self._session.identity if self._session is not None else None

    def close(self) -> None:
        """The worker's block has exited: CLOSED for good."""
        self._session = None
        self._set_state(ConnectionState.CLOSED)

    async def wait_connected(self) -> EngineSession:
        """Return the session once CONNECTED.

        Raises:
            trio.ClosedResourceError: the worker's block has exited, or it failed for good.
        """
        while self._state is not ConnectionState.CONNECTED:
            if self._state in (ConnectionState.CLOSED, ConnectionState.FAILED):
                raise trio.ClosedResourceError(f"the worker is {self._state.value}")
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()
        session = self._session
        if session is None or self._state is not ConnectionState.CONNECTED:
            # The connection went while the checkpoint ran: wait for the next one.
            return await self.wait_connected()
        return session

    @asynccontextmanager
    async def watch_states(self) -> AsyncIterator[AsyncIterator[ConnectionState]]:
        """An async iterator of states: the current one, then each change, until CLOSED."""
        backlog: deque[ConnectionState] = deque([self._state], maxlen=_STATE_BACKLOG)
        self._watchers.append(backlog)
        try:
            yield _StateWatcher(self, backlog)
        finally:
            self._watchers.remove(backlog)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state or self._state is ConnectionState.CLOSED:
            return
        self._state = state
        for backlog in self._watchers:
            backlog.append(state)
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()

    def _session_ended(self, session: EngineSession) -> None:
        self._owner.session_ended(session)
        # The state says what is true the moment a session stops serving, not when the
        # supervisor gets round to it.
        if session is self._session and self._state is ConnectionState.CONNECTED:
            self._set_state(
                ConnectionState.FAILED
                if session.refusal is not None or session.crashed
                else ConnectionState.RECONNECTING
            )

    # -- the supervisor ------------------------------------------------------------------------

    async def supervise(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Keep one ready session open until cancelled, reconnecting with the backoff policy.

        An attempt is the connection plus the handshake; failed attempts in a row draw their
        delays from one schedule, which restarts after every session that became ready. A
        dropped session is retried at once, then with the schedule's delays.

        ``task_status.started()`` is called once the first session is ready: the worker has
        announced itself and the engine has applied every registration it sent.

        Raises:
            EngineUnavailable: the backoff budget ran out, or the engine's TLS certificate was
                rejected.
            RegistrationRejected: the engine refused this worker; it does not reconnect.
        """
        previous: ConnectionIdentity | None = None
        started = False
        schedule = delays(self._backoff, self._rng)
        attempts = 0
        try:
            # Sessions run in a nursery of their own, not in this task's stack: a session that
            # has stopped serving may still be finishing its closing handshake (up to its close
            # timeout with an engine that does not answer), and the next one need not wait.
            async with trio.open_nursery() as sessions:
                while True:
                    self._set_state(
                        ConnectionState.RECONNECTING if started else ConnectionState.CONNECTING
                    )
                    attempts += 1
                    attempt = await self._attempt(sessions, previous, attempts)
                    if isinstance(attempt, EngineSession):
                        if not started:
                            started = True
                            task_status.started()
                        previous = await self._serve(attempt) or previous
                        # A dropped session is retried at once, then with fresh delays.
                        schedule = delays(self._backoff, self._rng)
                        attempts = 0
                    else:
                        failure, identity = attempt
                        previous = identity or previous
                        await self._wait_to_retry(schedule, attempts, failure)
        except BaseException as exc:
            if not is_cancellation(exc):
                self._set_state(ConnectionState.FAILED)
            raise

    async def _serve(self, session: EngineSession) -> ConnectionIdentity | None:
        """Wait while ``session`` serves; return its identity for the next reattach.

        Raises:
            RegistrationRejected: the engine refused this worker meanwhile.
        """
        await session.wait_ended()
        self._session = None
        if session.refusal is not None:
            raise session.refusal
        if session.crashed:
            # Its exception reaches this task through the sessions' nursery, which cancels
            # this wait: there is nothing to reconnect for.
            await trio.sleep_forever()
        logger.warning("connection to %s lost: %s", self._shown_url, session.ended_because)
        return session.identity

    async def _wait_to_retry(
        self, schedule: Iterator[float], attempts: int, failure: BaseException
    ) -> None:
        """Sleep until the next attempt is due.

        Raises:
            EngineUnavailable: the backoff budget is spent.
        """
        delay = next(schedule, None)
        if delay is None:
            raise EngineUnavailable(
                f"cannot reach the iii engine at {self._shown_url} after {attempts} "
                f"attempt(s): {failure}",
                url=self._shown_url,
                attempts=attempts,
            ) from failure
        if attempts == 1:
            logger.warning(
                "cannot reach the iii engine at %s (%s); retrying in %.1f s, and again with "
                "backoff (further attempts are logged at DEBUG)",
                self._shown_url,
                failure,
                delay,
            )
        else:
            logger.debug(
                "attempt %d to reach %s failed (%s); retrying in %.2f s",
                attempts,
                self._shown_url,
                failure,
                delay,
            )
        await trio.sleep(delay)

    async def _attempt(
        self, sessions: trio.Nursery, previous: ConnectionIdentity | None, attempts: int
    ) -> EngineSession | tuple[BaseException, ConnectionIdentity | None]:
        """One attempt: connect and hand-shake. Returns the session once it is ready (it serves
        in ``sessions``), or why it failed and the identity the engine gave it, if any.

        Raises:
            EngineUnavailable: the engine's TLS certificate was rejected (retrying cannot help).
            RegistrationRejected: the engine refused this worker.
        """
        try:
            websocket = await connect_websocket(
                self._url,
                headers=self._headers,
                ssl_context=self._ssl_context,
                open_stream=self._open_stream,
                check_text=False,  # every frame goes through orjson, which checks (_read_loop)
            )
        except HandshakeFailed as exc:
            if exc.permanent:
                raise EngineUnavailable(
                    f"cannot connect to the iii engine at {self._shown_url}: {exc}",
                    url=self._shown_url,
                    attempts=attempts,
                ) from exc
            refused: HandshakeFailed | None = exc
        else:
            refused = None
        if refused is not None:
            await trio.lowlevel.checkpoint()  # the failure path may not have reached one
            return refused, None
        session = EngineSession(websocket, self._owner, self._session_ended)
        await sessions.start(session.serve)
        # No checkpoint between this and the replay snapshot in _handshake: every registration
        # is either in the snapshot or sent straight to this session.
        self._session = session
        if await _handshake(session, self._owner, previous):
            self._set_state(ConnectionState.CONNECTED)
            logger.info(
                "connected to the iii engine at %s (worker id %s)",
                self._shown_url,
                session.identity.worker_id if session.identity else "?",
            )
            return session
        await session.wait_ended()
        self._session = None
        if session.refusal is not None:
            raise session.refusal
        failure = session.ended_by or ConnectionLost(
            session.ended_because or "the connection closed"
        )
        return failure, session.identity


async def _handshake(
    session: EngineSession, owner: SessionOwner, previous: ConnectionIdentity | None
) -> bool:
    """Send the opening frames and wait until the engine has applied them.

    Returns False when the session ended before it became ready.
    """
    announce, replay = owner.opening_messages(previous)
    ready = False
    try:
        if previous is not None:
            session.send(previous.reattach())
        await session.call(announce, followed_by=replay)
        await session.wait_identity()
        ready = True
    except (ConnectionLost, RegistrationRejected):
        pass  # serve() reports why; the supervisor reads it from the session.
    except CallFailed as exc:
        # The engine refused the announce itself (e.g. an RBAC namespace restriction).
        session.refuse(RegistrationRejected(exc.error.code, message=exc.error.message))
    await trio.lowlevel.checkpoint()  # the failure paths above may not have reached one
    return ready
