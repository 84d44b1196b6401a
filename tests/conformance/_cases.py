"""The client test cases of groups 1 to 10 of the Autobahn testsuite, as data.

Each :class:`Case` says what the fuzzing server sends (``steps``, played in order), which events
it expects back from an echo client for each acceptable outcome (``expected``), and how the
connection must end (``close``). The server (``_fuzzing_server``) plays and judges them; nothing
here does I/O.

The facts (payloads, framing, chopping, pauses, timers, expected echoes and close codes) are
those of the ``autobahntestsuite/case/`` modules of crossbario/autobahn-testsuite, which this
table restates case by case: 301 cases, groups 1-7, 9 and 10 (there is no group 8; 9.9.1 is not
in the testsuite's run list; 12.x and 13.x, compression, are left out). Descriptions are short
restatements, not the testsuite's text.

One deliberate deviation: the 9.x cases give the client 10 to 1000 seconds (``WAITSECS``) to
echo; here a case waits at most :data:`PERFORMANCE_WAIT_CAP` seconds, so that a stuck client
costs seconds, not minutes. A loopback echo of the largest message (16 MiB) takes well under it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import TypeAlias

import attrs

__all__ = [
    "CASES",
    "CASES_BY_ID",
    "PERFORMANCE_WAIT_CAP",
    "Behavior",
    "Case",
    "CloseAfter",
    "CloseBehavior",
    "EchoCheck",
    "Event",
    "ExpectedClose",
    "KillAfter",
    "Message",
    "Pong",
    "SendClose",
    "SendFrame",
    "SendFrameHead",
    "SendMessage",
    "SendRaw",
    "Step",
    "Timeout",
    "Wait",
    "WaitWhileOpen",
]

#: The longest a 9.x case waits for its echoes (the testsuite's own waits are 10 to 1000 s).
PERFORMANCE_WAIT_CAP = 10.0


class Behavior(str, enum.Enum):
    """How the client behaved: the testsuite's first verdict on a case."""

    OK = "OK"
    #: Conformant, but not what a SHOULD of the spec (or the canonical behaviour) asks for.
    NON_STRICT = "NON-STRICT"
    FAILED = "FAILED"
    #: The spec leaves the behaviour open; recorded, not judged.
    INFORMATIONAL = "INFORMATIONAL"
    #: The client does not implement the feature tested (only the compression cases, 12.x and
    #: 13.x, give it; none of the cases here can).
    UNIMPLEMENTED = "UNIMPLEMENTED"

    def __str__(self) -> str:
        return self.value


class CloseBehavior(str, enum.Enum):
    """How the connection ended: the testsuite's second verdict on a case."""

    OK = "OK"
    #: The wrong endpoint started the closing handshake, or the handshake never completed.
    FAILED = "FAILED"
    #: The case requires a completed closing handshake and the client dropped TCP without one.
    UNCLEAN = "UNCLEAN"
    #: The client's close frame carried a code the case does not allow.
    WRONG_CODE = "WRONG CODE"
    INFORMATIONAL = "INFORMATIONAL"

    def __str__(self) -> str:
        return self.value


def _abbreviated(payload: bytes) -> str:
    if len(payload) <= 40:
        return repr(payload)
    return f"<{len(payload)} octets: {payload[:24]!r}...>"


# -- what the server records -------------------------------------------------------------------


@attrs.frozen
class Message:
    """A data message the client sent (its echo)."""

    payload: bytes = attrs.field(repr=_abbreviated)
    binary: bool


@attrs.frozen
class Pong:
    """A pong the client sent."""

    payload: bytes = attrs.field(repr=_abbreviated)


@attrs.frozen
class Timeout:
    """A :class:`WaitWhileOpen` pause ran out with the connection still open."""

    tag: str


Event: TypeAlias = Message | Pong | Timeout


# -- what the server does ----------------------------------------------------------------------


@attrs.frozen
class SendFrame:
    """One frame, written as given even when invalid on purpose.

    ``length`` repeats ``payload`` up to that many octets. ``chop`` writes the frame in pieces of
    that many octets, letting the client read each one before the next; ``sync`` does the same
    with the whole frame (it goes out on its own).
    """

    opcode: int
    payload: bytes = attrs.field(default=b"", repr=_abbreviated)
    fin: bool = True
    rsv: int = 0
    length: int | None = None
    chop: int | None = None
    sync: bool = False


@attrs.frozen
class SendMessage:
    """A data message, split into frames of ``fragment_size`` octets when it is longer than
    that. Skipped once the connection is no longer open."""

    payload: bytes = attrs.field(repr=_abbreviated)
    binary: bool = False
    fragment_size: int | None = None


@attrs.frozen
class SendFrameHead:
    """The head of a frame whose payload follows in :class:`SendRaw` steps, across pauses."""

    opcode: int
    length: int
    fin: bool = False


@attrs.frozen
class SendRaw:
    """Octets written as they are (part of a frame's payload). Skipped once the connection is
    no longer open."""

    data: bytes = attrs.field(repr=_abbreviated)


@attrs.frozen
class SendClose:
    """A close frame that starts the closing handshake, with a code and reason that may be
    invalid on purpose: the connection becomes CLOSING and the client has the close handshake
    timeout to answer. Ignored unless the connection is open."""

    code: int | None = None
    reason: bytes | None = None


