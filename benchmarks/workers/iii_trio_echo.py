"""iii-trio serving ``bench::echo``, written against the public API only.

With ``BENCH_OTEL=1`` it records an OpenTelemetry span per invocation and call, handed to an
exporter that drops them: the cost of tracing itself, without any export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import _args
import trio

import iii_trio


def tracer_provider() -> Any:
    if os.environ.get("BENCH_OTEL") != "1":
        return None
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Dropping()))
    return provider


async def serve(args: _args.Args) -> None:
    provider = tracer_provider()
    # Passed only when tracing, so that the script runs a baseline from before tracer_provider.
    options = {} if provider is None else {"tracer_provider": provider}
    async with iii_trio.open_worker(args.url, name="bench-echo", **options) as worker:

        async def echo(payload: Any) -> Any:
            return payload

        async def relay(payload: Any) -> Any:
            return await worker.trigger("bench::echo", payload)

        async def sleep_echo(payload: Any) -> Any:
            await trio.sleep(_args.SLEEP_SECONDS)
            return payload

        if args.extra:
            worker.register_function("bench::relay", relay)
            worker.register_function("bench::sleep", sleep_echo)
        for function_id in args.function_ids():
            worker.register_function(function_id, echo)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(serve, _args.parse())
