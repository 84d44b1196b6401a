"""The CLI tests' demo functions, served by a worker built with the official asyncio SDK
(PyPI ``iii-sdk``), so ``iii-trio trigger`` is also tested against a peer we did not write.

Usage: ``python official_demo_worker.py ENGINE_URL``. Registers the functions, waits until the
engine lists them, prints ``ready``, then serves until its standard input closes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from demo_function import DEMO_DESCRIPTION, DEMO_REQUEST_FORMAT
from iii import InitOptions, register_worker

FUNCTION_IDS = ("demo::echo", "demo::fail", "demo::nothing")


def echo(data: Any) -> Any:
    if isinstance(data, dict):
        # The engine adds the caller's worker id to object payloads; the official SDK passes it on.
        return {key: value for key, value in data.items() if key != "_caller_worker_id"}
    return data


def fail(data: Any) -> Any:
    raise RuntimeError("order 42 is invalid")


async def nothing(data: Any) -> None:
    await asyncio.sleep(0)


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-demo"))
    try:
        iii.register_function(
            "demo::echo",
            echo,
            description=DEMO_DESCRIPTION,
            request_format=DEMO_REQUEST_FORMAT,
        )
        iii.register_function("demo::fail", fail)
        iii.register_function("demo::nothing", nothing)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listing = iii.trigger({"function_id": "engine::functions::list", "payload": {}})
            listed = {entry["function_id"] for entry in listing["functions"]}
            if listed.issuperset(FUNCTION_IDS):
                break
            time.sleep(0.02)
        else:
            raise SystemExit("the engine never listed the demo functions")
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