@attrs.frozen
class Wait:
    """Pause, then go on unless the connection is gone."""

    seconds: float


@attrs.frozen
class WaitWhileOpen:
    """Pause; then, if the connection is still open, record ``Timeout(tag)`` and go on; if not,
    stop here."""

    seconds: float
    tag: str


@attrs.frozen
class KillAfter:
    """Unless the connection has ended ``seconds`` from now, fail it then: a close frame 1001
    (Going Away) if it is still open, after which no more events are recorded; a dropped TCP
    connection if it is already closing. The steps after this one run at once."""

    seconds: float


@attrs.frozen
class CloseAfter:
    """Unless the connection has ended ``seconds`` from now, start the closing handshake then
    (a close frame without a code). The steps after this one run at once."""

    seconds: float


Step: TypeAlias = (
    SendFrame
    | SendMessage
    | SendFrameHead
    | SendRaw
    | SendClose
    | Wait
    | WaitWhileOpen
    | KillAfter
    | CloseAfter
)


# -- what is expected --------------------------------------------------------------------------


@attrs.frozen
class ExpectedClose:
    """How the connection must end."""

    #: Whether the server (True) or the client (False) starts the closing handshake. The server
    #: starts it as soon as it has received every event it expects, or when a timer runs out.
    by_server: bool
    #: The close codes the client may send; the server closes with the first.
    codes: tuple[int, ...]
    #: Whether the closing handshake must complete; if not, the client may drop TCP instead.
    require_clean: bool
    #: For invalid UTF-8: if the server had to start the closing handshake, the client never
    #: noticed the invalid text, so the case fails whatever the events.
    wrong_endpoint_is_fatal: bool = False


@attrs.frozen
class EchoCheck:
    """The 9.x verdict, instead of a list of events: each echo is checked for its type and
    length only (the testsuite does not compare contents), and the server closes once it has
    ``count`` of them, sending the case's first step again after each earlier one."""

    binary: bool
    length: int
    count: int = 1


@attrs.frozen
class Case:
    id: str
    description: str
    steps: tuple[Step, ...]
    close: ExpectedClose
    #: The events an echo client sends back, per outcome (OK and sometimes NON-STRICT).
    expected: Mapping[Behavior, tuple[Event, ...]] = attrs.field(factory=dict)
    #: Do not start the closing handshake on receiving the expected events (the case's own
    #: steps close, sometimes with a bad close frame).
    suppress_close: bool = False
    #: A close code outside ``close.codes`` fails the behaviour too (group 7).
    wrong_code_fails: bool = False
    #: The spec leaves the outcome open: both verdicts are INFORMATIONAL.
    informational: bool = False
    echo_check: EchoCheck | None = None
    #: Frames the server must have sent, per opcode (10.1.1 checks its own fragmentation).
    transmitted_frames: Mapping[int, int] | None = None

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def heavy(self) -> bool:
        """Large messages or many round trips: run alone, not alongside other cases."""
        return self.group == "9"


# -- the cases ---------------------------------------------------------------------------------

_NORMAL = 1000
_GOING_AWAY = 1001
_PROTOCOL_ERROR = 1002
_INVALID_PAYLOAD = 1007

_TEXT, _BINARY, _CLOSE, _PING, _PONG, _CONTINUATION = 1, 2, 8, 9, 10, 0

#: The client echoes, then the server closes with 1000 and the client answers.
_CLOSED_NORMALLY = ExpectedClose(by_server=True, codes=(_NORMAL,), require_clean=True)
#: The client must fail the connection (close 1002, or just drop TCP).
_FAILED_BY_CLIENT = ExpectedClose(by_server=False, codes=(_PROTOCOL_ERROR,), require_clean=False)
#: The client must fail the connection because of invalid UTF-8 (close 1007, or drop TCP).
_INVALID_UTF8 = ExpectedClose(
    by_server=False, codes=(_INVALID_PAYLOAD,), require_clean=False, wrong_endpoint_is_fatal=True
)

_OK = Behavior.OK
_NON_STRICT = Behavior.NON_STRICT

_HELLO = b"Hello, world!"
#: "κόσμε" in UTF-8.
_KOSME = bytes.fromhex("cebae1bdb9cf83cebcceb5")
#: Ends in a UTF-16 surrogate (U+D800), invalid in UTF-8 from its second octet.
_SURROGATE = bytes.fromhex("eda080")
_EDITED = b"edited"


def _echo(payload: bytes, *, binary: bool = False) -> dict[Behavior, tuple[Event, ...]]:
    return {_OK: (Message(payload, binary),)}


def _nothing() -> dict[Behavior, tuple[Event, ...]]:
    return {_OK: ()}


def _echo_or_nothing(payload: bytes) -> dict[Behavior, tuple[Event, ...]]:
    """The first message is echoed before the client fails the connection; failing before
    echoing it is conformant too."""
    return {_OK: (Message(payload, False),), _NON_STRICT: ()}


