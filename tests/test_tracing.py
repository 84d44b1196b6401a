"""W3C trace context across calls: the ids a handler sees, hop after hop through the dev
engine, and what becomes of malformed values."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import pytest
import trio
from engine._raw import RawWorker
from peer_process import read_line, start_peer

import iii_trio
from iii_trio.testing import DevEngine

if TYPE_CHECKING:
    from conftest import Engine
from iii_trio._tracing import child_traceparent, valid_baggage, valid_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@pytest.mark.parametrize(
    "value",
    [
        PARENT,
        f"00-{TRACE}-00f067aa0ba902b7-00",
        f"01-{TRACE}-00f067aa0ba902b7-01-what-comes-later",
        f"cc-{TRACE}-00f067aa0ba902b7-09",
    ],
)
def test_well_formed_traceparents_are_kept(value: str) -> None:
    assert valid_traceparent(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        7,
        "",
        "garbage",
        PARENT.upper(),
        f"ff-{TRACE}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",
        f" {PARENT}",
    ],
)
def test_malformed_traceparents_are_dropped(value: Any) -> None:
    assert valid_traceparent(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "tenant=acme",
        "tenant=acme,iii.function.id=svc%3A%3Ahop",
        " k1 = v1 ; prop1 ; prop2=x , k2=",
        "key=%E2%82%AC",
    ],
)
def test_well_formed_baggage_is_kept(value: str) -> None:
    assert valid_baggage(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "no-equals-sign",
        "k=v,,k2=v",
        "k=has space",
        'k="quoted"',
        "k=v;",
        "clé=v",
        "k=" + "v" * 8200,
        ",".join(f"k{n}=v" for n in range(200)),
    ],
)
def test_malformed_baggage_is_dropped(value: Any) -> None:
    assert valid_baggage(value) is None


def test_a_child_keeps_the_trace_and_flags_with_a_new_span() -> None:
    child = child_traceparent(PARENT)
    match = TRACEPARENT.fullmatch(child)
    assert match is not None
    assert match[1] == TRACE
    assert match[2] != "00f067aa0ba902b7"
    assert match[3] == "01"
    assert child_traceparent(f"00-{TRACE}-00f067aa0ba902b7-00").endswith("-00")
    assert child_traceparent(PARENT) != child


def test_a_child_of_a_later_version_is_written_in_version_00() -> None:
    child = child_traceparent(f"cc-{TRACE}-00f067aa0ba902b7-09-what-comes-later")
    assert valid_traceparent(child) == child
    assert child.startswith(f"00-{TRACE}-")
    assert child.endswith("-01")


@pytest.mark.parametrize(("flags", "kept"), [("03", "01"), ("02", "00"), ("ff", "01")])
def test_a_child_keeps_only_the_sampled_flag(flags: str, kept: str) -> None:
    """Version 00 defines no other flag, and the engine drops a version-00 traceparent whose
    flags exceed 2: a parent's random-trace-id bit must not cut the trace at the next hop."""
    child = child_traceparent(f"00-{TRACE}-00f067aa0ba902b7-{flags}")
    assert child.endswith(f"-{kept}")


def test_without_a_parent_a_new_sampled_trace_starts() -> None:
    first, second = child_traceparent(None), child_traceparent(None)
    assert valid_traceparent(first) == first
    assert first.endswith("-01")
    assert first[3:35] != second[3:35]
    assert first[36:52] != second[36:52]


@pytest.mark.parametrize(
    ("traceparent", "baggage"), [("garbage", "k=has space"), (PARENT, "tenant=acme")]
)
async def test_a_context_keeps_only_well_formed_trace_fields(
    iii_worker: iii_trio.Worker, traceparent: str, baggage: str
) -> None:
    context = iii_trio.Context("svc::f", "id", iii_worker, traceparent=traceparent, baggage=baggage)
    assert context.traceparent == valid_traceparent(traceparent)
    assert context.baggage == valid_baggage(baggage)


