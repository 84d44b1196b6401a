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

from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from ._protocol._messages import InvokeFunction

__all__ = ["Tracing", "tracing_for"]

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
    """Span factory of one worker."""

    tracer: Tracer

    @contextlib.contextmanager
    def serving(self, message: InvokeFunction) -> Iterator[Outcome]:
        """A SERVER span around one handled invocation, current for the handler and the tasks
        it starts, its parent the caller's trace context."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        carrier = {}
        if message.traceparent is not None:
            carrier["traceparent"] = message.traceparent
        if message.baggage is not None:
            carrier["baggage"] = message.baggage
        attributes: dict[str, Any] = {FUNCTION_ID: message.function_id}
        if message.invocation_id is not None:
            attributes[INVOCATION_ID] = message.invocation_id
        with self.tracer.start_as_current_span(
            message.function_id,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
        ) as span:
            yield Outcome(span)

    @contextlib.contextmanager
    def calling(
        self, function_id: str, invocation_id: str | None
    ) -> Iterator[tuple[Outcome, str | None, str | None]]:
        """A CLIENT span around one call, a child of the current span; also the
        ``traceparent`` and ``baggage`` the call carries."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        attributes: dict[str, Any] = {FUNCTION_ID: function_id}
        if invocation_id is not None:
            attributes[INVOCATION_ID] = invocation_id
        with self.tracer.start_as_current_span(
            f"call {function_id}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield Outcome(span), carrier.get("traceparent"), carrier.get("baggage")
