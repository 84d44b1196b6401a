"""The invocation context a handler runs in: ``get_context()`` and ``use_context()``.

Each handler runs in its own trio task, and trio gives every task its own copy of the context
variables, so setting the variable at the start of a handler task scopes it to that invocation
(and to sync handlers, which ``trio.to_thread`` runs in a copy of the caller's context).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import types
from collections.abc import Coroutine, Generator, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ._tracing import child_traceparent, trace_id_of, valid_baggage, valid_traceparent

if TYPE_CHECKING:
    from ._protocol._messages import InvokeFunction
    from ._worker import Worker

__all__ = ["Context", "get_context", "outgoing_baggage", "outgoing_trace", "use_context"]

_handler_logger = logging.getLogger("iii_trio.handler")

# Per call a handler task stores the raw ingredients; the Context is built only if the handler
# asks for it, which keeps the per-call cost of the common handler (that never does) near zero.
_Ingredients: TypeAlias = "tuple[InvokeFunction, Worker, str | None]"
_current: contextvars.ContextVar[Context | _Ingredients] = contextvars.ContextVar(
    "iii_trio_context"
)


@attrs.frozen
class Context:
    """What a handler knows about the invocation it is serving.

    Attributes:
        function_id: the function being invoked.
        invocation_id: the engine's id of this invocation (the caller sees the same id).
        metadata: the invocation's metadata sidecar (``None`` when the call carried none).
        traceparent: W3C trace context of the call, if it carried a well-formed one.
        baggage: W3C baggage of the call, if it carried well-formed baggage.
        caller_worker_id: the calling worker's id, as injected by the engine (``None`` for
            engine-originated calls and non-object payloads).
        worker: the worker serving the call, to make further calls from the handler.
    """

    function_id: str
    invocation_id: str
    worker: Worker
    metadata: Any = None
    # Whatever comes in malformed is dropped: calls from here start a trace of their own.
    traceparent: str | None = attrs.field(default=None, converter=valid_traceparent)
    baggage: str | None = attrs.field(default=None, converter=valid_baggage)
    caller_worker_id: str | None = None

    @property
    def trace_id(self) -> str | None:
        """The W3C trace id of the call (32 hex digits), if it carried a traceparent."""
        return None if self.traceparent is None else trace_id_of(self.traceparent)

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``iii_trio.handler``) whose records carry ``function_id``,
        ``invocation_id`` and ``trace_id`` as attributes, for a format such as
        ``"%(function_id)s %(invocation_id)s %(message)s"``. Records from anywhere else lack
        them: give the formatter ``defaults=`` for those (see the README)."""
        return logging.LoggerAdapter(
            _handler_logger,
            {
                "function_id": self.function_id,
                "invocation_id": self.invocation_id,
                "trace_id": self.trace_id,
            },
        )


def get_context() -> Context:
    """The context of the invocation the calling code is serving.

    Raises:
        RuntimeError: called outside a handler (and outside :func:`use_context`).
    """
    try:
        current = _current.get()
    except LookupError:
        raise RuntimeError(
            "iii_trio.get_context() called outside a function handler; "
            "use iii_trio.use_context() to provide one"
        ) from None
    if isinstance(current, Context):
        return current
    message, worker, caller_worker_id = current
    context = Context(
        function_id=message.function_id,
        invocation_id=message.invocation_id or "",
        worker=worker,
        metadata=message.metadata,
        traceparent=message.traceparent,
        baggage=message.baggage,
        caller_worker_id=caller_worker_id,
    )
    _current.set(context)
    return context


def outgoing_trace() -> tuple[str, str | None]:
    """The ``traceparent`` and ``baggage`` of a call made here: inside a handler, the handler's
    trace with a new span id and its baggage; elsewhere a new trace and no baggage."""
    current = _current.get(None)
    if current is None:
        return child_traceparent(None), None
    # Built once per invocation, which checks what came in once.
    context = current if isinstance(current, Context) else get_context()
    return child_traceparent(context.traceparent), context.baggage


def outgoing_baggage() -> str | None:
    """The ``baggage`` of a call made here: the handler's, else none."""
    current = _current.get(None)
    if current is None:
        return None
    context = current if isinstance(current, Context) else get_context()
    return context.baggage


@contextlib.contextmanager
def use_context(context: Context) -> Iterator[Context]:
    """Make ``context`` the current one for the duration of the block (for tests of handler code
    and code run outside a handler)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@types.coroutine
def run_in_fresh_context(coro: Coroutine[Any, Any, None]) -> Generator[Any, Any, None]:
    """Drive ``coro`` to completion inside a fresh copy of the current context.

    Handler tasks are reused across invocations; running each invocation in its own copy keeps
    whatever a handler sets in context variables from leaking into the next one, exactly as if
    each invocation had a task of its own. Every value and exception trio sends in is passed
    through unchanged, so cancellation and traps behave as if ``coro`` were awaited directly.
    """
    context = contextvars.copy_context()
    send, throw = coro.send, coro.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            trap = context.run(send, value) if error is None else context.run(throw, error)
        except StopIteration:
            return
        value, error = None, None
        try:
            value = yield trap
        except BaseException as thrown:  # noqa: ASYNC103 - forwarded to the coroutine, as an await would
            error = thrown


def enter_handler_context(
    message: InvokeFunction, worker: Worker, caller_worker_id: str | None
) -> None:
    """Set the context for the rest of the current handler task (the task ends with it)."""
    _current.set((message, worker, caller_worker_id))
