"""Channel refs on the wire (spec/protocol.md section 6): recognising them in payloads, turning
them into live ends and back, and the URL of a channel's data socket.

A ref is a plain JSON object ``{"channel_id", "access_key", "direction"}`` anywhere in a payload
or a result (section 6.2). A receiver recognises it by shape, exactly as the official SDKs do: a
string ``channel_id``, a string ``access_key`` and a ``direction`` of ``"read"`` or
``"write"``; other keys are allowed and ignored.

Sans-io: no trio, no websockets. The live ends themselves are :mod:`iii_trio._channels`'s; this
module only calls the factory it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeGuard, TypeVar
from urllib.parse import quote

from .._types import ChannelRef

__all__ = [
    "CHUNK_SIZE",
    "channel_url",
    "has_channel_refs",
    "is_channel_ref",
    "json_default",
    "ref_from_json",
    "ref_to_json",
    "replace_channel_refs",
]

#: The largest binary frame a writer sends (section 6.4; the official SDKs' chunk size).
CHUNK_SIZE: Final = 64 * 1024

_DIRECTIONS: Final = ("read", "write")
#: Every payload is walked, and most hold no container at all: whether a dict or list holds
#: one is asked in one pass in C (``isdisjoint`` over its items' types) before any item is
#: looked at in Python.
_CONTAINERS: Final = frozenset({dict, list})

_End = TypeVar("_End")


def is_channel_ref(value: Any) -> TypeGuard[dict[str, Any]]:
    """Whether ``value`` is a channel ref as it appears in JSON (a dict of the right shape)."""
    return (
        type(value) is dict
        and type(value.get("channel_id")) is str
        and type(value.get("access_key")) is str
        and value.get("direction") in _DIRECTIONS
    )


def ref_from_json(value: dict[str, Any]) -> ChannelRef:
    """The :class:`ChannelRef` of a dict :func:`is_channel_ref` accepted."""
    return ChannelRef(value["channel_id"], value["access_key"], value["direction"])


def ref_to_json(ref: ChannelRef) -> dict[str, Any]:
    """``ref`` as it goes on the wire."""
    return {"channel_id": ref.channel_id, "access_key": ref.access_key, "direction": ref.direction}


def has_channel_refs(value: Any) -> bool:
    """Whether a channel ref is anywhere in ``value`` (a JSON value: dicts, lists, scalars)."""
    if type(value) is dict:
        if "access_key" in value and is_channel_ref(value):
            return True
        # Every payload is asked this: the usual one, a small dict of scalars, costs one pass
        # over its values and nothing else.
        for item in value.values():
            if type(item) in _CONTAINERS:
                break
        else:
            return False
    elif type(value) is not list:
        return False
    pending: list[Any] = [value]
    while pending:
        container = pending.pop()
        items = container.values() if type(container) is dict else container
        if _CONTAINERS.isdisjoint(map(type, items)):
            continue
        for item in items:
            item_kind = type(item)
            if item_kind is dict:
                if is_channel_ref(item):
                    return True
                pending.append(item)
            elif item_kind is list:
                pending.append(item)
    return False


def replace_channel_refs(value: Any, make: Callable[[ChannelRef], _End]) -> Any:
    """Replace every channel ref in ``value`` by ``make(ref)``, in place, and return the result
    (``make(ref)`` itself when ``value`` is a ref).

    ``value`` must be a freshly decoded JSON value nobody else holds: its dicts and lists are
    changed where they hold refs. The walk uses no recursion, so any nesting depth the JSON
    parser accepted is fine.
    """
    if type(value) is dict:
        if "access_key" in value and is_channel_ref(value):
            return make(ref_from_json(value))
        for item in value.values():  # the usual payload: see has_channel_refs
            if type(item) in _CONTAINERS:
                break
        else:
            return value
    elif type(value) is not list:
        return value
    pending: list[Any] = [value]
    while pending:
        container = pending.pop()
        if type(container) is dict:
            if _CONTAINERS.isdisjoint(map(type, container.values())):
                continue
            for key, item in container.items():
                item_kind = type(item)
                if item_kind is dict:
                    if is_channel_ref(item):
                        # The same key: the dict's size, which its iterators check, is kept.
                        container[key] = make(ref_from_json(item))
                    else:
                        pending.append(item)
                elif item_kind is list:
                    pending.append(item)
        else:
            if _CONTAINERS.isdisjoint(map(type, container)):
                continue
            for index, item in enumerate(container):
                item_kind = type(item)
                if item_kind is dict:
                    if is_channel_ref(item):
                        container[index] = make(ref_from_json(item))
                    else:
                        pending.append(item)
                elif item_kind is list:
                    pending.append(item)
    return value


def json_default(value: object) -> Any:
    """orjson's ``default`` hook: what a channel ref, or a live end holding one, is in JSON.

    A live end (:class:`~iii_trio.ChannelReader`, :class:`~iii_trio.ChannelWriter`) is known by
    its ``ref`` attribute, a :class:`ChannelRef`; placing it in a payload hands that end over.

    Raises:
        TypeError: ``value`` is none of those (orjson's own message for an unknown type).
    """
    if type(value) is ChannelRef:
        return ref_to_json(value)
    ref = getattr(value, "ref", None)
    if type(ref) is ChannelRef:
        return ref_to_json(ref)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def channel_url(engine_url: str, ref: ChannelRef) -> str:
    """The URL of the data socket for ``ref``'s end (section 6.3).

    Same scheme, host and port as the engine connection; a query already on ``engine_url``
    (a token, say) is kept and the channel's ``key`` and ``dir`` follow it, as SDK 0.25 does.
    """
    base, _, query = engine_url.partition("?")
    base = base.partition("#")[0]
    query = query.partition("#")[0]
    own = f"key={quote(ref.access_key, safe='')}&dir={ref.direction}"
    channel_id = quote(ref.channel_id, safe="")
    return f"{base.rstrip('/')}/ws/channels/{channel_id}?{query + '&' if query else ''}{own}"
