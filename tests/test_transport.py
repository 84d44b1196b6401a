"""The WebSocket transport against peers that misbehave: closing, failing, refusing, probing.

Timed cases run over in-memory streams on trio's mock clock (``connect_websocket``'s
``open_stream`` hook), so a three-second bound is checked exactly and instantly. The peers are
written byte by byte with websockets' own sans-I/O objects, independent of the code under test.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
import trustme
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from iii_trio._transport import (
    CLOSE_TIMEOUT,
    HandshakeFailed,
    TransportClosed,
    UpgradeRequest,
    WebSocket,
    connect_websocket,
    redact_url,
    serve_websocket_stream,
    serve_websockets,
)

PATIENCE = 5.0


class RawPeer:
    """The server end of one connection, written frame by frame (a misbehaving engine)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.protocol = ServerProtocol()
        self.received = bytearray()

    async def answer_upgrade(self, then: bytes = b"") -> None:
        """Read the client's request and answer 101, with ``then`` in the same write."""
        while True:
            data = await self.stream.receive_some()
            assert data, "the client left during the handshake"
            self.protocol.receive_data(data)
            events = self.protocol.events_received()
            if events:
                (request,) = events
                assert isinstance(request, Request)
                break
        self.protocol.send_response(self.protocol.accept(request))
        await self.stream.send_all(b"".join(self.protocol.data_to_send()) + then)

    async def read_until_eof(self) -> bytes:
        """Everything the client sends until it closes its side."""
        while data := await self.stream.receive_some():
            self.received += data
        return bytes(self.received)

    async def answer_like_a_server(self) -> None:
        """Answer whatever comes as websockets' server would (a close frame, then hang up)."""
        self.protocol = ServerProtocol(state=State.OPEN)
        while data := await self.stream.receive_some():
            self.protocol.receive_data(data)
            out = self.protocol.data_to_send()
            await self.stream.send_all(b"".join(out))
            if out and not out[-1]:
                await self.stream.aclose()
                return

    def client_frames(self) -> list[Frame]:
        """What the client sent after the handshake, as frames."""
        reader = ServerProtocol(state=State.OPEN)
        reader.receive_data(bytes(self.received))
        return [event for event in reader.events_received() if isinstance(event, Frame)]


def frame(opcode: Opcode, data: bytes, *, fin: bool = True, masked: bool = False) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=masked)


def close_frame(code: int) -> bytes:
    return frame(Opcode.CLOSE, Close(code, "").serialize())


Script = Callable[[RawPeer], Awaitable[None]]


Opener = Callable[[str, int], Awaitable[trio.abc.Stream]]


def memory_opener(nursery: trio.Nursery, script: Script) -> Opener:
    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(script, RawPeer(server))
        await trio.lowlevel.checkpoint()
        return client

    return open_stream


async def connect(nursery: trio.Nursery, script: Script) -> WebSocket:
    return await connect_websocket("ws://engine.test/", open_stream=memory_opener(nursery, script))


# --- closed means closed ------------------------------------------------------------------------


async def test_every_send_after_close_or_abort_raises_closed_resource_error(
    nursery: trio.Nursery,
) -> None:
    async def polite_server(peer: RawPeer) -> None:
        await peer.answer_upgrade()
        await peer.answer_like_a_server()

    for ending in ("aclose", "abort"):
        websocket = await connect(nursery, polite_server)
        await getattr(websocket, ending)()
        with pytest.raises(trio.ClosedResourceError):
            websocket.send_text(b"late")
        with pytest.raises(trio.ClosedResourceError):
            websocket.send_binary(b"late")
        with pytest.raises(trio.ClosedResourceError):
            await websocket.flush()
        with pytest.raises(trio.ClosedResourceError):
            await websocket.receive_messages()
        assert not websocket.writer.send_now()
        await websocket.aclose()  # idempotent