def _framing_cases() -> list[Case]:
    cases = []
    for subgroup, opcode, filler, kind in (
        (1, _TEXT, b"*", "text"),
        (2, _BINARY, b"\xfe", "binary"),
    ):
        binary = opcode == _BINARY
        sizes = ((0, 1), (125, 1), (126, 1), (127, 1), (128, 1), (65535, 10), (65536, 10))
        for number, (size, kill_after) in enumerate(sizes, start=1):
            payload = filler * size
            cases.append(
                Case(
                    f"1.{subgroup}.{number}",
                    f"{kind} message, {size}-octet payload",
                    (SendFrame(opcode, payload), KillAfter(kill_after)),
                    _CLOSED_NORMALLY,
                    _echo(payload, binary=binary),
                )
            )
        payload = filler * 65536
        cases.append(
            Case(
                f"1.{subgroup}.8",
                f"{kind} message, 65536-octet payload, written in pieces of 997 octets",
                (SendFrame(opcode, payload, chop=997), KillAfter(10)),
                _CLOSED_NORMALLY,
                _echo(payload, binary=binary),
            )
        )
    return cases


def _ping_cases() -> list[Case]:
    def pong_case(
        case_id: str, description: str, payload: bytes, *, chop: int | None = None
    ) -> Case:
        return Case(
            case_id,
            description,
            (SendFrame(_PING, payload, chop=chop), CloseAfter(2 if chop else 1)),
            _CLOSED_NORMALLY,
            {_OK: (Pong(payload),)},
        )

    ten_pings = [f"payload-{n}".encode() for n in range(10)]
    return [
        pong_case("2.1", "ping without payload", b""),
        pong_case("2.2", "ping with a small text payload", _HELLO),
        pong_case("2.3", "ping with a small binary payload", bytes.fromhex("00fffefdfcfb00ff")),
        pong_case("2.4", "ping with a 125-octet payload", b"\xfe" * 125),
        Case(
            "2.5",
            "ping with a 126-octet payload (control frames carry at most 125)",
            (SendFrame(_PING, b"\xfe" * 126), KillAfter(1)),
            _FAILED_BY_CLIENT,
            _nothing(),
        ),
        pong_case(
            "2.6", "ping with a 125-octet payload, written octet by octet", b"\xfe" * 125, chop=1
        ),
        Case(
            "2.7",
            "unsolicited pong without payload, then close",
            (SendFrame(_PONG), SendClose(_NORMAL), CloseAfter(1)),
            _CLOSED_NORMALLY,
            _nothing(),
        ),
        Case(
            "2.8",
            "unsolicited pong with payload, then close",
            (SendFrame(_PONG, b"unsolicited pong payload"), SendClose(_NORMAL), CloseAfter(1)),
            _CLOSED_NORMALLY,
            _nothing(),
        ),
        Case(
            "2.9",
            "unsolicited pong, then a ping: only the ping is answered",
            (
                SendFrame(_PONG, b"unsolicited pong payload"),
                SendFrame(_PING, b"ping payload"),
                CloseAfter(1),
            ),
            _CLOSED_NORMALLY,
            {_OK: (Pong(b"ping payload"),)},
        ),
        Case(
            "2.10",
            "10 pings with payloads: a pong for each",
            (*(SendFrame(_PING, payload) for payload in ten_pings), CloseAfter(3)),
            _CLOSED_NORMALLY,
            {_OK: tuple(Pong(payload) for payload in ten_pings)},
        ),
        Case(
            "2.11",
            "10 pings with payloads, written octet by octet: a pong for each",
            (*(SendFrame(_PING, payload, chop=1) for payload in ten_pings), CloseAfter(3)),
            _CLOSED_NORMALLY,
            {_OK: tuple(Pong(payload) for payload in ten_pings)},
        ),
    ]


def _reserved_bit_cases() -> list[Case]:
    def after_a_message(
        case_id: str, rsv: int, *, sync: bool = False, chop: int | None = None
    ) -> Case:
        how = " (frame by frame)" if sync else " (octet by octet)" if chop else ""
        return Case(
            case_id,
            f"text message, the same with RSV = {rsv}, then a ping{how}",
            (
                SendFrame(_TEXT, _HELLO, sync=sync, chop=chop),
                SendFrame(_TEXT, _HELLO, rsv=rsv, sync=sync, chop=chop),
                SendFrame(_PING, sync=sync, chop=chop),
                KillAfter(1),
            ),
            _FAILED_BY_CLIENT,
            _echo_or_nothing(_HELLO),
        )

    def alone(case_id: str, description: str, frame: SendFrame) -> Case:
        return Case(case_id, description, (frame, KillAfter(1)), _FAILED_BY_CLIENT, _nothing())

    return [
        alone("3.1", "text message with RSV = 1", SendFrame(_TEXT, _HELLO, rsv=1)),
        after_a_message("3.2", 2),
        after_a_message("3.3", 3, sync=True),
        after_a_message("3.4", 4, chop=1),
        alone(
            "3.5",
            "binary message with RSV = 5",
            SendFrame(_BINARY, bytes.fromhex("00fffefdfcfb00ff"), rsv=5),
        ),
        # The testsuite describes 3.6 as a ping, but sends a binary frame (opcode 2).
        alone("3.6", "binary frame with RSV = 6", SendFrame(_BINARY, _HELLO, rsv=6)),
        alone("3.7", "close frame with RSV = 7", SendFrame(_CLOSE, rsv=7)),
    ]


