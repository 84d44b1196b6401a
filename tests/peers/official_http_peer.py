"""REST API interop peer built with the official asyncio SDK (PyPI ``iii-sdk``).

Usage: ``python official_http_peer.py ENGINE_URL``. It serves ``official::http::hello``
(answers ``{"status_code": 201, "headers": {"x-sdk": "1"}, "body": {...}}`` with the path
parameter and the parsed JSON body it got) and ``official::http::fail`` (raises), binds them
to ``POST official/hello/:name`` and ``GET official/fail``, prints ``ready`` and serves until
its standard input closes.
"""

from __future__ import annotations

import sys
from typing import Any

from iii import InitOptions, register_worker


def hello(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "status_code": 201,
        "headers": {"x-sdk": "1"},
        "body": {"name": request["path_params"]["name"], "got": request["body"]},
    }


def fail(request: dict[str, Any]) -> None:
    raise ValueError("boom from the official handler")


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-http-peer"))
    try:
        iii.register_function("official::http::hello", hello)
        iii.register_function("official::http::fail", fail)
        iii.register_trigger(
            {
                "type": "http",
                "function_id": "official::http::hello",
                "config": {"api_path": "official/hello/:name", "http_method": "POST"},
            }
        )
        iii.register_trigger(
            {
                "type": "http",
                "function_id": "official::http::fail",
                "config": {"api_path": "official/fail"},
            }
        )
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