async def test_an_aborted_websocket_never_writes_into_a_socket_that_reused_its_number(
    nursery: trio.Nursery,
) -> None:
    # A frame is left unsent, the connection is aborted, and a new connection takes the same
    # file descriptor number: the old WebSocket must not write its frame into it.
    received: list[bytes] = []
    new_message = trio.Event()

    async def record(websocket: WebSocket, request: UpgradeRequest) -> None:
        try:
            while True:
                received.extend(bytes(p) for _, p in await websocket.receive_messages())
                new_message.set()
        except (TransportClosed, trio.ClosedResourceError):
            pass

    listeners = await nursery.start(
        functools.partial(serve_websockets, record, lambda request: None, host="127.0.0.1", port=0)
    )
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    old = await connect_websocket(url)
    old_number = old._stream.socket.fileno()  # type: ignore[attr-defined]
    old.send_text(b"meant for the old connection")
    await old.abort()
    new = await connect_websocket(url)
    reused = new._stream.socket.fileno() == old_number  # type: ignore[attr-defined]
    assert not old.writer.send_now()
    new.send_text(b"meant for the new one")
    await new.flush()
    with trio.fail_after(PATIENCE):
        await new_message.wait()
    await new.aclose()
    assert received == [b"meant for the new one"]
    # Linux hands out the lowest free number, so the new connection took the old one's; the
    # point holds either way, but only then does the test show what it is about.
    assert reused


# --- the closing handshake is bounded -----------------------------------------------------------


async def test_a_failed_connection_is_reported_at_once_and_closed_within_the_close_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # The engine sends a masked frame (forbidden from a server), then neither answers the close
    # frame nor closes TCP.
    peers: list[RawPeer] = []

    async def masking_server(peer: RawPeer) -> None:
        peers.append(peer)
        await peer.answer_upgrade(then=frame(Opcode.TEXT, b"{}", masked=True))
        await peer.read_until_eof()

    websocket = await connect(nursery, masking_server)
    with pytest.raises(TransportClosed) as failed:
        await websocket.receive_messages()
    assert trio.current_time() == 0  # reported at once
    assert failed.value.code == 1002
    await websocket.aclose()
    assert trio.current_time() == CLOSE_TIMEOUT
    await trio.testing.wait_all_tasks_blocked()
    (sent,) = [f for f in peers[0].client_frames() if f.opcode is Opcode.CLOSE]
    assert Close.parse(sent.data).code == 1002


async def test_aclose_is_bounded_by_the_close_timeout_and_shielded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def deaf_server(peer: RawPeer) -> None:
        await peer.answer_upgrade()
        await trio.sleep_forever()  # reads nothing, answers nothing, never closes

    websocket = await connect(nursery, deaf_server)
    with trio.CancelScope() as outer:
        outer.cancel()  # aclose in a finally of cancelled code still completes its work
        await websocket.aclose()
    assert trio.current_time() == CLOSE_TIMEOUT
    with pytest.raises(trio.ClosedResourceError):
        websocket.send_text(b"x")


async def test_a_close_frame_is_answered_and_the_write_side_shut_once_the_peer_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    closed_by_client = trio.Event()

    async def closing_server(peer: RawPeer) -> None:
        await peer.answer_upgrade(then=close_frame(1001))
        while not any(f.opcode is Opcode.CLOSE for f in peer.client_frames()):
            peer.received += await peer.stream.receive_some()
        closed_by_client.set()  # the client answered; a server closes TCP first
        await peer.stream.aclose()

    websocket = await connect(nursery, closing_server)
    with pytest.raises(TransportClosed) as closed:
        await websocket.receive_messages()
    assert closed.value.code == 1001
    await websocket.aclose()
    assert closed_by_client.is_set()
    assert trio.current_time() < CLOSE_TIMEOUT


# --- frames that come with the 101 --------------------------------------------------------------


async def test_frames_and_a_close_in_the_same_write_as_the_101_are_all_delivered(
    nursery: trio.Nursery,
) -> None:
    refusal = b'{"type":"error","error":{"code":"AUTH_ERROR","message":"no"}}'

    async def refusing_server(peer: RawPeer) -> None:
        await peer.answer_upgrade(then=frame(Opcode.TEXT, refusal) + frame(Opcode.CLOSE, b""))
        while not peer.client_frames():
            peer.received += await peer.stream.receive_some()
        await peer.stream.aclose()

    websocket = await connect(nursery, refusing_server)  # the handshake itself succeeded
    assert [bytes(p) for _, p in await websocket.receive_messages()] == [refusal]
    with pytest.raises(TransportClosed) as closed:
        await websocket.receive_messages()
    assert closed.value.code == 1005  # an empty close frame
    await websocket.aclose()


# --- UTF-8 --------------------------------------------------------------------------------------

