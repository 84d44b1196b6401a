"""``open_worker()`` and the :class:`Worker` it yields.

:class:`Worker` is the public face and nothing more: every member is one of spec/api.md. What the
engine connection needs from a worker (the frames to send when a connection opens, the handler
table, refused registrations) is :class:`_SessionOwner`'s job; :mod:`._connection` owns the
sockets and the connection state.

Task tree::

    open_worker nursery
    └── EngineLink.supervise       connect → handshake → serve → reconnect
        └── session nursery               reader, writer, keepalive, handler tasks
    (the user's block runs in the open_worker task itself)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import random
import socket
import ssl as ssl_module
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Generic, TypeVar, final

import attrs
import trio

from ._channels import Channel, ChannelHub, ChannelReader, ChannelWriter
from ._connection import CallFailed, EngineLink, EngineSession
from ._context import outgoing_baggage, outgoing_trace
from ._dispatch import (
    PreparedHandler,
    prepare_handler,
    serve_inline,
    serve_invocation,
    to_json_value,
)
from ._exceptions import (
    ConnectionLost,
    InvocationError,
    ProtocolError,
    RegistrationRejected,
    TriggerRegistrationError,
)
from ._groups import raise_collapsed
from ._http_invocation import HttpInvocation, invocation_ref
from ._otel import Tracing, tracing_for
from ._protocol._channels import is_channel_ref, ref_from_json, replace_channel_refs
from ._protocol._codec import encode, encode_call, encode_json, loads
from ._protocol._ids import new_invocation_id
from ._protocol._messages import (
    EnqueueAction,
    ErrorBody,
    InvokeFunction,
    Message,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    VoidAction,
)
from ._protocol._registry import ConnectionIdentity, Registry
from ._providers import ProvidedTriggers, TriggerProvider, check_provider
from ._schema import schema_for
from ._transport import StreamOpener
from ._types import (
    Backoff,
    ConnectionState,
    FunctionInfo,
    JSONValue,
    TriggerInfo,
    TriggerTypeInfo,
    WorkerInfo,
)
from ._version import __version__

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["FunctionRef", "TriggerRef", "TriggerTypeRef", "Worker", "open_worker"]

logger = logging.getLogger("iii_trio.worker")

DEFAULT_URL: Final = "ws://127.0.0.1:49134"
_REGISTER_WORKER: Final = "engine::workers::register"
# Ids the SDKs always resolve in the engine's default namespace (spec/protocol.md section 4.2).
_DEFAULT_NAMESPACE_PREFIXES: Final = ("engine::", "configuration::")
_INFO_BATCH: Final = 32  # engine::functions::info accepts at most 32 ids per call

_Handler = TypeVar("_Handler", bound=Callable[..., Any])

#: The answer to an invocation of an HTTP-invoked function that reached this worker: the engine
#: calls the endpoint itself, so the worker has nothing to run (features.md HTTPFN-04).
_NOT_INVOKABLE: Final = ErrorBody(
    "function_not_invokable", "Function is HTTP-invoked and cannot be invoked locally"
)


@attrs.frozen
class FunctionRef:
    """A registered function, as :meth:`Worker.register_function` returns it.
    ``unregister()`` removes it from the engine and from replay.

    Attributes:
        id: the function's id, as registered.
    """

    id: str
    _worker: Worker = attrs.field(repr=False)

    @property
    def rejection(self) -> RegistrationRejected | None:
        """The engine's refusal of this registration on the current connection (e.g.
        ``FUNCTION_NAMESPACE_CONFLICT``: another worker holds the id), or None.

        Registrations are fire-and-forget on the wire: await
        :meth:`Worker.wait_registered` to be sure a refusal has had time to arrive.
        """
        return self._worker._owner.rejections.get(self.id)

    def unregister(self) -> None:
        """Stop serving this function (idempotent)."""
        self._worker._unregister_function(self.id)


@attrs.frozen
class TriggerRef:
    """A trigger binding made by :meth:`Worker.register_trigger`: ``trigger_type`` events call
    ``function_id``. ``unregister()`` removes it from the engine and from replay.

    Attributes:
        id: the binding's id, which this worker chose; the same across reconnects.
        trigger_type: the trigger type it is bound to.
        function_id: the function it calls when it fires.
    """

    id: str
    trigger_type: str
    function_id: str
    _worker: Worker = attrs.field(repr=False)

    @property
    def rejection(self) -> TriggerRegistrationError | None:
        """The refusal the engine last sent for this binding on the current connection, or None.

        A refusal known when :meth:`Worker.register_trigger` returns is raised there instead;
        this one comes later: the trigger type's provider (a worker) rejected the config, or
        the engine refused the binding when it was replayed after a reconnect. Such a refusal
        is also logged at WARNING on ``iii_trio.worker``. The binding stays registered and is
        replayed on the next connection, and the engine keeps it parked: another provider of
        the type may still take it up, which the engine does not report, so this is the last
        word heard rather than the binding's current state.
        """
        return self._worker._owner.trigger_rejections.get(self.id)

    def unregister(self) -> None:
        """Remove the binding from the engine and from replay (idempotent).

        Raises:
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._worker._unregister_trigger(self.id)


