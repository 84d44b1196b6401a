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

import types
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from ._tracing import valid_traceparent
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from ._protocol._messages import InvokeFunction

__all__ = ["OpenSpan", "Tracing", "tracing_for"]

_INSTRUMENTATION: Final = "iii_trio"
FUNCTION_ID: Final = "iii.function_id"
INVOCATION_ID: Final = "iii.invocation_id"
ERROR_CODE: Final = "iii.error.code"


def tracing_for(tracer_provider: object | None) -> Tracing | None:
    """The tracing of a worker: with ``tracer_provider``, or the global provider when the
    application has set one; None when OpenTelemetry is not installed or not configured.

    Raises:
        TypeError: ``tracer_provider`` is not an OpenTelemetry tracer provider.
    """
    try:
        from opentelemetry import context, trace
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
    return Tracing(provider.get_tracer(_INSTRUMENTATION, __version__), trace, context)


@attrs.frozen
class Tracing:
    """Span factory of one worker.

    Spans are started and linked by hand rather than through ``start_as_current_span`` and the
    global propagators, which cost twice as much per call: the trace context travels as the
    worker's own W3C strings (baggage too, see :mod:`._context`), and only the span ids come
    from OpenTelemetry. The API's modules are held here, imported once.
    """

    tracer: Tracer
    trace: types.ModuleType
    context: types.ModuleType
    #: Remote parents' trace flags, by their two hex digits (there are few distinct ones).
    _flags: dict[str, Any] = attrs.field(factory=dict, init=False)

    def serving(self, message: InvokeFunction) -> OpenSpan:
        """A SERVER span around one handled invocation (``with``), current for the handler
        and the tasks it starts, its parent the caller's trace context."""
        attributes: dict[str, Any] = {FUNCTION_ID: message.function_id}
        if message.invocation_id is not None:
            attributes[INVOCATION_ID] = message.invocation_id
        span = self.tracer.start_span(
            message.function_id,
            context=self._remote_parent(message.traceparent),
            kind=self.trace.SpanKind.SERVER,
            attributes=attributes,
        )
        return OpenSpan(span, current_in=self)

    def calling(self, function_id: str, invocation_id: str | None) -> OpenSpan:
        """A CLIENT span around one call (``with``), a child of the current span."""
        attributes: dict[str, Any] = {FUNCTION_ID: function_id}
        if invocation_id is not None:
            attributes[INVOCATION_ID] = invocation_id
        span = self.tracer.start_span(
            f"call {function_id}", kind=self.trace.SpanKind.CLIENT, attributes=attributes
        )
        return OpenSpan(span)

    def _remote_parent(self, traceparent: str | None) -> Context | None:
        """A context whose span is the caller's, named by a valid ``traceparent``."""
        if valid_traceparent(traceparent) is None:
            return None
        assert traceparent is not None
        flags = self._flags.get(traceparent[53:55])
        if flags is None:
            flags = self._flags[traceparent[53:55]] = self.trace.TraceFlags(
                int(traceparent[53:55], 16)
            )
        parent = self.trace.SpanContext(
            trace_id=int(traceparent[3:35], 16),
            span_id=int(traceparent[36:52], 16),
            is_remote=True,
            trace_flags=flags,
        )
        return self.trace.set_span_in_context(self.trace.NonRecordingSpan(parent))  # type: ignore[no-any-return]


@final
class OpenSpan:
    """A started span that ends when its ``with`` block does, and may learn that its call or
    invocation failed. A served invocation's span is also the current span inside the block."""

    __slots__ = ("_current_in", "_token", "span")

    def __init__(self, span: Span, current_in: Tracing | None = None) -> None:
        self.span = span
        self._current_in = current_in
        self._token: object = None

    def failed(self, code: str, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute(ERROR_CODE, code)
        self.span.set_status(Status(StatusCode.ERROR, f"{code}: {message}"))

    def traceparent(self) -> str:
        """The W3C traceparent naming this span, version 00.

        Of the span's flags only ``sampled`` is kept: version 00 defines no other, and the
        engine's propagator drops a version-00 traceparent whose flags exceed 2, so the SDK's
        random-trace-id bit (flags 03) would cut the trace at the engine.
        """
        span_context = self.span.get_span_context()
        return (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
            f"{int(span_context.trace_flags) & 1:02x}"
        )

    def __enter__(self) -> OpenSpan:
        tracing = self._current_in
        if tracing is not None:
            self._token = tracing.context.attach(tracing.trace.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._current_in is not None:
            self._current_in.context.detach(self._token)
        self.span.end()
