"""The official Python SDK (``iii-sdk`` from PyPI) serving ``bench::echo`` with its defaults.

Run it with ``OTEL_ENABLED=false`` in the environment for the telemetry-off row. SIGTERM ends the
process at once: the harness only stops workers after it has finished measuring them.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import _args
from iii import InitOptions, register_worker


def main() -> None:
    args = _args.parse()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    iii = register_worker(args.url, InitOptions(worker_name="bench-echo"))

    async def echo(data: Any) -> Any:
        return data

    async def relay(data: Any) -> Any:
        return await iii.trigger_async({"function_id": "bench::echo", "payload": data})

    async def sleep_echo(data: Any) -> Any:
        import asyncio

        await asyncio.sleep(_args.SLEEP_SECONDS)
        return data

    if args.extra:
        iii.register_function("bench::relay", relay)
        iii.register_function("bench::sleep", sleep_echo)
    for function_id in args.function_ids():
        iii.register_function(function_id, echo)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
