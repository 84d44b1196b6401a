"""The limit: no SDK, trio + websockets' sans-I/O ClientProtocol + orjson, echo inline.

Every frame of one ``receive_some`` is handled in place and all the replies it produced go out with
one ``send_all``. This is about as little work per call as a Python worker can do, so it is the
yardstick the SDK rows are compared with. It serves until the connection closes or it is killed.
"""

from __future__ import annotations

import os
import uuid

import _args
import orjson
import trio
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

_MAX_MESSAGE = 64 * 1024 * 1024


def _hello(function_ids: list[str]) -> list[bytes]:
    register = {
        "type": "invokefunction",
        "invocation_id": str(uuid.uuid4()),
        "function_id": "engine::workers::register",
        "data": {"runtime": "python", "name": "bench-bare-sansio", "pid": os.getpid()},
    }
    frames = [orjson.dumps(register)]
    frames += [orjson.dumps({"type": "registerfunction", "id": f}) for f in function_ids]
    return frames


async def serve(args: _args.Args) -> None:
    uri = parse_uri(args.url)
    stream = await trio.open_tcp_stream(uri.host, uri.port)
    protocol = ClientProtocol(uri, max_size=_MAX_MESSAGE)
    protocol.send_request(protocol.connect())
    await stream.send_all(b"".join(protocol.data_to_send()))
    loads = orjson.loads
    dumps = orjson.dumps
    send_text = protocol.send_text
    async with stream:
        while True:
            data = await stream.receive_some(1 << 18)
            if not data:
                return
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Frame):
                    if event.opcode is not Opcode.TEXT and event.opcode is not Opcode.BINARY:
                        continue
                    msg = loads(event.data)
                    if msg.get("type") == "invokefunction":
                        iid = msg.get("invocation_id")
                        if iid is not None:
                            send_text(
                                dumps(
                                    {
                                        "type": "invocationresult",
                                        "invocation_id": iid,
                                        "function_id": msg["function_id"],
                                        "result": msg.get("data"),
                                    }
                                )
                            )
                elif isinstance(event, Response):
                    if protocol.handshake_exc is not None:
                        raise protocol.handshake_exc
                    for payload in _hello(args.function_ids()):
                        send_text(payload)
            out = protocol.data_to_send()
            if out:
                await stream.send_all(b"".join(out))
                if out[-1] == b"":
                    return


if __name__ == "__main__":
    trio.run(serve, _args.parse())
