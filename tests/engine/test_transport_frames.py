"""The transport's fast path for plain data frames against websockets' own parser.

The dev engine is the transport's heaviest user: every routed call crosses it four times. Each
test runs the same bytes, cut into reads of every size, through a :class:`WebSocket` whose
protocol logs at DEBUG (which keeps the fast path off, so websockets parses every frame) and
through one that takes the fast path, and wants the same messages, the same frames sent back
and the same end. (``fast_frames=False`` keeps the fast path off, so websockets parses every
frame.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from iii_trio._transport import (
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    TransportClosed,
    WebSocket,
    _FastFrames,
)

_QUIET = logging.getLogger("tests.transport.quiet")
_QUIET.setLevel(logging.WARNING)
_VERBOSE = logging.getLogger("tests.transport.verbose")
_VERBOSE.setLevel(logging.DEBUG)
_VERBOSE.propagate = False

READ_SIZES = [1, 2, 5, 13, 64, 1000, 1 << 20]


class ChunkStream(trio.abc.Stream):
    """Hands out ``first`` as one read, then ``data`` in reads of ``size`` bytes, then end of
    file; keeps what is sent."""

    def __init__(self, first: bytes, data: bytes, size: int) -> None:
        self._chunks = [first] if first else []
        self._chunks.extend(data[i : i + size] for i in range(0, len(data), size))
        self.sent = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._chunks.pop(0) if self._chunks else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def opened_pair() -> tuple[ClientProtocol, bytes, ServerProtocol, bytes]:
    """A client and a server protocol past the handshake, and the bytes each sent for it."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"))
    client.send_request(client.connect())
    request = b"".join(client.data_to_send())
    server = ServerProtocol()
    server.receive_data(request)
    (event,) = server.events_received()
    assert isinstance(event, Request)
    server.send_response(server.accept(event))
    response = b"".join(server.data_to_send())
    client.receive_data(response)
    client.events_received()
    assert client.state is State.OPEN
    return client, request, server, response


def send_everything(sender: ClientProtocol | ServerProtocol) -> None:
    """One of every kind of frame a peer may send, ending with a close frame."""
    sender.send_text(b'{"type":"ping"}')
    sender.send_binary(bytes(range(200)))
    sender.send_ping(b"are you there")
    sender.send_text(b"x" * 125)
    sender.send_text(b"y" * 126)
    sender.send_text(b"z" * 70_000)
    sender.send_text(b"")
    sender.send_text(b"frag-1,", fin=False)
    sender.send_ping(b"in between")
    sender.send_continuation(b"frag-2,", fin=False)
    sender.send_continuation(b"frag-3", fin=True)
    sender.send_binary(b"\x00" * 65_536)
    sender.send_text("é€😀".encode())
    sender.send_close(1000, "bye")


def raw_frame(head: int, payload: bytes, *, masked: bool) -> bytes:
    """A frame with any first byte, which websockets would refuse to write."""
    frame = Frame(Opcode.TEXT, payload).serialize(mask=masked)
    return bytes([head]) + frame[1:]


Outcome = tuple[list[tuple[bool, bytes]], str, int | None, bytes]


async def serve_bytes(
    request: bytes, data: bytes, size: int, *, fast: bool, max_size: int | None
) -> Outcome:
    """Run a client's handshake ``request``, then ``data`` (frames) through a server WebSocket
    as serve_websockets does; return the messages, how it ended, and what it sent back."""
    stream = ChunkStream(request, data, size)
    limits = (MAX_MESSAGE_SIZE, MAX_FRAME_SIZE) if max_size is None else (max_size, max_size)
    protocol = ServerProtocol(max_size=limits, logger=_QUIET if fast else _VERBOSE)
    websocket = WebSocket(stream, protocol, fast_frames=fast)
    while not isinstance(websocket.handshake_event, Request):
        await websocket._receive()
    protocol.send_response(protocol.accept(websocket.handshake_event))
    # The response carries a Date header: leave it out, but keep any pong already due (which
    # websockets queues ahead of the response when a ping came with the request).
    written = b"".join(protocol.data_to_send())
    start = written.index(b"HTTP/1.1 101")
    stream.sent += written[:start] + written[written.index(b"\r\n\r\n", start) + 4 :]
    return await drain(websocket, stream)


async def connect_bytes(response: bytes, data: bytes, size: int, *, fast: bool) -> Outcome:
    """Like :func:`serve_bytes` for a client WebSocket: a server's handshake ``response`` to the
    request of ``CLIENT_FOR_RESPONSE[fast]``, then frames."""
    stream = ChunkStream(response, data, size)
    websocket = WebSocket(stream, CLIENT_FOR_RESPONSE[fast], fast_frames=fast)
    while websocket._protocol.state is State.CONNECTING:
        await websocket._receive()
    return await drain(websocket, stream)


CLIENT_FOR_RESPONSE: dict[bool, ClientProtocol] = {}


async def drain(websocket: WebSocket, stream: ChunkStream) -> Outcome:
    messages: list[tuple[bool, bytes]] = []
    while True:
        try:
            received = await websocket.receive_messages()
        except TransportClosed as exc:
            return messages, str(exc), exc.code, bytes(stream.sent)
        messages.extend((is_text, bytes(payload)) for is_text, payload in received)


async def both_ways(run: Callable[[bool], Any], *, fast_path_taken: bool = True) -> Outcome:
    with spying_on_the_fast_path() as taken:
        slow = await run(False)
        assert taken == []  # fast_frames=False keeps it off
        fast = await run(True)
    assert taken == [fast_path_taken]
    assert fast == slow
    result: Outcome = fast
    return result


@contextlib.contextmanager
def spying_on_the_fast_path() -> Iterator[list[bool]]:
    """Records, for each WebSocket, whether it took the fast path after its handshake."""
    decided: list[bool] = []
    original = _FastFrames._start_reading

    def spy(self: _FastFrames) -> bool:
        started = original(self)
        if self._handshake is None:
            decided.append(started)
        return started

    _FastFrames._start_reading = spy  # type: ignore[method-assign]
    try:
        yield decided
    finally:
        _FastFrames._start_reading = original  # type: ignore[method-assign]


@pytest.mark.parametrize("size", READ_SIZES)
async def test_a_server_reads_every_kind_of_frame_as_websockets_does(size: int) -> None:
    client, request, _, _ = opened_pair()
    send_everything(client)
    data = b"".join(client.data_to_send())
    messages, _, code, sent = await both_ways(
        lambda fast: serve_bytes(request, data, size, fast=fast, max_size=None)
    )
    assert [payload for _, payload in messages] == [
        b'{"type":"ping"}',
        bytes(range(200)),
        b"x" * 125,
        b"y" * 126,
        b"z" * 70_000,
        b"",
        b"frag-1,frag-2,frag-3",
        b"\x00" * 65_536,
        "é€😀".encode(),
    ]
    assert code == 1000
    assert b"are you there" in sent  # the pongs went out
    assert b"in between" in sent


@pytest.mark.parametrize("size", READ_SIZES)
async def test_a_client_reads_every_kind_of_frame_as_websockets_does(size: int) -> None:
    outcomes = {}
    for fast in (False, True):
        client = ClientProtocol(parse_uri("ws://127.0.0.1/"), logger=_QUIET if fast else _VERBOSE)
        client.send_request(client.connect())
        server = ServerProtocol()
        server.receive_data(b"".join(client.data_to_send()))
        (event,) = server.events_received()
        assert isinstance(event, Request)
        server.send_response(server.accept(event))
        response = b"".join(server.data_to_send())
        send_everything(server)
        CLIENT_FOR_RESPONSE[fast] = client
        data = b"".join(server.data_to_send())
        with spying_on_the_fast_path() as taken:
            outcomes[fast] = await connect_bytes(response, data, size, fast=fast)
        assert taken == ([True] if fast else [])
    messages, ending, code, sent = outcomes[True]
    assert len(messages) == 9
    assert messages[4] == (True, b"z" * 70_000)
    assert code == 1000
    # A client masks what it sends with random keys: compare the frames, not the bytes.
    assert (messages, ending, code) == outcomes[False][:3]
    assert ServerFrames(sent) == ServerFrames(outcomes[False][3])


class ServerFrames:
    """What a client sent, as a server reads it: opcodes and payloads, masks removed."""

    def __init__(self, sent: bytes) -> None:
        protocol = ServerProtocol(state=State.OPEN)
        protocol.receive_data(sent)
        self.frames = [
            (event.opcode, bytes(event.data))
            for event in protocol.events_received()
            if isinstance(event, Frame)
        ]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerFrames) and self.frames == other.frames

    __hash__ = None  # type: ignore[assignment]


def good_frames(client: ClientProtocol) -> bytes:
    client.send_text(b"first")
    client.send_binary(b"second")
    return b"".join(client.data_to_send())


def bad_endings() -> Iterator[tuple[str, Callable[[ClientProtocol], bytes], int | None]]:
    yield "unmasked", lambda c: raw_frame(0x81, b"no mask", masked=False), None
    yield "reserved bit", lambda c: raw_frame(0xC1, b"rsv1", masked=True), None
    yield "reserved opcode", lambda c: raw_frame(0x83, b"op 3", masked=True), None
    yield "stray continuation", lambda c: raw_frame(0x80, b"cont", masked=True), None
    yield "too large", lambda c: raw_frame(0x81, b"x" * 2000, masked=True), 1000
    # Binary: a frame cut short swallows the next frames' bytes, which are not UTF-8.
    yield "cut short", lambda c: raw_frame(0x82, b"x" * 300, masked=True)[:-7], None
    yield "cut in the head", lambda c: raw_frame(0x82, b"x" * 300, masked=True)[:3], None
    yield "no close frame", lambda c: b"", None


@pytest.mark.parametrize("size", [1, 3, 64, 1 << 20])
@pytest.mark.parametrize(
    ("ending", "make", "max_size"),
    list(bad_endings()),
    ids=[ending for ending, _, _ in bad_endings()],
)
async def test_a_server_fails_a_bad_peer_as_websockets_does(
    size: int, ending: str, make: Callable[[ClientProtocol], bytes], max_size: int | None
) -> None:
    client, request, _, _ = opened_pair()
    data = good_frames(client) + make(client) + good_frames(client)
    messages, reason, _, _ = await both_ways(
        lambda fast: serve_bytes(request, data, size, fast=fast, max_size=max_size)
    )
    assert messages[:2] == [(True, b"first"), (False, b"second")]
    assert "closed" in reason or "error" in reason


@pytest.mark.parametrize("early", [0, 1, 2, 7, 40])
async def test_frames_that_come_with_the_handshake_are_read_in_order(early: int) -> None:
    # A client may send frames right behind its upgrade request; however the first read cuts
    # them (here after `early` bytes of frames), nothing is lost or reordered.
    client, request, _, _ = opened_pair()
    for n in range(5):
        client.send_text(b"message %d" % n)
    client.send_close(1000, "")
    frames = b"".join(client.data_to_send())
    first_read = request + frames[:early]
    rest = frames[early:]
    for fast in (False, True):
        stream = ChunkStream(first_read, rest, 10)
        protocol = ServerProtocol(logger=_QUIET if fast else _VERBOSE)
        websocket = WebSocket(stream, protocol, fast_frames=fast)
        with spying_on_the_fast_path() as taken:
            await websocket._receive()
            request_event = websocket.handshake_event
            assert isinstance(request_event, Request)
            protocol.send_response(protocol.accept(request_event))
            messages, _, code, _ = await drain(websocket, stream)
        assert [payload for _, payload in messages] == [b"message %d" % n for n in range(5)]
        assert code == 1000
        # Cut within a frame's first two bytes, it cannot tell where the frame ends.
        assert taken == ([early != 1] if fast else [])


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
async def test_a_server_writes_frames_as_websockets_does(length: int) -> None:
    data = bytes(i % 251 for i in range(length))
    written = []
    for fast in (False, True):
        _, _, server, _ = opened_pair()
        websocket = WebSocket(ChunkStream(b"", b"", 1), server, fast_frames=fast)
        websocket.send_text(data)
        written.append(b"".join(server.data_to_send()))
    assert written[0] == written[1] == Frame(Opcode.TEXT, data).serialize(mask=False)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65_535, 65_536])
async def test_a_client_writes_frames_a_server_reads(length: int) -> None:
    data = bytes(i % 251 for i in range(length))
    client, _, _, _ = opened_pair()
    websocket = WebSocket(ChunkStream(b"", b"", 1), client)
    websocket.send_text(data)
    websocket.send_text(b"after")
    assert ServerFrames(b"".join(client.data_to_send())).frames == [
        (Opcode.TEXT, data),
        (Opcode.TEXT, b"after"),
    ]


async def test_a_client_never_reuses_a_masking_key() -> None:
    client, _, _, _ = opened_pair()
    websocket = WebSocket(ChunkStream(b"", b"", 1), client)
    count = 1000  # several fetches of keys from the OS
    for n in range(count):
        websocket.send_text(b"%04d" % n)
    written = b"".join(client.data_to_send())
    frame_size = 2 + 4 + 4
    keys = {written[i + 2 : i + 6] for i in range(0, len(written), frame_size)}
    assert len(keys) >= count - 2  # random keys: one chance in ~10^4 that two are equal
    assert ServerFrames(written).frames == [(Opcode.TEXT, b"%04d" % n) for n in range(count)]