def _opcode_cases() -> list[Case]:
    reserved_payload = b"reserved opcode payload"

    def alone(case_id: str, opcode: int, payload: bytes = b"") -> Case:
        with_payload = ", with payload" if payload else ""
        return Case(
            case_id,
            f"frame with reserved opcode {opcode}{with_payload}",
            (SendFrame(opcode, payload), KillAfter(1)),
            _FAILED_BY_CLIENT,
            _nothing(),
        )

    def after_a_message(
        case_id: str, opcode: int, payload: bytes = b"", *, chop: int | None = None
    ) -> Case:
        how = " (octet by octet)" if chop else ""
        return Case(
            case_id,
            f"text message, then a frame with reserved opcode {opcode}, then a ping{how}",
            (
                SendFrame(_TEXT, _HELLO, chop=chop),
                SendFrame(opcode, payload, chop=chop),
                SendFrame(_PING, chop=chop),
                KillAfter(1),
            ),
            _FAILED_BY_CLIENT,
            _echo_or_nothing(_HELLO),
        )

    return [
        alone("4.1.1", 3),
        alone("4.1.2", 4, reserved_payload),
        after_a_message("4.1.3", 5),
        after_a_message("4.1.4", 6, _HELLO),
        after_a_message("4.1.5", 7, _HELLO, chop=1),
        alone("4.2.1", 11),
        alone("4.2.2", 12, reserved_payload),
        after_a_message("4.2.3", 13),
        after_a_message("4.2.4", 14, _HELLO),
        after_a_message("4.2.5", 15, _HELLO, chop=1),
    ]


def _fragmentation_cases() -> list[Case]:
    cases = []
    for case_id, opcode, kind in (("5.1", _PING, "ping"), ("5.2", _PONG, "pong")):
        cases.append(
            Case(
                case_id,
                f"{kind} in 2 fragments (control frames cannot be fragmented)",
                (
                    SendFrame(opcode, b"fragment1", fin=False),
                    SendFrame(_CONTINUATION, b"fragment2"),
                    KillAfter(1),
                ),
                _FAILED_BY_CLIENT,
                _nothing(),
            )
        )
    ways: tuple[tuple[str, bool, int | None], ...] = (
        ("", False, None),
        (" (frame by frame)", True, None),
        (" (octet by octet)", False, 1),
    )
    for number, (how, sync, chop) in enumerate(ways, start=3):
        cases.append(
            Case(
                f"5.{number}",
                f"text message in 2 fragments{how}",
                (
                    SendFrame(_TEXT, b"fragment1", fin=False, sync=sync, chop=chop),
                    SendFrame(_CONTINUATION, b"fragment2", sync=sync, chop=chop),
                    CloseAfter(1),
                ),
                _CLOSED_NORMALLY,
                _echo(b"fragment1fragment2"),
            )
        )
    for number, (how, sync, chop) in enumerate(ways, start=6):
        cases.append(
            Case(
                f"5.{number}",
                f"text message in 2 fragments with a ping in between{how}",
                (
                    SendFrame(_TEXT, b"fragment1", fin=False, sync=sync, chop=chop),
                    SendFrame(_PING, b"ping payload", sync=sync, chop=chop),
                    SendFrame(_CONTINUATION, b"fragment2", sync=sync, chop=chop),
                    CloseAfter(1),
                ),
                _CLOSED_NORMALLY,
                {_OK: (Pong(b"ping payload"), Message(b"fragment1fragment2", False))},
            )
        )
    for number, fin in ((9, True), (12, False)):
        for offset, (how, sync, chop) in enumerate(ways):
            cases.append(
                Case(
                    f"5.{number + offset}",
                    f"continuation frame (FIN = {str(fin).lower()}) with nothing to continue, "
                    f"then a text message{how}",
                    (
                        SendFrame(
                            _CONTINUATION,
                            b"non-continuation payload",
                            fin=fin,
                            sync=sync,
                            chop=chop,
                        ),
                        SendFrame(_TEXT, _HELLO, sync=sync, chop=chop),
                        KillAfter(1),
                    ),
                    _FAILED_BY_CLIENT,
                    _nothing(),
                )
            )
    cases.append(
        Case(
            "5.15",
            "text message in 2 fragments, then a continuation with nothing to continue, then a "
            "text message",
            (
                SendFrame(_TEXT, b"fragment1", fin=False),
                SendFrame(_CONTINUATION, b"fragment2"),
                SendFrame(_CONTINUATION, b"fragment3", fin=False),
                SendFrame(_TEXT, b"fragment4"),
                KillAfter(1),
            ),
            _FAILED_BY_CLIENT,
            _echo_or_nothing(b"fragment1fragment2"),
        )
    )
    for case_id, first_fin in (("5.16", False), ("5.17", True)):
        round_of_frames = (
            SendFrame(_CONTINUATION, b"fragment1", fin=first_fin),
            SendFrame(_TEXT, b"fragment2", fin=False),
            SendFrame(_CONTINUATION, b"fragment3"),
        )
        cases.append(
            Case(
                case_id,
                f"twice: a continuation (FIN = {str(first_fin).lower()}) with nothing to "
                "continue, then a text message in 2 fragments",
                (*round_of_frames, *round_of_frames, KillAfter(1)),
                _FAILED_BY_CLIENT,
                _nothing(),
            )
        )
    cases.append(
        Case(
            "5.18",
            "text message in 2 fragments, both with the text opcode",
            (
                SendFrame(_TEXT, b"fragment1", fin=False),
                SendFrame(_TEXT, b"fragment2"),
                KillAfter(1),
            ),
            _FAILED_BY_CLIENT,
            _nothing(),
        )
    )
    fragments = [f"fragment{n}".encode() for n in range(1, 6)]
    for case_id, sync in (("5.19", False), ("5.20", True)):
        how = " (frame by frame)" if sync else ""
        cases.append(
            Case(
                case_id,
                "text message in 5 fragments with 2 pings in between and a 1 s pause after the "
                f"first ping: each ping is answered at once{how}",
                (
                    SendFrame(_TEXT, fragments[0], fin=False, sync=sync),
                    SendFrame(_CONTINUATION, fragments[1], fin=False, sync=sync),
                    SendFrame(_PING, b"pongme 1!", sync=sync),
                    Wait(1),
                    SendFrame(_CONTINUATION, fragments[2], fin=False, sync=sync),
                    SendFrame(_CONTINUATION, fragments[3], fin=False, sync=sync),
                    SendFrame(_PING, b"pongme 2!", sync=sync),
                    SendFrame(_CONTINUATION, fragments[4], sync=sync),
                    CloseAfter(1),
                ),
                _CLOSED_NORMALLY,
                {
                    _OK: (
                        Pong(b"pongme 1!"),
                        Pong(b"pongme 2!"),
                        Message(b"".join(fragments), False),
                    )
                },
            )
        )
    return cases


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _octets(hex_sequences: str) -> list[bytes]:
    """Octet sequences written in hex, separated by spaces."""
    return [bytes.fromhex(sequence) for sequence in hex_sequences.split()]


