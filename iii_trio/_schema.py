"""JSON Schema (draft 2020-12) derived from Python type annotations.

Used once per registration, never per call, to fill ``request_format`` / ``response_format`` when
the user gives none. Supports what a handler's payload usually is: ``str``, ``int``, ``float``,
``bool``, ``None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, unions and ``Optional``,
``Literal``, enums, and attrs classes (nested), and channel ends (a :class:`~iii_trio.ChannelReader`
or :class:`~iii_trio.ChannelWriter` parameter takes a ref of that direction). Anything else
(``Any``, no annotation, an unknown class) yields no schema rather than a wrong one.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Final, Literal, Union

import attrs

from ._channels import ChannelReader, ChannelWriter

__all__ = ["SCHEMA_DIALECT", "schema_for"]

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_PRIMITIVES: Final[dict[Any, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class _NoSchema(Exception):
    pass


def schema_for(annotation: Any) -> dict[str, Any] | None:
    """The JSON Schema for ``annotation``, or None when it cannot be described faithfully."""
    if annotation is Any:
        return None
    try:
        schema = _describe(annotation, seen=frozenset())
    except _NoSchema:
        return None
    return {"$schema": SCHEMA_DIALECT, **schema}


def _describe(annotation: Any, *, seen: frozenset[type[Any]]) -> dict[str, Any]:
    if annotation is Any:
        return {}
    if annotation in _PRIMITIVES:
        return {"type": _PRIMITIVES[annotation]}
    if annotation is None:
        return {"type": "null"}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return _describe_union(args, seen=seen)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is ...):
        if not args:
            return {"type": "array"}
        return {"type": "array", "items": _describe(args[0], seen=seen)}
    if origin is tuple and args:
        items = [_describe(arg, seen=seen) for arg in args]
        return {"type": "array", "prefixItems": items, "items": False}
    if origin is dict or annotation is dict:
        if args and args[0] is not str:
            raise _NoSchema
        if len(args) == 2:
            return {"type": "object", "additionalProperties": _describe(args[1], seen=seen)}
        return {"type": "object"}
    if annotation is list:
        return {"type": "array"}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"enum": [member.value for member in annotation]}
    if isinstance(annotation, type) and isinstance(
        explicit := getattr(annotation, "__json_schema__", None), dict
    ):
        # A type whose JSON shape is not its attributes' (renamed or nested keys) says so.
        return dict(explicit)
    if isinstance(annotation, type) and attrs.has(annotation):
        return _describe_attrs(annotation, seen=seen)
    if annotation is ChannelReader or annotation is ChannelWriter:
        direction = "read" if annotation is ChannelReader else "write"
        return {
            "type": "object",
            "properties": {
                "channel_id": {"type": "string"},
                "access_key": {"type": "string"},
                "direction": {"const": direction},
            },
            "required": ["channel_id", "access_key", "direction"],
        }
    raise _NoSchema


def _describe_union(args: tuple[Any, ...], *, seen: frozenset[type[Any]]) -> dict[str, Any]:
    described = [_describe(arg, seen=seen) for arg in args]
    if all(set(schema) == {"type"} for schema in described):
        return {"type": [schema["type"] for schema in described]}
    return {"anyOf": described}


def _describe_attrs(cls: type[Any], *, seen: frozenset[type[Any]]) -> dict[str, Any]:
    if cls in seen:
        raise _NoSchema  # recursive types would need $defs; better no schema than a wrong one
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # e.g. a name imported only under TYPE_CHECKING
        raise _NoSchema from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        if not field.init:
            continue
        name = field.name  # cattrs (un)structures attrs classes by attribute name
        properties[name] = _describe(hints.get(field.name, Any), seen=seen | {cls})
        if field.default is attrs.NOTHING:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema
