"""The fuzzing server: plays one :class:`~._cases.Case` against a WebSocket client and judges
it the way the Autobahn testsuite's fuzzing server does.

It uses no WebSocket library, so that it shares no code (and no bugs) with the clients it
tests: trio TCP sockets, the HTTP upgrade read and answered here, frames built and parsed here.

Theory of operation. The rules restate those of the testsuite's fuzzing server (its ``Case``
base class and autobahn's ``WebSocketProtocol``, set up as the testsuite sets it up: a failed
connection is closed with a close frame, not dropped):

- The connection is OPEN once the server has answered the upgrade (within
  :data:`OPEN_HANDSHAKE_TIMEOUT` of the TCP connection). The case's steps then run; sends are
  queued and one writer task writes them in order.
- Whoever sends the first close frame *closed* the connection. The server's close frame makes
  it CLOSING and gives the client :data:`CLOSE_HANDSHAKE_TIMEOUT` to answer with its own; the
  answer makes the close *clean*, and the server then drops TCP at once. A close frame from the
  client while OPEN is answered with 1000 and the server drops TCP once that is written: clean
  too. If the client closes TCP before the closing handshake is done, the close is unclean.
- Frames from the client are checked as the testsuite checks them (masking, reserved bits and
  opcodes, control frame rules, fragmentation, minimal lengths, UTF-8 of text and close
  reasons, close codes). A bad frame fails the connection: close 1002 or 1007 while OPEN (the
  server then closed it), TCP dropped if the server is already closing or more data arrives.
- What the client sends back is recorded: each complete data message (unless the server failed
  the connection), each pong, and the close frame's code. Pings are answered. Once everything
  received equals every expected outcome, the server closes with the case's first close code.
  (The 9.x cases check each echo's type and length instead, and close after the last one.)
- The case ends when TCP is gone. The behaviour verdict compares the events received with each
  expected outcome; the close verdict checks, in this order, who closed, whether it was clean
  when it must be, and the client's close code.

The timers (``KillAfter``, ``CloseAfter``, the close handshake timeout) end every case in a few
seconds whatever the client does; a limit computed from the case's steps is a last resort
against a bug here. The client gets :data:`CLIENT_EXIT_GRACE` seconds to return after the
connection ends, then is cancelled.
"""

from __future__ import annotations

import base64
import codecs
import enum
import hashlib
import struct
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeAlias

import attrs
import trio

from ._cases import (
    Behavior,
    Case,
    CloseAfter,
    CloseBehavior,
    Event,
    KillAfter,
    Message,
    Pong,
    SendClose,
    SendFrame,
    SendFrameHead,
    SendMessage,
    SendRaw,
    Step,
    Timeout,
    Wait,
    WaitWhileOpen,
)

__all__ = [
    "CLIENT_EXIT_GRACE",
    "CLOSE_HANDSHAKE_TIMEOUT",
    "OPEN_HANDSHAKE_TIMEOUT",
    "CaseResult",
    "EchoClient",
    "apply_mask",
    "build_frame",
    "frame_head",
    "run_case",
    "run_cases",
]

#: An echo client under test: connects to the URL, echoes every message, returns at the end.
EchoClient: TypeAlias = Callable[[str], Awaitable[None]]

#: How long the client has from its TCP connection to finishing the upgrade (as the testsuite).
OPEN_HANDSHAKE_TIMEOUT: Final = 5.0
#: How long the client has to answer the server's close frame (as the testsuite).
CLOSE_HANDSHAKE_TIMEOUT: Final = 1.0
#: How long the client has to return once the TCP connection is gone.
CLIENT_EXIT_GRACE: Final = 2.0
#: How long a close frame answering the client's may take to go out before TCP is dropped.
_FLUSH_TIMEOUT: Final = 2.0

_RECEIVE_SIZE: Final = 256 * 1024
_MAX_REQUEST_SIZE: Final = 64 * 1024
_WEBSOCKET_GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SERVER_NAME: Final = "iii-trio-conformance"

_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0, 1, 2, 8, 9, 10
_NORMAL, _GOING_AWAY, _PROTOCOL_ERROR, _INVALID_PAYLOAD = 1000, 1001, 1002, 1007
#: The close codes below 3000 a close frame may carry.
_ALLOWED_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})

