"""A worker built with the official asyncio SDK (PyPI ``iii-sdk``), run as a subprocess peer.

Usage: ``python official_sdk_worker.py ENGINE_URL``. It registers ``official::greet``, calls
``trio::add`` (served by an iii_trio worker), prints one JSON line with what it saw, then serves
until its standard input closes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from iii import InitOptions, register_worker


def greet(data: dict[str, Any]) -> dict[str, Any]:
    return {"greeting": f"hello {data['name']}", "saw_caller_key": "_caller_worker_id" in data}


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-peer"))
    try:
        iii.register_function("official::greet", greet)
        total = iii.trigger({"function_id": "trio::add", "payload": {"a": 2, "b": 3}})
        try:
            iii.trigger({"function_id": "trio::fail", "payload": {}})
            failure = None
        except Exception as exc:
            failure = {"code": getattr(exc, "code", None), "message": getattr(exc, "message", None)}
        print(json.dumps({"total": total, "failure": failure}), flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
