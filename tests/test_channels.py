"""Channels between iii_trio workers through the dev engine: create_channel, ChannelWriter and
ChannelReader as trio streams with text messages, their errors, and how their sockets open
(headers, TLS, the engine URL's query) and close."""

from __future__ import annotations

import functools
import os
import ssl
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
import trustme
from scripted_engine import answer_register_then, scripted_handler

import iii_trio
from iii_trio._protocol._codec import encode
from iii_trio._protocol._messages import InvocationResult, InvokeFunction
from iii_trio._transport import UpgradeRequest, WebSocket, serve_websocket_stream

if TYPE_CHECKING:
    from conftest import Engine

PATIENCE = 10.0


async def _read_all(reader: iii_trio.ChannelReader) -> bytes:
    chunks = []
    async for chunk in reader:
        chunks.append(chunk)
    return b"".join(chunks)


# --- create_channel -----------------------------------------------------------------------------


async def test_create_channel_gives_both_ends_and_both_refs(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    assert isinstance(channel.writer, iii_trio.ChannelWriter)
    assert isinstance(channel.reader, iii_trio.ChannelReader)
    assert isinstance(channel.writer, trio.abc.SendStream)
    assert isinstance(channel.reader, trio.abc.ReceiveStream)
    assert channel.writer_ref.direction == "write"
    assert channel.reader_ref.direction == "read"
    assert channel.writer_ref.channel_id == channel.reader_ref.channel_id
    assert channel.writer.ref == channel.writer_ref
    assert channel.reader.ref == channel.reader_ref
    assert channel.reader_ref.access_key not in repr(channel)


@pytest.mark.parametrize(
    ("buffer_size", "error"),
    [("8", TypeError), (1.5, TypeError), (True, TypeError), (-1, ValueError)],
)
async def test_create_channel_refuses_a_bad_buffer_size_before_asking(
    engine: Engine, worker: iii_trio.Worker, buffer_size: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="buffer_size"):
        await worker.create_channel(buffer_size)


async def test_create_channel_after_the_block_is_a_closed_resource_error(
    engine: Engine,
) -> None:
    async with iii_trio.open_worker(engine.url, name="gone") as worker:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await worker.create_channel()


# --- streaming ----------------------------------------------------------------------------------


async def test_bytes_and_messages_flow_in_order(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    data = os.urandom(300_000)

    async def write() -> None:
        async with channel.writer as writer:
            await writer.send_message("header")
            await writer.send_all(data)
            await writer.send_message("between")
            await writer.send_all(b"tail")
            await writer.send_message("h\u00e9 \U0001f600")

    received: list[str | bytes] = []

    async def read() -> None:
        reader = channel.reader
        while True:
            try:
                chunk = await reader.receive_some()
            except iii_trio.UnexpectedFrame:
                received.append(await reader.receive_message())
                continue
            if not chunk:
                break
            assert len(chunk) <= 64 * 1024
            if received and isinstance(received[-1], bytes):
                received[-1] += chunk
            else:
                received.append(chunk)

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(read)
    assert received == ["header", data, "between", b"tail", "h\u00e9 \U0001f600"]


async def test_receive_some_honours_max_bytes_and_end_of_stream_repeats(
    worker: iii_trio.Worker,
) -> None:
    channel = await worker.create_channel()
    async with channel.writer as writer:
        await writer.send_all(b"abcdefgh")
    reader = channel.reader
    with trio.fail_after(PATIENCE):
        assert await reader.receive_some(3) == b"abc"
        assert await reader.receive_some(3) == b"def"
        assert await reader.receive_some() == b"gh"
        assert await reader.receive_some() == b""
        assert await reader.receive_some(1) == b""
        with pytest.raises(trio.EndOfChannel):
            await reader.receive_message()
    await reader.aclose()


@pytest.mark.parametrize(
    ("max_bytes", "error"), [(0, ValueError), (-5, ValueError), ("8", TypeError), (True, TypeError)]
)
async def test_receive_some_refuses_a_bad_max_bytes(
    worker: iii_trio.Worker, max_bytes: Any, error: type[Exception]
) -> None:
    channel = await worker.create_channel()
    with pytest.raises(error, match="max_bytes"):
        await channel.reader.receive_some(max_bytes)


async def test_the_wrong_kind_of_frame_is_an_error_that_consumes_nothing(
    worker: iii_trio.Worker,
) -> None:
    channel = await worker.create_channel()
    async with channel.writer as writer:
        await writer.send_message("text first")
        await writer.send_all(b"then bytes")
    reader = channel.reader
    with trio.fail_after(PATIENCE):
        with pytest.raises(iii_trio.UnexpectedFrame, match="receive_message") as text_next:
            await reader.receive_some()
        assert text_next.value.is_text
        assert text_next.value.channel_id == channel.reader_ref.channel_id
        assert await reader.receive_message() == "text first"
        assert await reader.receive_some(4) == b"then"
        with pytest.raises(iii_trio.UnexpectedFrame, match="receive_some") as bytes_next:
            await reader.receive_message()
        assert not bytes_next.value.is_text
        assert await _read_all(reader) == b" bytes"


async def test_a_writer_closed_unused_ends_the_stream_at_once(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    await channel.writer.aclose()
    with trio.fail_after(PATIENCE):
        assert await channel.reader.receive_some() == b""


async def test_an_empty_send_sends_nothing(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    async with channel.writer as writer:
        await writer.send_all(b"")
        await writer.send_all(bytearray(b"x"))
        await writer.send_all(memoryview(b"yz"))
        await writer.wait_send_all_might_not_block()
    with trio.fail_after(PATIENCE):
        assert await _read_all(channel.reader) == b"xyz"


# --- misuse -------------------------------------------------------------------------------------


async def test_send_refuses_what_is_not_bytes_or_text(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    with pytest.raises(TypeError, match="data must be bytes-like"):
        await channel.writer.send_all("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        await channel.writer.send_message(b"bytes")  # type: ignore[arg-type]


async def test_a_message_over_the_engines_limit_is_refused_and_the_channel_goes_on(
    worker: iii_trio.Worker,
) -> None:
    channel = await worker.create_channel()
    with pytest.raises(ValueError, match="at most 67108864 bytes"):
        await channel.writer.send_message("x" * (100 * 1024 * 1024))
    async with channel.writer as writer:
        await writer.send_message("still fine")
    with trio.fail_after(PATIENCE):
        assert await channel.reader.receive_message() == "still fine"


async def test_two_tasks_on_one_end_is_a_busy_resource_error(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    reader = channel.reader
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await reader.receive_some()
        await channel.writer.aclose()
    assert await reader.receive_some() == b""


async def test_a_closed_end_is_a_closed_resource_error(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    await channel.writer.aclose()
    await channel.writer.aclose()  # idempotent
    await channel.reader.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await channel.writer.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await channel.writer.send_message("x")
    with pytest.raises(trio.ClosedResourceError):
        await channel.reader.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await channel.reader.receive_message()


async def test_a_wrong_key_or_an_unknown_channel_is_channel_closed(
    worker: iii_trio.Worker,
) -> None:
    channel = await worker.create_channel()
    hub = worker._channels
    for ref in (
        iii_trio.ChannelRef(channel.reader_ref.channel_id, "s3cret", "read"),
        iii_trio.ChannelRef("00000000-0000-4000-8000-000000000000", "s3cret", "write"),
    ):
        with pytest.raises(iii_trio.ChannelClosed, match="not found") as refused:
            await _use(hub.end(ref))
        assert refused.value.channel_id == ref.channel_id
        assert "s3cret" not in str(refused.value)
    # The real channel is unaffected.
    async with channel.writer as writer:
        await writer.send_all(b"ok")
    assert await _read_all(channel.reader) == b"ok"


async def test_a_second_reader_of_one_end_sees_the_stream_end_and_the_first_reads_on(
    worker: iii_trio.Worker,
) -> None:
    channel = await worker.create_channel()
    first = channel.reader
    second = worker._channels.end(channel.reader_ref)
    assert isinstance(second, iii_trio.ChannelReader)
    with trio.fail_after(PATIENCE):
        async with channel.writer as writer:
            await writer.send_all(b"x")
            assert await first.receive_some() == b"x"
            # The engine attaches each end once and closes the second at once: as it reports
            # it, that is an empty stream.
            assert await second.receive_some() == b""
            await writer.send_all(b"y")
        assert await _read_all(first) == b"y"


async def test_a_second_writer_of_one_end_is_channel_closed(worker: iii_trio.Worker) -> None:
    channel = await worker.create_channel()
    second = worker._channels.end(channel.writer_ref)
    assert isinstance(second, iii_trio.ChannelWriter)
    with trio.fail_after(PATIENCE):
        await channel.writer.send_all(b"first")
        with pytest.raises(iii_trio.ChannelClosed, match="attached already"):
            await _write_until_refused(second)
        await channel.writer.aclose()
        assert await _read_all(channel.reader) == b"first"


# --- how the sockets open: headers, TLS, the engine URL's query ---------------------------------


async def _serve_scripted_tls_engine(
    nursery: trio.Nursery, authority: trustme.CA, requests: list[UpgradeRequest]
) -> str:
    """A TLS engine that answers engine::channels::create with fixed refs, records every
    upgrade request, and serves channel sockets: a reader gets b"hi" and a close."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    refs = {
        "writer": {"channel_id": "c1", "access_key": "k/1", "direction": "write"},
        "reader": {"channel_id": "c1", "access_key": "k/1", "direction": "read"},
    }

    def respond(websocket: WebSocket, message: InvokeFunction) -> None:
        assert message.invocation_id is not None
        websocket.send_text(encode(InvocationResult(message.invocation_id, "x", refs)))

    worker_handler = scripted_handler(answer_register_then(respond))

    async def handler(websocket: WebSocket, request: UpgradeRequest) -> None:
        requests.append(request)
        if not request.path.startswith("/ws/channels/"):
            await worker_handler(websocket, request)
        elif request.query["dir"] == ["read"]:
            websocket.send_binary(b"hi")
            await websocket.aclose(code=None)
        else:
            with trio.move_on_after(PATIENCE):
                while True:
                    await websocket.receive_messages()

    async def serve(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await serve_websocket_stream(stream, handler, lambda request: None)

    listeners = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, serve, 0, server_context, host="127.0.0.1")
    )
    return f"wss://localhost:{listeners[0].transport_listener.socket.getsockname()[1]}"


async def test_channel_sockets_use_the_workers_headers_tls_and_query(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("III_TOKEN", "from-env")
    authority = trustme.CA()
    requests: list[UpgradeRequest] = []
    url = await _serve_scripted_tls_engine(nursery, authority, requests)
    context = ssl.create_default_context()
    authority.configure_trust(context)
    async with iii_trio.open_worker(
        url + "/?tenant=t1", name="tls", ssl=context, headers={"X-Team": "blue"}
    ) as worker:
        channel = await worker.create_channel()
        with trio.fail_after(PATIENCE):
            assert await _read_all(channel.reader) == b"hi"
            await channel.writer.send_all(b"x")
            await channel.writer.aclose()
    channel_requests = [r for r in requests if r.path.startswith("/ws/channels/")]
    assert [r.path for r in channel_requests] == ["/ws/channels/c1", "/ws/channels/c1"]
    assert [r.query for r in channel_requests] == [
        {"tenant": ["t1"], "key": ["k/1"], "dir": ["read"]},
        {"tenant": ["t1"], "key": ["k/1"], "dir": ["write"]},
    ]
    for request in channel_requests:
        assert request.headers["x-team"] == "blue"
        assert request.headers["authorization"] == "Bearer from-env"
        assert "sec-websocket-protocol" not in request.headers


# --- closing ------------------------------------------------------------------------------------


async def test_leaving_open_worker_closes_every_channel_socket_within_a_second(
    engine: Engine, worker: iii_trio.Worker
) -> None:
    outgoing = await worker.create_channel()  # the leaving worker writes into this one
    incoming = await worker.create_channel()  # and reads from this one
    async with iii_trio.open_worker(engine.url, name="leaver") as leaver:
        writer = leaver._channels.end(outgoing.writer_ref)
        reader = leaver._channels.end(incoming.reader_ref)
        assert isinstance(writer, iii_trio.ChannelWriter)
        assert isinstance(reader, iii_trio.ChannelReader)
        await writer.send_all(b"partial")
        await incoming.writer.send_all(b"some")
        assert await reader.receive_some() == b"some"
        left = trio.current_time()
    assert trio.current_time() - left < 1.0
    # The writer's socket is gone: its reader gets what was sent, then the end of the stream.
    with trio.fail_after(1.0):
        assert await _read_all(outgoing.reader) == b"partial"
    # The reader's socket is gone: the engine drops the writer at its next frames.
    with trio.fail_after(PATIENCE), pytest.raises(iii_trio.ChannelClosed, match="dropped"):
        await _write_until_refused(incoming.writer)
    with pytest.raises(trio.ClosedResourceError):
        await reader.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await writer.send_all(b"x")


async def _use(end: iii_trio.ChannelReader | iii_trio.ChannelWriter) -> None:
    if isinstance(end, iii_trio.ChannelReader):
        await end.receive_some()
    else:
        await end.send_all(b"x")


async def _write_until_refused(writer: iii_trio.ChannelWriter) -> None:
    while True:
        await writer.send_all(b"x" * 1000)
        await trio.sleep(0.01)
