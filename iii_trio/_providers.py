"""Serving the trigger types this worker provides (spec/protocol.md sections 3.2-3.4 and 5.4).

The engine asks the provider of a trigger type to start a binding with ``registertrigger`` and to
stop it with ``unregistertrigger``; the provider answers each start with
``triggerregistrationresult``. :class:`ProvidedTriggers` turns those frames into calls of the
user's provider object, each in a task of the worker's nursery, so a slow provider never holds up
the connection.

Two rules keep the provider's view of its bindings true:

- The calls for one binding run one at a time, in the order the engine asked for them: a stop
  never overtakes the start it undoes.
- A binding lives as long as the connection that delivered it. When the connection drops, the
  engine re-resolves the binding (to another provider, or parked) and tells this worker nothing
  about it, so the worker stops every binding of that connection itself; the engine delivers
  those still meant for it again on the next connection, with the same ids.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections import deque
from typing import Protocol, runtime_checkable

import attrs
import trio

from ._connection import EngineSession
from ._exceptions import ConnectionLost
from ._protocol._messages import (
    ErrorBody,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from ._types import TriggerConfig

__all__ = ["ProvidedTriggers", "TriggerProvider", "check_provider"]

logger = logging.getLogger("iii_trio.worker")

#: The error code the engine expects from a provider that refused a binding (protocol.md 5.4).
REGISTRATION_FAILED = "trigger_registration_failed"
_PROVIDER_METHODS = ("register_trigger", "unregister_trigger")


@runtime_checkable
class TriggerProvider(Protocol):
    """What :meth:`Worker.register_trigger_type` needs: two async methods the worker calls, in
    its own nursery, when the engine starts or stops a binding of the type.

    ``register_trigger`` raising refuses the binding: the engine hears
    ``trigger_registration_failed`` with the exception's text, and the worker that registered
    the binding gets it as a :class:`TriggerRegistrationError`. ``unregister_trigger`` raising is
    only logged. Neither can harm the worker.
    """

    async def register_trigger(self, trigger: TriggerConfig) -> None:
        """Start serving the binding ``trigger``: fire it, by calling ``trigger.function_id``,
        whenever its ``config`` says. Return once it is started; raise to refuse it."""
        ...

    async def unregister_trigger(self, trigger: TriggerConfig) -> None:
        """Stop serving the binding ``trigger`` (the one :meth:`register_trigger` started
        under the same id): fire it no more."""
        ...


def check_provider(provider: object) -> None:
    """Raise TypeError unless ``provider`` has both provider methods, as async callables."""
    for name in _PROVIDER_METHODS:
        method = getattr(provider, name, None)
        if method is None:
            raise TypeError(
                f"provider must have an async {name}(trigger) method; "
                f"{type(provider).__name__} has none"
            )
        if not inspect.iscoroutinefunction(method):
            raise TypeError(f"provider.{name} must be an async method (async def), got {method!r}")


@attrs.frozen
class _Start:
    trigger: TriggerConfig
    trigger_type: str
    #: The connection that asked, and that hears the answer.
    session: EngineSession


@attrs.frozen
class _Stop:
    pass


_STOP = _Stop()


@attrs.define
class _Binding:
    """One binding id as this worker sees it."""

    trigger_type: str
    #: The connection that delivered the latest start, while it lasts.
    session: EngineSession | None = None
    #: What a provider has started (None: nothing), and which provider: a withdrawn type's
    #: provider still stops what it started.
    started: TriggerConfig | None = None
    started_by: TriggerProvider | None = None
    #: Calls waiting for the one running: at most a few, since each stop waits for a start.
    queued: deque[_Start | _Stop] = attrs.field(factory=deque)
    running: bool = False


class ProvidedTriggers:
    """The trigger types this worker provides and the bindings their providers serve."""

    def __init__(self) -> None:
        self._providers: dict[str, TriggerProvider] = {}
        self._bindings: dict[str, _Binding] = {}
        self._nursery: trio.Nursery | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        """Run provider calls in ``nursery`` (the worker's)."""
        self._nursery = nursery

    def detach(self) -> None:
        """The worker is closing: its nursery cancels the provider calls under way, and no
        new ones start (the connections' ends would otherwise stop every binding)."""
        self._nursery = None

    def add(self, trigger_type_id: str, provider: TriggerProvider) -> None:
        self._providers[trigger_type_id] = provider

    def remove(self, trigger_type_id: str) -> None:
        """Forget a trigger type and stop its bindings: the engine may keep sending starts for
        it until this connection ends, and those are now ignored."""
        if self._providers.pop(trigger_type_id, None) is None:
            return
        for binding_id, binding in list(self._bindings.items()):
            if binding.trigger_type == trigger_type_id:
                self._stop(binding_id, binding)

    def start_requested(self, session: EngineSession, message: RegisterTrigger) -> None:
        if message.trigger_type not in self._providers:
            # Python's official SDK stays silent too; the engine's wait for a reply (only for
            # engine::register_trigger bindings) times out into acceptance.
            logger.debug(
                "ignoring a registertrigger for %s: trigger type %r is not provided here",
                message.id,
                message.trigger_type,
            )
            return
        trigger = TriggerConfig(
            id=message.id,
            function_id=message.function_id,
            config=message.config,
            metadata=message.metadata,
            # The engine leaves the namespace out when it is the default one (protocol.md 3.2).
            namespace=message.namespace or "default",
        )
        binding = self._bindings.get(message.id)
        if binding is None:
            binding = self._bindings[message.id] = _Binding(message.trigger_type)
        elif binding.trigger_type != message.trigger_type:
            self._stop(message.id, binding)
            binding.trigger_type = message.trigger_type
        binding.session = session
        self._queue(message.id, binding, _Start(trigger, message.trigger_type, session))

    def stop_requested(self, message: UnregisterTrigger) -> None:
        binding = self._bindings.get(message.id)
        if binding is None:
            logger.debug("ignoring an unregistertrigger for %s: not a binding here", message.id)
            return
        self._stop(message.id, binding)

    def session_ended(self, session: EngineSession) -> None:
        for binding_id, binding in list(self._bindings.items()):
            if binding.session is session:
                self._stop(binding_id, binding)

    def _stop(self, binding_id: str, binding: _Binding) -> None:
        binding.session = None
        self._queue(binding_id, binding, _STOP)

    def _queue(self, binding_id: str, binding: _Binding, call: _Start | _Stop) -> None:
        if self._nursery is None:
            return
        binding.queued.append(call)
        if binding.running:
            return
        binding.running = True
        self._nursery.start_soon(self._serve_binding, binding_id, binding)

    async def _serve_binding(self, binding_id: str, binding: _Binding) -> None:
        try:
            while True:
                # A checkpoint per call, whatever the provider's methods do.
                await trio.lowlevel.checkpoint()
                if not binding.queued:
                    break
                call = binding.queued.popleft()
                if isinstance(call, _Start):
                    provider = self._providers.get(call.trigger_type)
                    # Skipped when the type was withdrawn, or the connection that asked is gone
                    # (a stop is queued behind this start): nobody wants the binding any more.
                    if provider is not None and call.session.ended_because is None:
                        await self._start(binding, call, provider)
                elif binding.started is not None:
                    await self._call_unregister(binding)
        finally:
            binding.running = False
            finished = binding.started is None and binding.session is None and not binding.queued
            if finished and self._bindings.get(binding_id) is binding:
                del self._bindings[binding_id]

    async def _start(  # noqa: ASYNC910 - the caller checkpoints
        self, binding: _Binding, call: _Start, provider: TriggerProvider
    ) -> None:
        if binding.started is not None:
            # The engine re-sent the id: it replaces the binding (protocol.md 3.2).
            await self._call_unregister(binding)
        trigger = call.trigger
        error: ErrorBody | None = None
        try:
            await provider.register_trigger(trigger)
        except Exception as exc:
            logger.warning(
                "the provider of trigger type %r refused binding %s (function %r): %s",
                call.trigger_type,
                trigger.id,
                trigger.function_id,
                exc,
                exc_info=True,
            )
            error = ErrorBody(code=REGISTRATION_FAILED, message=str(exc) or type(exc).__name__)
        else:
            binding.started = trigger
            binding.started_by = provider
        result = TriggerRegistrationResult(
            id=trigger.id,
            trigger_type=call.trigger_type,
            function_id=trigger.function_id,
            error=error,
        )
        with contextlib.suppress(ConnectionLost):  # its stop is queued behind this start
            call.session.send(result)

    async def _call_unregister(  # noqa: ASYNC910 - the caller checkpoints
        self, binding: _Binding
    ) -> None:
        trigger, provider = binding.started, binding.started_by
        assert trigger is not None
        assert provider is not None
        binding.started = binding.started_by = None
        try:
            await provider.unregister_trigger(trigger)
        except Exception:
            logger.exception(
                "the provider of trigger type %r failed to stop binding %s",
                binding.trigger_type,
                trigger.id,
            )