async def serve_chain(worker: iii_trio.Worker, seen: list[iii_trio.Context]) -> None:
    """trace::hop1 calls trace::hop2, which calls trace::hop3; each keeps its context."""

    @worker.function("trace::hop1")
    async def hop1(payload: Any) -> Any:
        seen.append(iii_trio.get_context())
        return await worker.trigger("trace::hop2", payload)

    @worker.function("trace::hop2")
    async def hop2(payload: Any) -> Any:
        seen.append(iii_trio.get_context())
        async with trio.open_nursery() as nursery:  # a child task sees the handler's context

            async def call_on() -> None:
                seen.append(iii_trio.get_context())
                await worker.trigger("trace::hop3", payload)

            nursery.start_soon(call_on)
        return "done"

    @worker.function("trace::hop3")
    async def hop3(payload: Any) -> Any:
        seen.append(iii_trio.get_context())
        return None

    await worker.wait_registered()


async def registered(worker: iii_trio.Worker, function_id: str) -> None:
    """Return once the engine lists ``function_id`` (another process registers it; the
    engine's change notices come every 5 s, too slow to wait for here)."""
    for _ in range(500):
        if any(info.function_id == function_id for info in await worker.list_functions()):
            return
        await trio.sleep(0.01)
    raise AssertionError(f"{function_id} was never registered")


def ids(context: iii_trio.Context) -> tuple[str, str]:
    assert context.traceparent is not None
    match = TRACEPARENT.fullmatch(context.traceparent)
    assert match is not None, context.traceparent
    return match[1], match[2]


async def test_three_hops_share_the_callers_trace_and_baggage(engine: Engine) -> None:
    seen: list[iii_trio.Context] = []
    async with iii_trio.open_worker(engine.url, name="hops") as worker:
        await serve_chain(worker, seen)
        caller = await RawWorker.connect(engine.url)
        with trio.fail_after(10):
            answer = await caller.call("trace::hop1", {}, traceparent=PARENT, baggage="tenant=acme")
        await caller.aclose()
    assert answer.result == "done"
    hop1, hop2, child, hop3 = seen
    assert hop1.traceparent == PARENT  # the engine passes the caller's unchanged
    assert {ids(context)[0] for context in seen} == {TRACE}
    spans = [ids(context)[1] for context in (hop1, hop2, hop3)]
    assert len(set(spans)) == 3
    assert child.invocation_id == hop2.invocation_id
    for context, function_id in ((hop1, "hop1"), (hop2, "hop2"), (hop3, "hop3")):
        assert context.baggage is not None
        members = context.baggage.split(",")
        assert "tenant=acme" in members
        assert any(m.startswith("iii.function.id=trace") and function_id in m for m in members)


@pytest.mark.parametrize(
    ("sent", "delivered"),
    [
        (PARENT, PARENT),
        # Version 00 defines no flag above 2: the engine's propagator refuses the value.
        (f"00-{TRACE}-00f067aa0ba902b7-03", None),
        (f"00-{TRACE}-00f067aa0ba902b7-02", f"00-{TRACE}-00f067aa0ba902b7-00"),
        (f"cc-{TRACE}-00f067aa0ba902b7-09-later", f"00-{TRACE}-00f067aa0ba902b7-01"),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
    ],
)
async def test_the_engine_hands_a_traceparent_on_as_its_propagator_writes_it(
    engine: Engine, sent: str, delivered: str | None
) -> None:
    seen: list[str | None] = []
    async with iii_trio.open_worker(engine.url, name="propagated") as worker:

        @worker.function("trace::seen")
        async def record(payload: Any) -> None:
            seen.append(iii_trio.get_context().traceparent)

        await worker.wait_registered()
        caller = await RawWorker.connect(engine.url)
        with trio.fail_after(10):
            await caller.call("trace::seen", {}, traceparent=sent)
        await caller.aclose()
    assert seen == [delivered]


async def test_a_call_outside_any_handler_starts_a_trace(engine: Engine) -> None:
    seen: list[iii_trio.Context] = []
    async with iii_trio.open_worker(engine.url, name="starter") as worker:
        await serve_chain(worker, seen)
        with trio.fail_after(10):
            await worker.trigger("trace::hop1", {})
            await worker.trigger("trace::hop1", {})
    first, second = seen[:4], seen[4:]
    assert len({ids(context)[0] for context in first}) == 1
    assert ids(first[0])[0] != ids(second[0])[0]
    assert first[0].traceparent is not None
    assert first[0].traceparent.endswith("-01")