#: Behaviour and close verdicts that count as a pass.
PASSING_BEHAVIORS: Final = frozenset({Behavior.OK, Behavior.NON_STRICT, Behavior.INFORMATIONAL})
PASSING_CLOSE_BEHAVIORS: Final = frozenset({CloseBehavior.OK, CloseBehavior.INFORMATIONAL})


# -- frames ------------------------------------------------------------------------------------


def apply_mask(data: bytes | bytearray, key: bytes) -> bytes:
    """XOR ``data`` with the 4-octet masking ``key`` repeated (masking and unmasking alike)."""
    length = len(data)
    if not length:
        return b""
    # One big-integer XOR instead of a loop over octets: fast enough for 16 MiB messages.
    repeated_key = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(data, "big") ^ int.from_bytes(repeated_key, "big")
    return masked.to_bytes(length, "big")


def frame_head(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mask_key: bytes | None = None
) -> bytes:
    """The head of a frame: flags, opcode, the shortest length encoding, the masking key."""
    first = (0x80 if fin else 0) | (rsv & 0x07) << 4 | opcode & 0x0F
    mask_bit = 0x80 if mask_key is not None else 0
    if length <= 125:
        head = bytes((first, mask_bit | length))
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    return head if mask_key is None else head + mask_key


def build_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask_key: bytes | None = None
) -> bytes:
    """A whole frame; masked when ``mask_key`` is given (as a client's frames must be)."""
    head = frame_head(opcode, len(payload), fin=fin, rsv=rsv, mask_key=mask_key)
    return head + (payload if mask_key is None else apply_mask(payload, mask_key))


