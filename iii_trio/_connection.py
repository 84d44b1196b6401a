"""The engine connection: one :class:`EngineSession` per WebSocket, and the supervisor that opens
sessions with backoff, performs the handshake and reconnects.

Task tree of one session (all in the session's own nursery, so a lost connection takes its
handlers with it — the engine has already answered their callers with ``invocation_stopped``)::

    session nursery
    ├── reader      receive one read's worth of frames → decode → results / invocations
    ├── writer      sleeps until something is framed, then one send_all for all of it
    ├── keepalive   WebSocket ping every 20 s; 60 s of silence means the link is dead
    └── one task per incoming invocation

Hot-path notes: frames are encoded and framed by the task that produces them (the handler task,
or the caller of ``trigger``), so the writer only concatenates and sends; a pending call is a
parked task rescheduled directly by the reader, with no event or channel per call.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Final, NoReturn, Protocol

import outcome
import trio

from ._context import run_in_fresh_context
from ._exceptions import ConnectionLost, EngineUnavailable, ProtocolError, RegistrationRejected
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
from ._transport import HandshakeFailed, TransportClosed, WebSocket, connect_websocket
from ._types import Backoff, ConnectionState

__all__ = ["AbortFunction", "CallFailed", "EngineSession", "SessionOwner", "run_supervisor"]

logger = logging.getLogger("iii_trio.connection")

#: What ``trio.lowlevel.wait_task_rescheduled`` calls when the waiting task is cancelled.
AbortFunction = Callable[[trio.lowlevel.RaiseCancelT], trio.lowlevel.Abort]

_PING_INTERVAL: Final = 20.0
_SILENCE_LIMIT: Final = 60.0
# Framed-but-unsent chunks above which producers wait for the writer (bounded memory).
_OUTPUT_HIGH_WATER: Final = 4096
_NON_FATAL_REJECTION: Final = "FUNCTION_NAMESPACE_CONFLICT"
# Calls framed during one burst before they are written without waiting for the writer.
_EARLY_WRITE_FRAMES: Final = 16
_UNPARSED: Final = object()  # a frame that is not JSON: decode() says why
# Handler tasks kept parked after a burst; beyond this they end instead.
_MAX_IDLE_HANDLER_TASKS: Final = 1024


class CallFailed(Exception):
    """The engine answered a call with an error; the worker turns it into its public error."""

    def __init__(self, error: ErrorBody) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class SessionOwner(Protocol):
    """What the supervisor needs from the worker that owns it."""

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

    def handle_message(self, session: EngineSession, message: Message) -> None:
        """Any other engine message (trigger provider traffic and the like)."""
        ...

    def session_changed(self, session: EngineSession | None, state: ConnectionState) -> None:
        """The current session (None while disconnected) and the connection state."""
        ...

    def session_ended(self, session: EngineSession) -> None:
        """``session`` stopped serving; calls must wait for the next one."""
        ...


class EngineSession:
    """One open WebSocket to the engine and everything that lives as long as it does."""

    def __init__(self, websocket: WebSocket, owner: SessionOwner) -> None:
        self._websocket = websocket
        self._owner = owner
        self._pending: dict[str, trio.lowlevel.Task] = {}
        self._wake_writer = trio.Event()
        self._writer_woken = False
        websocket.on_unsent = self._request_flush
        self._drained = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._identity_received = trio.Event()
        self._handlers_running = 0
        # Parked handler tasks, most recently parked last (an ordered dict used as a set).
        self._idle_handler_tasks: dict[trio.lowlevel.Task, None] = {}
        self._pings_sent = 0
        self._pongs_received = 0
        self._pong_arrived = trio.Event()
        self.identity: ConnectionIdentity | None = None
        self.closed_because: str | None = None
        self.fatal: RegistrationRejected | None = None

    @property
    def pending_calls(self) -> int:
        return len(self._pending)

    # -- sending -------------------------------------------------------------------------------

    def send_nowait(self, message: Message) -> None:
        """Frame ``message`` now and let the writer send it (used for small control frames)."""
        self.send_frame_nowait(encode(message))

    def _request_flush(self) -> None:
        if not self._writer_woken:
            self._writer_woken = True
            self._wake_writer.set()

    def send_frame_nowait(self, frame: bytes) -> None:
        try:
            self._websocket.send_text(frame)
        except TransportClosed:
            raise ConnectionLost("the engine connection is closed") from None
        if not self._writer_woken:
            self._writer_woken = True
            self._wake_writer.set()

    async def send_result(self, frame: bytes) -> None:
        """Send a result frame; waits only while too much output is unsent.

        Sending is a cancel point but, on the common path, not a schedule point: the handler
        task ends right after, so yielding to the scheduler here would only cost time.
        """
        self._handlers_running -= 1
        websocket = self._websocket
        try:
            websocket.send_text(frame)
        except TransportClosed:
            # The caller was told invocation_stopped when the connection went; nothing to do.
            logger.debug("result dropped: the connection it belongs to is closed")
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        if self._handlers_running == 0 and not self._writer_woken and websocket.send_now():
            # Nobody else is about to produce output: sending now saves the writer's turn,
            # which is most of the latency when one call is in flight.
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        if not self._writer_woken:
            self._writer_woken = True
            self._wake_writer.set()
        while websocket.buffered_output > _OUTPUT_HIGH_WATER:
            await self._drained.wait()
        await trio.lowlevel.checkpoint_if_cancelled()

    def result_dropped(self) -> None:
        """An invocation ended without a result to send."""
        self._handlers_running -= 1

    async def call(self, message: InvokeFunction, *, followed_by: Iterable[Message] = ()) -> JSON:
        """Send an invocation that carries an ``invocation_id`` and return its result.

        ``followed_by`` frames are sent right after it, before waiting.

        Cancellation: the pending entry is removed; a result arriving later is dropped.

        Raises:
            CallFailed: the engine answered with an error.
            ConnectionLost: the connection ended before the result arrived.
        """
        assert message.invocation_id is not None
        return await self.call_frame(message.invocation_id, encode(message), followed_by)

    async def call_frame(
        self, invocation_id: str, frame: bytes, followed_by: Iterable[Message] = ()
    ) -> JSON:
        """:meth:`call` for an invocation already encoded."""
        while self._websocket.buffered_output > _OUTPUT_HIGH_WATER:
            await self._drained.wait()
        abort = self._start_call(invocation_id, frame, followed_by)
        result: JSON = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def try_start_call(self, invocation_id: str, frame: bytes) -> AbortFunction | None:
        """The per-call path of :meth:`call_frame`, minus one coroutine: send ``frame`` and make
        the current task the one its result reschedules, with the result, or
        :class:`CallFailed` or :class:`ConnectionLost` raised.

        Returns the abort function to pass to ``trio.lowlevel.wait_task_rescheduled``, which
        must follow with no checkpoint in between; None, having done nothing, when too much
        output is unsent: use :meth:`call_frame`, which waits for it.

        Raises:
            ConnectionLost: the connection is closed.
        """
        if self._websocket.buffered_output > _OUTPUT_HIGH_WATER:
            return None
        return self._start_call(invocation_id, frame, ())

    def _start_call(
        self, invocation_id: str, frame: bytes, followed_by: Iterable[Message]
    ) -> AbortFunction:
        if self.closed_because is not None:
            raise ConnectionLost(self.closed_because)
        websocket = self._websocket
        lone_call = not self._pending and not self._writer_woken
        try:
            websocket.send_text(frame)
            for extra in followed_by:
                websocket.send_text(encode(extra))
        except TransportClosed:
            raise ConnectionLost("the engine connection is closed") from None
        if not (lone_call and websocket.send_now()) and not self._writer_woken:
            # Many calls at once share one write: the writer sends them all.
            self._writer_woken = True
            self._wake_writer.set()
        elif websocket.buffered_output >= _EARLY_WRITE_FRAMES:
            # A burst of calls (many tasks woken by one read) would otherwise reach the engine
            # only when the last of them has run; writing every few frames lets the engine and
            # the callee start on the first ones meanwhile.
            websocket.send_now()
        pending = self._pending
        pending[invocation_id] = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            pending.pop(invocation_id, None)
            return trio.lowlevel.Abort.SUCCEEDED

        return abort

    async def round_trip(self) -> None:
        """Return once the engine has handled every frame sent before this call.

        The engine handles one connection's frames strictly in order and answers a protocol
        ``ping`` with a ``pong`` in that order too, so counting pongs is exact.

        Raises:
            ConnectionLost: the connection ended first.
        """
        self.send_nowait(Ping())
        self._pings_sent += 1
        target = self._pings_sent
        while self._pongs_received < target:
            if self.closed_because is not None:
                raise ConnectionLost(self.closed_because)
            await self._pong_arrived.wait()
        await trio.lowlevel.checkpoint()

    # -- running -------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run reader, writer and keepalive until the connection ends or is cancelled; then fail
        pending calls with :class:`ConnectionLost` and close the socket.

        ``task_status.started()`` is called once the tasks run (before the handshake).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._keepalive_loop)
                nursery.start_soon(self._read_loop)
                task_status.started()
        finally:
            self._nursery = None
            reason = self.closed_because or "the worker is shutting down"
            self.closed_because = reason
            self._fail_pending(self.fatal or ConnectionLost(reason))
            self._pong_arrived.set()  # round_trip() waiters see closed_because and give up
            await self._websocket.aclose()

    async def wait_identity(self) -> ConnectionIdentity:
        await self._identity_received.wait()
        assert self.identity is not None
        return self.identity

    def end(self, reason: str) -> None:
        """Stop the session (idempotent); :meth:`serve` returns soon after."""
        if self.closed_because is None:
            self.closed_because = reason
            self._owner.session_ended(self)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for task in pending.values():
            trio.lowlevel.reschedule(task, outcome.Error(error))

    async def _read_loop(self) -> None:
        websocket = self._websocket
        nursery = self._nursery
        assert nursery is not None
        idle = self._idle_handler_tasks
        serve_inline = self._owner.serve_inline
        reschedule = trio.lowlevel.reschedule
        value = outcome.Value
        while True:
            try:
                frames = await websocket.receive_payloads()
            except TransportClosed as exc:
                self.end(f"the engine closed the connection ({exc})")
                break
            replies = 0
            for frame in frames:
                try:
                    raw = loads(frame)
                except JSONDecodeError:
                    raw = _UNPARSED
                if type(raw) is dict and raw.get("type") == "invocationresult":
                    # A successful result needs no message object: its id and value will do.
                    invocation_id = successful_result_id(raw)
                    if invocation_id is not None:
                        self._resume_caller(invocation_id, value(raw.get("result")))
                        continue
                try:
                    message = decode(frame) if raw is _UNPARSED else decode_parsed(raw, frame)
                except ProtocolError as exc:
                    # One bad frame must not take the worker down: report it and carry on.
                    logger.warning("dropping a frame the engine sent: %s", exc)
                    continue
                if type(message) is InvocationResult:
                    self._resume_caller(
                        message.invocation_id,
                        value(message.result)
                        if message.error is None
                        else outcome.Error(CallFailed(message.error)),
                    )
                elif type(message) is InvokeFunction:
                    reply = serve_inline(message)
                    if reply is not None:
                        if self._send_reply(websocket, reply):
                            replies += 1
                            if replies % _EARLY_WRITE_FRAMES == 0 and not self._writer_woken:
                                # As for calls: the engine starts on the first replies while
                                # this read's later invocations are served.
                                websocket.send_now()
                        continue
                    self._handlers_running += 1
                    if idle:
                        reschedule(idle.popitem()[0], value(message))
                    else:
                        nursery.start_soon(self._handler_task, message)
                else:
                    self._handle_control(message)
            if replies and not self._writer_woken and not websocket.send_now():
                # Replies the reader produced itself go out in one write for the whole read;
                # whatever the kernel did not take at once is left to the writer.
                self._writer_woken = True
                self._wake_writer.set()
            if self.closed_because is not None:
                break
        await trio.lowlevel.checkpoint()  # leaving through the except branch skipped one

    def _resume_caller(self, invocation_id: str, result: outcome.Outcome[JSON]) -> None:
        task = self._pending.pop(invocation_id, None)
        if task is None:
            logger.debug("result for unknown invocation %s", invocation_id)
        else:
            trio.lowlevel.reschedule(task, result)

    def _send_reply(self, websocket: WebSocket, frame: bytes) -> bool:
        try:
            websocket.send_text(frame)
        except TransportClosed:
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
            self._identity_received.set()
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
            else:
                self.fatal = error
                self.end(f"the engine refused this worker: {error}")
        elif isinstance(message, Ping):
            self.send_nowait(Pong())
        elif isinstance(message, Pong):
            self._pongs_received += 1
            arrived, self._pong_arrived = self._pong_arrived, trio.Event()
            arrived.set()
        elif isinstance(message, UnknownMessage):
            if message.type == "error":
                logger.warning("engine error frame: %s", message.fields.get("error"))
            else:
                logger.debug("ignoring message of unknown type %r", message.type)
        else:
            self._owner.handle_message(self, message)

    async def _write_loop(self) -> None:
        websocket = self._websocket
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            self._writer_woken = False
            if not await websocket.send_buffered():
                self.end("the engine connection broke while sending")
                return
            drained, self._drained = self._drained, trio.Event()
            drained.set()

    async def _keepalive_loop(self) -> None:
        websocket = self._websocket
        while True:
            await trio.sleep(_PING_INTERVAL)
            if trio.current_time() - websocket.last_received > _SILENCE_LIMIT:
                self.end(f"no frame from the engine for {_SILENCE_LIMIT:.0f} s")
                return
            websocket.send_ping()
            if not self._writer_woken:
                self._writer_woken = True
                self._wake_writer.set()


async def run_supervisor(
    owner: SessionOwner,
    *,
    url: str,
    headers: Iterable[tuple[str, str]],
    backoff: Backoff,
    rng: random.Random,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep one ready session open until cancelled, reconnecting with ``backoff``.

    An attempt is the connection plus the handshake; failed attempts in a row draw their delays
    from one schedule, which restarts after every session that became ready. A dropped session is
    retried at once, then with the schedule's delays.

    ``task_status.started()`` is called once the first session is ready: the worker has announced
    itself and the engine has applied every registration it sent.

    Raises:
        EngineUnavailable: the backoff budget ran out (on the first connection or a reconnect).
        RegistrationRejected: the engine refused this worker; it does not reconnect.
    """
    headers = list(headers)
    previous: ConnectionIdentity | None = None
    started = False
    schedule = delays(backoff, rng)
    attempts = 0
    while True:
        waiting_state = ConnectionState.RECONNECTING if started else ConnectionState.CONNECTING
        owner.session_changed(None, waiting_state)
        attempts += 1
        ready = False
        try:
            websocket = await connect_websocket(url, headers=headers)
        except HandshakeFailed as exc:
            failure = str(exc)
        else:
            session = EngineSession(websocket, owner)
            async with trio.open_nursery() as nursery:
                await nursery.start(session.serve)
                # No checkpoint between this and the replay snapshot in _handshake: every
                # registration is either in the snapshot or sent straight to this session.
                owner.session_changed(session, waiting_state)
                ready = await _handshake(session, owner, previous)
                if ready:
                    owner.session_changed(session, ConnectionState.CONNECTED)
                    if not started:
                        started = True
                        task_status.started()
            # serve() has returned: the session is over.
            previous = session.identity or previous
            if session.fatal is not None:
                owner.session_changed(None, ConnectionState.FAILED)
                raise session.fatal
            failure = session.closed_because or "connection closed"
        if ready:
            logger.info("connection to %s lost: %s", url, failure)
            schedule = delays(backoff, rng)
            attempts = 0
            continue
        delay = next(schedule, None)
        if delay is None:
            owner.session_changed(None, ConnectionState.FAILED)
            raise EngineUnavailable(
                f"cannot reach the iii engine at {url} after {attempts} attempt(s): {failure}"
            )
        logger.info("engine at %s unavailable (%s); retrying in %.2f s", url, failure, delay)
        await trio.sleep(delay)


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
            session.send_nowait(previous.reattach())
        await session.call(announce, followed_by=replay)
        await session.wait_identity()
        ready = True
    except (ConnectionLost, RegistrationRejected):
        pass  # serve() reports why; the supervisor reads it from the session.
    except CallFailed as exc:
        # The engine refused the announce itself (e.g. an RBAC namespace restriction).
        session.fatal = RegistrationRejected(exc.error.code, message=exc.error.message)
        session.end(f"the engine refused this worker: {exc.error.message}")
    await trio.lowlevel.checkpoint()  # the failure paths above may not have reached one
    return ready