INVALID_UTF8 = [b"\xff", b"caf\xc3", b"\xed\xa0\x80", b"ok \xf4\x90\x80\x80"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "protocol-path"])
@pytest.mark.parametrize("text", INVALID_UTF8)
async def test_a_text_message_that_is_not_utf8_fails_the_connection_with_1007(
    fast: bool, text: bytes
) -> None:
    client, server = trio.testing.memory_stream_pair()
    websocket, peer = await _opened(client, server, fast=fast)
    await peer.stream.send_all(frame(Opcode.TEXT, b"good") + frame(Opcode.TEXT, text))
    assert [bytes(p) for _, p in await websocket.receive_messages()] == [b"good"]
    with pytest.raises(TransportClosed) as failed:
        await websocket.receive_messages()
    assert failed.value.code == 1007
    await websocket.flush()
    await peer.stream.send_all(b"")
    peer.received += await peer.stream.receive_some()
    (close,) = peer.client_frames()
    assert Close.parse(close.data).code == 1007


async def test_a_fragmented_text_message_fails_as_soon_as_its_invalid_bytes_arrive() -> None:
    client, server = trio.testing.memory_stream_pair()
    websocket, peer = await _opened(client, server, fast=True)
    # The first fragment already cannot be UTF-8; the rest never comes.
    await peer.stream.send_all(frame(Opcode.TEXT, b"abc\xc0\xaf", fin=False))
    with pytest.raises(TransportClosed) as failed:
        await websocket.receive_messages()
    assert failed.value.code == 1007


async def test_valid_text_split_anywhere_across_fragments_is_delivered_whole() -> None:
    text = "é€😀 and more".encode()
    for cut in range(1, len(text)):
        client, server = trio.testing.memory_stream_pair()
        websocket, peer = await _opened(client, server, fast=True)
        await peer.stream.send_all(
            frame(Opcode.TEXT, text[:cut], fin=False) + frame(Opcode.CONT, text[cut:])
        )
        assert await websocket.receive_messages() == [(True, text)]


async def test_binary_messages_are_not_checked_for_utf8() -> None:
    client, server = trio.testing.memory_stream_pair()
    websocket, _ = await _opened(client, server, fast=True, first=frame(Opcode.BINARY, b"\xff"))
    assert await websocket.receive_messages() == [(False, b"\xff")]


async def _opened(
    client: trio.abc.Stream, server: trio.abc.Stream, *, fast: bool, first: bytes = b""
) -> tuple[WebSocket, RawPeer]:
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri("ws://engine.test/"))
    websocket = WebSocket(client, protocol, fast_frames=fast)
    protocol.send_request(protocol.connect())
    await websocket.flush()
    peer = RawPeer(server)
    await peer.answer_upgrade(then=first)
    while protocol.state is State.CONNECTING:
        await websocket._receive()
    return websocket, peer


# --- opening handshake failures -----------------------------------------------------------------


async def test_a_server_that_never_answers_the_upgrade_times_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def silent_server(peer: RawPeer) -> None:
        await trio.sleep_forever()

    with pytest.raises(HandshakeFailed, match="no answer"):
        await connect_websocket(
            "ws://engine.test/",
            open_stream=memory_opener(nursery, silent_server),
            handshake_timeout=7,
        )
    assert trio.current_time() == 7


async def test_a_server_that_hangs_up_during_the_handshake_is_a_handshake_failure(
    nursery: trio.Nursery,
) -> None:
    async def hanging_up(peer: RawPeer) -> None:
        await peer.stream.receive_some()
        await peer.stream.aclose()

    with pytest.raises(HandshakeFailed, match="closed the connection during the handshake"):
        await connect(nursery, hanging_up)


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def certificate_authority() -> trustme.CA:
    return trustme.CA()


async def _serve_tls_echo(nursery: trio.Nursery, authority: trustme.CA) -> str:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)

    async def echo(websocket: WebSocket, request: UpgradeRequest) -> None:
        for is_text, payload in await websocket.receive_messages():
            websocket.send_text(bytes(payload)) if is_text else None
        await websocket.flush()

    async def serve(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await serve_websocket_stream(stream, echo, lambda request: None)

    listeners = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, serve, 0, server_context, host="127.0.0.1")
    )
    return f"wss://localhost:{listeners[0].transport_listener.socket.getsockname()[1]}/"


async def test_wss_with_a_trusted_context_works(
    nursery: trio.Nursery, certificate_authority: trustme.CA
) -> None:
    url = await _serve_tls_echo(nursery, certificate_authority)
    client_context = ssl.create_default_context()
    certificate_authority.configure_trust(client_context)
    websocket = await connect_websocket(url, ssl_context=client_context)
    websocket.send_text(b"over tls")
    await websocket.flush()
    assert await websocket.receive_messages() == [(True, b"over tls")]
    await websocket.aclose()


