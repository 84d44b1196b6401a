"""``iii-pubsub``: the ``publish`` function and the ``subscribe`` trigger type
(spec/engine.md section 6).

``publish {"topic", "data"}`` hands ``data`` itself (no envelope) to every live ``subscribe``
binding of ``topic``, each in its own fire-and-forget call in the binding's namespace with
metadata ``null``, and answers ``null`` without waiting for them. Nothing is kept: a topic
nobody subscribes to drops the message, a failing subscriber is not retried. A binding's
``condition_function_id`` is ignored, as in the engine.

Where the dev engine differs from the engine
--------------------------------------------

- Unsubscribing removes that binding only. The engine's local adapter drops the topic's whole
  subscription map when any one binding of the topic goes (unregistered, or its worker gone),
  silently cutting off every other subscriber (spec/engine-observed.md section 5); the dev
  engine does not copy that bug.
- The ``adapter`` block (``local``, ``memory`` or ``redis``) is read and ignored: subscribers
  are always the engine's own, in memory, which is what ``local`` does in one engine process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import attrs

from ..._protocol._messages import JSON
from ._model import Binding, Output
from ._plugin import BuiltinFailure, BuiltinFunction, Call, EnginePlugin, Input

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = ["PUBSUB", "PubSub", "PubSubSettings", "read_pubsub_block"]

logger = logging.getLogger("iii_trio.dev_engine")

#: The worker's name, in the config file and in ``engine::workers::list``.
PUBSUB: Final = "iii-pubsub"
PUBLISH: Final = "publish"
SUBSCRIBE: Final = "subscribe"

_ADAPTERS: Final = ("local", "memory", "redis")


@attrs.frozen
class PubSubSettings:
    """The ``iii-pubsub`` block, read.

    Attributes:
        adapter: the ``adapter.name`` the block asks for (``local`` when absent); the dev
            engine delivers in memory whatever it says.
    """

    adapter: str = "local"


def read_pubsub_block(block: object) -> PubSubSettings:
    """Read an ``iii-pubsub`` config block (``None``: absent) as the engine does: only
    ``adapter`` is allowed, a mapping whose ``name`` is one of the engine's adapters."""
    from ._builtins import BlockError, read_adapter  # here: _builtins imports this module

    if block is None:
        return PubSubSettings()
    if not isinstance(block, dict):
        raise BlockError("", "expected a mapping (with `adapter`)")
    for key in block:
        if key != "adapter":
            raise BlockError(str(key), "unknown field (expected `adapter`)")
    adapter = read_adapter(block.get("adapter"))
    if adapter is None:
        return PubSubSettings()
    name = adapter[0]
    if name not in _ADAPTERS:
        raise BlockError("adapter.name", f"expected one of {', '.join(_ADAPTERS)}, got {name!r}")
    return PubSubSettings(adapter=name)


class PubSub(EnginePlugin):
    """The ``iii-pubsub`` worker."""

    name = PUBSUB

    def __init__(self, settings: PubSubSettings | None = None) -> None:
        self.settings = settings if settings is not None else PubSubSettings()
        #: Live bindings by topic, then by binding id, in the order they subscribed.
        self._topics: dict[str, dict[str, Binding]] = {}
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def functions(self) -> Mapping[str, BuiltinFunction]:
        return {PUBLISH: BuiltinFunction(self._publish, "Publishes an event", "PubSubInput")}

    def trigger_types(self) -> Mapping[str, str]:
        return {SUBSCRIBE: "Subscribe to a topic"}

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        topic = _topic_of(binding)
        if not topic:
            # The engine accepts the binding and subscribes it to nothing.
            logger.warning("trigger %s: Topic is not set for trigger", binding.id)
            return
        self._topics.setdefault(topic, {})[binding.id] = binding

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        topic = _topic_of(binding)
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return
        subscribers.pop(binding.id, None)
        if not subscribers:
            del self._topics[topic]

    def _publish(self, call: Call, data: Input, out: list[Output]) -> JSON:
        topic = data.required_str("topic")
        payload = data.required("data")
        if not topic:
            raise BuiltinFailure("topic_not_set", "Topic is not set")
        for binding in list(self._topics.get(topic, {}).values()):
            # Fire and forget: no continuation, so the outcome is dropped.
            self._engine.call_function(binding.namespace, binding.function_id, payload, out)
        return None


def _topic_of(binding: Binding) -> str:
    """The binding's ``topic`` as the engine reads it: a string, else empty."""
    config = binding.config
    topic = config.get("topic") if isinstance(config, dict) else None
    return topic if isinstance(topic, str) else ""