async def test_malformed_trace_fields_are_dropped_and_a_new_trace_starts(
    engine: Engine,
) -> None:
    seen: list[iii_trio.Context] = []
    async with iii_trio.open_worker(engine.url, name="forgiving") as worker:
        await serve_chain(worker, seen)
        caller = await RawWorker.connect(engine.url)
        with trio.fail_after(10):
            answer = await caller.call(
                "trace::hop1", {}, traceparent="00-not-a-trace-01", baggage='k="quoted"'
            )
        await caller.aclose()
    assert answer.result == "done"
    hop1, hop2, _, hop3 = seen
    assert hop1.traceparent is None
    if isinstance(engine, DevEngine):
        # The dev engine passes baggage on as it came; a real one parses it and writes it
        # again, percent-encoding the quotes, so its workers never see the malformed value.
        assert hop1.baggage is None
    assert ids(hop2)[0] == ids(hop3)[0]


async def test_the_trace_survives_an_official_sdk_worker_in_the_middle(
    engine: Engine,
) -> None:
    pytest.importorskip("iii", reason="the official iii-sdk package is not installed")
    seen: list[iii_trio.Context] = []
    async with iii_trio.open_worker(engine.url, name="around") as worker:

        @worker.function("trace::first")
        async def first(payload: Any) -> Any:
            seen.append(iii_trio.get_context())
            return await worker.trigger("official::middle", payload)

        @worker.function("trace::hop3")
        async def hop3(payload: Any) -> Any:
            seen.append(iii_trio.get_context())
            return "end"

        await worker.wait_registered()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                peer = await start_peer(nursery, "official_trace_peer.py", engine.url)
                assert peer.stdin is not None
                assert await read_line(peer) == "ready\n"
                await registered(worker, "official::middle")
                caller = await RawWorker.connect(engine.url)
                answer = await caller.call(
                    "trace::first", {}, traceparent=PARENT, baggage="tenant=acme"
                )
                await caller.aclose()
                await peer.stdin.aclose()
    assert answer.result == "end"
    first_context, last_context = seen
    assert ids(first_context)[0] == ids(last_context)[0] == TRACE
    # The official SDK (tracing off) passes the trace on but not the baggage.
    assert first_context.baggage is not None
    assert "tenant=acme" in first_context.baggage.split(",")


FORMAT = "%(levelname)s [%(function_id)s %(invocation_id)s %(trace_id)s] %(message)s"
DEFAULTS = {"function_id": "-", "invocation_id": "-", "trace_id": "-"}


async def test_the_documented_format_serves_handler_and_library_records(
    engine: Engine,
) -> None:
    formatter = logging.Formatter(FORMAT, defaults=DEFAULTS)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.DEBUG)
    library = logging.getLogger("iii_trio")
    library.addHandler(keep)
    level = library.level
    library.setLevel(logging.DEBUG)
    try:
        async with iii_trio.open_worker(engine.url, name="logs") as worker:

            @worker.function("logs::hello")
            async def hello(payload: Any) -> None:
                iii_trio.get_context().logger.info("hello %s", payload)

            caller = await RawWorker.connect(engine.url)
            with trio.fail_after(10):
                await worker.wait_registered()
                await caller.call("logs::hello", "you", traceparent=PARENT)
            await caller.aclose()
    finally:
        library.removeHandler(keep)
        library.setLevel(level)
    lines = [formatter.format(record) for record in records]
    (line,) = [line for line in lines if line.endswith("hello you")]
    assert line.startswith("INFO [logs::hello ")
    assert f" {TRACE}]" in line
    assert any(line.startswith("INFO [- - -] ") for line in lines)  # the library's own


def test_get_context_outside_a_handler_says_how_to_get_one() -> None:
    with pytest.raises(RuntimeError, match="outside a function handler"):
        iii_trio.get_context()