def _repeated(payload: bytes, length: int) -> bytes:
    """``payload`` repeated and cut to ``length`` octets."""
    if not payload:
        return b""
    return (payload * (length // len(payload) + 1))[:length]


def _is_valid_close_code(code: int) -> bool:
    return 1000 <= code <= 4999 and (code >= 3000 or code in _ALLOWED_CLOSE_CODES)


# -- the opening handshake ---------------------------------------------------------------------


@attrs.frozen
class _Upgrade:
    """What the client sent before its first frame: the request, and any octets after it."""

    request: str
    key: str | None
    refusal: str | None
    leftover: bytes


async def _read_upgrade(stream: trio.SocketStream) -> _Upgrade | None:
    """Read the client's upgrade request; None if the client closed TCP before finishing it."""
    received = bytearray()
    while (end := received.find(b"\r\n\r\n")) < 0:
        if len(received) > _MAX_REQUEST_SIZE:
            return _Upgrade(bytes(received[:200]).decode("latin-1"), None, "request too large", b"")
        data = await stream.receive_some(_RECEIVE_SIZE)
        if not data:
            return None
        received += data
    request = bytes(received[:end]).decode("latin-1")
    key, refusal = _check_upgrade(request)
    return _Upgrade(request, key, refusal, bytes(received[end + 4 :]))


def _check_upgrade(request: str) -> tuple[str | None, str | None]:
    """The client's Sec-WebSocket-Key, or why the request is not a valid upgrade."""
    request_line, *header_lines = request.split("\r\n")
    method, _, rest = request_line.partition(" ")
    if method != "GET" or not rest.endswith(" HTTP/1.1"):
        return None, f"not a GET HTTP/1.1 request: {request_line!r}"
    headers: dict[str, str] = {}
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator:
            return None, f"malformed header line {line!r}"
        name = name.strip().lower()
        # Repeated headers are combined, as HTTP allows.
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()

    def tokens(name: str) -> set[str]:
        return {token.strip().lower() for token in headers.get(name, "").split(",")}

    key = headers.get("sec-websocket-key", "")
    try:
        key_is_valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        key_is_valid = False
    if "host" not in headers:
        return None, "no Host header"
    if "websocket" not in tokens("upgrade"):
        return None, "no 'Upgrade: websocket' header"
    if "upgrade" not in tokens("connection"):
        return None, "no 'Connection: Upgrade' header"
    if headers.get("sec-websocket-version") != "13":
        return None, "no 'Sec-WebSocket-Version: 13' header"
    if not key_is_valid:
        return None, f"invalid Sec-WebSocket-Key {key!r}"
    return key, None


def _accept_response(key: str) -> bytes:
    digest = hashlib.sha1((key + _WEBSOCKET_GUID).encode("ascii")).digest()
    accept = base64.b64encode(digest).decode("ascii")
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        f"Server: {_SERVER_NAME}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
        "\r\n"
    ).encode("ascii")


def _refusal_response(reason: str) -> bytes:
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.1 400 Bad Request\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii") + body


# -- results -----------------------------------------------------------------------------------


@attrs.frozen
class CaseResult:
    """The verdicts on one case, with what they are based on."""

    case: Case
    behavior: Behavior
    behavior_close: CloseBehavior
    #: Why the behaviour verdict is what it is.
    result: str
    #: Why the close verdict is what it is.
    result_close: str
    received: tuple[Event, ...]
    #: Whether the upgrade completed.
    was_open: bool
    #: Whether the server sent the first close frame.
    closed_by_server: bool
    #: Whether the server failed the connection (timer, or a bad frame from the client).
    failed_by_server: bool
    #: Whether the server, not the client, closed TCP.
    dropped_by_server: bool
    #: Whether the closing handshake completed (both close frames) before TCP closed.
    was_clean: bool
    not_clean_reason: str | None
    client_close_code: int | None
    client_close_reason: str | None
    server_close_code: int | None
    #: Seconds from the client's start to the end of the TCP connection.
    duration: float
    #: What the client raised, if it did not return normally.
    client_error: str | None
    #: Whether the client returned within the grace period after the connection ended.
    client_returned: bool
    #: What the server noticed along the way (bad frames, who closed TCP, ...).
    notes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.behavior in PASSING_BEHAVIORS and self.behavior_close in PASSING_CLOSE_BEHAVIORS

    def explain(self) -> str:
        """Both verdicts with their reasons, what came back and what the server noticed."""
        lines = [
            f"{self.case.id} ({self.case.description}): "
            f"behaviour {self.behavior}, close {self.behavior_close}",
            f"  behaviour: {self.result}",
            f"  close: {self.result_close}",
        ]
        if self.case.echo_check is None:
            lines.append(f"  expected: {_describe_expected(self.case)}")
            lines.append(f"  received: {_describe_events(self.received)}")
        closing = (
            f"closed by {'server' if self.closed_by_server else 'client'}, "
            f"{'clean' if self.was_clean else 'unclean'}"
        )
        if not self.was_clean and self.not_clean_reason:
            closing += f" ({self.not_clean_reason})"
        closing += f"; client close code {self.client_close_code}"
        if self.server_close_code is not None:
            closing += f", server close code {self.server_close_code}"
        lines.append(f"  connection: {closing}; {self.duration:.2f} s")
        lines.extend(f"  note: {note}" for note in self.notes)
        if self.client_error is not None:
            lines.append(f"  client raised: {self.client_error}")
        if not self.client_returned:
            lines.append(f"  client did not return within {CLIENT_EXIT_GRACE} s: cancelled")
        return "\n".join(lines)


def _describe_events(events: Iterable[Event]) -> str:
    return "[" + ", ".join(repr(event) for event in events) + "]"


def _describe_expected(case: Case) -> str:
    return " or ".join(
        f"{behavior}: {_describe_events(events)}" for behavior, events in case.expected.items()
    )


# -- one case, server side ---------------------------------------------------------------------


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _CaseServer:
    """The server's side of one case on one accepted TCP connection."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.state = _State.CLOSED  # until the upgrade is answered
        self.was_open = False
        self.closed_by_me = False
        self.failed_by_me = False
        self.dropped_by_me = False
        self.was_clean = False
        self.not_clean_reason: str | None = None
        self.remote_close_code: int | None = None
        self.remote_close_reason: str | None = None
        self.local_close_code: int | None = None
        self.received: list[Event] = []
        self.behavior = Behavior.FAILED
        if case.echo_check is None:
            self.result = "Actual events differ from any expected."
        else:
            self.result = f"No echo before the server gave up ({_wait_of(case):g} s)."
        self.notes: list[str] = []
        #: Frames sent, per opcode.
        self.transmitted: Counter[int] = Counter()
        #: Echoes accepted so far (9.x).
        self.echoes = 0
        # Incoming frames.
        self._buffer = bytearray()
        self._inside_message = False
        self._message_binary = False
        self._message_parts: list[bytes] = []
        self._utf8: codecs.IncrementalDecoder | None = None
        #: Set once a frame from the client was refused: the server reads no further frames.
        self._refused: tuple[int, str] | None = None
        # Outgoing octets, each with whether to let the client read it before what follows.
        self._outgoing: deque[tuple[bytes, bool]] = deque()
        self._output_queued = trio.Event()
        self._output_written = trio.Event()
        self._output_written.set()
        # The end of the connection.
        self._ended = trio.Event()
        self._abort = True
        self._nursery: trio.Nursery | None = None

    # -- running -------------------------------------------------------------------------------

    async def serve(self, stream: trio.SocketStream) -> None:
        """Answer the upgrade on ``stream``, play the case, and return once TCP is closed."""
        upgrade: _Upgrade | None = None
        try:
            with trio.move_on_after(OPEN_HANDSHAKE_TIMEOUT) as handshake_scope:
                upgrade = await _read_upgrade(stream)
                if upgrade is not None and upgrade.key is not None:
                    await stream.send_all(_accept_response(upgrade.key))
                elif upgrade is not None:
                    await stream.send_all(_refusal_response(upgrade.refusal or ""))
            if handshake_scope.cancelled_caught:
                self.notes.append(f"no upgrade request within {OPEN_HANDSHAKE_TIMEOUT:g} s")
            elif upgrade is None:
                self.notes.append("the client closed TCP during the opening handshake")
            elif upgrade.key is None:
                self.notes.append(f"refused the upgrade: {upgrade.refusal}")
            else:
                await self._play(stream, upgrade.leftover)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.notes.append(f"TCP failed during the opening handshake: {exc!r}")
        finally:
            await trio.aclose_forcefully(stream)

    async def _play(self, stream: trio.SocketStream, leftover: bytes) -> None:
        self.state = _State.OPEN
        self.was_open = True
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write_loop, stream)
            nursery.start_soon(self._read_loop, stream, leftover)
            nursery.start_soon(self._run_steps)
            with trio.move_on_after(self._time_limit()):
                await self._ended.wait()
            if not self._ended.is_set():
                self.notes.append("the case ran past its time limit: dropped (harness bug?)")
                self.drop_connection(abort=True)
            if not self._abort:
                with trio.move_on_after(_FLUSH_TIMEOUT):
                    await self._output_written.wait()
            nursery.cancel_scope.cancel()

    def _time_limit(self) -> float:
        """Longer than the case's own timers can take: a last resort, never the verdict."""
        waits = sum(
            step.seconds for step in self.case.steps if isinstance(step, Wait | WaitWhileOpen)
        )
        timers = [
            step.seconds for step in self.case.steps if isinstance(step, KillAfter | CloseAfter)
        ]
        return waits + max(timers, default=0) + CLOSE_HANDSHAKE_TIMEOUT + 5.0

    async def _run_steps(self) -> None:
        for step in self.case.steps:
            if isinstance(step, Wait):
                await trio.sleep(step.seconds)
                if self.state is _State.CLOSED:
                    return
            elif isinstance(step, WaitWhileOpen):
                await trio.sleep(step.seconds)
                if self.state is not _State.OPEN:
                    return
                self.received.append(Timeout(step.tag))
            elif isinstance(step, KillAfter):
                self._start_timer(step.seconds, self.fail_connection)
            elif isinstance(step, CloseAfter):
                self._start_timer(step.seconds, self.send_close)
            else:
                self._send_step(step)

    def _send_step(self, step: Step) -> None:
        if isinstance(step, SendFrame):
            payload = step.payload if step.length is None else _repeated(step.payload, step.length)
            self._send_frame(
                step.opcode, payload, fin=step.fin, rsv=step.rsv, sync=step.sync, chop=step.chop
            )
        elif isinstance(step, SendMessage):
            self._send_message(step)
        elif isinstance(step, SendFrameHead):
            if self.state is _State.OPEN:
                self.transmitted[step.opcode] += 1
                self._write(frame_head(step.opcode, step.length, fin=step.fin))
        elif isinstance(step, SendRaw):
            if self.state is _State.OPEN:
                self._write(step.data)
        elif isinstance(step, SendClose):
            self.send_close_frame(step.code, step.reason, is_reply=False)
        else:  # pragma: no cover - every step type is handled above
            raise AssertionError(f"unknown step {step!r}")

    def _start_timer(self, delay: float, callback: Callable[[], None]) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._call_later, delay, callback)

    async def _call_later(self, delay: float, callback: Callable[[], None]) -> None:
        await trio.sleep(delay)
        if self.state is not _State.CLOSED:
            callback()

    # -- sending -------------------------------------------------------------------------------

    def _send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        sync: bool = False,
        chop: int | None = None,
    ) -> None:
        # Frames go out even while closing, so that a case can send after its close frame.
        if self.state is _State.CLOSED:
            return
        self.transmitted[opcode] += 1
        frame = build_frame(opcode, payload, fin=fin, rsv=rsv)
        if chop:
            for start in range(0, len(frame), chop):
                self._write(frame[start : start + chop], let_client_read=True)
        else:
            self._write(frame, let_client_read=sync)

    def _send_message(self, step: SendMessage) -> None:
        if self.state is not _State.OPEN:
            return
        opcode = _BINARY if step.binary else _TEXT
        payload, size = step.payload, step.fragment_size
        if size is None or len(payload) <= size:
            self._send_frame(opcode, payload)
            return
        for start in range(0, len(payload), size):
            end = start + size
            self._send_frame(opcode, payload[start:end], fin=end >= len(payload))
            opcode = _CONTINUATION

    def _write(self, data: bytes, *, let_client_read: bool = False) -> None:
        self._outgoing.append((data, let_client_read))
        self._output_queued.set()
        if self._output_written.is_set():
            self._output_written = trio.Event()

    async def _write_loop(self, stream: trio.SocketStream) -> None:
        while True:
            if not self._outgoing:
                self._output_written.set()
                self._output_queued = trio.Event()
                await self._output_queued.wait()
                continue
            data, let_client_read = self._outgoing.popleft()
            if not let_client_read:
                # Consecutive plain writes go out together, as they would from one buffer.
                pieces = [data]
                while self._outgoing and not self._outgoing[0][1]:
                    pieces.append(self._outgoing.popleft()[0])
                data = b"".join(pieces)
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._connection_lost(f"writing to the client failed: {exc!r}")
                return
            if let_client_read:
                # The client runs in this same trio loop. After the first checkpoint, the I/O
                # poll has woken its reader, which then runs in the same round as the second:
                # it takes these octets before the next ones are written, so they arrive apart.
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()

    # -- closing (autobahn's names and rules) --------------------------------------------------

    def send_close(self) -> None:
        """Start the closing handshake with a close frame without a code."""
        self.send_close_frame(None, None, is_reply=False)

    def send_close_frame(self, code: int | None, reason: bytes | None, *, is_reply: bool) -> None:
        if self.state is not _State.OPEN:
            return
        payload = b"" if code is None else struct.pack("!H", code)
        self._send_frame(_CLOSE, payload + (reason or b""))
        self.state = _State.CLOSING
        self.closed_by_me = not is_reply
        self.local_close_code = code
        if self.closed_by_me:
            self._start_timer(CLOSE_HANDSHAKE_TIMEOUT, self._close_handshake_timed_out)

    def fail_connection(self, code: int = _GOING_AWAY, reason: str = "Going Away") -> None:
        if self.state is _State.CLOSED:
            return
        self.failed_by_me = True
        if self.state is _State.OPEN:
            self.send_close_frame(code, reason.encode()[:123], is_reply=False)
        else:
            self.drop_connection(abort=False)

    def drop_connection(self, *, abort: bool) -> None:
        """Close TCP: at once (``abort``), or once what is queued is written."""
        if self.state is _State.CLOSED:
            return
        self.dropped_by_me = True
        self.state = _State.CLOSED
        self._abort = abort
        self._ended.set()

    def _close_handshake_timed_out(self) -> None:
        self.was_clean = False
        self.not_clean_reason = "peer did not respond (in time) in closing handshake"
        self.drop_connection(abort=True)

    def _connection_lost(self, how: str) -> None:
        if self.state is _State.CLOSED:
            return
        self.notes.append(how)
        self.state = _State.CLOSED
        if not self.was_clean and self.not_clean_reason is None:
            self.not_clean_reason = (
                "peer dropped the TCP connection without previous WebSocket closing handshake"
            )
        self._ended.set()

    # -- receiving -----------------------------------------------------------------------------

    async def _read_loop(self, stream: trio.SocketStream, leftover: bytes) -> None:
        if leftover:
            self._data_received(leftover)
        while self.state is not _State.CLOSED:
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._connection_lost(f"reading from the client failed: {exc!r}")
                return
            if not data:
                self._connection_lost("the client closed TCP")
                return
            self._data_received(data)

    def _data_received(self, data: bytes) -> None:
        if self.state is _State.CLOSED:
            return
        if self._refused is not None:
            # Autobahn parses the refused frame again with the new data and fails again; as
            # the server is already closing by then, that drops TCP.
            self.fail_connection(*self._refused)
            return
        self._buffer += data
        self._parse_frames()

    def _parse_frames(self) -> None:
        buffer = self._buffer
        position = 0
        while self.state is not _State.CLOSED and self._refused is None:
            available = len(buffer) - position
            if available < 2:
                break
            first, second = buffer[position], buffer[position + 1]
            fin, rsv, opcode = bool(first & 0x80), first >> 4 & 0x07, first & 0x0F
            masked, short_length = bool(second & 0x80), second & 0x7F
            problem = self._check_frame_start(fin, rsv, opcode, masked, short_length)
            if problem is not None:
                self._refuse(_PROTOCOL_ERROR, problem)
                break
            offset = position + 2
            if short_length == 126:
                if available < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset)
                offset += 2
                if length < 126:
                    self._refuse(_PROTOCOL_ERROR, "frame length not in its shortest encoding")
                    break
            elif short_length == 127:
                if available < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset)
                offset += 8
                if length >= 2**63 or length < 65536:
                    self._refuse(_PROTOCOL_ERROR, "frame length not in its shortest encoding")
                    break
            else:
                length = short_length
            if len(buffer) - offset < 4 + length:
                break  # the whole frame has not arrived yet
            mask_key = bytes(buffer[offset : offset + 4])
            offset += 4
            payload = apply_mask(buffer[offset : offset + length], mask_key)
            position = offset + length
            self._frame_received(fin, opcode, payload)
        del buffer[:position]

    def _check_frame_start(
        self, fin: bool, rsv: int, opcode: int, masked: bool, short_length: int
    ) -> str | None:
        """What is wrong with a frame from its first two octets, in the testsuite's order."""
        if rsv:
            return f"RSV = {rsv} and no extension negotiated"
        if not masked:
            return "unmasked client-to-server frame"
        if opcode >= 8:
            if not fin:
                return "fragmented control frame"
            if short_length > 125:
                return "control frame with payload length > 125 octets"
            if opcode not in (_CLOSE, _PING, _PONG):
                return f"control frame using reserved opcode {opcode}"
            if opcode == _CLOSE and short_length == 1:
                return "close frame with a 1-octet payload"
            return None
        if opcode not in (_CONTINUATION, _TEXT, _BINARY):
            return f"data frame using reserved opcode {opcode}"
        if opcode == _CONTINUATION and not self._inside_message:
            return "continuation frame outside a fragmented message"
        if opcode != _CONTINUATION and self._inside_message:
            return "new data frame inside a fragmented message"
        return None

    def _refuse(self, code: int, problem: str) -> None:
        self.notes.append(f"the client sent a bad frame: {problem}")
        self._refused = (code, problem)
        self.fail_connection(code, problem)

    def _frame_received(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == _CLOSE:
            self._close_frame_received(payload)
            return
        if opcode == _PING:
            if self.state is _State.OPEN:
                self._send_frame(_PONG, payload)
            return
        if opcode == _PONG:
            self._record(Pong(payload))
            return
        if not self._inside_message:
            self._inside_message = True
            self._message_binary = opcode == _BINARY
            self._message_parts = []
            self._utf8 = None if self._message_binary else codecs.getincrementaldecoder("utf-8")()
        if self._utf8 is not None:
            try:
                self._utf8.decode(payload, final=fin)
            except UnicodeDecodeError:
                self._refuse(_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
                return
        self._message_parts.append(payload)
        if fin:
            self._inside_message = False
            message = b"".join(self._message_parts)
            self._message_parts = []
            if not self.failed_by_me:
                self._message_received(message, self._message_binary)

    def _close_frame_received(self, payload: bytes) -> None:
        code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
        self.remote_close_code = code
        # Like autobahn, a bad code or reason fails the connection but the close frame still
        # counts as one: a reply to the server's, or the client's own that closes.
        if code is not None and not _is_valid_close_code(code):
            self.notes.append(f"the client closed with invalid code {code}")
            self.fail_connection(_PROTOCOL_ERROR, f"invalid close code {code}")
        if len(payload) > 2:
            try:
                self.remote_close_reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self.remote_close_reason = payload[2:].decode("utf-8", errors="replace")
                self.notes.append("the client closed with an invalid UTF-8 reason")
                self.fail_connection(_INVALID_PAYLOAD, "invalid close reason (non-UTF-8 payload)")
        if self.state is _State.CLOSING:
            self.was_clean = True
            self.drop_connection(abort=True)
        elif self.state is _State.OPEN:
            self.was_clean = True
            self.send_close_frame(_NORMAL, None, is_reply=True)
            self.drop_connection(abort=False)
        else:
            self.was_clean = False

    def _record(self, event: Event) -> None:
        self.received.append(event)
        self._close_when_done()

    def _close_when_done(self) -> None:
        received = tuple(self.received)
        if all(received == events for events in self.case.expected.values()) and (
            self.case.close.by_server and not self.case.suppress_close
        ):
            self.send_close_frame(self.case.close.codes[0], None, is_reply=False)

    def _message_received(self, payload: bytes, binary: bool) -> None:
        check = self.case.echo_check
        if check is None:
            self._record(Message(payload, binary))
            return
        if binary != check.binary or len(payload) != check.length:
            kind = "binary" if binary else "text"
            self.behavior = Behavior.FAILED
            self.result = f"An echo differs in type or length: {kind}, {len(payload)} octets."
            self.send_close_frame(_NORMAL, None, is_reply=False)
            return
        self.echoes += 1
        if self.echoes < check.count:
            self.result = (
                f"Received {self.echoes} of {check.count} echoes before the server gave up "
                f"({_wait_of(self.case):g} s)."
            )
            self._send_step(self.case.steps[0])
            return
        self.behavior = Behavior.OK
        self.result = (
            "Received the echo in time."
            if check.count == 1
            else f"Received all {check.count} echoes in time."
        )
        self.send_close_frame(_NORMAL, None, is_reply=False)

    # -- the verdicts --------------------------------------------------------------------------

    def verdicts(self) -> tuple[Behavior, str, CloseBehavior, str]:
        case = self.case
        behavior, result = self.behavior, self.result
        received = tuple(self.received)
        for outcome, events in case.expected.items():
            if received == events:
                behavior, result = outcome, "Actual events match at least one expected."
                break
        expected_close = case.close
        if not self.was_open:
            close, close_result = (
                CloseBehavior.FAILED,
                "The WebSocket opening handshake was never completed!",
            )
        elif expected_close.by_server != self.closed_by_me:
            close, close_result = (
                CloseBehavior.FAILED,
                "The connection was failed by the wrong endpoint",
            )
        elif expected_close.require_clean and not self.was_clean:
            close, close_result = (
                CloseBehavior.UNCLEAN,
                "The spec requires the connection to be failed cleanly here",
            )
        elif (
            self.remote_close_code is not None
            and self.remote_close_code not in expected_close.codes
        ):
            codes = ",".join(str(code) for code in expected_close.codes)
            close, close_result = (
                CloseBehavior.WRONG_CODE,
                f"The close code should have been {codes} or empty",
            )
        else:
            close, close_result = CloseBehavior.OK, "Connection was properly closed"
        if (
            self.was_open
            and expected_close.wrong_endpoint_is_fatal
            and expected_close.by_server != self.closed_by_me
        ):
            behavior = Behavior.FAILED
            result = "The client did not fail the connection: the server had to close it."
        if case.wrong_code_fails and close is CloseBehavior.WRONG_CODE:
            behavior, result = Behavior.FAILED, close_result
        if case.transmitted_frames is not None:
            sent = {opcode: self.transmitted[opcode] for opcode in case.transmitted_frames}
            if not self.was_open:
                behavior, result = Behavior.FAILED, "WebSocket connection was never open"
            elif sent != dict(case.transmitted_frames):
                behavior = Behavior.FAILED
                result = f"Frames transmitted {sent} differ from {dict(case.transmitted_frames)}."
        if case.informational:
            if Behavior.NON_STRICT not in case.expected:
                result = "Actual events are undefined by the spec."
            elif behavior is Behavior.OK:
                result = "The message was echoed before the close was processed."
            elif behavior is Behavior.NON_STRICT:
                result = "The close was processed before the message could be echoed."
            behavior, close = Behavior.INFORMATIONAL, CloseBehavior.INFORMATIONAL
        return behavior, result, close, close_result


def _wait_of(case: Case) -> float:
    return max((step.seconds for step in case.steps if isinstance(step, CloseAfter)), default=0)


# -- running cases -----------------------------------------------------------------------------


@attrs.define
class _ClientRun:
    finished: trio.Event = attrs.field(factory=trio.Event)
    error: str | None = None


async def _run_client(client: EchoClient, url: str, run: _ClientRun) -> None:
    try:
        await client(url)
    except Exception as exc:  # the client's failure is a finding, not the harness's
        frames = traceback.extract_tb(exc.__traceback__)
        where = (
            f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
        )
        run.error = f"{type(exc).__name__}: {exc}{where}"
    finally:
        run.finished.set()


async def _accept_one(listener: trio.SocketListener, run: _ClientRun) -> trio.SocketStream | None:
    """The client's TCP connection; None if the client ended, or took too long, before it."""
    accepted: trio.SocketStream | None = None

    async def accept(cancel_scope: trio.CancelScope) -> None:
        nonlocal accepted
        accepted = await listener.accept()
        cancel_scope.cancel()

    with trio.move_on_after(OPEN_HANDSHAKE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept, nursery.cancel_scope)
            await run.finished.wait()
            # A client that connected and gave up at once is still in the backlog: take it.
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    return accepted


async def run_case(case: Case, client: EchoClient, *, agent: str = "client") -> CaseResult:
    """Play ``case`` against ``client``, on a listener of its own on 127.0.0.1."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/runCase?casetuple={case.id}&agent={agent}"
    run = _ClientRun()
    started = trio.current_time()
    server = _CaseServer(case)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_client, client, url, run)
        async with listener:
            stream = await _accept_one(listener, run)
        if stream is None:
            server.notes.append("the client never connected")
        else:
            await server.serve(stream)
        ended = trio.current_time()
        with trio.move_on_after(CLIENT_EXIT_GRACE):
            await run.finished.wait()
        client_returned = run.finished.is_set()
        nursery.cancel_scope.cancel()
    behavior, result, close, close_result = server.verdicts()
    return CaseResult(
        case=case,
        behavior=behavior,
        behavior_close=close,
        result=result,
        result_close=close_result,
        received=tuple(server.received),
        was_open=server.was_open,
        closed_by_server=server.closed_by_me,
        failed_by_server=server.failed_by_me,
        dropped_by_server=server.dropped_by_me,
        was_clean=server.was_clean,
        not_clean_reason=server.not_clean_reason,
        client_close_code=server.remote_close_code,
        client_close_reason=server.remote_close_reason,
        server_close_code=server.local_close_code,
        duration=ended - started,
        client_error=run.error,
        client_returned=client_returned,
        notes=tuple(server.notes),
    )


async def run_cases(
    cases: Iterable[Case],
    client: EchoClient,
    *,
    concurrency: int = 16,
    heavy_concurrency: int = 1,
    agent: str = "client",
    on_result: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Run ``cases`` and return their results in the same order.

    Most cases spend their time waiting on timers, so up to ``concurrency`` of them run at
    once. The heavy ones (9.x: large messages, many round trips) run afterwards,
    ``heavy_concurrency`` at a time: they keep the CPU busy, which would delay the other cases'
    replies past their timers, and running them one by one keeps their durations meaningful.
    """
    cases = list(cases)
    results: dict[str, CaseResult] = {}

    async def run_all(selected: list[Case], limit: int) -> None:
        limiter = trio.CapacityLimiter(max(1, limit))

        async def run_one(case: Case) -> None:
            async with limiter:
                result = await run_case(case, client, agent=agent)
            results[case.id] = result
            if on_result is not None:
                on_result(result)

        async with trio.open_nursery() as nursery:
            for case in selected:
                nursery.start_soon(run_one, case)

    await run_all([case for case in cases if not case.heavy], concurrency)
    await run_all([case for case in cases if case.heavy], heavy_concurrency)
    return [results[case.id] for case in cases]
