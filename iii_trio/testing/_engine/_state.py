"""The dev engine's core state machine: connections, registrations, routing and cleanup.

Everything the engine decides about the worker protocol (spec/protocol.md) that is not a
built-in worker's business lives here: connections and their namespace state (section 2.5), the
function table and its leases, worker-name leases, pending invocations and their continuations,
trigger types and bindings, reattach and the disconnect cleanup. The built-in workers are plugins
(:mod:`._plugin`); the package docstring says how the shell drives this class.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from ..._protocol._ids import new_invocation_id
from ..._protocol._messages import (
    JSON,
    EnqueueAction,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    VoidAction,
    WorkerRegistered,
)
from ._channels import ChannelRegistry
from ._enqueue import route_enqueue
from ._introspection import EngineFunctions
from ._model import (
    BASELINE_ENGINE_VERSION,
    CANONICAL_UUID,
    DEFAULT_NAMESPACE,
    Binding,
    Caller,
    CloseConnection,
    Connection,
    EngineStatistics,
    Function,
    InProcessWorker,
    Liveness,
    NamespaceState,
    Output,
    Pending,
    RunInEngine,
    Send,
    TimerArmed,
    TriggerType,
    WorkerAnnounced,
    WorkerConnected,
    WorkerDisconnected,
    baggage_with_function_id,
    canonical_uuid,
    describe_value,
    engine_traceparent,
    is_blank,
    ns_list,
    sanitize_label,
)
from ._plugin import (
    DEFERRED,
    BuiltinFailure,
    BuiltinFunction,
    Call,
    Continuation,
    EnginePlugin,
    Input,
)
from ._timers import Timer, Timers

__all__ = ["TRIGGER_ACK_TIMEOUT", "EngineState"]

logger = logging.getLogger("iii_trio.dev_engine")

#: How long ``engine::register_trigger`` waits for a worker provider's answer (section 7.3).
TRIGGER_ACK_TIMEOUT: Final = 10.0
#: The code of a refused trigger binding (sections 3.2 and 7.3).
REGISTRATION_FAILED: Final = "trigger_registration_failed"

_BLANK_INVOKE_NAMESPACE: Final = (
    "`namespace` is empty: it was named and left blank. Give it a name, or omit it to use "
    "`default`."
)
_REGISTRATIONS: Final = (
    RegisterFunction,
    UnregisterFunction,
    RegisterService,
    RegisterTrigger,
    UnregisterTrigger,
    RegisterTriggerType,
)


@attrs.define(eq=False)
class _AwaitedAck:
    """An ``engine::register_trigger`` call waiting for a worker provider's answer."""

    caller: Caller
    timer: Timer


