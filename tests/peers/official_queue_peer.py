"""Queue and pub/sub interop peer built with the official asyncio SDK (PyPI ``iii-sdk``).

Usage: ``python official_queue_peer.py ENGINE_URL``. It:

- serves ``official::on-news``, bound to the pub/sub topic ``news``, and ``official::settle``,
  a target for enqueued messages; each prints one JSON line with what it received;
- enqueues ``{"from": "official"}`` for ``trio::job`` on the queue ``default`` and prints the
  engine's receipt as ``{"receipt": ...}``;

then serves until its standard input closes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from iii import InitOptions, TriggerAction, register_worker


def report(key: str) -> Any:
    def handler(data: Any) -> None:
        print(json.dumps({key: data}), flush=True)

    return handler


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-queue-peer"))
    try:
        iii.register_function("official::on-news", report("news"))
        iii.register_function("official::settle", report("settled"))
        iii.register_trigger(
            {"type": "subscribe", "function_id": "official::on-news", "config": {"topic": "news"}}
        )
        receipt = iii.trigger(
            {
                "function_id": "trio::job",
                "payload": {"from": "official"},
                "action": TriggerAction.Enqueue(queue="default"),
            }
        )
        print(json.dumps({"receipt": receipt}), flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