async def test_an_untrusted_certificate_is_a_permanent_failure_that_says_so(
    nursery: trio.Nursery, certificate_authority: trustme.CA
) -> None:
    url = await _serve_tls_echo(nursery, certificate_authority)
    with pytest.raises(HandshakeFailed, match="certificate") as failed:
        await connect_websocket(url)  # the system's trust store does not know this CA
    assert failed.value.permanent
    assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)


# --- the server side: no client can take the server down ----------------------------------------

PROBES = {
    "connect and leave": b"",
    "random bytes": bytes(range(256)) * 4,
    "half a request": b"GET / HTTP/1.1\r\nHost: x\r\n",
    "bare blank line": b"\r\n\r\n",
    "a POST": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    "a 10 KB header line": b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 10_240 + b"\r\n\r\n",
    "200 headers": b"GET / HTTP/1.1\r\n"
    + b"".join(b"X-%d: y\r\n" % n for n in range(200))
    + b"\r\n",
    "plain GET": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("probe", PROBES.values(), ids=PROBES.keys())
async def test_no_probe_takes_the_server_down(nursery: trio.Nursery, probe: bytes) -> None:
    async def echo(websocket: WebSocket, request: UpgradeRequest) -> None:
        while True:
            for _, payload in await websocket.receive_messages():
                websocket.send_text(bytes(payload))
            await websocket.flush()

    listeners = await nursery.start(
        functools.partial(serve_websockets, echo, lambda request: None, host="127.0.0.1", port=0)
    )
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(PATIENCE):
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            if probe:
                await stream.send_all(probe)
                await stream.send_eof()
            await stream.aclose()
        websocket = await connect_websocket(f"ws://127.0.0.1:{port}/")
        websocket.send_text(b"still there?")
        await websocket.flush()
        assert await websocket.receive_messages() == [(True, b"still there?")]
        await websocket.aclose()


async def test_a_request_that_is_not_http_gets_a_400(nursery: trio.Nursery) -> None:
    async def never(websocket: WebSocket, request: UpgradeRequest) -> None:
        raise AssertionError("no websocket should open")  # pragma: no cover

    listeners = await nursery.start(
        functools.partial(serve_websockets, never, lambda request: None, host="127.0.0.1", port=0)
    )
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(PATIENCE):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"\x00\x01 not http\r\n\r\n")
            answer = b""
            while chunk := await stream.receive_some():
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")


# --- what was written ---------------------------------------------------------------------------


async def test_the_writer_counts_the_frames_the_kernel_took_in_full(nursery: trio.Nursery) -> None:
    # The dev engine's per-connection limits rely on these counts (frames_framed numbers each
    # frame; it is out once frames_sent reaches that number), against a client that stops
    # reading and later reads again.
    client_reads = trio.Event()
    counted: list[tuple[int, int]] = []

    async def writer(websocket: WebSocket, request: UpgradeRequest) -> None:
        frames = websocket.writer
        for _ in range(3):
            websocket.send_text(b"small")
        assert frames.send_now()
        counted.append((frames.frames_framed, frames.frames_sent))
        big = b"x" * 256_000
        while frames.send_now():  # until the kernel no longer takes everything at once
            websocket.send_binary(big)
        counted.append((frames.frames_framed, frames.frames_sent))
        websocket.send_binary(big)
        client_reads.set()
        await frames.flush()
        counted.append((frames.frames_framed, frames.frames_sent))
        await websocket.aclose()

    listeners = await nursery.start(
        functools.partial(serve_websockets, writer, lambda request: None, host="127.0.0.1", port=0)
    )
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(PATIENCE):
        websocket = await connect_websocket(f"ws://127.0.0.1:{port}/")
        await client_reads.wait()
        received = 0
        with contextlib.suppress(TransportClosed):
            while True:
                received += len(await websocket.receive_messages())
        await websocket.aclose()
    (small, stuck, flushed) = counted
    assert small == (3, 3)
    assert stuck[1] < stuck[0]
    assert flushed == (stuck[0] + 1, stuck[0] + 1)
    assert received == flushed[0]


# --- secrets stay out of messages ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ws://127.0.0.1:49134", "ws://127.0.0.1:49134"),
        ("wss://user:s3cret@engine.example:443/path", "wss://engine.example:443/path"),
        ("ws://h/ws/channels/c1?key=s3cret&dir=read", "ws://h/ws/channels/c1?key=…&dir=…"),
        ("ws://[::1]:1/", "ws://[::1]:1/"),
    ],
)
def test_urls_are_shown_without_credentials_or_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown
