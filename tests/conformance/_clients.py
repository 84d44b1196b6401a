"""Echo clients for the conformance harness.

Each takes a ws:// URL, connects, sends every text and binary message back as the same type
(as the testsuite's own test clients do), and returns once the connection has ended.

- :func:`iii_trio_echo_client`: our transport, the client under test.
- :func:`trio_websocket_echo_client`: a reference on trio-websocket (wsproto underneath, strict)
  that validates the harness.
- :func:`wsproto_echo_client`: wsproto driven directly, a second reference. trio-websocket (0.12)
  neither sends a close frame nor closes TCP when wsproto finds the server at fault (wsproto
  reports that as a ``CloseConnection`` event while the connection is still OPEN, and
  trio-websocket answers close events only once the peer has closed), so the cases in which
  the client must fail the connection fail with it; this client answers such an event with the
  close frame, so that wsproto's own checks can be measured.
- :func:`raw_echo_client`: a bare client built on the harness's own frames, with switches that
  break it on purpose, for the harness's tests of itself.
"""

from __future__ import annotations

import base64
import os
import struct
from typing import Final
from urllib.parse import urlsplit

import trio
import trio_websocket
import wsproto
import wsproto.events
from wsproto.connection import ConnectionState

from iii_trio._transport import TransportClosed, connect_websocket

from ._fuzzing_server import build_frame

__all__ = [
    "iii_trio_echo_client",
    "raw_echo_client",
    "trio_websocket_echo_client",
    "wsproto_echo_client",
]

#: Above the testsuite's largest message (16 MiB), so that no client refuses one for its size.
_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024


async def iii_trio_echo_client(url: str) -> None:
    """Echo client on ``iii_trio._transport``."""
    websocket = await connect_websocket(url)
    try:
        while True:
            for is_text, payload in await websocket.receive_messages():
                if is_text:
                    websocket.send_text(bytes(payload))
                else:
                    websocket.send_binary(bytes(payload))
            await websocket.flush()
    except TransportClosed:
        pass
    finally:
        await websocket.aclose()


async def trio_websocket_echo_client(url: str) -> None:
    """Echo client on trio-websocket, the reference."""
    async with trio_websocket.open_websocket_url(
        url, max_message_size=_MAX_MESSAGE_SIZE, connect_timeout=5, disconnect_timeout=5
    ) as websocket:
        try:
            while True:
                await websocket.send_message(await websocket.get_message())
        except trio_websocket.ConnectionClosed:
            pass


async def wsproto_echo_client(url: str) -> None:
    """Echo client driving wsproto's sans-I/O connection from a trio stream."""
    host, port, target = _split_url(url)
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    async with await trio.open_tcp_stream(host, port) as stream:

        async def send(event: wsproto.events.Event) -> None:
            await stream.send_all(connection.send(event))

        await send(wsproto.events.Request(host=f"{host}:{port}", target=target))
        text_parts: list[str] = []
        binary_parts: list[bytes] = []
        failed = False
        while True:
            for event in connection.events():
                if failed:
                    continue
                if isinstance(event, wsproto.events.RejectConnection):
                    raise ConnectionError(f"upgrade refused with status {event.status_code}")
                if isinstance(event, wsproto.events.TextMessage):
                    text_parts.append(event.data)
                    if event.message_finished:
                        await send(wsproto.events.Message(data="".join(text_parts)))
                        text_parts = []
                elif isinstance(event, wsproto.events.BytesMessage):
                    binary_parts.append(bytes(event.data))
                    if event.message_finished:
                        await send(wsproto.events.Message(data=b"".join(binary_parts)))
                        binary_parts = []
                elif isinstance(event, wsproto.events.Ping):
                    await send(event.response())
                elif isinstance(event, wsproto.events.CloseConnection):
                    if connection.state is ConnectionState.OPEN:
                        # wsproto found the server at fault: fail the connection with a close
                        # frame, then wait for the server to close TCP; its frames no longer
                        # count (wsproto's parser stops at the fault).
                        failed = True
                        await send(wsproto.events.CloseConnection(event.code, event.reason))
                    elif connection.state is ConnectionState.REMOTE_CLOSING:
                        await send(event.response())
            data = await stream.receive_some(65536)
            if not data:
                return
            if not failed:
                connection.receive_data(data)


def _split_url(url: str) -> tuple[str, int, str]:
    """Host, port and request target of a ws:// URL."""
    parts = urlsplit(url)
    target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
    return parts.hostname or "127.0.0.1", parts.port or 80, target


_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0, 1, 2, 8, 9, 10


async def raw_echo_client(
    url: str,
    *,
    echo: bool = True,
    check_utf8: bool = True,
    answer_close: bool = True,
    read: bool = True,
) -> None:
    """A bare echo client that checks nothing but what its switches say.

    It answers pings, echoes messages (unless ``echo`` is off), fails the connection with 1007
    on invalid UTF-8 text (unless ``check_utf8`` is off) and answers a close frame with the
    same code before closing TCP (unless ``answer_close`` is off: then it just closes TCP).
    With ``read`` off it stops reading after the upgrade and never returns: a stuck client.
    """
    host, port, target = _split_url(url)
    async with await trio.open_tcp_stream(host, port) as stream:
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        await stream.send_all(
            (
                f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode("ascii")
        )
        buffer = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
        if not buffer.startswith(b"HTTP/1.1 101 "):
            raise ConnectionError(f"upgrade refused: {bytes(buffer[:end])!r}")
        del buffer[: end + 4]
        if not read:
            await trio.sleep_forever()

        async def send(opcode: int, payload: bytes) -> None:
            await stream.send_all(build_frame(opcode, payload, mask_key=os.urandom(4)))

        message: list[bytes] = []
        message_is_text = False
        closing = False
        while True:
            frame = _next_frame(buffer)
            if frame is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
                continue
            fin, opcode, payload = frame
            if opcode == _CLOSE:
                if answer_close and not closing:
                    await send(_CLOSE, payload[:2])
                return
            if closing:
                continue
            if opcode == _PING:
                await send(_PONG, payload)
            elif opcode in (_TEXT, _BINARY, _CONTINUATION):
                if opcode != _CONTINUATION:
                    message, message_is_text = [], opcode == _TEXT
                message.append(payload)
                if not fin:
                    continue
                data = b"".join(message)
                if message_is_text and check_utf8 and not _is_utf8(data):
                    await send(_CLOSE, struct.pack("!H", 1007))
                    closing = True
                elif echo:
                    await send(_TEXT if message_is_text else _BINARY, data)


def _next_frame(buffer: bytearray) -> tuple[bool, int, bytes] | None:
    """Take the first whole (unmasked, server-to-client) frame out of ``buffer``, if any."""
    if len(buffer) < 2:
        return None
    length, start = buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,), start = struct.unpack_from("!H", buffer, 2), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,), start = struct.unpack_from("!Q", buffer, 2), 10
    if len(buffer) < start + length:
        return None
    fin, opcode = bool(buffer[0] & 0x80), buffer[0] & 0x0F
    payload = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return fin, opcode, payload


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
