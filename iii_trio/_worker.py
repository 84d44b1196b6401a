"""``open_worker()`` and the :class:`Worker` it yields.

The worker owns the registrations (replayed on every connection), the handler table and the
connection state; :mod:`._connection` owns the sockets. Both meet here: the worker is the
:class:`~._connection.SessionOwner` of the supervisor it starts.

Task tree::

    open_worker nursery
    └── supervisor (run_supervisor)       connect → handshake → serve → reconnect
        └── session nursery               reader, writer, keepalive, one task per invocation
    (the user's block runs in the open_worker task itself)
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import random
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, final

import attrs
import trio

from ._connection import CallFailed, EngineSession, run_supervisor
from ._dispatch import (
    PreparedHandler,
    prepare_handler,
    serve_inline,
    serve_invocation,
    to_json_value,
)
from ._exceptions import InvocationError
from ._groups import raise_collapsed
from ._protocol._codec import encode_call
from ._protocol._ids import new_invocation_id
from ._protocol._messages import (
    EnqueueAction,
    ErrorBody,
    InvokeFunction,
    Message,
    RegisterFunction,
    RegisterService,
    VoidAction,
)
from ._protocol._registry import ConnectionIdentity, Registry
from ._types import Backoff, ConnectionState, FunctionInfo, JSONValue, WorkerInfo
from ._version import __version__

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["FunctionRef", "Worker", "open_worker"]

logger = logging.getLogger("iii_trio.worker")

DEFAULT_URL: Final = "ws://127.0.0.1:49134"
_REGISTER_WORKER: Final = "engine::workers::register"
# Ids the SDKs always resolve in the engine's default namespace (spec/protocol.md section 4.2).
_DEFAULT_NAMESPACE_PREFIXES: Final = ("engine::", "configuration::")
_INFO_BATCH: Final = 32  # engine::functions::info accepts at most 32 ids per call
_STATE_BACKLOG: Final = 64

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


@attrs.frozen
class FunctionRef:
    """A registered function. ``unregister()`` removes it from the engine and from replay."""

    id: str
    _worker: Worker = attrs.field(repr=False)

    def unregister(self) -> None:
        """Stop serving this function (idempotent)."""
        self._worker._unregister_function(self.id)


class _StateWatcher:
    """Async iterator over one watcher's backlog of connection states."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._finished = False
        self.backlog: deque[ConnectionState] = deque(
            [worker.connection_state], maxlen=_STATE_BACKLOG
        )

    def __aiter__(self) -> _StateWatcher:
        return self

    async def __anext__(self) -> ConnectionState:
        if self._finished:
            raise StopAsyncIteration
        while not self.backlog:
            await self._worker._state_changed.wait()
        state = self.backlog.popleft()
        self._finished = state is ConnectionState.CLOSED
        await trio.lowlevel.checkpoint()
        return state


