"""Trigger-type interop peer built with the official asyncio SDK (PyPI ``iii-sdk``).

Usage: ``python official_trigger_peer.py ENGINE_URL``. It:

- serves ``official::on_tick`` and binds it to ``trio-tick``, a trigger type an iii_trio
  worker provides;
- provides the trigger type ``official-hook``: each binding is fired once, at once, with
  ``{"from": "official", "config": <the binding's config>}``;

then prints ``ready`` and serves until its standard input closes.
"""

from __future__ import annotations

import sys
from typing import Any

from iii import InitOptions, register_worker
from iii.triggers import TriggerConfig, TriggerHandler


def on_tick(data: dict[str, Any]) -> dict[str, Any]:
    data.pop("_caller_worker_id", None)
    return {"ticked": data}


class FireOnBind(TriggerHandler[Any]):
    def __init__(self, worker: Any) -> None:
        self.worker = worker

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        await self.worker.trigger_async(
            {
                "function_id": config.function_id,
                "payload": {"from": "official", "config": config.config},
                "metadata": config.metadata,
            }
        )

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        return None


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-trigger-peer"))
    try:
        iii.register_function("official::on_tick", on_tick)
        iii.register_trigger(
            {"type": "trio-tick", "function_id": "official::on_tick", "config": {"every": 1}}
        )
        iii.register_trigger_type(
            {"id": "official-hook", "description": "fires each binding once"}, FireOnBind(iii)
        )
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