def _utf8_sequences() -> list[tuple[str, list[tuple[bool, bytes]]]]:
    """The payloads of 6.5.x to 6.23.x: Markus Kuhn's UTF-8 decoder stress test, as the
    testsuite selects it, with whether each is valid UTF-8."""
    missing_last = _octets("c0 e080 f08080 f8808080 fc80808080 df efbf f7bfbf fbbfbfbf fdbfbfbfbf")
    lonely_starts = [
        b"".join(bytes((octet, 0x20)) for octet in range(first, end))
        for first, end in ((0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD))
    ]
    non_characters = [bytes.fromhex("efbfbe"), bytes.fromhex("efbfbf")]
    for first in (0xF0, 0xF1, 0xF2, 0xF3, 0xF4):
        for second in (0x8F, 0x9F, 0xAF, 0xBF):
            if first == 0xF4 and second != 0x8F:
                continue  # beyond U+10FFFF
            for last in (0xBE, 0xBF):
                sequence = bytes((first, second, 0xBF, last))
                if first == 0xF0 and second == 0x8F:
                    continue  # overlong
                non_characters.append(sequence)

    def valid(hex_sequences: str) -> list[tuple[bool, bytes]]:
        return [(True, sequence) for sequence in _octets(hex_sequences)]

    def invalid(hex_sequences: str) -> list[tuple[bool, bytes]]:
        return [(False, sequence) for sequence in _octets(hex_sequences)]

    return [
        (
            "Some valid UTF-8 sequences",
            [
                (True, b"hello$world"),
                (True, b"hello\xc2\xa2world"),
                (True, b"hello\xe2\x82\xacworld"),
                (True, b"hello\xf0\xa4\xad\xa2world"),
                (True, _KOSME),
            ],
        ),
        (
            "All prefixes of a valid UTF-8 string with multi-octet code points",
            [(_is_utf8(_KOSME[:end]), _KOSME[:end]) for end in range(1, len(_KOSME) + 1)],
        ),
        ("First possible sequence of each length", valid("00 c280 e0a080 f0908080")),
        ("First possible sequence of length 5 and 6", invalid("f888808080 fc8480808080")),
        ("Last possible sequence of each length", valid("7f dfbf efbfbf f48fbfbf")),
        (
            "Last possible sequence of length 4, 5 and 6",
            invalid("f7bfbfbf fbbfbfbfbf fdbfbfbfbfbf"),
        ),
        (
            "Other boundary conditions",
            [*valid("ed9fbf ee8080 efbfbd f48fbfbf"), *invalid("f4908080")],
        ),
        (
            "Unexpected continuation octets",
            [
                *invalid("80 bf 80bf 80bf80 80bf80bf 80bf80bf80 80bf80bf80bf"),
                (False, bytes(range(0x80, 0xBF))),
            ],
        ),
        ("Lonely start octets", [(False, sequence) for sequence in lonely_starts]),
        (
            "Sequences with the last continuation octet missing",
            [(False, sequence) for sequence in missing_last],
        ),
        ("Concatenation of incomplete sequences", [(False, b"".join(missing_last))]),
        ("Impossible octets", invalid("fe ff fefeffff")),
        (
            "Overlong ASCII character",
            invalid("c0af e080af f08080af f8808080af fc80808080af"),
        ),
        (
            "Maximum overlong sequences",
            invalid("c1bf e09fbf f08fbfbf f887bfbfbf fc83bfbfbfbf"),
        ),
        (
            "Overlong NUL character",
            invalid("c080 e08080 f0808080 f880808080 fc8080808080"),
        ),
        (
            "Single UTF-16 surrogates",
            invalid("eda080 edadbf edae80 edafbf edb080 edbe80 edbfbf"),
        ),
        (
            "Paired UTF-16 surrogates",
            invalid(
                "eda080edb080 eda080edbfbf edadbfedb080 edadbfedbfbf "
                "edae80edb080 edae80edbfbf edafbfedb080 edafbfedbfbf"
            ),
        ),
        ("Non-character code points (valid UTF-8)", [(True, s) for s in non_characters]),
        (
            "Unicode specials (valid UTF-8)",
            valid("efbfb9 efbfba efbfbb efbfbc efbfbd efbfbe efbfbf"),
        ),
    ]