class EngineState:
    """The engine's state machine; see the package docstring for how the shell drives it.

    Args:
        grace: seconds a connection's namespace stays pending before registrations drain into
            ``default`` (section 2.5).
        version: the version the engine reports for its in-process workers.
        new_uuid: source of UUIDs for worker ids, tokens, invocation, binding and channel ids;
            inject a deterministic one in tests. By default, random version-4 UUIDs made
            without a ``uuid.UUID`` each (the REST API makes five per request).
        started_at_ms: wall-clock start time in Unix milliseconds, shown as the in-process
            workers' ``connected_at_ms``.
        wall_clock_offset: Unix time minus the shell's clock, in seconds, so that plugins can
            stamp wall-clock times (:meth:`unix_time`) without the core reading a clock. The
            shell measures it once: the wall clock then advances with the shell's clock (a fake
            one in tests), and a step of the system clock is not followed.
        functions_poll_interval: seconds between the checks that fire
            ``engine::functions-available`` (the engine polls every 5 s).
        plugins: in-process workers to run besides ``iii-engine-functions``, in order.

    Plugin interface. Besides the shell's entry points, plugins (:class:`._plugin.EnginePlugin`)
    use these members, and only these:

    - the tables, read-only: :attr:`connections`, :attr:`functions`, :attr:`trigger_types`,
      :attr:`bindings`, :attr:`in_process_workers`, and :attr:`version`, :attr:`started_at_ms`;
      :attr:`now` and :meth:`unix_time`;
    - :attr:`channels`, the channel registry (which the shell also asks before it attaches a
      channel's data socket);
    - :meth:`arm` a timer; :meth:`answer` a caller; :meth:`start_call` to invoke a worker's
      function from the engine and continue when it answers; :meth:`fire_trigger` to deliver an
      event to every binding of an engine trigger type, :meth:`fire_binding` to one;
      :meth:`call_builtin` to run another plugin's function and continue with its outcome;
    - the operations behind the engine's own registration functions: :meth:`register_worker`,
      :meth:`register_durable_trigger`, :meth:`unregister_durable_trigger`.
    """

    def __init__(
        self,
        *,
        grace: float = 5.0,
        version: str = BASELINE_ENGINE_VERSION,
        new_uuid: Callable[[], uuid.UUID] | None = None,
        started_at_ms: int = 0,
        wall_clock_offset: float = 0.0,
        functions_poll_interval: float = 5.0,
        plugins: Sequence[EnginePlugin] = (),
    ) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace!r}")
        self._grace = grace
        #: The time of the event being handled (the shell's clock), for plugins that arm
        #: timers from hooks that are not given it.
        self.now = 0.0
        self.version = version
        self._new_id: Callable[[], str] = (
            new_invocation_id if new_uuid is None else lambda: str(new_uuid())
        )
        self.started_at_ms = started_at_ms
        self._wall_clock_offset = wall_clock_offset

        self.connections: dict[str, Connection] = {}
        self.functions: dict[tuple[str, str], Function] = {}
        self.trigger_types: dict[tuple[str, str], TriggerType] = {}
        self.bindings: dict[str, Binding] = {}
        self._name_leases: dict[tuple[str, str], Connection] = {}
        self._pending: dict[str, Pending] = {}
        self._services: dict[tuple[str, str], RegisterService] = {}
        self._awaited_acks: dict[str, _AwaitedAck] = {}
        self._timers = Timers()
        self._builtins: dict[str, BuiltinFunction] = {}
        #: Every channel ``engine::channels::create`` made (section 6; plugin interface).
        self.channels = ChannelRegistry(self.new_id, self.arm)

        # The listener that serves the WebSocket port owns no functions of its own.
        workers = [InProcessWorker(self.new_id(), "iii-worker-manager", (), ())]
        self._plugins = (EngineFunctions(functions_poll_interval), *plugins)
        for plugin in self._plugins:
            workers.append(self._install(plugin))
        self.in_process_workers: tuple[InProcessWorker, ...] = tuple(workers)
        for plugin in self._plugins:
            plugin.attach(self)

    def _install(self, plugin: EnginePlugin) -> InProcessWorker:
        functions = plugin.functions()
        trigger_types = plugin.trigger_types()
        worker = InProcessWorker(
            self.new_id(), plugin.name, tuple(sorted(functions)), tuple(trigger_types)
        )
        for function_id, builtin in functions.items():
            if function_id in self._builtins:
                raise ValueError(f"two plugins provide {function_id}")
            self._builtins[function_id] = builtin
            self.functions[(DEFAULT_NAMESPACE, function_id)] = Function(
                DEFAULT_NAMESPACE,
                function_id,
                owner=None,
                description=builtin.description,
                provider=worker,
            )
        for type_id, description in trigger_types.items():
            key = (DEFAULT_NAMESPACE, type_id)
            if key in self.trigger_types:
                raise ValueError(f"two plugins provide trigger type {type_id}")
            self.trigger_types[key] = TriggerType(
                DEFAULT_NAMESPACE, type_id, description, plugin=plugin
            )
        return worker

    # -- the shell's entry points ------------------------------------------------------------------

    def connect(
        self, *, peer_host: str | None, now: float, connected_at_ms: int
    ) -> tuple[str, list[Output]]:
        """Accept a worker connection (section 2.1).

        Returns:
            The new connection's id (its ``worker_id``) and the outputs, which start with the
            ``workerregistered`` frame.
        """
        self.now = now
        connection = Connection(
            id=self.new_id(),
            reattach_token=self.new_id(),
            peer_host=peer_host,
            connected_at_ms=connected_at_ms,
        )
        self.connections[connection.id] = connection
        out: list[Output] = [
            Send(
                connection.id,
                WorkerRegistered(worker_id=connection.id, reattach_token=connection.reattach_token),
            ),
            WorkerConnected(connection.id, peer_host),
        ]
        connection.grace_timer = self.arm(
            now + self._grace, functools.partial(self._grace_expired, connection), out
        )
        for plugin in self._plugins:
            plugin.worker_connected(connection, now, out)
        return connection.id, out

    def receive(self, connection_id: str, message: Message, now: float) -> list[Output]:
        """Handle one decoded message from ``connection_id``; unknown or closing ids are ignored."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.liveness is not Liveness.OPEN:
            return []
        self.now = now
        out: list[Output] = []
        # Most frequent first: this sits on every routed call.
        if isinstance(message, InvokeFunction):
            self._on_invoke(connection, message, now, out)
        elif isinstance(message, InvocationResult):
            self._on_result(connection, message, out)
        elif isinstance(message, _REGISTRATIONS):
            if connection.namespace_state is NamespaceState.PENDING:
                connection.buffered.append(message)
            elif connection.namespace_state is NamespaceState.RESOLVED:
                self._apply_registration(connection, message, out)
        elif isinstance(message, TriggerRegistrationResult):
            self._on_trigger_registration_result(connection, message, out)
        elif isinstance(message, Reattach):
            self._on_reattach(connection, message, out)
        elif isinstance(message, Ping):
            self._send(connection, Pong(), out)
        else:
            # pong, workerregistered, registrationrejected, unregistertriggertype, unknown types.
            logger.debug("ignoring %s from %s", type(message).__name__, connection_id)
        return out

    # The two methods below are :meth:`receive` for the two messages every routed call consists
    # of, in the common case only, with plain values in and out: no message object is built or
    # read, no output list either. Anything else they decline, having changed nothing, and the
    # shell then builds the message and calls :meth:`receive` (tests check both give the same).

    def route_invocation(
        self,
        connection_id: str,
        function_id: str,
        data: JSON,
        invocation_id: str,
        traceparent: str | None,
        baggage: str | None,
        metadata: JSON,
        namespace: str | None,
    ) -> tuple[str, str | None, str | None] | None:
        """:meth:`receive` of an ``invokefunction`` without ``action``, if it is the common case.

        That is: a call with a canonical invocation id not already in flight, from an open
        connection, to a function an open worker connection provides. ``data``, when it is a
        dict, gets ``_caller_worker_id`` added in place, so it must be a fresh one (just
        decoded) that nobody else holds.

        Returns:
            ``(executor_connection_id, traceparent, baggage)``: send that connection
            ``InvokeFunction(function_id, data, invocation_id, traceparent, baggage,
            metadata=metadata)``, with the ``data``, ``traceparent`` and ``baggage`` this
            returns (the trace context as the engine hands it on), and nothing else. ``None``
            when the message is not the common case: nothing was done, pass it to
            :meth:`receive`.
        """
        connection = self.connections.get(connection_id)
        if (
            connection is None
            or connection.liveness is not Liveness.OPEN
            or len(invocation_id) != 36
            or invocation_id in self._pending
            or not CANONICAL_UUID.match(invocation_id)
        ):
            return None
        if namespace is None:
            namespace = DEFAULT_NAMESPACE
        elif is_blank(namespace):
            return None
        function = self.functions.get((namespace, function_id))
        if function is None:
            return None
        executor = function.owner
        if executor is None or executor.liveness is not Liveness.OPEN or function.run is not None:
            return None
        if type(data) is dict:
            # What receive() does with a copy; same keys in the same order.
            data["_caller_worker_id"] = connection.id
        # The reply echoes the caller's trace fields as they came; the delivery carries them
        # as the engine's propagator writes them again.
        caller = Caller(connection, invocation_id, function_id, traceparent, baggage)
        if traceparent is not None or baggage is not None:
            traceparent = engine_traceparent(traceparent)
            baggage = baggage_with_function_id(baggage, function_id)
        connection.in_flight.add(invocation_id)
        connection.calls_started += 1
        self._pending[invocation_id] = Pending(executor, connection, caller)
        executor.in_flight.add(invocation_id)
        return executor.id, traceparent, baggage

    def route_result(self, connection_id: str, invocation_id: str, result: JSON) -> Caller | bool:
        """:meth:`receive` of an ``invocationresult`` without ``error``, if it is the common case.

        That is: the result of a pending call routed to a worker, not of an enqueue, arriving
        on an open connection under the canonical id the engine delivered it with. The result
        frame's ``function_id`` and trace fields are not needed: the reply takes the caller's.

        Returns:
            The caller to answer: send its connection ``InvocationResult(caller.invocation_id,
            caller.function_id, result=result, traceparent=caller.traceparent,
            baggage=caller.baggage)``. ``True`` when the result was taken and nobody is to be
            answered. ``False`` when the message is not the common case: nothing was done, pass
            it to :meth:`receive`.
        """
        pending = self._pending.get(invocation_id)
        if pending is None or pending.then is not None:
            return False
        connection = self.connections.get(connection_id)
        if connection is None or connection.liveness is not Liveness.OPEN:
            return False
        # The keys of _pending are canonical, so finding it proves the id was.
        del self._pending[invocation_id]
        pending.executor.in_flight.discard(invocation_id)
        if pending.origin is not None:
            pending.origin.calls_started -= 1
        caller = pending.caller
        if caller is None:
            return True
        caller_connection = caller.connection
        caller_connection.in_flight.discard(invocation_id)
        if caller_connection.liveness is not Liveness.OPEN:
            return True
        return caller

    def disconnect(self, connection_id: str, now: float | None = None) -> list[Output]:
        """Run the disconnect cleanup of section 2.8 (once; later calls are no-ops)."""
        connection = self.connections.get(connection_id)
        if connection is None:
            return []
        if now is not None:
            self.now = now
        out: list[Output] = []
        self._cleanup(connection, out)
        return out

    def tick(self, now: float) -> list[Output]:
        """Run every timer due at or before ``now`` (namespace grace expiries, unanswered
        ``engine::register_trigger`` calls, the plugins' timers)."""
        self.now = now
        out: list[Output] = []
        self._timers.fire_due(now, out)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has work to do, or ``None``."""
        return self._timers.next_deadline()

    def calls_started(self, connection_id: str) -> int:
        """How many calls ``connection_id`` started (sync, void or enqueue) are waiting for a
        worker to answer; 0 for an unknown connection. The shell uses it to stop reading a
        connection that has too many."""
        connection = self.connections.get(connection_id)
        return 0 if connection is None else connection.calls_started

    def namespace_state(self, connection_id: str) -> NamespaceState | None:
        """Section 2.5 state of a live connection (``None`` once it is gone)."""
        connection = self.connections.get(connection_id)
        return None if connection is None else connection.namespace_state

    def statistics(self) -> EngineStatistics:
        """Current counts (functions and trigger types include the built-in ones)."""
        return EngineStatistics(
            connections=len(self.connections),
            pending_invocations=len(self._pending),
            functions=len(self.functions),
            trigger_types=len(self.trigger_types),
            bindings=len(self.bindings),
            services=len(self._services),
        )

    # -- helpers -----------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh UUID for an id the engine hands out (plugin interface)."""
        return self._new_id()

    def unix_time(self, now: float | None = None) -> float:
        """The wall-clock time, in Unix seconds, at ``now`` on the shell's clock (default: the
        time of the event being handled; plugin interface)."""
        return (self.now if now is None else now) + self._wall_clock_offset

    @staticmethod
    def _send(connection: Connection | None, message: Message, out: list[Output]) -> None:
        if connection is not None and connection.liveness is Liveness.OPEN:
            out.append(Send(connection.id, message))

    def arm(
        self, deadline: float, callback: Callable[[float, list[Output]], None], out: list[Output]
    ) -> Timer:
        """Run ``callback(now, out)`` once ``deadline`` has passed (plugin interface)."""
        out.append(TimerArmed(deadline))
        return self._timers.schedule(deadline, callback)

    def _grace_expired(self, connection: Connection, now: float, out: list[Output]) -> None:
        connection.grace_timer = None
        logger.warning(
            "worker %s did not call engine::workers::register within %ss; its registrations"
            " go to namespace 'default'",
            connection.id,
            self._grace,
        )
        self._resolve_namespace(connection, DEFAULT_NAMESPACE, out)

    @staticmethod
    def _stop_grace_timer(connection: Connection) -> None:
        if connection.grace_timer is not None:
            connection.grace_timer.cancel()
            connection.grace_timer = None

    # -- namespaces and registrations (sections 2.5, 3.1-3.6) --------------------------------------

    def _resolve_namespace(self, connection: Connection, namespace: str, out: list[Output]) -> None:
        self._stop_grace_timer(connection)
        connection.namespace = namespace
        connection.namespace_state = NamespaceState.RESOLVED
        buffered, connection.buffered = connection.buffered, []
        for message in buffered:
            self._apply_registration(connection, message, out)

    def _apply_registration(
        self, connection: Connection, message: Message, out: list[Output]
    ) -> None:
        if isinstance(message, RegisterFunction):
            self._apply_register_function(connection, message, out)
        elif isinstance(message, UnregisterFunction):
            self._apply_unregister_function(connection, message)
        elif isinstance(message, RegisterService):
            self._services[(connection.effective_namespace, message.id)] = message
        elif isinstance(message, RegisterTrigger):
            self._apply_register_trigger(connection, message, out)
        elif isinstance(message, UnregisterTrigger):
            self._apply_unregister_trigger(message, out)
        elif isinstance(message, RegisterTriggerType):
            self._apply_register_trigger_type(connection, message, out)

    def _apply_register_function(
        self, connection: Connection, message: RegisterFunction, out: list[Output]
    ) -> None:
        namespace = connection.effective_namespace
        if message.id.startswith("engine::") and namespace != DEFAULT_NAMESPACE:
            self._reject_function(connection, namespace, message.id, "", out)
            return
        key = (namespace, message.id)
        existing = self.functions.get(key)
        if existing is not None and existing.owner is not connection:
            holder = existing.owner if existing.owner is not None else existing.provider
            owner_id = holder.id if holder is not None else ""
            self._reject_function(connection, namespace, message.id, owner_id, out)
            return
        run = None
        if message.invocation is not None:
            # As the engine: the lease is checked first, then the worker that performs HTTP
            # calls (iii-http-functions) validates the endpoint; without it, or when it refuses
            # the endpoint, the registration is dropped and the worker is not told.
            run = self._http_function(connection, message)
            if run is None:
                logger.debug("dropping HTTP-invoked function %s: no worker took it", message.id)
                return
        self.functions[key] = Function(
            namespace,
            message.id,
            owner=connection,
            description=message.description,
            request_format=message.request_format,
            response_format=message.response_format,
            metadata=message.metadata,
            run=run,
        )
        connection.functions.add(key)

    def _http_function(
        self, connection: Connection, message: RegisterFunction
    ) -> RunInEngine | None:
        for plugin in self._plugins:
            run = plugin.http_function(connection, message)
            if run is not None:
                return run
        return None

    def _reject_function(
        self,
        connection: Connection,
        namespace: str,
        function_id: str,
        owner_id: str,
        out: list[Output],
    ) -> None:
        self._send(
            connection,
            RegistrationRejected(
                code="FUNCTION_NAMESPACE_CONFLICT",
                namespace=namespace,
                owner_worker_id=owner_id,
                function_id=function_id,
            ),
            out,
        )

    def _apply_unregister_function(
        self, connection: Connection, message: UnregisterFunction
    ) -> None:
        key = (connection.effective_namespace, message.id)
        existing = self.functions.get(key)
        if existing is not None and existing.owner is connection:
            del self.functions[key]
            connection.functions.discard(key)

    # -- invocations (section 4) -------------------------------------------------------------------

    def _on_invoke(
        self, connection: Connection, message: InvokeFunction, now: float, out: list[Output]
    ) -> None:
        function_id = message.function_id
        caller = None
        if message.invocation_id is not None:
            invocation_id = canonical_uuid(message.invocation_id)
            if invocation_id is None:
                logger.debug("dropping invokefunction with a non-UUID invocation_id")
                return
            if type(message.action) is not VoidAction:
                caller = Caller(
                    connection, invocation_id, function_id, message.traceparent, message.baggage
                )
        namespace = message.namespace
        if namespace is None:
            namespace = DEFAULT_NAMESPACE
        elif is_blank(namespace):
            if caller is not None:
                # The one engine reply that carries no trace fields.
                error = ErrorBody("INVALID_NAMESPACE", _BLANK_INVOKE_NAMESPACE)
                self._send(
                    connection,
                    InvocationResult(caller.invocation_id, function_id, error=error),
                    out,
                )
            return
        if type(message.action) is EnqueueAction:
            route_enqueue(self, connection, message, message.action, caller, namespace, out)
            return
        data = message.data
        if type(data) is dict:
            data = {**data, "_caller_worker_id": connection.id}
        function = self.functions.get((namespace, function_id))
        if function is None:
            text = self._not_found_message(function_id, namespace)
            self.answer(caller, out, error=ErrorBody("function_not_found", text))
            return
        executor = function.owner
        if executor is None:
            self._run_builtin(Call(connection, function_id, caller, now), data, out)
            return
        if function.run is not None:
            function.run(data, self._replying_to(caller), out)
            return
        baggage = message.baggage
        if message.traceparent is not None or baggage is not None:
            baggage = baggage_with_function_id(baggage, function_id)
        if caller is None:
            delivery_id = self.new_id()
        else:
            delivery_id = caller.invocation_id
            earlier = self._forget(delivery_id)
            if earlier is not None:
                # The new call takes over the id's result slot, so the earlier caller's channel
                # closes (section 4.1).
                closed = ErrorBody("invocation_error", "channel closed")
                self._answer_pending(earlier, out, error=closed)
            connection.in_flight.add(delivery_id)
        connection.calls_started += 1
        self._pending[delivery_id] = Pending(executor, connection, caller)
        executor.in_flight.add(delivery_id)
        self._send(
            executor,
            InvokeFunction(
                function_id=function_id,
                data=data,
                invocation_id=delivery_id,
                traceparent=engine_traceparent(message.traceparent),
                baggage=baggage,
                metadata=message.metadata,
            ),
            out,
        )

    def _not_found_message(self, function_id: str, namespace: str) -> str:
        text = f"Function {function_id} not found in namespace {namespace}."
        elsewhere = [ns for (ns, fid) in self.functions if fid == function_id]
        if elsewhere:
            text += f" It is registered in namespace(s): {ns_list(elsewhere)}."
        return text

    def answer(
        self,
        caller: Caller | None,
        out: list[Output],
        *,
        result: JSON = None,
        error: ErrorBody | None = None,
    ) -> None:
        """Send ``caller`` the outcome of its call, nothing when nobody waits (plugin
        interface)."""
        if caller is not None:
            self._send(
                caller.connection,
                InvocationResult(
                    invocation_id=caller.invocation_id,
                    function_id=caller.function_id,
                    result=result,
                    error=error,
                    traceparent=caller.traceparent,
                    baggage=caller.baggage,
                ),
                out,
            )

    def _replying_to(self, caller: Caller | None) -> Continuation | None:
        """The continuation that answers ``caller`` (None when nobody waits)."""
        if caller is None:
            return None

        def reply(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            self.answer(caller, out, result=result, error=error)

        return reply

    def _answer_pending(
        self,
        pending: Pending,
        out: list[Output],
        *,
        result: JSON = None,
        error: ErrorBody | None = None,
    ) -> None:
        if pending.then is not None:
            pending.then(result, error, out)
        else:
            self.answer(pending.caller, out, result=result, error=error)

    def _forget(self, invocation_id: str) -> Pending | None:
        pending = self._pending.pop(invocation_id, None)
        if pending is not None:
            pending.executor.in_flight.discard(invocation_id)
            if pending.origin is not None:
                pending.origin.calls_started -= 1
            if pending.caller is not None:
                pending.caller.connection.in_flight.discard(invocation_id)
        return pending

    def _on_result(
        self, connection: Connection, message: InvocationResult, out: list[Output]
    ) -> None:
        invocation_id = canonical_uuid(message.invocation_id)
        if invocation_id is None:
            logger.debug("dropping invocationresult with a non-UUID invocation_id")
            return
        pending = self._forget(invocation_id)
        if pending is None:
            logger.debug("ignoring result for unknown or settled invocation %s", invocation_id)
            return
        self._answer_pending(pending, out, result=message.result, error=message.error)

    def start_call(
        self,
        executor: Connection,
        function_id: str,
        data: JSON,
        out: list[Output],
        *,
        origin: Connection | None = None,
        caller: Caller | None = None,
        then: Continuation | None = None,
        metadata: JSON = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        """Invoke ``function_id`` on ``executor`` on the engine's own behalf (plugin interface).

        The outcome goes to ``then`` when given, else to ``caller`` (if any), once the executor
        answers; it is ``invocation_stopped`` if the executor goes away first. A ``caller``
        counts the call among its connection's active invocations, and if that connection goes
        away first the call is forgotten: neither ``then`` nor anyone else hears of it. An
        ``origin`` is the connection whose message caused the call: it counts among the calls
        that connection started (see :meth:`calls_started`).
        """
        delivery_id = self.new_id()
        if origin is not None:
            origin.calls_started += 1
        self._pending[delivery_id] = Pending(executor, origin, caller, then)
        executor.in_flight.add(delivery_id)
        if caller is not None:
            caller.connection.in_flight.add(delivery_id)
        self._send(
            executor,
            InvokeFunction(
                function_id,
                data=data,
                invocation_id=delivery_id,
                traceparent=traceparent,
                baggage=baggage,
                metadata=metadata,
            ),
            out,
        )

    def fire_trigger(self, type_id: str, payload: dict[str, JSON], out: list[Output]) -> None:
        """Deliver ``payload`` to every live binding of the engine trigger type ``type_id``
        (plugin interface; section 4.6). Each target gets its own copy."""
        key = (DEFAULT_NAMESPACE, type_id)
        for binding in list(self.bindings.values()):
            if binding.provider_key == key:
                self._deliver(binding, dict(payload), out)

    def _deliver(
        self,
        binding: Binding,
        payload: JSON,
        out: list[Output],
        *,
        then: Continuation | None = None,
    ) -> None:
        function = self.functions.get((binding.namespace, binding.function_id))
        if function is None:
            logger.info(
                "trigger %s: Function %s not found in namespace %s",
                binding.id,
                binding.function_id,
                binding.namespace,
            )
        elif function.owner is None:
            logger.debug("trigger %s targets built-in %s: not delivered", binding.id, function.id)
        self.call_function(
            binding.namespace,
            binding.function_id,
            payload,
            out,
            then=then,
            metadata=binding.metadata,
        )

    # -- built-in functions (section 7) -----------------------------------------------------------

    def _run_builtin(self, call: Call, data: JSON, out: list[Output]) -> None:
        builtin = self._builtins[call.function_id]
        try:
            if not isinstance(data, dict):
                raise Input(call.function_id, {}).fail(
                    f"invalid type: {describe_value(data)}, expected struct {builtin.input_struct}"
                )
            result = builtin.handler(call, Input(call.function_id, data), out)
        except BuiltinFailure as failure:
            self.answer(call.caller, out, error=failure.body)
            return
        if result is not DEFERRED:
            self.answer(call.caller, out, result=result)

    def call_builtin(
        self,
        connection: Connection,
        function_id: str,
        data: dict[str, JSON],
        out: list[Output],
        *,
        then: Continuation,
    ) -> None:
        """Run the in-process function ``function_id`` as if ``connection`` had called it, and
        give its outcome to ``then`` (plugin interface: how the engine reaches a provider that
        is another plugin). The function must answer at once, not with DEFERRED."""
        builtin = self._builtins[function_id]
        try:
            result = builtin.handler(
                Call(connection, function_id, None, self.now), Input(function_id, data), out
            )
        except BuiltinFailure as failure:
            then(None, failure.body, out)
            return
        if result is DEFERRED:
            raise RuntimeError(f"{function_id} deferred its answer to an in-engine call")
        then(result, None, out)

    def register_worker(self, call: Call, data: Input, out: list[Output]) -> JSON:
        """``engine::workers::register`` (section 2.4; plugin interface)."""
        connection = call.connection
        runtime = data.optional_str("runtime")
        version = data.optional_str("version")
        name = sanitize_label(data.optional_str("name"))
        description = sanitize_label(data.optional_str("description"))
        os_name = data.optional_str("os")
        pid = data.optional_u32("pid")
        isolation = data.optional_str("isolation")
        declared = data.optional_str("namespace")
        telemetry = data.optional_str_fields(
            "telemetry", ("language", "project_name", "framework"), "WorkerTelemetryMeta"
        )
        if declared is not None and is_blank(declared):
            # The grace deadline stays armed: buffered registrations still drain into default.
            raise BuiltinFailure(
                "INVALID_NAMESPACE",
                f"namespace is empty: worker '{name or '<unnamed>'}' declared \"{declared}\". "
                "Give it a name, or omit the field to register in 'default'.",
            )
        if connection.namespace_state is NamespaceState.RESOLVED:
            namespace = connection.effective_namespace
            if declared is not None and declared != namespace:
                logger.warning(
                    "worker %s declared namespace %r but its namespace is already %r",
                    connection.id,
                    declared,
                    namespace,
                )
        else:
            namespace = declared if declared is not None else DEFAULT_NAMESPACE
        if name is not None:
            holder = self._name_leases.get((namespace, name))
            if holder is not None and holder is not connection:
                self._send(
                    connection,
                    RegistrationRejected(
                        code="WORKER_NAMESPACE_CONFLICT",
                        namespace=namespace,
                        owner_worker_id=holder.id,
                        worker_name=name,
                    ),
                    out,
                )
                self._begin_close(connection, out)
                return {"success": False}
            if connection.name is not None and connection.name != name:
                self._release_name(connection)
            self._name_leases[(namespace, name)] = connection
            connection.name = name
        if description is not None:
            connection.description = description
        if os_name is not None:
            connection.os = os_name
        if pid is not None:
            connection.pid = pid
        if isolation is not None:
            connection.isolation = isolation
        if declared is not None:
            connection.declared_namespace = declared
        connection.runtime = runtime if runtime is not None else "unknown"
        connection.version = version
        connection.telemetry = telemetry
        connection.registered = True
        if connection.namespace_state is NamespaceState.PENDING:
            self._resolve_namespace(connection, namespace, out)
        out.append(WorkerAnnounced(connection.id, connection.name, namespace))
        for plugin in self._plugins:
            plugin.worker_announced(connection, out)
        return {"success": True}

    def _begin_close(self, connection: Connection, out: list[Output]) -> None:
        connection.liveness = Liveness.CLOSING
        connection.namespace_state = NamespaceState.ABORTED
        connection.buffered.clear()
        self._stop_grace_timer(connection)
        out.append(CloseConnection(connection.id, drain=True))

    def _release_name(self, connection: Connection) -> None:
        if connection.name is None:
            return
        key = (connection.effective_namespace, connection.name)
        if self._name_leases.get(key) is connection:
            del self._name_leases[key]

    # -- triggers (sections 3.1-3.4, 5, 7) ---------------------------------------------------------

    def _lookup_provider(self, binding: Binding) -> tuple[str, str] | None:
        if binding.trigger_namespace is not None:
            key = (binding.trigger_namespace, binding.trigger_type)
            return key if key in self.trigger_types else None
        for namespace in (binding.origin_namespace, DEFAULT_NAMESPACE):
            key = (namespace, binding.trigger_type)
            if key in self.trigger_types:
                return key
        return None

    def _activate(self, binding: Binding, key: tuple[str, str], out: list[Output]) -> None:
        trigger_type = self.trigger_types[key]
        plugin = trigger_type.plugin
        if plugin is not None:
            try:
                plugin.check_binding(binding)
            except BuiltinFailure as refusal:
                # Only a binding that fell back here from a departed provider gets this far
                # unchecked: the engine keeps it parked.
                logger.info("trigger %s stays parked: %s", binding.id, refusal.body.message)
                return
            binding.provider_key = key
            plugin.start_binding(binding, out)
            return
        binding.provider_key = key
        provider = trigger_type.provider
        if provider is not None:
            self._send(
                provider,
                RegisterTrigger(
                    id=binding.id,
                    trigger_type=binding.trigger_type,
                    function_id=binding.function_id,
                    config=binding.config,
                    metadata=binding.metadata,
                    namespace=None if binding.namespace == DEFAULT_NAMESPACE else binding.namespace,
                    trigger_namespace=None if key[0] == DEFAULT_NAMESPACE else key[0],
                ),
                out,
            )

    def _deactivate(self, binding: Binding, out: list[Output]) -> None:
        key, binding.provider_key = binding.provider_key, None
        if key is None:
            return
        trigger_type = self.trigger_types.get(key)
        if trigger_type is None:
            return
        if trigger_type.plugin is not None:
            trigger_type.plugin.stop_binding(binding, out)
        elif trigger_type.provider is not None:
            self._send(
                trigger_type.provider,
                UnregisterTrigger(id=binding.id, trigger_type=binding.trigger_type),
                out,
            )

    def _add_binding(
        self, binding: Binding, out: list[Output]
    ) -> tuple[str, str] | BuiltinFailure | None:
        """Register ``binding``: its provider key once live, None when parked, or the refusal
        of the engine's own provider (then nothing changed: a binding it replaced stays)."""
        key = self._lookup_provider(binding)
        plugin = self.trigger_types[key].plugin if key is not None else None
        if plugin is not None:
            try:
                plugin.check_binding(binding)
            except BuiltinFailure as refusal:
                return refusal
        replaced = self.bindings.pop(binding.id, None)
        if replaced is not None:
            self._deactivate(replaced, out)
        self.bindings[binding.id] = binding
        if key is not None:
            self._activate(binding, key, out)
        return key

    def fire_binding(
        self,
        binding: Binding,
        payload: JSON,
        out: list[Output],
        *,
        then: Continuation | None = None,
    ) -> None:
        """Call ``binding``'s function with ``payload`` and the binding's metadata (plugin
        interface): what an engine trigger type does when one binding's event happens. The
        outcome goes to ``then``, if given (``function_not_found`` at once when the function
        is not there: the engine logs that and calls nothing)."""
        self._deliver(binding, payload, out, then=then)

    def call_function(
        self,
        namespace: str,
        function_id: str,
        payload: JSON,
        out: list[Output],
        *,
        then: Continuation | None = None,
        metadata: JSON = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        """Call a worker's function (or an HTTP-invoked one) on the engine's own behalf, as it
        calls condition functions and middleware (plugin interface). The outcome goes to
        ``then``, if given: ``function_not_found`` at once when ``namespace`` has no such
        function a worker serves (worded as the engine words it on this path: no period and
        no hint of other namespaces, unlike a worker's call). The trace fields, if given, go
        with the call to a worker."""
        function = self.functions.get((namespace, function_id))
        if function is None or function.owner is None:
            if then is not None:
                text = f"Function {function_id} not found in namespace {namespace}"
                then(None, ErrorBody("function_not_found", text), out)
            return
        if function.run is not None:
            function.run(payload, then, out)
            return
        self.start_call(
            function.owner,
            function_id,
            payload,
            out,
            metadata=metadata,
            then=then,
            traceparent=traceparent,
            baggage=baggage,
        )

    def _apply_register_trigger(
        self, connection: Connection, message: RegisterTrigger, out: list[Output]
    ) -> None:
        for field, value in (
            ("namespace", message.namespace),
            ("trigger_namespace", message.trigger_namespace),
        ):
            if value is not None and is_blank(value):
                self._send(
                    connection,
                    TriggerRegistrationResult(
                        id=message.id,
                        trigger_type=message.trigger_type,
                        function_id=message.function_id,
                        error=ErrorBody(
                            "INVALID_NAMESPACE",
                            f"`{field}` is empty: it was named and left blank. Give it a name, "
                            "or omit it to use `default`.",
                        ),
                    ),
                    out,
                )
                return
        added = self._add_binding(
            Binding(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=message.function_id,
                config=message.config,
                metadata=message.metadata,
                namespace=message.namespace or DEFAULT_NAMESPACE,
                trigger_namespace=message.trigger_namespace,
                origin_namespace=connection.effective_namespace,
                owner=connection,
            ),
            out,
        )
        if isinstance(added, BuiltinFailure):
            self._send(
                connection,
                TriggerRegistrationResult(
                    id=message.id,
                    trigger_type=message.trigger_type,
                    function_id=message.function_id,
                    error=ErrorBody(REGISTRATION_FAILED, added.body.message),
                ),
                out,
            )

    def _apply_unregister_trigger(self, message: UnregisterTrigger, out: list[Output]) -> None:
        binding = self.bindings.pop(message.id, None)
        if binding is not None:
            self._deactivate(binding, out)

    def _apply_register_trigger_type(
        self, connection: Connection, message: RegisterTriggerType, out: list[Output]
    ) -> None:
        namespace = message.namespace
        if namespace is None:
            namespace = connection.effective_namespace
        elif is_blank(namespace):
            logger.info("ignoring trigger type %r with a blank namespace", message.id)
            return
        key = (namespace, message.id)
        existing = self.trigger_types.get(key)
        if existing is not None and existing.provider is None:
            logger.warning("worker %s cannot replace engine trigger type %s", connection.id, key)
            return
        if existing is not None and existing.provider is not None:
            existing.provider.trigger_types.discard(key)
        self.trigger_types[key] = TriggerType(
            namespace,
            message.id,
            message.description,
            message.trigger_request_format,
            message.call_request_format,
            provider=connection,
        )
        connection.trigger_types.add(key)
        for binding in list(self.bindings.values()):
            if self._lookup_provider(binding) != key:
                continue
            if binding.provider_key is not None and binding.provider_key != key:
                self._deactivate(binding, out)
            self._activate(binding, key, out)

    def _on_trigger_registration_result(
        self,
        connection: Connection,
        message: TriggerRegistrationResult,
        out: list[Output],
    ) -> None:
        awaited = self._stop_awaiting(message.id)
        if awaited is not None:
            if message.error is None:
                self.answer(awaited.caller, out, result={"id": message.id})
            else:
                # The caller never learns the id, so a refused durable binding is not kept.
                self.bindings.pop(message.id, None)
                text = f"{message.error.code}: {message.error.message}"
                error = ErrorBody(REGISTRATION_FAILED, text)
                self.answer(awaited.caller, out, error=error)
            return
        binding = self.bindings.get(message.id)
        if binding is None or binding.provider_key is None:
            return
        if self.trigger_types[binding.provider_key].provider is not connection:
            return
        if message.error is not None:
            binding.provider_key = None
            self._send(binding.owner, message, out)

    def register_durable_trigger(self, call: Call, data: Input, out: list[Output]) -> JSON:
        """``engine::register_trigger`` (section 7.3; plugin interface)."""
        trigger_type = data.required_str("trigger_type")
        function_id = data.required_str("function_id")
        config = data.any("config")
        metadata = data.any("metadata")
        trigger_namespace = data.optional_str("trigger_namespace")
        binding = Binding(
            id=self.new_id(),
            trigger_type=trigger_type,
            function_id=function_id,
            config=config,
            metadata=metadata,
            namespace=DEFAULT_NAMESPACE,
            trigger_namespace=trigger_namespace,
            origin_namespace=DEFAULT_NAMESPACE,
            owner=None,
        )
        key = self._add_binding(binding, out)
        if isinstance(key, BuiltinFailure):
            raise BuiltinFailure(REGISTRATION_FAILED, key.body.message)
        provider = self.trigger_types[key].provider if key is not None else None
        if provider is None or call.caller is None:
            return {"id": binding.id}
        timer = self.arm(
            call.now + TRIGGER_ACK_TIMEOUT, functools.partial(self._ack_timed_out, binding.id), out
        )
        self._awaited_acks[binding.id] = _AwaitedAck(call.caller, timer)
        return DEFERRED

    def _ack_timed_out(self, binding_id: str, now: float, out: list[Output]) -> None:
        # No answer in time: the binding counts as accepted.
        awaited = self._awaited_acks.pop(binding_id)
        self.answer(awaited.caller, out, result={"id": binding_id})

    def _stop_awaiting(self, binding_id: str) -> _AwaitedAck | None:
        awaited = self._awaited_acks.pop(binding_id, None)
        if awaited is not None:
            awaited.timer.cancel()
        return awaited

    def unregister_durable_trigger(self, call: Call, data: Input, out: list[Output]) -> JSON:
        """``engine::unregister_trigger`` (section 7.3; plugin interface)."""
        binding_id = data.required_str("id")
        data.optional_str("trigger_type")
        binding = self.bindings.pop(binding_id, None)
        if binding is None:
            return {"removed": False}
        self._stop_awaiting(binding_id)
        self._deactivate(binding, out)
        return {"removed": True}

    # -- reattach, ping, cleanup (sections 2.6, 2.8, 3.10) -----------------------------------------

    def _on_reattach(self, connection: Connection, message: Reattach, out: list[Output]) -> None:
        previous_id = canonical_uuid(message.previous_worker_id)
        if previous_id is None or previous_id == connection.id:
            return
        previous = self.connections.get(previous_id)
        if previous is None:
            return
        token = message.reattach_token
        canonical_token = canonical_uuid(token) if token is not None else None
        if token is None or (canonical_token or token) != previous.reattach_token:
            logger.warning("reattach to %s refused: wrong or missing token", previous_id)
            return
        logger.info("worker %s replaces its previous connection %s", connection.id, previous_id)
        out.append(CloseConnection(previous.id, drain=False))
        self._cleanup(previous, out)

    def _cleanup(self, connection: Connection, out: list[Output]) -> None:
        connection.liveness = Liveness.GONE
        connection.namespace_state = NamespaceState.ABORTED
        connection.buffered.clear()
        self._stop_grace_timer(connection)
        for key in connection.functions:
            function = self.functions.get(key)
            if function is not None and function.owner is connection:
                del self.functions[key]
        connection.functions.clear()
        for invocation_id in list(connection.in_flight):
            pending = self._forget(invocation_id)
            if pending is not None and pending.executor is connection:
                stopped = ErrorBody("invocation_stopped", "Invocation stopped")
                self._answer_pending(pending, out, error=stopped)
        for binding in list(self.bindings.values()):
            if binding.owner is connection:
                del self.bindings[binding.id]
                self._deactivate(binding, out)
        for binding_id, awaited in list(self._awaited_acks.items()):
            if awaited.caller.connection is connection:
                self._stop_awaiting(binding_id)
        provided = {
            key
            for key in connection.trigger_types
            if (t := self.trigger_types.get(key)) is not None and t.provider is connection
        }
        for key in provided:
            del self.trigger_types[key]
        connection.trigger_types.clear()
        if provided:
            for binding in list(self.bindings.values()):
                if binding.provider_key in provided:
                    binding.provider_key = None
                    fallback = self._lookup_provider(binding)
                    if fallback is not None:
                        self._activate(binding, fallback, out)
        self._release_name(connection)
        del self.connections[connection.id]
        out.append(WorkerDisconnected(connection.id, connection.name, connection.namespace))
        for plugin in self._plugins:
            plugin.worker_disconnected(connection, out)
