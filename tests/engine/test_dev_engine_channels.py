"""The dev engine's channel data sockets (spec/protocol.md 6.3-6.6) over real loopback
WebSockets, driven with raw frames and no iii_trio channel code."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from iii_trio._protocol._channels import channel_url
from iii_trio._transport import (
    HandshakeFailed,
    Payload,
    TransportClosed,
    WebSocket,
    connect_websocket,
)
from iii_trio._types import ChannelRef
from iii_trio.testing import DevEngine, open_dev_engine
from iii_trio.testing._engine._channels import CHANNEL_TTL, SWEEP_INTERVAL

from ._raw import PATIENCE, RawWorker, http_get

NO_STATUS = 1005  # what websockets reports for a close frame without a status code


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


@pytest.fixture
async def maker(engine: DevEngine) -> AsyncIterator[RawWorker]:
    worker = await RawWorker.connect(engine.url)
    yield worker
    await worker.aclose()


async def _create(maker: RawWorker, buffer_size: int | None = None) -> dict[str, ChannelRef]:
    refs = await maker.result("engine::channels::create", {"buffer_size": buffer_size})
    return {name: ChannelRef(**ref) for name, ref in refs.items()}


async def _open(engine: DevEngine, ref: ChannelRef, **options: Any) -> WebSocket:
    with trio.fail_after(PATIENCE):
        return await connect_websocket(channel_url(engine.url, ref), **options)


async def _read_until_closed(reader: WebSocket) -> tuple[list[tuple[bool, bytes]], int | None]:
    """Every message until the engine closes the socket, and the close code it sent."""
    received: list[tuple[bool, bytes]] = []
    with trio.fail_after(PATIENCE):
        while True:
            try:
                messages = await reader.receive_messages()
            except TransportClosed as closed:
                return received, closed.code
            received.extend((is_text, bytes(payload)) for is_text, payload in messages)


async def _read_until_closed_or_raise(websocket: WebSocket) -> None:
    while True:
        await websocket.receive_messages()


async def _flush_and_read(websocket: WebSocket) -> None:
    await websocket.flush()
    await _read_until_closed_or_raise(websocket)


def _frames(messages: list[tuple[bool, Payload]]) -> list[tuple[bool, bytes]]:
    return [(is_text, bytes(payload)) for is_text, payload in messages]


# --- the upgrade checks (6.3) -------------------------------------------------------------------


async def test_an_unknown_id_or_a_wrong_key_is_404(engine: DevEngine, maker: RawWorker) -> None:
    reader = (await _create(maker))["reader"]
    for path in (
        f"/ws/channels/{reader.channel_id}?key=wrong&dir=read",
        f"/ws/channels/{reader.channel_id}?key=wrong&dir=write",
        f"/ws/channels/00000000-0000-4000-8000-000000000000?key={reader.access_key}&dir=read",
    ):
        assert await http_get(engine.port, path) == (404, "Channel not found")


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("dir=read", "missing field `key`"),
        ("key={key}", "missing field `dir`"),
        ("key={key}&dir=up", "unknown variant `up`, expected `read` or `write`"),
        ("key={key}&key={key}&dir=read", "duplicate field `key`"),
        ("key={key}&dir=read&dir=write", "duplicate field `dir`"),
    ],
)
async def test_a_bad_query_is_400_even_for_a_real_channel(
    engine: DevEngine, maker: RawWorker, query: str, problem: str
) -> None:
    reader = (await _create(maker))["reader"]
    path = f"/ws/channels/{reader.channel_id}?{query.format(key=reader.access_key)}"
    assert await http_get(engine.port, path) == (
        400,
        f"Failed to deserialize query string: {problem}",
    )


# --- what flows (6.3, 6.4) ----------------------------------------------------------------------


async def test_text_stays_text_binary_stays_binary_in_order_then_a_close_without_status(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker)
    writer = await _open(engine, refs["writer"])
    reader = await _open(engine, refs["reader"])
    sent = [
        (True, b"start"),
        (False, b"\x00\x01"),
        (True, "h\u00e9".encode()),
        (False, b""),
        (False, b"z" * 70000),
    ]
    for is_text, payload in sent:
        if is_text:
            writer.send_text(payload)
        else:
            writer.send_binary(payload)
    await writer.flush()
    await writer.aclose()
    received, code = await _read_until_closed(reader)
    assert received == sent
    assert code == NO_STATUS
    await reader.aclose()


async def test_either_end_may_come_first(engine: DevEngine, maker: RawWorker) -> None:
    # The writer first: its frames wait in the queue, the end of the stream too.
    refs = await _create(maker)
    writer = await _open(engine, refs["writer"])
    writer.send_binary(b"early")
    await writer.flush()
    await writer.aclose()
    reader = await _open(engine, refs["reader"])
    assert await _read_until_closed(reader) == ([(False, b"early")], NO_STATUS)
    await reader.aclose()

    # The reader first: it waits for the writer.
    refs = await _create(maker)
    reader = await _open(engine, refs["reader"])
    writer = await _open(engine, refs["writer"])
    writer.send_text(b"late")
    await writer.flush()
    await writer.aclose()
    assert await _read_until_closed(reader) == ([(True, b"late")], NO_STATUS)
    await reader.aclose()


async def test_the_direction_comes_from_the_query_not_the_ref(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker)
    writer = await _open(
        engine, ChannelRef(refs["reader"].channel_id, refs["reader"].access_key, "write")
    )
    reader = await _open(
        engine, ChannelRef(refs["writer"].channel_id, refs["writer"].access_key, "read")
    )
    writer.send_binary(b"x")
    await writer.flush()
    await writer.aclose()
    assert await _read_until_closed(reader) == ([(False, b"x")], NO_STATUS)
    await reader.aclose()


async def test_an_end_attaches_once_and_the_first_one_keeps_working(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker)
    reader = await _open(engine, refs["reader"])
    second_reader = await _open(engine, refs["reader"])
    assert await _read_until_closed(second_reader) == ([], NO_STATUS)
    await second_reader.aclose()
    writer = await _open(engine, refs["writer"])
    second_writer = await _open(engine, refs["writer"])
    with trio.fail_after(PATIENCE), pytest.raises(TransportClosed) as closed:
        await second_writer.receive_messages()
    assert closed.value.code == NO_STATUS
    await second_writer.aclose()

    writer.send_binary(b"still here")
    await writer.flush()
    await writer.aclose()
    assert await _read_until_closed(reader) == ([(False, b"still here")], NO_STATUS)
    await reader.aclose()
    # The ends stay attached once the stream is over: a late one is closed at once too.
    late = await _open(engine, refs["reader"])
    assert await _read_until_closed(late) == ([], NO_STATUS)
    await late.aclose()


async def test_pings_are_answered_on_a_write_socket_and_never_on_a_read_socket(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker)
    writer = await _open(engine, refs["writer"])
    reader = await _open(engine, refs["reader"])
    for websocket in (writer, reader):
        before = websocket.last_received
        websocket.send_ping(b"anyone?")
        await websocket.flush()
        with trio.move_on_after(0.3):
            await websocket.receive_messages()  # a pong is taken in here, never returned
        answered = websocket.last_received > before
        assert answered == (websocket is writer)
    await writer.aclose()
    await reader.aclose()


# --- backpressure (6.5) -------------------------------------------------------------------------


async def test_a_full_queue_stops_the_engine_reading_the_writer(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker, buffer_size=1)
    writer = await _open(engine, refs["writer"])
    chunk = os.urandom(64 * 1024)
    frames = 512  # 32 MiB: far more than the socket buffers hold
    sent = 0

    async def write_all() -> None:
        nonlocal sent
        for _ in range(frames):
            writer.send_binary(chunk)
            await writer.flush()
            sent += 1
        await writer.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_all)
        await trio.sleep(0.5)
        stalled_at = sent
        assert stalled_at < frames  # held back: nobody reads
        reader = await _open(engine, refs["reader"])
        received, code = await _read_until_closed_bulk(reader)
    assert received == frames * len(chunk)
    assert code == NO_STATUS
    await reader.aclose()


async def _read_until_closed_bulk(reader: WebSocket) -> tuple[int, int | None]:
    total = 0
    with trio.fail_after(60):
        while True:
            try:
                messages = await reader.receive_messages()
            except TransportClosed as closed:
                return total, closed.code
            total += sum(len(payload) for _, payload in messages)


# --- failures (6.6) -----------------------------------------------------------------------------


async def test_when_the_reader_goes_the_writer_is_dropped_without_a_close_frame(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker, buffer_size=1)
    reader = await _open(engine, refs["reader"])
    writer = await _open(engine, refs["writer"])
    writer.send_binary(b"first")
    await writer.flush()
    assert _frames(await reader.receive_messages()) == [(False, b"first")]
    await reader.abort()

    async def write_until_dropped() -> None:
        while True:
            writer.send_binary(b"more" * 1000)
            await writer.flush()
            with trio.move_on_after(0.05):
                await writer.receive_messages()

    with trio.fail_after(PATIENCE), pytest.raises(TransportClosed) as closed:
        await write_until_dropped()
    assert closed.value.code is None
    await writer.aclose()


async def test_a_writer_that_drops_its_connection_ends_the_stream(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker)
    reader = await _open(engine, refs["reader"])
    writer = await _open(engine, refs["writer"])
    writer.send_binary(b"partial")
    await writer.flush()
    await writer.abort()
    assert await _read_until_closed(reader) == ([(False, b"partial")], NO_STATUS)
    await reader.aclose()


async def test_invalid_utf8_text_fails_the_writer_and_ends_the_stream(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker)
    reader = await _open(engine, refs["reader"])
    writer = await _open(engine, refs["writer"], check_text=False)
    writer.send_binary(b"ok")
    writer.send_text(b"\xff\xfe not text")
    writer.send_binary(b"never forwarded")
    await writer.flush()
    with trio.fail_after(PATIENCE), pytest.raises(TransportClosed) as closed:
        await _read_until_closed_or_raise(writer)
    assert closed.value.code == 1007
    await writer.aclose()
    assert await _read_until_closed(reader) == ([(False, b"ok")], NO_STATUS)
    await reader.aclose()


async def test_a_message_over_64_mib_fails_that_writer_and_the_engine_serves_on(
    engine: DevEngine, maker: RawWorker
) -> None:
    refs = await _create(maker)
    reader = await _open(engine, refs["reader"])
    writer = await _open(engine, refs["writer"])
    writer.send_binary(b"x" * (64 * 1024 * 1024 + 1))
    with trio.fail_after(30), pytest.raises(TransportClosed) as closed:
        await _flush_and_read(writer)
    assert closed.value.code in (1009, None)  # the close frame, if it arrives before the drop
    await writer.abort()
    assert await _read_until_closed(reader) == ([], NO_STATUS)
    await reader.aclose()
    # Everything else carries on.
    refs = await _create(maker)
    writer = await _open(engine, refs["writer"])
    writer.send_binary(b"fine")
    await writer.flush()
    await writer.aclose()
    reader = await _open(engine, refs["reader"])
    assert await _read_until_closed(reader) == ([(False, b"fine")], NO_STATUS)
    await reader.aclose()


# --- the sweep (6.6), on trio's mock clock over in-memory streams --------------------------------


@pytest.mark.parametrize("attached", ["read", "write"])
async def test_the_sweep_releases_a_half_attached_channel(
    autojump_clock: trio.testing.MockClock, attached: str
) -> None:
    async with open_dev_engine() as engine:
        opener = engine._open_memory_stream
        maker = await RawWorker.connect(engine.url, open_stream=opener)
        refs = await _create(maker)
        ref = refs["reader" if attached == "read" else "writer"]
        end = await connect_websocket(channel_url(engine.url, ref), open_stream=opener)
        await trio.sleep(CHANNEL_TTL + SWEEP_INTERVAL + 1)
        if attached == "read":
            assert await _read_until_closed(end) == ([], NO_STATUS)
        else:
            end.send_binary(b"into nothing")
            with pytest.raises(TransportClosed) as closed:
                await _flush_and_read(end)
            assert closed.value.code is None  # dropped, no close frame
        await end.aclose()
        with pytest.raises(HandshakeFailed) as refused:
            await connect_websocket(channel_url(engine.url, ref), open_stream=opener)
        assert refused.value.status == 404  # the channel is gone
        await maker.aclose()
