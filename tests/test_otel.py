"""OpenTelemetry spans of a traced worker, recorded with the SDK's in-memory exporter.

Each test gives its workers a tracer provider of its own: the global one stays unset, so no
other test is traced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import trio
from engine._raw import RawWorker

import iii_trio
from iii_trio.testing import DevEngine

if TYPE_CHECKING:
    from conftest import Engine
from iii_trio._dispatch import prepare_handler

trace_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

ATTRIBUTES = {"iii.function_id", "iii.invocation_id", "iii.error.code"}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    recorded = InMemorySpanExporter()
    yield recorded
    recorded.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> trace_sdk.TracerProvider:
    tracer_provider = trace_sdk.TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def spans(exporter: InMemorySpanExporter) -> dict[tuple[str, SpanKind], Any]:
    return {(span.name, span.kind): span for span in exporter.get_finished_spans()}


async def test_calls_and_invocations_are_linked_spans_without_payloads(
    engine: Engine,
    provider: trace_sdk.TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    async with (
        iii_trio.open_worker(engine.url, name="served", tracer_provider=provider) as served,
        iii_trio.open_worker(engine.url, name="caller", tracer_provider=provider) as caller,
    ):

        @served.function("svc::double")
        async def double(n: int) -> int:  # cannot suspend: served inline, in its span
            return 2 * n

        @served.function("svc::chain")
        async def chain(n: int) -> Any:
            return await served.trigger("svc::double", n)

        await served.wait_registered()
        with trio.fail_after(10):
            assert await caller.trigger("svc::chain", 21) == 42
    recorded = spans(exporter)
    call_chain = recorded[("call svc::chain", SpanKind.CLIENT)]
    chain_span = recorded[("svc::chain", SpanKind.SERVER)]
    call_double = recorded[("call svc::double", SpanKind.CLIENT)]
    double_span = recorded[("svc::double", SpanKind.SERVER)]
    assert call_chain.parent is None
    assert chain_span.parent.span_id == call_chain.context.span_id
    assert call_double.parent.span_id == chain_span.context.span_id
    assert double_span.parent.span_id == call_double.context.span_id
    # What the calls carried: version 00 flags, `sampled` alone (the engine drops a version-00
    # traceparent with flags above 2, which the SDK's random-trace-id bit would make 03).
    assert {int(span.parent.trace_flags) for span in (chain_span, double_span)} == {1}
    assert len({span.context.trace_id for span in recorded.values()}) == 1
    for span in recorded.values():
        assert set(span.attributes) <= ATTRIBUTES
        assert span.status.status_code is StatusCode.UNSET
    assert chain_span.attributes["iii.function_id"] == "svc::chain"
    # The caller and the callee see one invocation id.
    assert chain_span.attributes["iii.invocation_id"] == call_chain.attributes["iii.invocation_id"]


async def test_failures_mark_both_spans_with_the_error_code(
    engine: Engine,
    provider: trace_sdk.TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    async with iii_trio.open_worker(engine.url, name="failing", tracer_provider=provider) as worker:

        @worker.function("svc::fail")
        async def fail(payload: Any) -> None:
            raise RuntimeError("no")

        await worker.wait_registered()
        with trio.fail_after(10), pytest.raises(iii_trio.InvocationError):
            await worker.trigger("svc::fail", {})
        with trio.fail_after(10), pytest.raises(iii_trio.FunctionNotFound):
            await worker.trigger("svc::nobody", {})
    recorded = spans(exporter)
    for name in ("call svc::fail", "svc::fail"):
        span = next(span for (each, _), span in recorded.items() if each == name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["iii.error.code"] == "invocation_failed"
    missing = recorded[("call svc::nobody", SpanKind.CLIENT)]
    assert missing.attributes["iii.error.code"] == "function_not_found"


async def fire_and_wait(worker: iii_trio.Worker, send: str) -> None:
    done = trio.Event()

    @worker.function("svc::note")
    async def note(payload: Any) -> None:
        done.set()

    await worker.wait_registered()
    with trio.fail_after(10):
        if send == "void":
            await worker.trigger_void("svc::note", {})
        else:
            await worker.enqueue("svc::note", {}, queue="default")
        await done.wait()


def assert_one_linked_call(exporter: InMemorySpanExporter) -> None:
    recorded = spans(exporter)
    assert len(exporter.get_finished_spans()) == 2
    client = recorded[("call svc::note", SpanKind.CLIENT)]
    assert recorded[("svc::note", SpanKind.SERVER)].parent.span_id == client.context.span_id


async def test_a_void_call_is_a_client_span_too(
    engine: Engine, provider: trace_sdk.TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with iii_trio.open_worker(engine.url, name="void", tracer_provider=provider) as worker:
        await fire_and_wait(worker, "void")
    assert_one_linked_call(exporter)


async def test_an_enqueue_is_a_client_span_too(
    iii_engine: DevEngine, provider: trace_sdk.TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # The dev engine only: a real engine enqueues only with its queue worker added.
    async with iii_trio.open_worker(
        iii_engine.url, name="enqueuer", tracer_provider=provider
    ) as worker:
        await fire_and_wait(worker, "enqueue")
    assert_one_linked_call(exporter)


async def test_without_a_provider_nothing_is_recorded(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    async with iii_trio.open_worker(engine.url, name="plain") as worker:
        worker.register_function("svc::echo", lambda payload: payload)
        await worker.wait_registered()
        assert await worker.trigger("svc::echo", 1) == 1
    assert exporter.get_finished_spans() == ()


async def test_a_tracer_provider_must_be_one() -> None:
    with pytest.raises(TypeError, match="tracer_provider must be an opentelemetry"):
        async with iii_trio.open_worker("ws://127.0.0.1:1", tracer_provider=object()):
            pass


async def test_a_served_span_continues_the_callers_trace_and_baggage(
    engine: Engine,
    provider: trace_sdk.TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    seen: list[iii_trio.Context] = []
    async with iii_trio.open_worker(
        engine.url, name="continued", tracer_provider=provider
    ) as worker:

        @worker.function("svc::outer")
        async def outer(payload: Any) -> Any:
            return await worker.trigger("svc::inner", payload)

        @worker.function("svc::inner")
        async def inner(payload: Any) -> Any:
            seen.append(iii_trio.get_context())

        await worker.wait_registered()
        caller = await RawWorker.connect(engine.url)
        with trio.fail_after(10):
            await caller.call(
                "svc::outer",
                {},
                traceparent=f"00-{trace_id}-00f067aa0ba902b7-01",
                baggage="tenant=acme",
            )
        await caller.aclose()
    recorded = spans(exporter)
    outer_span = recorded[("svc::outer", SpanKind.SERVER)]
    assert outer_span.parent.span_id == 0x00F067AA0BA902B7
    assert outer_span.parent.is_remote
    assert {f"{span.context.trace_id:032x}" for span in recorded.values()} == {trace_id}
    (inner_context,) = seen
    call_inner = recorded[("call svc::inner", SpanKind.CLIENT)]
    assert inner_context.traceparent is not None
    assert inner_context.traceparent[36:52] == f"{call_inner.context.span_id:016x}"
    assert inner_context.baggage is not None
    assert "tenant=acme" in inner_context.baggage.split(",")


def served(body: Any, *, inline: bool, payload_type: Any = Any) -> Any:
    """An ``async def`` handler running ``body``: one that cannot suspend (so the connection's
    reader serves it itself), or one that does (so it runs in a task)."""
    if inline:

        async def handler(payload: Any) -> Any:
            return body(payload)
    else:

        async def handler(payload: Any) -> Any:
            await trio.lowlevel.checkpoint()
            return body(payload)

    handler.__annotations__["payload"] = payload_type
    assert (prepare_handler("svc::any", handler).call_inline is not None) is inline
    return handler


def count(n: int) -> int:
    if n < 0:
        raise ValueError("negative")
    return n


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "in a task"])
async def test_a_handler_runs_inside_its_span_and_its_failures_mark_it(
    engine: Engine,
    provider: trace_sdk.TracerProvider,
    exporter: InMemorySpanExporter,
    inline: bool,
) -> None:
    async with (
        iii_trio.open_worker(engine.url, name="served", tracer_provider=provider) as worker,
        iii_trio.open_worker(engine.url, name="caller") as caller,
    ):
        current_span = served(
            lambda _: f"{trace.get_current_span().get_span_context().span_id:016x}",
            inline=inline,
        )
        worker.register_function("svc::span", current_span)
        worker.register_function("svc::count", served(count, inline=inline, payload_type=int))
        end_kind = served(lambda payload: type(payload["end"]).__name__, inline=inline)
        worker.register_function("svc::kind", end_kind)
        await worker.wait_registered()
        channel = await caller.create_channel()
        with trio.fail_after(10):
            span_id = await caller.trigger("svc::span", None)
            with pytest.raises(iii_trio.InvocationError, match="negative"):
                await caller.trigger("svc::count", -1)
            with pytest.raises(iii_trio.InvocationError) as invalid:
                await caller.trigger("svc::count", "many")
            assert invalid.value.code == "invalid_payload"
            # A channel end in the payload is the handler's to use: it is served in a task.
            assert await caller.trigger("svc::kind", {"end": channel.reader}) == "ChannelReader"
    served_spans = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert [span.name for span in served_spans] == [
        "svc::span",
        "svc::count",
        "svc::count",
        "svc::kind",
    ]
    assert f"{served_spans[0].context.span_id:016x}" == span_id
    codes = [span.attributes.get("iii.error.code") for span in served_spans]
    assert codes == [None, "invocation_failed", "invalid_payload", None]
    assert [span.status.status_code for span in served_spans] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
