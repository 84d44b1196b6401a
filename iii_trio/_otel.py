"""OpenTelemetry spans, when the application uses OpenTelemetry (the ``otel`` extra): the only
module that imports it.

A worker traces only when it is given a tracer provider, or the application set a global one
before opening it; otherwise nothing here runs and the calls carry the plain W3C context of
:mod:`._tracing`. Traced, each handled invocation is a SERVER span whose parent is the caller's
``traceparent``, and each call a CLIENT span whose context the call carries, so the engine's
hops link up. Spans hold ids and error codes, never payloads; exporting is the application's
business (its provider's span processors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ._tracing import valid_traceparent
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import NonRecordingSpan, Span, Tracer

    from ._protocol._messages import InvokeFunction

__all__ = ["Outcome", "Tracing", "traceparent_of", "tracing_for"]

_INSTRUMENTATION = "iii_trio"
FUNCTION_ID = "iii.function_id"
INVOCATION_ID = "iii.invocation_id"
ERROR_CODE = "iii.error.code"


def tracing_for(tracer_provider: object | None) -> Tracing | None:
    """The tracing of a worker: with ``tracer_provider``, or the global provider when the
    application has set one; None when OpenTelemetry is not installed or not configured.

    Raises:
        TypeError: ``tracer_provider`` is not an OpenTelemetry tracer provider.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        if tracer_provider is not None:
            raise TypeError(
                "tracer_provider needs OpenTelemetry: pip install 'iii-trio[otel]'"
            ) from None
        return None
    if tracer_provider is None:
        provider = trace.get_tracer_provider()
        # The API's placeholders until the application sets a provider of its own.
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
    elif isinstance(tracer_provider, trace.TracerProvider):
        provider = tracer_provider
    else:
        raise TypeError(
            "tracer_provider must be an opentelemetry.trace.TracerProvider, "
            f"got {type(tracer_provider).__name__}"
        )
    return Tracing(provider.get_tracer(_INSTRUMENTATION, __version__))


@attrs.frozen
class Outcome:
    """What a span learns once its call or invocation is over."""

    span: Span

    def failed(self, code: str, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute(ERROR_CODE, code)
        self.span.set_status(Status(StatusCode.ERROR, f"{code}: {message}"))


@attrs.frozen
class Tracing:
    """Span factory of one worker.

    Spans are started and linked by hand rather than through ``start_as_current_span`` and the
    global propagators, which cost twice as much per call: the trace context travels as the
    worker's own W3C strings (baggage too, see :mod:`._context`), and only the span ids come
    from OpenTelemetry.
    """

    tracer: Tracer

    @contextlib.contextmanager
    def serving(self, message: InvokeFunction) -> Iterator[Outcome]:
        """A SERVER span around one handled invocation, current for the handler and the tasks
        it starts, its parent the caller's trace context."""
        from opentelemetry import context, trace

        attributes: dict[str, Any] = {FUNCTION_ID: message.function_id}
        if message.invocation_id is not None:
            attributes[INVOCATION_ID] = message.invocation_id
        parent = _remote_parent(message.traceparent)
        span = self.tracer.start_span(
            message.function_id,
            context=None if parent is None else trace.set_span_in_context(parent),
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            yield Outcome(span)
        finally:
            context.detach(token)
            span.end()

    @contextlib.contextmanager
    def calling(self, function_id: str, invocation_id: str | None) -> Iterator[Outcome]:
        """A CLIENT span around one call, a child of the current span."""
        from opentelemetry import trace

        attributes: dict[str, Any] = {FUNCTION_ID: function_id}
        if invocation_id is not None:
            attributes[INVOCATION_ID] = invocation_id
        span = self.tracer.start_span(
            f"call {function_id}", kind=trace.SpanKind.CLIENT, attributes=attributes
        )
        try:
            yield Outcome(span)
        finally:
            span.end()


def traceparent_of(outcome: Outcome) -> str:
    """The W3C traceparent naming ``outcome``'s span."""
    span_context = outcome.span.get_span_context()
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def _remote_parent(traceparent: str | None) -> NonRecordingSpan | None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    if valid_traceparent(traceparent) is None:
        return None
    assert traceparent is not None
    return NonRecordingSpan(
        SpanContext(
            trace_id=int(traceparent[3:35], 16),
            span_id=int(traceparent[36:52], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(traceparent[53:55], 16)),
        )
    )
