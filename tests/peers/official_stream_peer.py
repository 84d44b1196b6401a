"""An official-SDK worker (PyPI ``iii-sdk``) that uses the engine's state and keeps a custom
stream with the SDK's own ``create_stream``, run as a subprocess peer.

Usage: ``python official_stream_peer.py ENGINE_URL``. It serves the stream ``official-todo``
with ``iii.helpers.create_stream``, writes ``state::set`` and an item of its stream through the
engine, prints one JSON line with the answers, then serves until its standard input closes.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

from iii import InitOptions, register_worker

with warnings.catch_warnings():
    # The SDK marks custom streams as deprecated, which is not what this peer checks.
    warnings.simplefilter("ignore")
    from iii.helpers import create_stream
    from iii.stream import IStream
    from iii_helpers.stream import (
        StreamDeleteInput,
        StreamDeleteResult,
        StreamGetInput,
        StreamListGroupsInput,
        StreamListInput,
        StreamSetInput,
        StreamSetResult,
        StreamUpdateInput,
    )

    class Todos(IStream[Any]):
        def __init__(self) -> None:
            self.items: dict[tuple[str, str], Any] = {}

        async def get(self, input: StreamGetInput) -> Any:
            return self.items.get((input.group_id, input.item_id))

        async def set(self, input: StreamSetInput) -> StreamSetResult[Any] | None:
            old = self.items.get((input.group_id, input.item_id))
            self.items[(input.group_id, input.item_id)] = input.data
            return StreamSetResult(old_value=old, new_value=input.data)

        async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
            return StreamDeleteResult(
                old_value=self.items.pop((input.group_id, input.item_id), None)
            )

        async def list(self, input: StreamListInput) -> list[Any]:
            return [v for (group, _), v in self.items.items() if group == input.group_id]

        async def list_groups(self, input: StreamListGroupsInput) -> list[str]:
            return sorted({group for group, _ in self.items})

        async def update(self, input: StreamUpdateInput) -> None:
            return None


def main() -> None:
    iii = register_worker(sys.argv[1], InitOptions(worker_name="official-stream-peer"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            create_stream(iii, "official-todo", Todos())
        state_set = iii.trigger(
            {
                "function_id": "state::set",
                "payload": {"scope": "official", "key": "k", "value": {"from": "official"}},
            }
        )
        stream_set = iii.trigger(
            {
                "function_id": "stream::set",
                "payload": {
                    "stream_name": "official-todo",
                    "group_id": "g",
                    "item_id": "i",
                    "data": {"title": "milk"},
                },
            }
        )
        print(json.dumps({"state_set": state_set, "stream_set": stream_set}), flush=True)
        sys.stdin.read()
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
