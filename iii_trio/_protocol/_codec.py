"""JSON encoding and decoding of protocol messages, and the reference for the wire format.

``encode(message) -> bytes`` gives compact UTF-8 JSON with the ``type`` tag; ``decode(frame)``
gives a message object or raises :class:`~iii_trio.ProtocolError` naming what was wrong. The
rules follow spec/protocol.md sections 1.3 and 11:

- unknown ``type`` values decode to :class:`UnknownMessage`; unknown keys are ignored (both logged
  at debug level);
- ``null`` means absent for optional fields;
- a missing required field, a wrong field type, non-JSON (``NaN`` included) or a non-object frame is
  a :class:`ProtocolError`; so is an ``invokefunction`` without ``data`` or a ``registertrigger``
  without ``config``, which the engine requires even though they may be ``null``;
- when encoding, absent optional fields are omitted, ``data`` and ``config`` are always written.

The cattrs converter here is the reference for the wire format: :func:`encode_reference` and
:func:`decode_reference` use it alone. :func:`encode` and :func:`decode` send the two frames of
every call through the hand-written versions in :mod:`._fastpath` instead, and fall back to the
converter for anything those decline. Decoding runs a fast converter first and only re-runs a
detailed one to word the error, so the happy path pays nothing for good error messages.

Every encoder refuses NaN and the infinities with :class:`TypeError`, as it refuses any other
value JSON lacks (see :func:`encode_json`).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable
from typing import Any, Final

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .._exceptions import ProtocolError
from ._fastpath import (
    decode_invocation,
    decode_success,
    encode_call,
    encode_invocation,
    encode_json,
    encode_result,
    successful_result_id,
)
from ._messages import (
    MESSAGE_TYPES,
    ApiKeyAuth,
    BearerAuth,
    EnqueueAction,
    ErrorBody,
    HmacAuth,
    HttpAuth,
    HttpInvocationRef,
    InvokeFunction,
    Message,
    RegisterTrigger,
    TriggerAction,
    UnknownMessage,
    VoidAction,
)

__all__ = [
    "JSONDecodeError",
    "decode",
    "decode_json",
    "decode_parsed",
    "decode_reference",
    "encode",
    "encode_call",
    "encode_json",
    "encode_reference",
    "encode_result",
    "loads",
    "strict_primitive",
    "successful_result_id",
]

#: The JSON parser every frame goes through, and its error, for readers that parse a frame
#: before deciding how to decode it (see :func:`decode_parsed`).
loads: Final = orjson.loads
JSONDecodeError: Final = orjson.JSONDecodeError

logger = logging.getLogger("iii_trio.protocol")
_DEBUG: Final = logging.DEBUG

# Keys that must be present even though their value may be null (spec/protocol.md section 11.1).
_PRESENT_EVEN_IF_NULL: Final[dict[type[Any], tuple[str, ...]]] = {
    InvokeFunction: ("data",),
    RegisterTrigger: ("config",),
}

_TAG_OF: Final[dict[type[Any], str]] = {cls: tag for tag, cls in MESSAGE_TYPES.items()}
_FIELD_NAMES: Final[dict[type[Any], frozenset[str]]] = {
    cls: frozenset(a.name for a in attrs.fields(cls)) for cls in _TAG_OF
}


def strict_primitive(kind: type[Any]) -> Callable[[Any, type[Any]], Any]:
    """A cattrs structure hook that accepts exactly ``kind`` (and ints for floats).

    cattrs would happily turn 5 into "5"; the engine would not, and neither do we.
    """

    def structure(value: Any, _: type[Any]) -> Any:
        if type(value) is kind or (kind is float and type(value) is int):
            return value
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")

    return structure


def _structure_action(value: Any, _: type[Any]) -> TriggerAction | None:
    if value is None:
        return None
    tag = value.get("type") if isinstance(value, dict) else None
    if tag == "void":
        return VoidAction()
    if tag == "enqueue":
        queue = value.get("queue")
        if not isinstance(queue, str):
            raise TypeError("enqueue action needs a string 'queue'")
        return EnqueueAction(queue=queue)
    raise ValueError(f"unknown action {value!r}")


_AUTH_TAGS: Final[dict[str, type[Any]]] = {
    "bearer": BearerAuth,
    "api_key": ApiKeyAuth,
    "hmac": HmacAuth,
}


def _is_type(*candidates: Any) -> Callable[[Any], bool]:
    # Optional unions reach hooks as typing.Union or types.UnionType; compare by equality.
    return lambda declared: any(declared == candidate for candidate in candidates)


def _is_list_type(declared: Any) -> bool:
    return declared is list or typing.get_origin(declared) is list


def _make_converter(*, detailed: bool) -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=detailed, forbid_extra_keys=False)
    for kind in (str, int, bool, float):
        converter.register_structure_hook(kind, strict_primitive(kind))

    def structure_list(value: Any, declared: Any) -> list[Any]:
        # cattrs would turn any iterable (a string, an object's keys) into a list.
        if type(value) is not list:
            raise TypeError(f"expected list, got {type(value).__name__}")
        (item_type,) = typing.get_args(declared) or (Any,)
        return [converter.structure(item, item_type) for item in value]

    converter.register_structure_hook_func(_is_list_type, structure_list)
    converter.register_structure_hook_func(
        _is_type(TriggerAction, TriggerAction | None), _structure_action
    )
    converter.register_unstructure_hook(VoidAction, lambda _: {"type": "void"})
    converter.register_unstructure_hook(
        EnqueueAction, lambda action: {"type": "enqueue", "queue": action.queue}
    )

    def structure_auth(value: Any, _: type[Any]) -> HttpAuth | None:
        if value is None:
            return None
        tag = value.get("type") if isinstance(value, dict) else None
        cls = _AUTH_TAGS.get(tag) if isinstance(tag, str) else None
        if cls is None:
            raise ValueError(f"unknown auth type {tag!r}")
        auth: HttpAuth = converter.structure(value, cls)
        return auth

    converter.register_structure_hook_func(_is_type(HttpAuth, HttpAuth | None), structure_auth)
    for tag, cls in _AUTH_TAGS.items():
        fields_of = make_dict_unstructure_fn(cls, converter)
        converter.register_unstructure_hook(cls, _tagged(fields_of, tag))
    converter.register_structure_hook(
        HttpInvocationRef,
        make_dict_structure_fn(HttpInvocationRef, converter),
    )
    converter.register_unstructure_hook(
        ErrorBody, make_dict_unstructure_fn(ErrorBody, converter, _cattrs_omit_if_default=True)
    )
    converter.register_unstructure_hook(
        HttpInvocationRef,
        make_dict_unstructure_fn(HttpInvocationRef, converter, _cattrs_omit_if_default=True),
    )
    for cls, tag in _TAG_OF.items():
        keep: dict[str, Any] = {
            name: override(omit_if_default=False) for name in _PRESENT_EVEN_IF_NULL.get(cls, ())
        }
        fields_of = make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=True, **keep)
        converter.register_unstructure_hook(cls, _tagged(fields_of, tag))
    return converter


def _tagged(
    unstructure_fields: Callable[[Any], dict[str, Any]], tag: str
) -> Callable[[Any], dict[str, Any]]:
    def unstructure(message: Any) -> dict[str, Any]:
        fields = unstructure_fields(message)
        fields["type"] = tag
        return fields

    return unstructure


_fast = _make_converter(detailed=False)
_detailed = _make_converter(detailed=True)


def decode_json(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text, raising :class:`ProtocolError` instead of the parser's own error."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}", frame=data) from None


def encode(message: Message) -> bytes:
    """The wire form of ``message``: compact UTF-8 JSON including the ``type`` tag.

    Raises:
        TypeError: a field holds a value that is not JSON (see :func:`encode_json`).
    """
    if type(message) is InvokeFunction:
        return encode_invocation(message)
    return encode_reference(message)


def encode_reference(message: Message) -> bytes:
    """:func:`encode` by the converter alone: the reference the hand-written encoders of
    :mod:`._fastpath` are tested against.

    Raises:
        TypeError: as :func:`encode`.
    """
    if isinstance(message, UnknownMessage):
        return encode_json({**message.fields, "type": message.type})
    return encode_json(_fast.unstructure(message))


_FAST_DECODERS: Final[dict[str, Callable[[dict[str, Any]], Message | None]]] = {
    "invokefunction": decode_invocation,
    "invocationresult": decode_success,
}


def decode(frame: bytes | bytearray | memoryview | str) -> Message:
    """Parse one frame into a message object.

    Raises:
        ProtocolError: the frame is not a JSON object, has no string ``type``, or a known
            message's fields are missing or of the wrong type. The message names the field.
    """
    try:
        raw = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}", frame=frame) from None
    return decode_parsed(raw, frame)


def decode_parsed(raw: Any, frame: bytes | bytearray | memoryview | str) -> Message:
    """:func:`decode` of ``frame``, already parsed into ``raw`` (for a reader that looked at the
    JSON first). ``frame`` is only quoted in errors.

    Raises:
        ProtocolError: as :func:`decode`.
    """
    if type(raw) is dict:
        tag = raw.get("type")
        if type(tag) is str:
            fast = _FAST_DECODERS.get(tag)
            if fast is not None:
                decoded = fast(raw)
                if decoded is not None:
                    if logger.isEnabledFor(_DEBUG):
                        _log_unknown_fields(tag, raw, type(decoded))
                    return decoded
    return _structure(raw, frame)


def decode_reference(frame: bytes | bytearray | memoryview | str) -> Message:
    """:func:`decode` by the converter alone: the reference the hand-written decoders of
    :mod:`._fastpath` are tested against.

    Raises:
        ProtocolError: as :func:`decode`.
    """
    try:
        raw = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}", frame=frame) from None
    return _structure(raw, frame)


def _structure(raw: Any, frame: bytes | bytearray | memoryview | str) -> Message:
    if type(raw) is not dict:
        raise ProtocolError(f"frame is a JSON {type(raw).__name__}, not an object", frame=frame)
    tag = raw.get("type")
    if type(tag) is not str:
        raise ProtocolError("frame has no string 'type'", frame=frame)
    cls = MESSAGE_TYPES.get(tag)
    if cls is None:
        logger.debug("unknown message type %r", tag)
        return UnknownMessage(type=tag, fields={k: v for k, v in raw.items() if k != "type"})
    for name in _PRESENT_EVEN_IF_NULL.get(cls, ()):
        if name not in raw:
            raise ProtocolError(f"{tag}: missing required field '{name}'", frame=frame)
    try:
        message: Message = _fast.structure(raw, cls)
    except Exception:
        raise ProtocolError(f"{tag}: {_explain(raw, cls)}", frame=frame) from None
    if logger.isEnabledFor(_DEBUG):
        _log_unknown_fields(tag, raw, cls)
    return message


def _log_unknown_fields(tag: str, raw: dict[str, Any], cls: type[Any]) -> None:
    extra = raw.keys() - _FIELD_NAMES[cls] - {"type"}
    if extra:
        logger.debug("%s: ignoring unknown fields %s", tag, sorted(extra))


def _explain(raw: dict[str, Any], cls: type[Any]) -> str:
    try:
        _detailed.structure(raw, cls)
    except Exception as exc:
        return "; ".join(cattrs.transform_error(exc, path="")) or str(exc)
    # The fast converter failed where the detailed one did not: say so rather than guess.
    return "invalid message"  # pragma: no cover
