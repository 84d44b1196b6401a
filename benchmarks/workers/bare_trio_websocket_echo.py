"""Reference: no SDK, trio + trio-websocket + orjson, echo inline (one message at a time)."""

from __future__ import annotations

import os
import uuid

import _args
import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

_MAX_MESSAGE = 64 * 1024 * 1024


async def serve(args: _args.Args) -> None:
    async with open_websocket_url(args.url, max_message_size=_MAX_MESSAGE) as ws:
        register = {
            "type": "invokefunction",
            "invocation_id": str(uuid.uuid4()),
            "function_id": "engine::workers::register",
            "data": {"runtime": "python", "name": "bench-bare-trio-websocket", "pid": os.getpid()},
        }
        await ws.send_message(orjson.dumps(register).decode())
        for function_id in args.function_ids():
            await ws.send_message(
                orjson.dumps({"type": "registerfunction", "id": function_id}).decode()
            )
        try:
            while True:
                msg = orjson.loads(await ws.get_message())
                if msg.get("type") != "invokefunction" or msg.get("invocation_id") is None:
                    continue
                reply = {
                    "type": "invocationresult",
                    "invocation_id": msg["invocation_id"],
                    "function_id": msg["function_id"],
                    "result": msg.get("data"),
                }
                await ws.send_message(orjson.dumps(reply).decode())
        except ConnectionClosed:
            return


if __name__ == "__main__":
    trio.run(serve, _args.parse())
