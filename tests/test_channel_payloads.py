"""Channel refs in payloads and results (spec/protocol.md 6.2): handlers get live ends, ends and
refs placed in a payload hand those ends over, and a handler's ends are closed when it is done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

import iii_trio

if TYPE_CHECKING:
    from conftest import Engine

PATIENCE = 10.0


@pytest.fixture
async def caller(engine: Engine) -> AsyncIterator[iii_trio.Worker]:
    async with iii_trio.open_worker(engine.url, name="caller") as connected:
        yield connected


@pytest.fixture
async def callee(engine: Engine) -> AsyncIterator[iii_trio.Worker]:
    async with iii_trio.open_worker(engine.url, name="callee") as connected:
        yield connected


async def _read_all(reader: iii_trio.ChannelReader) -> bytes:
    chunks = [chunk async for chunk in reader]
    return b"".join(chunks)


async def test_refs_anywhere_in_a_payload_arrive_as_live_ends(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    seen: dict[str, Any] = {}

    @callee.function("svc::shout")
    async def shout(payload: dict[str, Any]) -> str:
        seen.update(payload)
        source = payload["jobs"][0]["source"]
        sink = payload["sink"]
        assert isinstance(source, iii_trio.ChannelReader)
        assert isinstance(sink, iii_trio.ChannelWriter)
        async for chunk in source:
            await sink.send_all(chunk.upper())
        return "done"  # the sink is closed for the handler, ending the caller's stream

    await callee.wait_registered()
    into = await caller.create_channel()
    out_of = await caller.create_channel()
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:

            async def feed() -> None:
                async with into.writer as writer:
                    await writer.send_all(b"hello ")
                    await writer.send_all(b"channels")

            nursery.start_soon(feed)
            answer = await caller.trigger(
                "svc::shout",
                {"jobs": [{"source": into.reader_ref}], "sink": out_of.writer, "n": 1},
            )
        assert answer == "done"
        assert await _read_all(out_of.reader) == b"HELLO CHANNELS"
    assert seen["n"] == 1


async def test_a_payload_that_is_a_ref_arrives_as_an_end(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    @callee.function("svc::first_line")
    async def first_line(reader: iii_trio.ChannelReader) -> str:
        return (await reader.receive_some()).decode()

    await callee.wait_registered()
    channel = await caller.create_channel()
    await channel.writer.send_all(b"line one")
    with trio.fail_after(PATIENCE):
        assert await caller.trigger("svc::first_line", channel.reader) == "line one"


async def test_a_ref_in_a_result_arrives_as_a_live_end(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    @callee.function("svc::open_stream")
    async def open_stream(payload: Any) -> dict[str, Any]:
        channel = await callee.create_channel()
        async with channel.writer as writer:
            await writer.send_all(b"streamed back")
        return {"stream": channel.reader_ref}

    await callee.wait_registered()
    with trio.fail_after(PATIENCE):
        answer = await caller.trigger("svc::open_stream")
        reader = answer["stream"]
        assert isinstance(reader, iii_trio.ChannelReader)
        assert await _read_all(reader) == b"streamed back"


async def test_a_handler_that_cannot_suspend_hands_its_end_back(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    # No await in it: such handlers usually run inline in the reader, but one that gets ends
    # runs as a task, and an end it returns goes back as its ref.
    @callee.function("svc::bounce")
    async def bounce(payload: dict[str, Any]) -> Any:
        return payload["reader"]

    await callee.wait_registered()
    channel = await caller.create_channel()
    with trio.fail_after(PATIENCE):
        returned = await caller.trigger("svc::bounce", {"reader": channel.reader_ref})
        assert isinstance(returned, iii_trio.ChannelReader)
        assert returned.ref == channel.reader_ref
        async with channel.writer as writer:
            await writer.send_all(b"round trip")
        assert await _read_all(returned) == b"round trip"


@attrs.frozen
class Upload:
    name: str
    body: iii_trio.ChannelReader
    receipt: iii_trio.ChannelWriter


async def test_structured_payloads_take_ends_and_say_so_in_their_schema(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    @callee.function("svc::upload")
    async def upload(request: Upload) -> int:
        size = len(await _read_all(request.body))
        await request.receipt.send_message(f"{request.name}: {size}")
        return size

    await callee.wait_registered()
    (info,) = [f for f in await caller.list_functions() if f.function_id == "svc::upload"]
    properties = info.request_format["properties"]
    assert properties["body"]["properties"]["direction"] == {"const": "read"}
    assert properties["receipt"]["properties"]["direction"] == {"const": "write"}

    body = await caller.create_channel()
    receipt = await caller.create_channel()
    with trio.fail_after(PATIENCE):
        async with body.writer as writer:
            await writer.send_all(b"x" * 1000)
        size = await caller.trigger(
            "svc::upload", {"name": "f", "body": body.reader, "receipt": receipt.writer_ref}
        )
        assert size == 1000
        assert await receipt.reader.receive_message() == "f: 1000"
    # A payload without the refs the type asks for is refused, as any invalid payload is.
    with pytest.raises(iii_trio.InvocationError) as refused:
        await caller.trigger("svc::upload", {"name": "f", "body": "no", "receipt": 3})
    assert refused.value.code == "invalid_payload"


# --- a handler's ends are closed when it is done ------------------------------------------------


async def test_a_handler_that_stops_reading_early_drops_its_reader(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    @callee.function("svc::peek")
    async def peek(payload: dict[str, Any]) -> int:
        return len(await payload["source"].receive_some())

    await callee.wait_registered()
    channel = await caller.create_channel(buffer_size=1)
    with trio.fail_after(PATIENCE):
        await channel.writer.send_all(b"first")
        assert await caller.trigger("svc::peek", {"source": channel.reader_ref}) == 5
        # Its reader is gone: the engine drops the writer at its next frames.
        with pytest.raises(iii_trio.ChannelClosed):
            await _write_until_refused(channel.writer)


async def _write_until_refused(writer: iii_trio.ChannelWriter) -> None:
    while True:
        await writer.send_all(b"more" * 1000)
        await trio.sleep(0.01)


async def test_a_handler_that_fails_drops_its_ends_and_the_worker_serves_on(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    @callee.function("svc::half")
    async def half(payload: dict[str, Any]) -> None:
        await payload["sink"].send_all(b"half of it")
        raise RuntimeError("gave up")

    @callee.function("svc::ok")
    async def ok(payload: Any) -> str:
        return "ok"

    await callee.wait_registered()
    channel = await caller.create_channel()
    with trio.fail_after(PATIENCE):
        with pytest.raises(iii_trio.InvocationError, match="gave up"):
            await caller.trigger("svc::half", {"sink": channel.writer_ref})
        # A dropped writer looks like the end of the stream, as the engine reports it.
        assert await _read_all(channel.reader) == b"half of it"
        assert await caller.trigger("svc::ok") == "ok"


async def test_a_handler_given_an_end_it_hands_on_leaves_it_alone(
    caller: iii_trio.Worker, callee: iii_trio.Worker
) -> None:
    @callee.function("svc::relay")
    async def relay(payload: dict[str, Any]) -> str:
        # Passes the writer on without using it: closing it here must not end the stream.
        return await callee.trigger("svc::write", {"sink": payload["sink"]})

    @callee.function("svc::write")
    async def write(payload: dict[str, Any]) -> str:
        await payload["sink"].send_all(b"from the second hop")
        return "written"

    await callee.wait_registered()
    channel = await caller.create_channel()
    with trio.fail_after(PATIENCE):
        assert await caller.trigger("svc::relay", {"sink": channel.writer}) == "written"
        assert await _read_all(channel.reader) == b"from the second hop"


async def test_a_cancelled_handler_drops_its_ends(engine: Engine) -> None:
    started = trio.Event()
    async with iii_trio.open_worker(engine.url, name="reader") as keeper:
        channel = await keeper.create_channel()

        async def call() -> None:
            with pytest.raises(iii_trio.InvocationError, match="invocation_stopped"):
                await keeper.trigger("svc::forever", {"sink": channel.writer_ref})

        async with trio.open_nursery() as nursery:
            async with iii_trio.open_worker(engine.url, name="doomed") as doomed:

                @doomed.function("svc::forever")
                async def forever(payload: dict[str, Any]) -> None:
                    await payload["sink"].send_all(b"started")
                    started.set()
                    await trio.sleep_forever()

                await doomed.wait_registered()
                nursery.start_soon(call)
                await started.wait()
                left = trio.current_time()
            # Leaving the block cancelled the handler, whose writer was dropped.
            assert trio.current_time() - left < 1.0
        with trio.fail_after(PATIENCE):
            assert await _read_all(channel.reader) == b"started"