def _utf8_cases() -> list[Case]:
    cases = [
        Case(
            "6.1.1",
            "empty text message",
            (SendFrame(_TEXT, b""), CloseAfter(1)),
            _CLOSED_NORMALLY,
            _echo(b""),
        ),
        Case(
            "6.1.2",
            "text message in 3 empty fragments",
            (
                SendFrame(_TEXT, b"", fin=False),
                SendFrame(_CONTINUATION, b"", fin=False),
                SendFrame(_CONTINUATION, b""),
                CloseAfter(1),
            ),
            _CLOSED_NORMALLY,
            _echo(b""),
        ),
        Case(
            "6.1.3",
            "text message in 3 fragments, only the middle one non-empty",
            (
                SendFrame(_TEXT, b"", fin=False),
                SendFrame(_CONTINUATION, b"middle frame payload", fin=False),
                SendFrame(_CONTINUATION, b""),
                CloseAfter(1),
            ),
            _CLOSED_NORMALLY,
            _echo(b"middle frame payload"),
        ),
    ]
    first_half = "Hello-µ@ßöä".encode()
    second_half = "üàá-UTF-8!!".encode()
    cases += [
        Case(
            "6.2.1",
            "valid UTF-8 text message in one frame",
            (SendMessage(first_half + second_half), CloseAfter(1)),
            _CLOSED_NORMALLY,
            _echo(first_half + second_half),
        ),
        Case(
            "6.2.2",
            "valid UTF-8 text message in 2 fragments split on a code point boundary",
            (
                SendFrame(_TEXT, first_half, fin=False),
                SendFrame(_CONTINUATION, second_half),
                CloseAfter(1),
            ),
            _CLOSED_NORMALLY,
            _echo(first_half + second_half),
        ),
        Case(
            "6.2.3",
            "valid UTF-8 text message in 1-octet fragments (splitting code points)",
            (SendMessage(first_half + second_half, fragment_size=1), CloseAfter(1)),
            _CLOSED_NORMALLY,
            _echo(first_half + second_half),
        ),
        Case(
            "6.2.4",
            "valid UTF-8 text message (all multi-octet) in 1-octet fragments",
            (SendMessage(_KOSME, fragment_size=1), CloseAfter(1)),
            _CLOSED_NORMALLY,
            _echo(_KOSME),
        ),
    ]
    invalid_text = _KOSME + _SURROGATE + _EDITED
    cases += [
        Case(
            "6.3.1",
            "invalid UTF-8 text message in one frame",
            (SendMessage(invalid_text), KillAfter(1)),
            _INVALID_UTF8,
            _nothing(),
        ),
        Case(
            "6.3.2",
            "invalid UTF-8 text message in 1-octet fragments",
            (SendMessage(invalid_text, fragment_size=1), KillAfter(1)),
            _INVALID_UTF8,
            _nothing(),
        ),
    ]
    cases += _fail_fast_cases()
    for section, (title, sequences) in enumerate(_utf8_sequences(), start=5):
        for number, (is_valid, payload) in enumerate(sequences, start=1):
            verdict = "valid" if is_valid else "invalid"
            cases.append(
                Case(
                    f"6.{section}.{number}",
                    f"{title}: {verdict} text message 0x{payload.hex()} in one frame",
                    (SendMessage(payload), KillAfter(0.5)),
                    _CLOSED_NORMALLY if is_valid else _INVALID_UTF8,
                    _echo(payload) if is_valid else _nothing(),
                )
            )
    return cases


