"""The dev engine against clients that misbehave: none of them may stop it or disturb the others.

Every case here used to end the whole engine with an ``AssertionError`` from websockets (a port
probe was enough), or left a failed connection open for good.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import uuid
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

import iii_trio
from iii_trio._protocol._codec import encode
from iii_trio._protocol._messages import InvokeFunction, RegisterFunction
from iii_trio._transport import CLOSE_TIMEOUT
from iii_trio.testing import DevEngine, open_dev_engine
from iii_trio.testing._dev_engine import warn_if_exposed

from ._raw import PATIENCE

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _client_frame(opcode: Opcode, data: bytes, *, masked: bool = True) -> bytes:
    return Frame(opcode, data).serialize(mask=masked)


#: What a client may send, then hang up: before, during and after the opening handshake.
HOSTILE_INPUTS: dict[str, bytes] = {
    "connect and leave": b"",
    "half a request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    "random bytes": bytes(random.Random(7).randrange(256) for _ in range(512)),
    "a POST": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    "a bare blank line": b"\r\n\r\n",
    "a 10 KB header line": b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 10_240 + b"\r\n\r\n",
    "200 headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X: %d\r\n" % n for n in range(200)) + b"\r\n",
    "a plain GET": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "an unknown path": UPGRADE.replace(b"GET / ", b"GET /nowhere "),
    "half an upgrade": UPGRADE[: len(UPGRADE) // 2],
    "an unmasked frame": UPGRADE + _client_frame(Opcode.TEXT, b'{"type":"ping"}', masked=False),
    "text that is not UTF-8": UPGRADE + _client_frame(Opcode.TEXT, b'{"x":"\xff"}'),
    "a frame of 2**63 bytes": UPGRADE + b"\x82\xff" + struct.pack("!Q", 2**63) + b"mask",
    "garbage after the upgrade": UPGRADE + os.urandom(300),
    "a bad close code": UPGRADE + _client_frame(Opcode.CLOSE, struct.pack("!H", 999)),
    "a frame cut short": UPGRADE + _client_frame(Opcode.TEXT, b"x" * 300)[:-10],
}


async def _throw(port: int, data: bytes) -> None:
    """Send ``data`` on a fresh connection, then hang up without reading the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        if data:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the engine may refuse before reading everything
    finally:
        await trio.aclose_forcefully(stream)


async def test_no_client_stops_the_engine_or_disturbs_two_workers_exchanging_calls() -> None:
    async with (
        open_dev_engine() as engine,
        iii_trio.open_worker(engine.url, name="left") as left,
        iii_trio.open_worker(engine.url, name="right") as right,
    ):
        left.register_function("left::echo", lambda payload: payload)
        right.register_function("right::echo", lambda payload: payload)
        await left.wait_registered()
        await right.wait_registered()
        answered = 0
        hostile_done = trio.Event()

        async def exchange() -> None:
            nonlocal answered
            n = 0
            while not hostile_done.is_set() or n < 50:
                n += 1
                with trio.fail_after(PATIENCE):
                    assert await left.trigger("right::echo", {"n": n}) == {"n": n}
                    assert await right.trigger("left::echo", {"n": -n}) == {"n": -n}
                answered += 2

        async def attack() -> None:
            limiter = trio.CapacityLimiter(50)

            async def one(data: bytes) -> None:
                async with limiter:
                    await _throw(engine.port, data)

            async with trio.open_nursery() as attackers:
                for data in HOSTILE_INPUTS.values():
                    attackers.start_soon(one, data)
                noise = random.Random(11)
                for _ in range(1_000):
                    attackers.start_soon(one, noise.randbytes(noise.randrange(1, 2_000)))
            hostile_done.set()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exchange)
                nursery.start_soon(attack)
        assert answered >= 100
        assert await left.trigger("right::echo", "still fine") == "still fine"


@pytest.mark.parametrize("case", list(HOSTILE_INPUTS), ids=list(HOSTILE_INPUTS))
async def test_each_hostile_input_leaves_the_engine_serving(case: str) -> None:
    async with open_dev_engine() as engine:
        await _throw(engine.port, HOSTILE_INPUTS[case])
        async with iii_trio.open_worker(engine.url, name="after") as worker:
            worker.register_function("svc::ok", lambda payload: "ok")
            with trio.fail_after(PATIENCE):
                assert await worker.trigger("svc::ok") == "ok"