@attrs.frozen
class TriggerTypeRef:
    """A trigger type this worker provides (:meth:`Worker.register_trigger_type`).

    Attributes:
        id: the trigger type's id, as registered.
    """

    id: str
    _worker: Worker = attrs.field(repr=False)

    async def register_trigger(
        self, function_id: str, config: JSONValue, *, metadata: JSONValue = None
    ) -> TriggerRef:
        """Bind ``function_id`` to this trigger type: :meth:`Worker.register_trigger` with
        this type's id."""
        return await self._worker.register_trigger(self.id, function_id, config, metadata=metadata)

    def unregister(self) -> None:
        """Stop providing the type (idempotent): its bindings are stopped (the provider's
        ``unregister_trigger`` runs for each), and it is not replayed on later connections.

        The engine learns of it when this connection ends: until then it may still hand this
        worker bindings of the type, which are ignored.

        Raises:
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._worker._unregister_trigger_type(self.id)


class _SessionOwner:
    """The worker as the engine connection sees it: what to send when a connection opens, who
    serves an invocation, and what the engine refused. Internal: none of it is the public API.
    """

    def __init__(self, worker: Worker, announcement: dict[str, Any]) -> None:
        self.worker = worker
        self.registry = Registry()
        self.handlers: dict[str, PreparedHandler] = {}
        #: Functions registered with an HttpInvocation: the engine calls them, never the worker.
        self.http_functions: set[str] = set()
        #: Refused registrations of the current connection, by function id.
        self.rejections: dict[str, RegistrationRejected] = {}
        #: Refused trigger bindings of the current connection, by trigger id.
        self.trigger_rejections: dict[str, TriggerRegistrationError] = {}
        #: Bindings whose register_trigger() is waiting to hear whether the engine refused
        #: them: their refusal is raised there, not logged.
        self.confirming: set[str] = set()
        self.provided = ProvidedTriggers()
        #: OpenTelemetry spans, when the application uses it (see open_worker).
        self.tracing: Tracing | None = None
        self._announcement = announcement

    # -- SessionOwner --------------------------------------------------------------------------

    def opening_messages(
        self, previous: ConnectionIdentity | None
    ) -> tuple[InvokeFunction, list[Message]]:
        # A new connection: what the engine refused on the last one may be accepted now.
        self.rejections.clear()
        self.trigger_rejections.clear()
        announce = InvokeFunction(
            function_id=_REGISTER_WORKER,
            data=self._announcement,
            invocation_id=new_invocation_id(),
        )
        return announce, self.registry.replay()

    async def serve_invocation(self, session: EngineSession, message: InvokeFunction) -> None:
        function_id = message.function_id
        handler = self.handlers.get(function_id)
        refusal = _NOT_INVOKABLE if function_id in self.http_functions else None
        tracing = self.tracing
        if tracing is None:
            await serve_invocation(handler, message, self.worker, session, refusal=refusal)
            return
        with tracing.serving(message) as outcome:
            await serve_invocation(
                handler, message, self.worker, session, refusal=refusal, listener=outcome
            )

    def serve_inline(self, message: InvokeFunction) -> bytes | None:
        handler = self.handlers.get(message.function_id)
        if handler is None or handler.call_inline is None or message.invocation_id is None:
            return None
        if self.tracing is None:
            return serve_inline(handler, message, self.worker)
        return serve_inline(handler, message, self.worker, self.tracing.serving)

    def registration_refused(self, error: RegistrationRejected) -> None:
        function_id = error.function_id
        if function_id is not None and self.registry.has_function(function_id):
            self.rejections[function_id] = error

    def handle_message(self, session: EngineSession, message: Message) -> None:
        if isinstance(message, TriggerRegistrationResult):
            self._trigger_result(message)
        elif isinstance(message, RegisterTrigger):
            self.provided.start_requested(session, message)
        elif isinstance(message, UnregisterTrigger):
            self.provided.stop_requested(message)
        else:
            logger.debug("ignoring %s: not supported by this worker", type(message).__name__)

    def session_ended(self, session: EngineSession) -> None:
        self.provided.session_ended(session)

    def _trigger_result(self, message: TriggerRegistrationResult) -> None:
        # The engine sends these only for failures (protocol.md 3.3), for a binding this
        # connection registered: its own refusal, or a worker provider's, forwarded.
        binding = self.registry.trigger(message.id)
        if message.error is None or binding is None:
            logger.debug(
                "ignoring a triggerregistrationresult for %s (%s)",
                message.id,
                "no error" if binding is not None else "not a binding of this worker",
            )
            return
        error = TriggerRegistrationError(
            message.error.code,
            message.error.message,
            trigger_id=binding.id,
            trigger_type=binding.trigger_type,
            function_id=binding.function_id,
        )
        self.trigger_rejections[binding.id] = error
        if binding.id not in self.confirming:
            logger.warning(
                "trigger binding %s (type %r, function %r) refused: %s",
                binding.id,
                binding.trigger_type,
                binding.function_id,
                error,
            )


@final
class Worker:
    """A connection to the iii engine that serves functions and calls other workers' functions.

    Created only by :func:`open_worker`, which owns its lifetime: any task may use it while the
    ``open_worker`` block runs. Once the block has exited its calls and registrations raise
    :class:`trio.ClosedResourceError` and :attr:`connection_state` is ``CLOSED``. Registrations
    (functions, services, trigger bindings and trigger types) are kept by the worker and
    replayed on every reconnect.
    """

    __slots__ = ("_channels", "_invocation_timeout", "_link", "_namespace", "_owner")

    def __init__(
        self,
        *,
        announcement: dict[str, Any],
        namespace: str | None,
        invocation_timeout: float | None,
        url: str,
        headers: list[tuple[str, str]],
        ssl_context: ssl_module.SSLContext | None,
        backoff: Backoff,
        open_stream: StreamOpener | None,
    ) -> None:
        self._owner = _SessionOwner(self, announcement)
        self._link = EngineLink(
            self._owner,
            url=url,
            headers=headers,
            ssl_context=ssl_context,
            backoff=backoff,
            rng=random.Random(),
            open_stream=open_stream,
        )
        self._namespace = namespace
        self._invocation_timeout = invocation_timeout
        self._channels = ChannelHub(
            url=url, headers=headers, ssl_context=ssl_context, open_stream=open_stream
        )

    # -- identity and state ------------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The engine-assigned id of the current connection (None while disconnected)."""
        if self._link.state is not ConnectionState.CONNECTED:
            return None
        identity = self._link.identity
        return identity.worker_id if identity is not None else None

    @property
    def connection_state(self) -> ConnectionState:
        """Where the connection to the engine stands now; :meth:`watch_connection_state`
        follows its changes."""
        return self._link.state

    async def wait_connected(self) -> None:
        """Return once the worker is connected and registered.

        Raises:
            trio.ClosedResourceError: the worker's block has exited, or it failed for good.
        """
        await self._link.wait_connected()

    def watch_connection_state(
        self,
    ) -> AbstractAsyncContextManager[AsyncIterator[ConnectionState]]:
        """An async context manager yielding an async iterator of connection states: the
        current one, then each change, until the worker closes. A watcher that falls more than
        64 changes behind skips the oldest.

        ::

            async with worker.watch_connection_state() as states:
                async for state in states:
                    ...
        """
        return self._link.watch_states()

    def _check_open(self) -> None:
        if self._link.state is ConnectionState.CLOSED:
            raise trio.ClosedResourceError("this worker's open_worker() block has exited")

    def _send_if_connected(self, message: Message) -> None:
        # While disconnected the registry holds it; the next connection replays it. A session
        # still in its handshake has taken its replay snapshot already: it is sent there too.
        session = self._link.open_session
        if session is not None:
            # A connection that broke unnoticed: the next one replays the registry.
            with contextlib.suppress(ConnectionLost):
                session.send(message)

    def _unregister_function(self, function_id: str) -> None:
        owner = self._owner
        message = owner.registry.remove_function(function_id)
        owner.handlers.pop(function_id, None)
        owner.http_functions.discard(function_id)
        owner.rejections.pop(function_id, None)
        if message is not None and self._link.state is not ConnectionState.CLOSED:
            self._send_if_connected(message)

    # -- functions ---------------------------------------------------------------------------

    def register_function(
        self,
        function_id: str,
        handler: Callable[..., Any] | HttpInvocation,
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

        ``handler`` may instead be an :class:`~iii_trio.HttpInvocation`: the engine then calls
        that HTTP endpoint for every invocation and the worker runs nothing. Only the names of
        the environment variables holding its credentials are sent, never their values. An
        engine without HTTP-invoked functions, or whose URL rules refuse the endpoint, drops
        the registration without telling the worker (calls then fail with
        ``function_not_found``).

        The engine may refuse the id (another worker holds it): see
        :attr:`FunctionRef.rejection` and :meth:`wait_registered`.

        Raises:
            TypeError: an argument has the wrong type, ``handler`` cannot be called with a
                payload, or a schema or ``metadata`` is not JSON.
            ValueError: the id is blank or already registered on this worker.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        _check_id("function_id", function_id)
        _check_optional_string("description", description)
        prepared: PreparedHandler | None = None
        if isinstance(handler, HttpInvocation):
            message = RegisterFunction(
                id=function_id,
                description=description,
                request_format=request_format,
                response_format=response_format,
                metadata=metadata,
                invocation=invocation_ref(handler),
            )
        else:
            prepared = prepare_handler(function_id, handler)
            message = RegisterFunction(
                id=function_id,
                description=description,
                request_format=_first_given(request_format, prepared.request_format),
                response_format=_first_given(response_format, prepared.response_format),
                metadata=metadata,
            )
        _check_encodable(message, "a schema or metadata of function " + repr(function_id))
        owner = self._owner
        owner.registry.add_function(message)
        if prepared is None:
            owner.http_functions.add(function_id)
        else:
            owner.handlers[function_id] = prepared
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

    def register_service(
        self,
        service_id: str,
        *,
        description: str | None = None,
        parent_service_id: str | None = None,
    ) -> None:
        """Declare a service (a display group for functions), replayed on every connection.

        Raises:
            TypeError: an argument has the wrong type.
            ValueError: the id is blank or already registered on this worker.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        _check_id("service_id", service_id)
        _check_optional_string("description", description)
        _check_optional_string("parent_service_id", parent_service_id)
        message = RegisterService(
            id=service_id, description=description, parent_service_id=parent_service_id
        )
        self._owner.registry.add_service(message)
        self._send_if_connected(message)

    async def wait_registered(self) -> None:
        """Return once the engine has applied every registration this worker made so far.

        Registrations are fire-and-forget on the wire; use this before telling another worker
        that a function you just registered is there to be called.

        Raises:
            RegistrationRejected: the engine refused one of them (the first refusal; each
                refused function's :attr:`FunctionRef.rejection` tells which).
            ConnectionLost: the connection dropped meanwhile (the registrations will be replayed
                on the next connection; call again).
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        session = await self._link.wait_connected()
        await session.round_trip()
        rejections = self._owner.rejections
        if rejections:
            raise next(iter(rejections.values()))

    # -- triggers ----------------------------------------------------------------------------

    async def register_trigger(
        self,
        trigger_type: str,
        function_id: str,
        config: JSONValue,
        *,
        metadata: JSONValue = None,
        namespace: str | None = None,
        trigger_namespace: str | None = None,
    ) -> TriggerRef:
        """Bind ``function_id`` to ``trigger_type``: the type's provider calls the function
        whenever an event matching ``config`` happens. The binding is replayed on every
        reconnect under the same id.

        ``config`` is the provider's per-binding settings, a JSON object (``None`` is sent as
        ``{}``; an attrs instance is unstructured), e.g.
        ``{"api_path": "/orders", "http_method": "POST"}`` for ``http`` or
        ``{"expression": "0 */5 * * * *"}`` for ``cron``; ``metadata`` reaches the function as
        the invocation's metadata every time the binding fires. Both are copied: changing them
        afterwards changes nothing. The function is looked up in ``namespace`` (default: the
        worker's); the type's provider in ``trigger_namespace`` only, when given, else in the
        worker's namespace, then in ``default``.

        Returns once the engine has handled the binding (after waiting for a connection if the
        worker is reconnecting). A binding to a trigger type nobody provides yet is not an
        error: it is parked until a provider registers the type, then started. A provider
        that is a worker answers later: a refusal from it is logged and kept on
        :attr:`TriggerRef.rejection`.

        Cancellation: the binding is withdrawn, from the engine too if it was sent.

        Raises:
            TriggerRegistrationError: the engine refused the binding at once (for example
                ``FORBIDDEN``, or ``trigger_registration_failed`` from one of its built-in
                providers); nothing of it is kept.
            TypeError: an id is not a string, ``config`` is not a JSON object, or
                ``metadata`` is not JSON (NaN and infinities included).
            ValueError: ``trigger_type``, ``function_id`` or a namespace is blank.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        _check_id("trigger_type", trigger_type)
        _check_id("function_id", function_id)
        for argument, value in (("namespace", namespace), ("trigger_namespace", trigger_namespace)):
            if value is not None:
                _check_id(argument, value)
        message = RegisterTrigger(
            id=new_invocation_id(),  # a fresh UUIDv4, as the official SDKs make trigger ids
            trigger_type=trigger_type,
            function_id=function_id,
            config=_trigger_config(config),
            metadata=_json_argument("metadata", None, metadata),
            # Left out, the engine looks the function up in `default` (protocol.md 3.2), not
            # in this worker's namespace where its own functions live; the official SDK fills
            # it in too.
            namespace=namespace if namespace is not None else self._namespace,
            trigger_namespace=trigger_namespace,
        )
        owner = self._owner
        session = self._link.session or await self._link.wait_connected()
        # No checkpoint from here to the send: the binding goes either to this ready session
        # or into the replay of a later one, never to both.
        owner.registry.add_trigger(message)
        owner.confirming.add(message.id)
        kept = False
        try:
            with contextlib.suppress(ConnectionLost):
                session.send(message)
            await self._confirm(session)
            refusal = owner.trigger_rejections.get(message.id)
            if refusal is not None:
                raise refusal
            kept = True
        finally:
            owner.confirming.discard(message.id)
            if not kept:
                self._withdraw_trigger(message.id)
        return TriggerRef(message.id, trigger_type, function_id, self)

    def register_trigger_type(
        self,
        trigger_type_id: str,
        provider: TriggerProvider,
        *,
        description: str = "",
        trigger_request_format: JSONValue | type = None,
        call_request_format: JSONValue | type = None,
    ) -> TriggerTypeRef:
        """Provide the trigger type ``trigger_type_id`` on this and every later connection.

        Whenever a worker binds a function to the type, the engine asks this worker to start
        the binding: ``await provider.register_trigger(trigger)`` runs in the worker's nursery
        with a :class:`TriggerConfig`, and ``await provider.unregister_trigger(trigger)`` when
        it ends (the binding was unregistered, its worker left, or this connection dropped:
        the engine hands the binding over again on the next one, under the same id). Calls
        for one binding never overlap and keep their order. To fire a binding, call its
        function::

            await worker.trigger(trigger.function_id, payload,
                                 metadata=trigger.metadata, namespace=trigger.namespace)

        ``register_trigger`` raising refuses the binding (its worker gets a
        :class:`TriggerRegistrationError` with code ``trigger_registration_failed``);
        nothing a provider raises harms this worker.

        ``trigger_request_format`` and ``call_request_format`` are JSON Schemas of a binding's
        ``config`` and of the payload a fire delivers (an attrs class or other annotation is
        turned into one); discovery shows them.

        Raises:
            TypeError: ``provider`` lacks an async ``register_trigger`` or
                ``unregister_trigger`` method, an argument has the wrong type, or a format is
                neither JSON nor describable as a JSON Schema.
            ValueError: the id is blank or this worker already provides it.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        _check_id("trigger_type_id", trigger_type_id)
        check_provider(provider)
        if not isinstance(description, str):
            raise TypeError(f"description must be a string, got {description!r}")
        message = RegisterTriggerType(
            id=trigger_type_id,
            description=description,
            trigger_request_format=_format_schema("trigger_request_format", trigger_request_format),
            call_request_format=_format_schema("call_request_format", call_request_format),
            namespace=self._namespace,
        )
        _check_encodable(message, "a format of trigger type " + repr(trigger_type_id))
        owner = self._owner
        owner.registry.add_trigger_type(message)
        owner.provided.add(trigger_type_id, provider)
        self._send_if_connected(message)
        return TriggerTypeRef(trigger_type_id, self)

    def _unregister_trigger_type(self, trigger_type_id: str) -> None:
        self._check_open()
        owner = self._owner
        message = owner.registry.remove_trigger_type(trigger_type_id)
        owner.provided.remove(trigger_type_id)
        if message is not None:
            # Unknown to the engine before 0.25 (dropped there, protocol.md 3.15); a later
            # engine stops routing the type to this worker.
            self._send_if_connected(message)

    async def _confirm(self, session: EngineSession) -> None:
        """Return once the engine has handled every frame sent so far on a connection.

        The engine handles a connection's frames in order and answers nothing on success, so
        a ping's pong means a refusal decided there and then has arrived. If the connection
        drops first, the next one replays the registry: the pong is awaited there instead.
        """
        while True:
            try:
                await session.round_trip()
                return
            except ConnectionLost:
                pass
            await session.wait_ended()
            session = await self._link.wait_connected()

    def _withdraw_trigger(self, trigger_id: str) -> None:
        owner = self._owner
        owner.trigger_rejections.pop(trigger_id, None)
        message = owner.registry.remove_trigger(trigger_id)
        # Sent even after a refusal: unregistering is idempotent, and the engine keeps a
        # binding a provider refused parked, where a later provider could take it up.
        if message is not None and self._link.state is not ConnectionState.CLOSED:
            self._send_if_connected(message)

    def _unregister_trigger(self, trigger_id: str) -> None:
        self._check_open()
        self._withdraw_trigger(trigger_id)

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
        the worker's own (``default`` for ``engine::`` functions). Channel ends and refs in
        ``payload`` are sent as refs, handing those ends over; channel refs in the result come
        back as live :class:`ChannelReader` / :class:`ChannelWriter` ends of this worker.

        Cancellation: the call is forgotten locally; a result arriving later is dropped.

        Raises:
            InvocationError: the function failed (``FunctionNotFound`` when it does not exist).
            ConnectionLost: the connection dropped while waiting for the result.
            TypeError: ``function_id`` is not a string, or ``payload`` or ``metadata`` is not
                JSON (NaN and infinities included).
            ValueError: ``function_id`` or ``namespace`` is blank.
            trio.TooSlowError: the worker's ``invocation_timeout`` expired.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        if self._owner.tracing is not None:
            return self._live_channels(
                await self._traced_call(function_id, payload, metadata, namespace, None)
            )
        invocation_id, frame = self._call_frame(function_id, payload, metadata, namespace)
        session = self._link.session
        if session is not None and self._invocation_timeout is None:
            # The common case, written out: the task waits for its result itself, which saves
            # a coroutine per call. It takes _call's way only when too much output is unsent.
            try:
                abort = session.start_call(invocation_id, frame)
                if abort is not None:
                    del frame  # written or queued: a waiting call keeps no copy of its payload
                    result: JSONValue = await trio.lowlevel.wait_task_rescheduled(abort)
                    return self._live_channels(result)
            except CallFailed as exc:
                raise _invocation_error(function_id, invocation_id, exc.error) from None
        if self._invocation_timeout is None:
            return self._live_channels(await self._call(function_id, invocation_id, frame))
        with trio.fail_after(self._invocation_timeout):
            return self._live_channels(await self._call(function_id, invocation_id, frame))

    def _live_channels(self, result: JSONValue) -> JSONValue:
        """``result`` with every channel ref in it replaced by a live end of this worker."""
        kind = type(result)
        if kind is dict or kind is list:
            return replace_channel_refs(result, self._channels.end)
        return result

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

        Raises:
            TypeError, ValueError: as :meth:`trigger`.
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        tracing = self._owner.tracing
        if tracing is None:
            frame = self._encode_call(function_id, payload, metadata, namespace, None, VoidAction())
            session = self._link.session or await self._link.wait_connected()
            session.send_frame(frame)
            await trio.lowlevel.checkpoint()
            return
        with tracing.calling(function_id, None) as outcome:
            frame = self._encode_call(
                function_id,
                payload,
                metadata,
                namespace,
                None,
                VoidAction(),
                traceparent=outcome.traceparent(),
            )
            session = self._link.session or await self._link.wait_connected()
            session.send_frame(frame)
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
            TypeError, ValueError: as :meth:`trigger`; ``queue`` must be a non-blank string.
        """
        self._check_open()
        _check_id("queue", queue)
        action = EnqueueAction(queue=queue)
        if self._owner.tracing is not None:
            receipt = await self._traced_call(function_id, payload, metadata, namespace, action)
        else:
            invocation_id, frame = self._call_frame(
                function_id, payload, metadata, namespace, action
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

    async def _traced_call(
        self,
        function_id: str,
        payload: JSONValue,
        metadata: JSONValue,
        namespace: str | None,
        action: EnqueueAction | None,
    ) -> JSONValue:
        """A call inside a CLIENT span, whose trace context the call carries."""
        tracing = self._owner.tracing
        assert tracing is not None
        invocation_id = new_invocation_id()
        with tracing.calling(function_id, invocation_id) as outcome:
            frame = self._encode_call(
                function_id,
                payload,
                metadata,
                namespace,
                invocation_id,
                action,
                traceparent=outcome.traceparent(),
            )
            try:
                if self._invocation_timeout is None:
                    return await self._call(function_id, invocation_id, frame)
                with trio.fail_after(self._invocation_timeout):
                    return await self._call(function_id, invocation_id, frame)
            except InvocationError as exc:
                outcome.failed(exc.code, exc.message)
                raise

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
        frame = self._encode_call(function_id, payload, metadata, namespace, invocation_id, action)
        return invocation_id, frame

    def _encode_call(
        self,
        function_id: str,
        payload: JSONValue,
        metadata: JSONValue,
        namespace: str | None,
        invocation_id: str | None,
        action: EnqueueAction | VoidAction | None,
        *,
        traceparent: str | None = None,
    ) -> bytes:
        """The frame of a call; it carries ``traceparent`` (the call's span, when traced), else
        a child of the current trace, and the current baggage."""
        if type(function_id) is not str or not function_id.strip():
            _check_function_id_argument(function_id)
        if traceparent is None:
            traceparent, baggage = outgoing_trace()
        else:
            baggage = outgoing_baggage()
        try:
            return encode_call(
                function_id,
                to_json_value(payload),
                invocation_id,
                metadata=metadata,
                namespace=self._call_namespace(function_id, namespace),
                traceparent=traceparent,
                baggage=baggage,
                action=action,
            )
        except TypeError as exc:
            raise _not_json(payload, metadata, exc) from exc

    async def _call(self, function_id: str, invocation_id: str, frame: bytes) -> JSONValue:
        session = self._link.session or await self._link.wait_connected()
        try:
            return await session.call_frame(invocation_id, frame)
        except CallFailed as exc:
            raise _invocation_error(function_id, invocation_id, exc.error) from None

    def _call_namespace(self, function_id: str, namespace: str | None) -> str | None:
        if namespace is not None:
            _check_namespace(namespace)
            return namespace
        if function_id.startswith(_DEFAULT_NAMESPACE_PREFIXES):
            return "default"
        return self._namespace

    # -- channels ----------------------------------------------------------------------------

    async def create_channel(self, buffer_size: int | None = None) -> Channel:
        """Create a channel (``engine::channels::create``): a stream of bytes and text messages
        from a :class:`ChannelWriter` to a :class:`ChannelReader`, through the engine.

        Keep one end and hand the other to another function by putting it, or its ref, in the
        payload you call it with. Each end opens its own connection to the engine when it is
        first used; the ends are closed when this worker's block exits, at the latest.

        Args:
            buffer_size: frames the engine queues between the two ends before it holds the
                writer back; default 64, and the engine clamps it to 1..1024 (0 means 1).

        Raises:
            TypeError: ``buffer_size`` is not an int or None.
            ValueError: ``buffer_size`` is negative.
            InvocationError: the engine refused (e.g. an engine without channels).
            trio.ClosedResourceError: the worker's block has exited.
        """
        self._check_open()
        if buffer_size is not None:
            if isinstance(buffer_size, bool) or not isinstance(buffer_size, int):
                raise TypeError(f"buffer_size must be an int or None, got {buffer_size!r}")
            if buffer_size < 0:
                raise ValueError(f"buffer_size must be >= 0, got {buffer_size}")
        invocation_id, frame = self._call_frame(
            "engine::channels::create", {"buffer_size": buffer_size}, None, None
        )
        refs = await self._call("engine::channels::create", invocation_id, frame)
        writer_ref = refs.get("writer") if isinstance(refs, dict) else None
        reader_ref = refs.get("reader") if isinstance(refs, dict) else None
        if not (is_channel_ref(writer_ref) and is_channel_ref(reader_ref)):
            raise ProtocolError(
                "engine::channels::create answered without a writer and a reader ref",
                frame=str(refs),
            )
        channel_writer = ref_from_json(writer_ref)
        channel_reader = ref_from_json(reader_ref)
        return Channel(
            writer=ChannelWriter(channel_writer, self._channels),
            reader=ChannelReader(channel_reader, self._channels),
            writer_ref=channel_writer,
            reader_ref=channel_reader,
        )

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
        """Every worker the engine lists (``engine::workers::list``), each with the ids of its
        functions (``engine::workers::info``, asked once per named worker)."""
        listing = await self.trigger("engine::workers::list", {})
        workers = listing.get("workers", []) if isinstance(listing, dict) else []
        infos = []
        for entry in workers:
            functions: tuple[str, ...] = ()
            if entry.get("name") is not None:
                functions = await self._worker_functions(entry["name"], entry.get("namespace"))
            infos.append(_worker_info(entry, functions))
        return infos

    async def _worker_functions(self, name: str, namespace: str | None) -> tuple[str, ...]:
        try:
            detail = await self.trigger(
                "engine::workers::info", {"name": name, "namespace": namespace}
            )
        except InvocationError:
            detail = None  # it left between the two calls
            await trio.lowlevel.checkpoint()  # the refusal may have come without one
        summaries = detail.get("functions", []) if isinstance(detail, dict) else []
        return tuple(summary["function_id"] for summary in summaries)

    async def list_trigger_types(self) -> list[TriggerTypeInfo]:
        """Every trigger type the engine lists (``engine::triggers::list``; the engine's own
        ``engine::*`` types are left out, as the engine does), with their schemas and binding
        counts (``engine::triggers::info``, asked once per type)."""
        listing = await self.trigger("engine::triggers::list", {})
        summaries = listing.get("triggers", []) if isinstance(listing, dict) else []
        infos = []
        for summary in summaries:
            namespace = summary.get("namespace") or "default"
            try:
                detail = await self.trigger(
                    "engine::triggers::info", {"id": summary["id"], "namespace": namespace}
                )
            except InvocationError:
                detail = summary  # its provider left between the two calls
            infos.append(
                TriggerTypeInfo(
                    id=summary["id"],
                    description=summary.get("description") or "",
                    namespace=namespace,
                    worker_name=summary.get("worker_name"),
                    configuration_schema=detail.get("configuration_schema"),
                    request_schema=detail.get("request_schema"),
                    instance_count=detail.get("instance_count") or 0,
                )
            )
        return infos

    def watch_functions(self) -> AbstractAsyncContextManager[AsyncIterator[list[FunctionInfo]]]:
        """An async context manager yielding an async iterator of function lists: the current
        one (:meth:`list_functions`), then a fresh one after each change the engine reports.

        Built on the engine's ``engine::functions-available`` trigger, which the engine fires
        from a poll (every 5 s), so a change shows up that much later; no polling happens here.
        After a reconnect a fresh list comes too, as changes may have been missed meanwhile.
        Changes that come faster than the iterator is read are merged into one list. The
        worker registers a hidden function and a binding for it while the block runs.

        ::

            async with worker.watch_functions() as lists:
                async for functions in lists:
                    ...
        """
        return self._watch("engine::functions-available", self.list_functions)

    def watch_workers(self) -> AbstractAsyncContextManager[AsyncIterator[list[WorkerInfo]]]:
        """As :meth:`watch_functions`, for :meth:`list_workers` and the engine's
        ``engine::workers-available`` trigger, which fires as workers connect, announce
        themselves and leave."""
        return self._watch("engine::workers-available", self.list_workers)

    @asynccontextmanager
    async def _watch(
        self, trigger_type: str, snapshot: Callable[[], Awaitable[list[_Listed]]]
    ) -> AsyncIterator[AsyncIterator[list[_Listed]]]:
        self._check_open()
        # One pending change is enough: every snapshot lists everything anew.
        changes_in, changes_out = trio.open_memory_channel[None](1)

        # Async with no await on purpose: it runs inline in the reader, where send_nowait is
        # allowed (a sync handler would run in a thread).
        async def changed(payload: JSONValue) -> None:  # noqa: ASYNC124, ASYNC910
            with contextlib.suppress(trio.WouldBlock):
                changes_in.send_nowait(None)

        listener = self.register_function(
            f"iii_trio::watch::{new_invocation_id()}",
            changed,
            description=f"iii_trio: {trigger_type} events for a watcher",
            metadata={"internal": True},  # left out of the engine's function lists
        )
        try:
            binding = await self.register_trigger(trigger_type, listener.id, None)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._changed_on_reconnect, changes_in)
                    yield _Snapshots(snapshot, changes_out)
                    nursery.cancel_scope.cancel()
            finally:
                if self._link.state is not ConnectionState.CLOSED:
                    binding.unregister()
        finally:
            if self._link.state is not ConnectionState.CLOSED:
                listener.unregister()

    async def _changed_on_reconnect(self, changes: trio.MemorySendChannel[None]) -> None:
        async with self.watch_connection_state() as states:
            was_connected = True  # the first state is the current one: not a reconnection
            async for state in states:
                connected = state is ConnectionState.CONNECTED
                if connected and not was_connected:
                    with contextlib.suppress(trio.WouldBlock):
                        changes.send_nowait(None)
                was_connected = connected

    async def list_triggers(self) -> list[TriggerInfo]:
        """Every registered trigger the engine lists (``engine::registered-triggers::list``:
        live bindings, those of ``engine::*`` functions left out, as the engine does)."""
        listing = await self.trigger("engine::registered-triggers::list", {})
        entries = listing.get("registered_triggers", []) if isinstance(listing, dict) else []
        return [
            TriggerInfo(
                id=entry["id"],
                trigger_type=entry["trigger_type"],
                function_id=entry["function_id"],
                config=entry.get("config"),
                worker_name=entry.get("worker_name"),
            )
            for entry in entries
        ]


def _invocation_error(function_id: str, invocation_id: str, error: ErrorBody) -> InvocationError:
    return InvocationError.from_error_body(
        error.code,
        error.message,
        error.stacktrace,
        function_id=function_id,
        invocation_id=invocation_id,
    )


def _worker_info(entry: Mapping[str, Any], functions: tuple[str, ...]) -> WorkerInfo:
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
        functions=functions,
        active_invocations=entry.get("active_invocations") or 0,
        namespace=entry.get("namespace") or "default",
        description=entry.get("description"),
    )


def _trigger_config(config: JSONValue) -> dict[str, JSONValue]:
    """A binding's config as the JSON object every trigger type expects (None: ``{}``)."""
    value = _json_argument("config", to_json_value, {} if config is None else config)
    if not isinstance(value, dict):
        raise TypeError(
            f"config must be a JSON object (a dict or an attrs instance), got {config!r}"
        )
    return value


def _format_schema(argument: str, value: JSONValue | type) -> JSONValue:
    """A JSON Schema given as is, or derived from a class (an attrs class, say)."""
    if not isinstance(value, type):
        return _json_argument(argument, None, value)
    schema = schema_for(value)
    if schema is None:
        raise TypeError(f"{argument}: cannot describe {value!r} as a JSON Schema")
    return schema


def _first_given(explicit: JSONValue, derived: JSONValue) -> JSONValue:
    return explicit if explicit is not None else derived


# -- checks at the public boundary ----------------------------------------------------------------


def _check_id(argument: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError(f"{argument} must not be blank")


def _check_function_id_argument(function_id: object) -> None:
    if isinstance(function_id, Mapping) and "function_id" in function_id:
        raise TypeError(
            "trigger() takes the function id and the payload as separate arguments, not one "
            "request object: call worker.trigger(function_id, payload)"
        )
    _check_id("function_id", function_id)


def _check_optional_string(argument: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{argument} must be a string or None, got {type(value).__name__}")


def _check_namespace(namespace: object) -> None:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a string, got {type(namespace).__name__}")
    if not namespace.strip():
        raise ValueError(f"namespace must not be blank, got {namespace!r}")


def _not_json(payload: JSONValue, metadata: JSONValue, error: TypeError) -> TypeError:
    """Name the argument that could not be encoded (the frame encodes both at once)."""
    for argument, value in (("payload", payload), ("metadata", metadata)):
        try:
            encode_json(to_json_value(value))
        except TypeError as exc:
            return TypeError(f"{argument} is not JSON: {exc}")
    return TypeError(f"the call cannot be encoded as JSON: {error}")


def _json_argument(
    argument: str, convert: Callable[[JSONValue], JSONValue] | None, value: JSONValue
) -> JSONValue:
    """A copy of ``value`` (converted first, if asked) as plain JSON data, which a registration
    keeps for its replays without sharing it with the caller.

    Raises:
        TypeError: ``value`` is not JSON; the message names ``argument``.
    """
    try:
        if convert is not None:
            value = convert(value)
        return loads(encode_json(value))
    except TypeError as exc:
        raise TypeError(f"{argument} is not JSON: {exc}") from None


def _check_encodable(message: Message, what: str) -> None:
    try:
        encode(message)
    except TypeError as exc:
        raise TypeError(f"{what} is not JSON: {exc}") from exc


# -- open_worker ----------------------------------------------------------------------------------


def _resolve_url(url: str | None) -> str:
    if url is not None and not isinstance(url, str):
        raise TypeError(
            f"url must be a ws:// or wss:// URL string or None, got {type(url).__name__}: {url!r}"
        )
    resolved = url or os.environ.get("III_URL") or DEFAULT_URL
    scheme = resolved.partition("://")[0].lower() if "://" in resolved else ""
    if scheme not in ("ws", "wss"):
        source = "url" if url else "$III_URL"
        raise ValueError(f"{source} must be a ws:// or wss:// URL, got {resolved!r}")
    return resolved


def _resolve_name(name: str | None) -> str:
    if name is not None:
        _check_id("name", name)
        return name
    return os.environ.get("III_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"


def _resolve_namespace(namespace: str | None) -> str | None:
    if namespace is not None:
        _check_namespace(namespace)
        return namespace
    from_env = os.environ.get("III_NAMESPACE", "")
    return from_env if from_env.strip() else None


def _resolve_headers(headers: Mapping[str, str] | None) -> list[tuple[str, str]]:
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError(
            f"headers must be a mapping of names to values, got {type(headers).__name__}"
        )
    given: list[tuple[object, object]] = list((headers or {}).items())
    resolved: list[tuple[str, str]] = []
    for name, value in given:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must map strings to strings, got {name!r}: {value!r}")
        resolved.append((name, value))
    token = os.environ.get("III_TOKEN", "").strip()
    if token and not any(name.lower() == "authorization" for name, _ in resolved):
        resolved.append(("Authorization", f"Bearer {token}"))
    return resolved


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"invocation_timeout must be a number of seconds or None, got {timeout!r}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(
            f"invocation_timeout must be a positive number of seconds, got {timeout!r}"
        )
    return float(timeout)


def _announcement(name: str, namespace: str | None, description: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "runtime": "python",
        "version": __version__,
        "name": name,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "pid": os.getpid(),
        "isolation": os.environ.get("III_ISOLATION") or None,
        "telemetry": {
            "language": (os.environ.get("LANG") or "").split(".")[0] or None,
            "project_name": os.path.basename(os.getcwd()) or None,
            "framework": "iii-trio",
        },
    }
    if namespace is not None:
        data["namespace"] = namespace
    if description is not None:
        data["description"] = description
    return data


_Listed = TypeVar("_Listed")


class _Snapshots(Generic[_Listed]):
    """What a watcher iterates: the current list first, then one per reported change. A list
    the connection's loss interrupts is taken again once the worker has reconnected."""

    def __init__(
        self,
        snapshot: Callable[[], Awaitable[list[_Listed]]],
        changes: trio.MemoryReceiveChannel[None],
    ) -> None:
        self._snapshot = snapshot
        self._changes = changes
        self._started = False

    def __aiter__(self) -> _Snapshots[_Listed]:
        return self

    async def __anext__(self) -> list[_Listed]:
        while True:
            if self._started:
                try:
                    await self._changes.receive()
                except trio.EndOfChannel:
                    raise StopAsyncIteration from None
            self._started = True
            try:
                return await self._snapshot()
            except ConnectionLost:
                # The reconnection brings a change, and with it a fresh list.
                await trio.lowlevel.checkpoint()


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
    ssl: ssl_module.SSLContext | None = None,
    tracer_provider: object | None = None,
    _open_stream: StreamOpener | None = None,
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
        ssl: the TLS context for a ``wss://`` URL; default: the system's trusted certificates,
            verified.
        tracer_provider: an OpenTelemetry ``TracerProvider`` to record spans with (the ``otel``
            extra); default: the application's global one, if it set one before this call.
            Without either, calls carry W3C trace context but no spans are made.

    Entering blocks until the engine accepted the worker and applied its registrations; the
    first failed attempt is logged at WARNING on ``iii_trio.connection`` (later ones at DEBUG).
    Leaving cancels every running handler, stops reconnecting and closes the connection and
    every channel socket of the worker within a second; it waits only for sync handlers
    already running in threads, which cannot be interrupted.

    Raises:
        TypeError, ValueError: an argument has the wrong type or value (named in the message).
        EngineUnavailable: the engine could not be reached within the backoff budget, or its
            TLS certificate was rejected (not retried); ``.url``, ``.attempts`` and the cause
            say more.
        RegistrationRejected: the engine refused this worker (its name is taken, or its auth
            function said no: ``AUTH_ERROR``, ``FORBIDDEN``); it does not retry.
    """
    resolved_url = _resolve_url(url)
    resolved_name = _resolve_name(name)
    resolved_namespace = _resolve_namespace(namespace)
    _check_optional_string("description", description)
    if not isinstance(backoff, Backoff):
        raise TypeError(f"backoff must be an iii_trio.Backoff, got {backoff!r}")
    timeout = _check_timeout(invocation_timeout)
    resolved_headers = _resolve_headers(headers)
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type(ssl).__name__}")
    tracing = tracing_for(tracer_provider)
    worker = Worker(
        announcement=_announcement(resolved_name, resolved_namespace, description),
        namespace=resolved_namespace,
        invocation_timeout=timeout,
        url=resolved_url,
        headers=resolved_headers,
        ssl_context=ssl,
        backoff=backoff,
        open_stream=_open_stream,
    )
    worker._owner.tracing = tracing
    link = worker._link
    provided = worker._owner.provided
    try:
        async with trio.open_nursery() as nursery:
            provided.attach(nursery)
            await nursery.start(worker._channels.serve)
            await nursery.start(link.supervise)
            try:
                yield worker
            finally:
                provided.detach()
                nursery.cancel_scope.cancel(reason="open_worker block exited")
    except BaseExceptionGroup as group:
        raise_collapsed(group)
    finally:
        link.close()