def _fail_fast_cases() -> list[Case]:
    """6.4.x: the text turns invalid in the middle of a message sent in three parts, with a
    1 s pause after each of the first two. The client should fail the connection as soon as the
    invalid octet arrives (OK), or at the latest when the message is complete (NON-STRICT)."""
    out_of_range = bytes.fromhex("f4908080")  # 0x110000: beyond Unicode, invalid at 0x90
    text = _KOSME + out_of_range + _EDITED
    invalid_at = len(_KOSME) + 1
    expected: dict[Behavior, tuple[Event, ...]] = {
        _OK: (Timeout("A"),),
        _NON_STRICT: (Timeout("A"), Timeout("B")),
    }
    as_frames = [
        ("6.4.1", "in 3 frames, the second invalid as a whole", (_KOSME, out_of_range, _EDITED)),
        (
            "6.4.2",
            "in 3 frames, the second being the one octet that makes the text invalid",
            (text[:invalid_at], text[invalid_at : invalid_at + 1], text[invalid_at + 1 :]),
        ),
    ]
    cases = [
        Case(
            case_id,
            f"invalid UTF-8 text message {how}, with pauses",
            (
                SendFrame(_TEXT, first, fin=False),
                WaitWhileOpen(1, "A"),
                SendFrame(_CONTINUATION, second, fin=False),
                WaitWhileOpen(1, "B"),
                SendFrame(_CONTINUATION, third),
                KillAfter(1),
            ),
            _INVALID_UTF8,
            expected,
        )
        for case_id, how, (first, second, third) in as_frames
    ]
    # 6.4.3 and 6.4.4 send the same parts as pieces of one frame (written without FIN), which a
    # final empty continuation frame ends.
    as_pieces = [
        ("6.4.3", "as 6.4.1", (_KOSME, out_of_range, _EDITED)),
        ("6.4.4", "as 6.4.2", as_frames[1][2]),
    ]
    cases += [
        Case(
            case_id,
            f"invalid UTF-8 text message in one frame written in 3 pieces {how}, with pauses",
            (
                SendFrameHead(_TEXT, len(text)),
                SendRaw(first),
                WaitWhileOpen(1, "A"),
                SendRaw(second),
                WaitWhileOpen(1, "B"),
                SendRaw(third),
                SendFrame(_CONTINUATION, b""),
                KillAfter(1),
            ),
            _INVALID_UTF8,
            expected,
        )
        for case_id, how, (first, second, third) in as_pieces
    ]
    return cases


def _close_cases() -> list[Case]:
    def closing_case(
        case_id: str,
        description: str,
        steps: tuple[Step, ...],
        close: ExpectedClose = _CLOSED_NORMALLY,
        expected: dict[Behavior, tuple[Event, ...]] | None = None,
        *,
        suppress_close: bool = True,
        informational: bool = False,
    ) -> Case:
        return Case(
            case_id,
            description,
            (*steps, KillAfter(1)),
            close,
            _nothing() if expected is None else expected,
            suppress_close=suppress_close,
            wrong_code_fails=not informational,
            informational=informational,
        )

    def server_closes_with(*codes: int, clean: bool) -> ExpectedClose:
        return ExpectedClose(by_server=True, codes=codes, require_clean=clean)

    hello = b"Hello World!"
    cases = [
        closing_case(
            "7.1.1",
            "text message, then the server closes",
            (SendFrame(_TEXT, hello),),
            expected=_echo(hello),
            suppress_close=False,
        ),
        closing_case("7.1.2", "two close frames", (SendClose(_NORMAL), SendFrame(_CLOSE))),
        closing_case(
            "7.1.3", "close, then a ping (no pong)", (SendClose(_NORMAL), SendFrame(_PING))
        ),
        closing_case(
            "7.1.4",
            "close, then a text message (ignored)",
            (SendClose(_NORMAL), SendFrame(_TEXT, hello)),
        ),
        closing_case(
            "7.1.5",
            "first fragment of a text message, close, then the last fragment",
            (
                SendFrame(_TEXT, b"fragment1", fin=False),
                SendClose(_NORMAL),
                SendFrame(_CONTINUATION, b"fragment2"),
            ),
        ),
        closing_case(
            "7.1.6",
            "256 KiB text message, a small text message, close and a ping, back to back",
            (
                SendFrame(_TEXT, b"BAsd7&jh23", length=256 * 1024),
                SendFrame(_TEXT, hello),
                SendClose(_NORMAL),
                SendFrame(_PING),
            ),
            expected={_OK: (Message(hello, False),), _NON_STRICT: ()},
            informational=True,
        ),
        closing_case("7.3.1", "close frame without payload", (SendClose(),)),
        closing_case(
            "7.3.2",
            "close frame with a 1-octet payload",
            (SendClose(reason=b"a"),),
            server_closes_with(_PROTOCOL_ERROR, clean=False),
        ),
        closing_case("7.3.3", "close frame with a code", (SendClose(_NORMAL),)),
        closing_case("7.3.4", "close frame with a code and a reason", (SendClose(_NORMAL, hello),)),
        closing_case(
            "7.3.5",
            "close frame with a code and a 123-octet reason (the most that fits)",
            (SendClose(_NORMAL, b"*" * 123),),
        ),
        closing_case(
            "7.3.6",
            "close frame with a code and a 124-octet reason (payload of 126 octets)",
            (SendClose(_NORMAL, b"*" * 124),),
            server_closes_with(_PROTOCOL_ERROR, clean=False),
        ),
        closing_case(
            "7.5.1",
            "close frame with an invalid UTF-8 reason",
            (SendClose(_NORMAL, _KOSME + _SURROGATE + _EDITED),),
            server_closes_with(_PROTOCOL_ERROR, _INVALID_PAYLOAD, clean=False),
        ),
    ]
    valid_codes = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999)
    for number, code in enumerate(valid_codes, start=1):
        cases.append(
            closing_case(
                f"7.7.{number}",
                f"close with valid code {code}: answered with 1000 or the same code",
                (SendClose(code),),
                server_closes_with(_NORMAL, code, clean=True),
                suppress_close=False,
            )
        )
    invalid_codes = (0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999)
    for number, code in enumerate(invalid_codes, start=1):
        cases.append(
            closing_case(
                f"7.9.{number}",
                f"close with invalid code {code}: answered with 1002 or a dropped connection",
                (SendClose(code),),
                server_closes_with(_PROTOCOL_ERROR, clean=False),
                suppress_close=False,
            )
        )
    for number, code in enumerate((5000, 65535), start=1):
        cases.append(
            closing_case(
                f"7.13.{number}",
                f"close with code {code}, whose handling the spec leaves open",
                (SendClose(code),),
                server_closes_with(_NORMAL, code, _PROTOCOL_ERROR, clean=False),
                informational=True,
            )
        )
    return cases


