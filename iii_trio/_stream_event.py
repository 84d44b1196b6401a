"""The payload of a function bound to a ``stream`` trigger (spec/engine.md 5.2), as a value.

The engine sends ``{"type": "stream", "timestamp", "streamName", "groupId", "id", "event":
{"type": "create" | "update" | "delete", "data"}}``, or for ``stream::send`` ``"event":
{"type": "event", "event": {"type", "data"}}``. :class:`StreamEvent` flattens that into one
value; its conversions to and from the wire shape live here and are installed on the handlers'
converter by :func:`register_hooks`. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import cattrs

from ._types import JSONValue

__all__ = ["StreamEvent", "register_hooks"]

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"const": "stream"},
        "timestamp": {"type": "integer"},
        "streamName": {"type": "string"},
        "groupId": {"type": "string"},
        "id": {"type": ["string", "null"]},
        "event": {"type": "object", "properties": {"type": {"type": "string"}}},
    },
    "required": ["streamName", "groupId", "event"],
}


@attrs.frozen
class StreamEvent:
    """What happened to a stream: annotate the payload parameter of a function bound to a
    ``stream`` trigger with this class.

    Attributes:
        stream_name: the stream.
        group_id: the group.
        item_id: the item (``None`` for a ``send`` without one).
        change: ``"create"``, ``"update"``, ``"delete"`` or, for ``Streams.send``, ``"event"``.
        data: the new value (``create``, ``update``), the deleted one (``delete``), or what was
            sent.
        timestamp: when, in Unix milliseconds.
        event_type: for ``"event"``, the type it was sent with; else ``None``.
    """

    __json_schema__: ClassVar[dict[str, Any]] = _EVENT_SCHEMA

    stream_name: str
    group_id: str
    item_id: str | None
    change: str
    data: JSONValue = None
    timestamp: int = 0
    event_type: str | None = None


def _string(payload: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = payload.get(key)
    if isinstance(value, str) or (optional and value is None):
        return value
    raise TypeError(f"{key} must be a string, got {value!r}")


def _structure(value: Any, annotation: Any) -> StreamEvent:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    event = value.get("event")
    if not isinstance(event, Mapping):
        raise TypeError(f"event must be an object, got {event!r}")
    change = _string(event, "type")
    event_type = None
    data = event.get("data")
    if change == "event":
        sent = event.get("event")
        if not isinstance(sent, Mapping):
            raise TypeError(f"event.event must be an object, got {sent!r}")
        event_type = _string(sent, "type")
        data = sent.get("data")
    timestamp = value.get("timestamp", 0)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"timestamp must be an integer, got {timestamp!r}")
    return StreamEvent(
        stream_name=_string(value, "streamName"),
        group_id=_string(value, "groupId"),
        item_id=_string(value, "id", optional=True),
        change=change,
        data=data,
        timestamp=timestamp,
        event_type=event_type,
    )


def _unstructure(event: StreamEvent) -> dict[str, Any]:
    if event.change == "event":
        detail: dict[str, Any] = {
            "type": "event",
            "event": {"type": event.event_type, "data": event.data},
        }
    else:
        detail = {"type": event.change, "data": event.data}
    return {
        "type": "stream",
        "timestamp": event.timestamp,
        "streamName": event.stream_name,
        "groupId": event.group_id,
        "id": event.item_id,
        "event": detail,
    }


def register_hooks(converter: cattrs.Converter) -> None:
    """Teach ``converter`` the engine's JSON shape of :class:`StreamEvent`."""
    converter.register_structure_hook(StreamEvent, _structure)
    converter.register_unstructure_hook(StreamEvent, _unstructure)
