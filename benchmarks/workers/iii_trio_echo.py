"""iii-trio serving ``bench::echo``, written against the public API only."""

from __future__ import annotations

from typing import Any

import _args
import trio

import iii_trio


async def serve(args: _args.Args) -> None:
    async with iii_trio.open_worker(args.url, name="bench-echo") as worker:

        async def echo(payload: Any) -> Any:
            return payload

        async def relay(payload: Any) -> Any:
            return await worker.trigger("bench::echo", payload)

        async def sleep_echo(payload: Any) -> Any:
            await trio.sleep(_args.SLEEP_SECONDS)
            return payload

        if args.extra:
            worker.register_function("bench::relay", relay)
            worker.register_function("bench::sleep", sleep_echo)
        for function_id in args.function_ids():
            worker.register_function(function_id, echo)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(serve, _args.parse())