# --- a failed connection is torn down within the close timeout ----------------------------------


async def _raw_client(
    engine: DevEngine,
) -> tuple[trio.abc.Stream, ClientProtocol, Callable[[], Awaitable[None]]]:
    """An in-memory connection to ``engine`` with a client protocol past the handshake, and a
    function that writes what the protocol framed."""
    stream = await engine._open_memory_stream("engine.test", 0)
    protocol = ClientProtocol(parse_uri("ws://engine.test/"))
    protocol.send_request(protocol.connect())

    async def flush() -> None:
        await stream.send_all(b"".join(protocol.data_to_send()))

    await flush()
    while protocol.state is State.CONNECTING:
        protocol.receive_data(await stream.receive_some())
    return stream, protocol, flush


@pytest.mark.parametrize(
    ("violation", "code"),
    [
        (_client_frame(Opcode.TEXT, b'{"type":"ping"}', masked=False), 1002),
        (_client_frame(Opcode.TEXT, b'{"type":"ping","x":"\xc3"}'), 1007),
        (b"\x82\xff" + struct.pack("!Q", 2**40) + b"mask", 1009),
    ],
    ids=["unmasked", "not-utf8", "too-large"],
)
async def test_a_failed_connection_is_torn_down_within_the_close_timeout(
    autojump_clock: trio.testing.MockClock, violation: bytes, code: int
) -> None:
    # The client registers a function, breaks the protocol, then neither reads nor closes. The
    # engine must send its close frame, close TCP within the close timeout and clean up (the
    # function is gone), without waiting for a client that will never answer.
    async with open_dev_engine() as engine:
        built_in = engine.statistics().functions
        stream, protocol, flush = await _raw_client(engine)
        protocol.send_text(encode(RegisterFunction(id="svc::doomed")))
        announce = InvokeFunction(
            "engine::workers::register", {"name": "doomed"}, invocation_id=str(uuid.UUID(int=1))
        )
        protocol.send_text(encode(announce))
        await flush()
        # The announce's result comes once the registration is applied.
        while not any(
            isinstance(event, Frame) and b"invocationresult" in event.data
            for event in protocol.events_received()
        ):
            protocol.receive_data(await stream.receive_some())
        assert engine.statistics().functions == built_in + 1
        failed_at = trio.current_time()
        await stream.send_all(violation)
        received = b""
        with trio.fail_after(CLOSE_TIMEOUT + 1):
            while chunk := await stream.receive_some():
                received += chunk
        assert trio.current_time() - failed_at <= CLOSE_TIMEOUT
        assert engine.statistics().connections == 0
        assert engine.statistics().functions == built_in
        reader = ClientProtocol(parse_uri("ws://engine.test/"), state=State.OPEN)
        reader.receive_data(received)
        closes = [
            Close.parse(event.data).code
            for event in reader.events_received()
            if isinstance(event, Frame) and event.opcode is Opcode.CLOSE
        ]
        assert closes == [code]


# --- an engine reachable from other machines says it has no authentication ---------------------


@pytest.mark.parametrize(
    ("addresses", "warned"),
    [
        (["127.0.0.1"], False),
        (["127.0.0.1", "::1"], False),
        (["localhost"], False),
        (["0.0.0.0"], True),
        (["::"], True),
        (["127.0.0.1", "192.168.1.20"], True),
    ],
)
def test_binding_beyond_loopback_warns_that_there_is_no_authentication(
    caplog: pytest.LogCaptureFixture, addresses: list[str], warned: bool
) -> None:
    # Only the decision is tested with other addresses: tests bind loopback alone.
    caplog.set_level(logging.WARNING, logger="iii_trio.dev_engine")
    warn_if_exposed(addresses)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) is warned
    if warned:
        assert "no authentication" in warnings[0]


async def test_a_loopback_engine_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio.dev_engine")
    async with open_dev_engine(host="127.0.0.1"):
        pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
