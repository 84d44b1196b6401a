"""Trace-propagation peer built with the official asyncio SDK (PyPI ``iii-sdk``).

Usage: ``python official_trace_peer.py ENGINE_URL``. It serves ``official::middle``, which
calls ``trace::hop3`` (an iii_trio function) with its payload and returns that answer; it
prints ``ready``, then serves until its standard input closes.
"""

from __future__ import annotations

import sys
from typing import Any

from iii import InitOptions, register_worker


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-trace-peer"))

    async def middle(data: dict[str, Any]) -> Any:
        data.pop("_caller_worker_id", None)
        return await iii.trigger_async({"function_id": "trace::hop3", "payload": data})

    try:
        iii.register_function("official::middle", middle)
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