def _performance_cases() -> list[Case]:
    cases = []

    def echo_case(
        case_id: str,
        description: str,
        send: Step,
        check: EchoCheck,
        wait: float,
    ) -> Case:
        return Case(
            case_id,
            description,
            (send, CloseAfter(min(wait, PERFORMANCE_WAIT_CAP))),
            _CLOSED_NORMALLY,
            echo_check=check,
        )

    text_filler, binary_filler = b"BAsd7&jh23", bytes.fromhex("00fe23faf0")
    sizes = [64 * 2**10, 256 * 2**10, 2**20, 4 * 2**20, 8 * 2**20, 16 * 2**20]
    text_waits = [10, 10, 100, 100, 100, 100]
    binary_waits = [10, 10, 10, 10, 100, 100]
    for subgroup, opcode, filler, waits in (
        (1, _TEXT, text_filler, text_waits),
        (2, _BINARY, binary_filler, binary_waits),
    ):
        kind = "text" if opcode == _TEXT else "binary"
        for number, (size, wait) in enumerate(zip(sizes, waits, strict=True), start=1):
            cases.append(
                echo_case(
                    f"9.{subgroup}.{number}",
                    f"{kind} message of {_size_name(size)}",
                    SendFrame(opcode, filler, length=size),
                    EchoCheck(binary=opcode == _BINARY, length=size),
                    wait,
                )
            )
    fragment_sizes = [64, 256, 2**10, 4 * 2**10, 16 * 2**10, 64 * 2**10, 256 * 2**10, 2**20]
    fragment_sizes.append(4 * 2**20)
    message_size = 4 * 2**20
    for subgroup, binary in ((3, False), (4, True)):
        kind = "binary" if binary else "text"
        for number, fragment_size in enumerate(fragment_sizes, start=1):
            # The testsuite's 9.4.1 fills its message with 0xfe, the others with "*".
            filler = b"\xfe" if binary and number == 1 else b"*"
            cases.append(
                echo_case(
                    f"9.{subgroup}.{number}",
                    f"{kind} message of 4 MiB in fragments of {_size_name(fragment_size)}",
                    SendMessage(filler * message_size, binary, fragment_size),
                    EchoCheck(binary=binary, length=message_size),
                    100,
                )
            )
    chop_sizes = [64, 128, 256, 512, 1024, 2048]
    for subgroup, opcode, filler in ((5, _TEXT, text_filler), (6, _BINARY, binary_filler)):
        kind = "text" if opcode == _TEXT else "binary"
        for number, chop in enumerate(chop_sizes, start=1):
            cases.append(
                echo_case(
                    f"9.{subgroup}.{number}",
                    f"{kind} message of 1 MiB written in pieces of {chop} octets",
                    SendFrame(opcode, filler, length=2**20, chop=chop),
                    EchoCheck(binary=opcode == _BINARY, length=2**20),
                    1000,
                )
            )
    round_trips = [(0, 60), (16, 60), (64, 60), (256, 120), (1024, 240), (4096, 480)]
    for subgroup, opcode, filler in ((7, _TEXT, b"*"), (8, _BINARY, b"\xfe")):
        kind = "text" if opcode == _TEXT else "binary"
        for number, (size, wait) in enumerate(round_trips, start=1):
            cases.append(
                echo_case(
                    f"9.{subgroup}.{number}",
                    f"1000 {kind} messages of {size} octets, one at a time (round trips)",
                    SendFrame(opcode, filler, length=size),
                    EchoCheck(binary=opcode == _BINARY, length=size, count=1000),
                    wait,
                )
            )
    return cases


def _size_name(size: int) -> str:
    for unit, name in ((2**20, "MiB"), (2**10, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} octets"


def _auto_fragmentation_cases() -> list[Case]:
    payload = b"*" * 65536
    fragment_size = 1300
    return [
        Case(
            "10.1.1",
            "text message of 64 KiB sent in frames of 1300 octets",
            (SendMessage(payload, fragment_size=fragment_size), KillAfter(10)),
            _CLOSED_NORMALLY,
            _echo(payload),
            transmitted_frames={
                _TEXT: 1,
                _CONTINUATION: math.ceil(len(payload) / fragment_size) - 1,
            },
        )
    ]


CASES: tuple[Case, ...] = (
    *_framing_cases(),
    *_ping_cases(),
    *_reserved_bit_cases(),
    *_opcode_cases(),
    *_fragmentation_cases(),
    *_utf8_cases(),
    *_close_cases(),
    *_performance_cases(),
    *_auto_fragmentation_cases(),
)

CASES_BY_ID: Mapping[str, Case] = {case.id: case for case in CASES}