@final
class Worker:
    """A connection to the iii engine that serves functions and calls other workers' functions.

    Created only by :func:`open_worker`, which owns its lifetime.
    """

    def __init__(
        self,
        *,
        url: str,
        name: str,
        namespace: str | None,
        description: str | None,
        headers: list[tuple[str, str]],
        backoff: Backoff,
        invocation_timeout: float | None,
    ) -> None:
        self._url = url
        self._name = name
        self._namespace = namespace
        self._description = description
        self._headers = headers
        self._backoff = backoff
        self._invocation_timeout = invocation_timeout
        self._registry = Registry()
        self._handlers: dict[str, PreparedHandler] = {}
        self._session: EngineSession | None = None
        self._state = ConnectionState.CONNECTING
        self._state_changed = trio.Event()
        self._watchers: list[deque[ConnectionState]] = []  # one backlog per watcher

    # -- identity and state ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The engine URL this worker connects to."""
        return self._url

    @property
    def name(self) -> str:
        """The worker name announced to the engine."""
        return self._name

    @property
    def namespace(self) -> str | None:
        """The namespace this worker registers into (None: the engine's default)."""
        return self._namespace

    @property
    def worker_id(self) -> str | None:
        """The engine-assigned id of the current connection (None while disconnected)."""
        session = self._session
        if session is None or session.identity is None:
            return None
        return session.identity.worker_id

    @property
    def connection_state(self) -> ConnectionState:
        return self._state

    async def wait_connected(self) -> None:
        """Return once the worker is connected and registered.

        Raises:
            trio.ClosedResourceError: the worker's block has exited, or it failed for good.
        """
        while self._state is not ConnectionState.CONNECTED:
            if self._state in (ConnectionState.CLOSED, ConnectionState.FAILED):
                raise trio.ClosedResourceError(f"the worker is {self._state.value}")
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()

    @asynccontextmanager
    async def watch_connection_state(self) -> AsyncIterator[AsyncIterator[ConnectionState]]:
        """Yield an async iterator of connection states: the current one, then each change.

        The iterator ends when the worker closes. A watcher that falls more than 64 changes
        behind skips the oldest.
        """
        watcher = _StateWatcher(self)
        self._watchers.append(watcher.backlog)
        try:
            yield watcher
        finally:
            self._watchers.remove(watcher.backlog)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        for backlog in self._watchers:
            backlog.append(state)
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()

    def _check_open(self) -> None:
        if self._state is ConnectionState.CLOSED:
            raise trio.ClosedResourceError("this worker's open_worker() block has exited")

    # -- SessionOwner ------------------------------------------------------------------------

    def opening_messages(
        self, previous: ConnectionIdentity | None
    ) -> tuple[InvokeFunction, list[Message]]:
        announce = InvokeFunction(
            function_id=_REGISTER_WORKER,
            data=self._announcement(),
            invocation_id=new_invocation_id(),
        )
        return announce, self._registry.replay()

    def session_changed(self, session: EngineSession | None, state: ConnectionState) -> None:
        self._session = session
        self._set_state(state)

    def session_ended(self, session: EngineSession) -> None:
        if session is self._session and self._state is ConnectionState.CONNECTED:
            self._session = None
            self._set_state(ConnectionState.RECONNECTING)

    async def serve_invocation(self, session: EngineSession, message: InvokeFunction) -> None:
        handler = self._handlers.get(message.function_id)
        await serve_invocation(handler, message, self, session)

    def serve_inline(self, message: InvokeFunction) -> bytes | None:
        handler = self._handlers.get(message.function_id)
        if handler is None or handler.call_inline is None or message.invocation_id is None:
            return None
        return serve_inline(handler, message, self)

    def handle_message(self, session: EngineSession, message: Message) -> None:
        logger.debug("ignoring %s: not supported by this worker", type(message).__name__)

    def _announcement(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "runtime": "python",
            "version": __version__,
            "name": self._name,
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "isolation": os.environ.get("III_ISOLATION") or None,
            "telemetry": {
                "language": (os.environ.get("LANG") or "").split(".")[0] or None,
                "project_name": os.path.basename(os.getcwd()) or None,
                "framework": "iii-trio",
            },
        }
        if self._namespace is not None:
            data["namespace"] = self._namespace
        if self._description is not None:
            data["description"] = self._description
        return data

    # -- functions ---------------------------------------------------------------------------

    def register_function(
        self,
        function_id: str,
        handler: Callable[..., Any],
        *,
        description: str | None = None,
        request_format: JSONValue = None,
        response_format: JSONValue = None,
        metadata: JSONValue = None,
    ) -> FunctionRef:
        """Serve ``function_id`` with ``handler`` on this and every later connection.

        ``handler`` may be async or sync (sync ones run in a thread). Its first parameter gets the
        payload, a parameter named ``metadata`` gets the invocation's metadata. When
        ``request_format`` / ``response_format`` are not given they are derived from the
        payload and return annotations.

        Raises:
            ValueError: the id is empty or already registered on this worker.
            TypeError: ``handler`` cannot be called with a payload.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        if not isinstance(function_id, str):
            raise TypeError(f"function_id must be a string, got {type(function_id).__name__}")
        prepared = prepare_handler(function_id, handler)
        message = RegisterFunction(
            id=function_id,
            description=description,
            request_format=_first_given(request_format, prepared.request_format),
            response_format=_first_given(response_format, prepared.response_format),
            metadata=metadata,
        )
        self._registry.add_function(message)
        self._handlers[function_id] = prepared
        self._send_if_connected(message)
        return FunctionRef(function_id, self)

    def function(
        self,
        function_id: str,
        *,
        description: str | None = None,
        request_format: JSONValue = None,
        response_format: JSONValue = None,
        metadata: JSONValue = None,
    ) -> Callable[[_Handler], _Handler]:
        """Decorator form of :meth:`register_function`; returns the handler unchanged."""

        def decorate(handler: _Handler) -> _Handler:
            self.register_function(
                function_id,
                handler,
                description=description,
                request_format=request_format,
                response_format=response_format,
                metadata=metadata,
            )
            return handler

        return decorate

    def _unregister_function(self, function_id: str) -> None:
        message = self._registry.remove_function(function_id)
        self._handlers.pop(function_id, None)
        if message is not None and self._state is not ConnectionState.CLOSED:
            self._send_if_connected(message)

    def register_service(
        self,
        service_id: str,
        *,
        description: str | None = None,
        parent_service_id: str | None = None,
    ) -> None:
        """Declare a service (a display group for functions), replayed on every connection."""
        self._check_open()
        message = RegisterService(
            id=service_id, description=description, parent_service_id=parent_service_id
        )
        self._registry.add_service(message)
        self._send_if_connected(message)

    async def wait_registered(self) -> None:
        """Return once the engine has applied every registration this worker made so far.

        Registrations are fire-and-forget on the wire; use this before telling another worker
        that a function you just registered is there to be called.

        Raises:
            ConnectionLost: the connection dropped meanwhile (the registrations will be replayed
                on the next connection; call again).
        """
        self._check_open()
        if self._state is not ConnectionState.CONNECTED:
            await self.wait_connected()
        await self._current_session().round_trip()

    def _send_if_connected(self, message: Message) -> None:
        # While disconnected the registry holds it; the next connection replays it.
        session = self._session
        if session is not None and session.closed_because is None:
            session.send_nowait(message)

    # -- calls -------------------------------------------------------------------------------

    async def trigger(
        self,
        function_id: str,
        payload: JSONValue = None,
        *,
        metadata: JSONValue = None,
        namespace: str | None = None,
    ) -> JSONValue:
        """Invoke ``function_id`` and return its result.

        Waits for a connection first if the worker is reconnecting. ``namespace`` defaults to
        the worker's own (``default`` for ``engine::`` functions).

        Cancellation: the call is forgotten locally; a result arriving later is dropped.

        Raises:
            InvocationError: the function failed (``FunctionNotFound`` when it does not exist).
            ConnectionLost: the connection dropped while waiting for the result.
            trio.TooSlowError: the worker's ``invocation_timeout`` expired.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        invocation_id, frame = self._call_frame(function_id, payload, metadata, namespace)
        if self._state is ConnectionState.CONNECTED and self._invocation_timeout is None:
            # The common case, written out: the task waits for its result itself, which saves
            # a coroutine per call. It takes _call's way only when too much output is unsent.
            session = self._current_session()
            try:
                abort = session.try_start_call(invocation_id, frame)
                if abort is not None:
                    result: JSONValue = await trio.lowlevel.wait_task_rescheduled(abort)
                    return result
            except CallFailed as exc:
                raise _invocation_error(function_id, invocation_id, exc.error) from None
        if self._invocation_timeout is None:
            return await self._call(function_id, invocation_id, frame)
        with trio.fail_after(self._invocation_timeout):
            return await self._call(function_id, invocation_id, frame)

    async def trigger_void(
        self,
        function_id: str,
        payload: JSONValue = None,
        *,
        metadata: JSONValue = None,
        namespace: str | None = None,
    ) -> None:
        """Invoke ``function_id`` without waiting for (or ever seeing) its outcome.

        Returns once the frame is handed to the connection (after waiting for one if needed).
        """
        self._check_open()
        frame = encode_call(
            function_id,
            to_json_value(payload),
            None,  # no id: the engine sends no result back
            metadata=metadata,
            namespace=self._call_namespace(function_id, namespace),
            action=VoidAction(),
        )
        if self._state is not ConnectionState.CONNECTED:
            await self.wait_connected()
        self._current_session().send_frame_nowait(frame)
        await trio.lowlevel.checkpoint()

    async def enqueue(
        self,
        function_id: str,
        payload: JSONValue = None,
        *,
        queue: str,
        metadata: JSONValue = None,
        namespace: str | None = None,
    ) -> str:
        """Hand ``payload`` to the named ``queue`` for ``function_id``; return the engine's
        receipt id (``messageReceiptId``) once the queue accepted it.

        Raises:
            InvocationError: the engine refused it (``enqueue_error``, e.g. no queue provider).
        """
        self._check_open()
        invocation_id, frame = self._call_frame(
            function_id, payload, metadata, namespace, EnqueueAction(queue=queue)
        )
        receipt = await self._call(function_id, invocation_id, frame)
        receipt_id = receipt.get("messageReceiptId") if isinstance(receipt, dict) else None
        if not isinstance(receipt_id, str):
            raise InvocationError(
                "enqueue_error",
                f"the engine's enqueue receipt has no messageReceiptId: {receipt!r}",
                function_id=function_id,
            )
        return receipt_id

    def _call_frame(
        self,
        function_id: str,
        payload: JSONValue,
        metadata: JSONValue,
        namespace: str | None,
        action: EnqueueAction | None = None,
    ) -> tuple[str, bytes]:
        """A fresh invocation id and the frame of a call that waits for its answer."""
        invocation_id = new_invocation_id()
        frame = encode_call(
            function_id,
            to_json_value(payload),
            invocation_id,
            metadata=metadata,
            namespace=self._call_namespace(function_id, namespace),
            action=action,
        )
        return invocation_id, frame

    async def _call(self, function_id: str, invocation_id: str, frame: bytes) -> JSONValue:
        if self._state is not ConnectionState.CONNECTED:
            await self.wait_connected()
        try:
            return await self._current_session().call_frame(invocation_id, frame)
        except CallFailed as exc:
            raise _invocation_error(function_id, invocation_id, exc.error) from None

    def _current_session(self) -> EngineSession:
        session = self._session
        assert session is not None, "CONNECTED implies a session"
        return session

    def _call_namespace(self, function_id: str, namespace: str | None) -> str | None:
        if namespace is not None:
            _check_namespace(namespace)
            return namespace
        if function_id.startswith(_DEFAULT_NAMESPACE_PREFIXES):
            return "default"
        return self._namespace

    # -- discovery ---------------------------------------------------------------------------

    async def list_functions(self) -> list[FunctionInfo]:
        """Every function the engine lists (``engine::functions::list``), with its schemas."""
        listing = await self.trigger("engine::functions::list", {})
        summaries = listing.get("functions", []) if isinstance(listing, dict) else []
        details: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(summaries), _INFO_BATCH):
            batch = summaries[start : start + _INFO_BATCH]
            for entry in await self._function_details(batch):
                if "error" not in entry:
                    details[(entry.get("namespace", "default"), entry["function_id"])] = entry
        functions = []
        for summary in summaries:
            key = (summary.get("namespace", "default"), summary["function_id"])
            detail = details.get(key, {})
            functions.append(
                FunctionInfo(
                    function_id=summary["function_id"],
                    description=summary.get("description"),
                    request_format=detail.get("request_schema"),
                    response_format=detail.get("response_schema"),
                    metadata=summary.get("metadata"),
                    namespace=key[0],
                    worker_name=summary.get("worker_name"),
                )
            )
        return functions

    async def _function_details(self, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()  # there may be nothing to ask for
        by_namespace: dict[str, list[str]] = {}
        for summary in summaries:
            namespace = summary.get("namespace", "default")
            by_namespace.setdefault(namespace, []).append(summary["function_id"])
        entries: list[dict[str, Any]] = []
        for namespace, ids in by_namespace.items():
            answer = await self.trigger(
                "engine::functions::info", {"function_ids": ids, "namespace": namespace}
            )
            if isinstance(answer, dict):
                entries.extend(answer.get("functions", []))
        return entries

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker the engine lists (``engine::workers::list``)."""
        listing = await self.trigger("engine::workers::list", {})
        workers = listing.get("workers", []) if isinstance(listing, dict) else []
        return [_worker_info(entry) for entry in workers]


def _invocation_error(function_id: str, invocation_id: str, error: ErrorBody) -> InvocationError:
    return InvocationError.from_error_body(
        error.code,
        error.message,
        error.stacktrace,
        function_id=function_id,
        invocation_id=invocation_id,
    )


def _worker_info(entry: Mapping[str, Any]) -> WorkerInfo:
    functions = entry.get("functions") or ()
    return WorkerInfo(
        id=entry["id"],
        name=entry.get("name"),
        runtime=entry.get("runtime"),
        version=entry.get("version"),
        os=entry.get("os"),
        ip_address=entry.get("ip_address"),
        status=entry.get("status", "connected"),
        connected_at_ms=entry.get("connected_at_ms") or 0,
        function_count=entry.get("function_count") or 0,
        functions=tuple(functions),
        active_invocations=entry.get("active_invocations") or 0,
        namespace=entry.get("namespace") or "default",
        description=entry.get("description"),
    )


def _first_given(explicit: JSONValue, derived: JSONValue) -> JSONValue:
    return explicit if explicit is not None else derived


def _check_namespace(namespace: object) -> None:
    if not isinstance(namespace, str) or not namespace.strip():
        raise ValueError(f"namespace must be a non-blank string, got {namespace!r}")


def _resolve_url(url: str | None) -> str:
    return url or os.environ.get("III_URL") or DEFAULT_URL


def _resolve_name(name: str | None) -> str:
    if name is not None:
        return name
    return os.environ.get("III_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"


def _resolve_namespace(namespace: str | None) -> str | None:
    if namespace is not None:
        _check_namespace(namespace)
        return namespace
    from_env = os.environ.get("III_NAMESPACE", "")
    return from_env if from_env.strip() else None


def _resolve_headers(headers: Mapping[str, str] | None) -> list[tuple[str, str]]:
    resolved = list((headers or {}).items())
    token = os.environ.get("III_TOKEN", "").strip()
    if token and not any(name.lower() == "authorization" for name, _ in resolved):
        resolved.append(("Authorization", f"Bearer {token}"))
    return resolved


@asynccontextmanager
async def open_worker(
    url: str | None = None,
    *,
    name: str | None = None,
    namespace: str | None = None,
    description: str | None = None,
    backoff: Backoff = Backoff(),  # noqa: B008 - frozen value
    invocation_timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Worker]:
    """Connect a worker to the iii engine for the duration of the block.

    Args:
        url: the engine's WebSocket URL; default ``$III_URL``, then ``ws://127.0.0.1:49134``.
        name: the worker name; default ``$III_WORKER_NAME``, then ``"<hostname>:<pid>"``. Two
            live workers may not share a name within a namespace.
        namespace: where this worker's functions live; default ``$III_NAMESPACE`` (blank
            ignored), then the engine's ``default``.
        description: one line shown in the engine's worker listings.
        backoff: the reconnect policy; with the default (unlimited attempts) entering waits
            until the engine is reachable: bound it with ``trio.fail_after``.
        invocation_timeout: default deadline in seconds for :meth:`Worker.trigger`.
        headers: extra HTTP headers for the WebSocket handshake (``$III_TOKEN``, when set, adds
            ``Authorization: Bearer``).

    Entering blocks until the engine accepted the worker and applied its registrations. Leaving
    cancels every running handler, stops reconnecting and closes the connection; it waits only
    for sync handlers already running in threads, which cannot be interrupted.

    Raises:
        ValueError: ``namespace`` is blank.
        EngineUnavailable: the engine could not be reached within the backoff budget.
        RegistrationRejected: the engine refused this worker (e.g. its name is taken).
    """
    worker = Worker(
        url=_resolve_url(url),
        name=_resolve_name(name),
        namespace=_resolve_namespace(namespace),
        description=description,
        headers=_resolve_headers(headers),
        backoff=backoff,
        invocation_timeout=invocation_timeout,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    run_supervisor,
                    worker,
                    url=worker.url,
                    headers=worker._headers,
                    backoff=backoff,
                    rng=random.Random(),
                )
            )
            try:
                yield worker
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_collapsed(group)
    finally:
        worker.session_changed(None, ConnectionState.CLOSED)
