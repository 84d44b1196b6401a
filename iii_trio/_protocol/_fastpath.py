"""Hand-written encoding and decoding of the two frames every call crosses the wire with.

One ``invokefunction`` and one ``invocationresult`` pass per call, through the worker and through
the dev engine alike. The cattrs converter in :mod:`._codec` is the reference for the wire format;
the functions here give the same frames and the same messages (tests/protocol/test_fastpath.py
compares them on generated messages and frames) without its per-field machinery. Anything
unusual, such as an ``action``, an ``error`` body or a field of the wrong type, is declined here
and left to the converter, which also words the errors.

Also here is :func:`encode_json`, the serializer every frame goes through, since the encoders of
this module must apply the same rule about NaN and infinities. Every encoder writes a channel ref
or a live channel end found in a value as the ref's JSON object (see the notes on the hook).

Sans-io: this module imports nothing but the standard library, orjson and its sibling modules.
"""

from __future__ import annotations

import dataclasses
import enum
from math import isfinite
from typing import Any, Final

import orjson

from ._channels import json_default
from ._messages import EnqueueAction, InvocationResult, InvokeFunction, TriggerAction

__all__ = [
    "decode_invocation",
    "decode_success",
    "encode_call",
    "encode_invocation",
    "encode_json",
    "encode_result",
    "is_plain_invocation",
    "reject_non_finite",
    "routable_invocation_id",
    "successful_result_id",
]

_dumps: Final = orjson.dumps
_replace: Final = bytes.replace
# Values that hold no float, so a walk looking for one skips them without a call.
_LEAVES: Final = frozenset({str, int, bool, type(None)})
_L: Final = ord("l")


# --- encoding ---------------------------------------------------------------------------------
# orjson writes NaN and the infinities as null, so a handler returning float("nan") would give
# its caller null, and a payload would arrive changed. JSON has no such values and the engine
# drops a frame that spells them out, so the encoders refuse them as they refuse any other value
# JSON lacks. A frame can hold one only if its bytes contain "null", and only then is the value
# walked.
#
# How that is asked matters, once per call. `b"null" in frame` first tries its left operand as an
# integer, and raises and clears a TypeError before it searches: on CPython 3.11 that detour costs
# more than building a small frame. Of the ways to search without it, bytes.replace is the
# cheapest: it parses its arguments quickly and, with nothing to replace, hands back the frame
# itself, so `is` tells the answer without allocating anything. (orjson runs on CPython only; an
# implementation that copied would make the test slower, never wrong.) An integer operand, on the
# other hand, is a single memchr, so encode_call first asks for the byte "l", which no name an
# invocation frame is made of contains: a frame without one of its own skips the search. A result
# frame always has one, in "invocationresult".
#
# The search reads every byte (about 0.7 ns each, 7 µs for 10 KB: more than orjson took to write
# them), while a walk costs per item. So a large frame is first walked for a few items: a value
# made of a large string or two, the usual shape of a large payload, is decided at once; one with
# more items than that is searched.

# Channel refs and live channel ends are written as refs by orjson's `default` hook. Passing the
# hook costs every frame a few hundred instructions although orjson calls it only for a type it
# does not know, so a value is first written without it, and again with it only if orjson
# refused it (the hook refuses anything else with orjson's own message).

#: Frames up to this size are searched; larger ones are walked first (see above).
_SEARCHED_UP_TO: Final = 4096
#: Items walked in a large frame's value before falling back to the search.
_WALK_BUDGET: Final = 32


def _may_hold_non_finite(frame: bytes, value: Any) -> bool:
    """Whether ``value``, serialized as ``frame``, may hold NaN or an infinity: False is sure,
    True asks for :func:`reject_non_finite`."""
    if len(frame) > _SEARCHED_UP_TO:
        decided = _non_finite_among_few(value)
        if decided is not None:
            return decided
    return _replace(frame, b"null", b"") is not frame


def _non_finite_among_few(value: Any) -> bool | None:
    """Whether ``value`` holds NaN or an infinity, if a walk of at most :data:`_WALK_BUDGET`
    items of plain JSON tells; None when it has more items, or others."""
    pending = [value]
    budget = _WALK_BUDGET
    while pending:
        budget -= 1
        if budget < 0:
            return None
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif kind is float:
            if not isfinite(item):
                return True
        elif kind not in _LEAVES:
            return None
    return False


def encode_json(value: Any) -> bytes:
    """Serialize a JSON value the way every frame is written: compact UTF-8.

    Raises:
        TypeError: the value is not JSON: an unsupported type (orjson's ``JSONEncodeError``),
            NaN or an infinity.
    """
    try:
        frame = _dumps(value)
    except TypeError:  # a channel ref or end, perhaps: see the notes on the hook
        frame = _dumps(value, json_default)
    if _may_hold_non_finite(frame, value):
        reject_non_finite(value)
    return frame


def reject_non_finite(value: Any) -> None:
    """Raise if ``value``, which orjson can serialize, holds NaN or an infinity anywhere.

    Raises:
        TypeError: naming the value and, unless it is ``value`` itself, the keys and indexes
            that lead to it, as in ``NaN is not a JSON value (at data.items[2])``.
    """
    if not _holds_non_finite(value):
        return
    found = _non_finite_in(value)
    assert found is not None
    number, reversed_path = found
    name = "NaN" if number != number else "Infinity" if number > 0 else "-Infinity"
    path = "".join(
        f"[{step}]" if type(step) is int else f".{step}" for step in reversed(reversed_path)
    ).removeprefix(".")
    where = f" (at {path})" if path else ""
    raise TypeError(f"{name} is not a JSON value{where}")


def _holds_non_finite(value: Any) -> bool:
    """Whether ``value`` holds NaN or an infinity anywhere.

    Every frame with a null in it gets here, most of them for a None, so this pass keeps no
    path and, for plain JSON, makes no call. :func:`_non_finite_in`, which also knows the other
    types orjson writes, finds the path once there is something to report.
    """
    pending = [value]
    pop, push = pending.pop, pending.extend
    while pending:
        item = pop()
        kind = type(item)
        if kind is dict:
            push(item.values())
        elif kind is list:
            push(item)
        elif kind is float:
            if not isfinite(item):
                return True
        elif kind not in _LEAVES and _non_finite_in(item) is not None:
            return True
    return False


def _non_finite_in(value: Any) -> tuple[float, list[str | int]] | None:
    """The first NaN or infinity in ``value``, with the steps to it from the innermost out.

    Covers what orjson serializes natively and may hold a float: containers, dataclasses and
    enums. The recursion is bounded because orjson refuses values nested deeper than 255.
    """
    kind = type(value)
    if kind is float:
        return None if isfinite(value) else (value, [])
    if kind in _LEAVES:
        return None
    entries: Any
    if isinstance(value, dict):
        entries = value.items()
    elif isinstance(value, (list, tuple)):
        entries = enumerate(value)
    elif isinstance(value, enum.Enum):
        return _non_finite_in(value.value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        # orjson leaves out the fields whose names start with an underscore.
        entries = [
            (field.name, getattr(value, field.name))
            for field in dataclasses.fields(value)
            if not field.name.startswith("_")
        ]
    elif isinstance(value, float):
        return None if isfinite(value) else (value, [])
    else:
        return None
    for key, item in entries:
        if type(item) in _LEAVES:
            continue
        found = _non_finite_in(item)
        if found is not None:
            found[1].append(key)
            return found
    return None


def encode_call(
    function_id: str,
    data: Any,
    invocation_id: str | None,
    *,
    metadata: Any = None,
    namespace: str | None = None,
    traceparent: str | None = None,
    baggage: str | None = None,
    action: TriggerAction | None = None,
    from_wire: bool = False,
) -> bytes:
    """The frame of an ``invokefunction``, without building the message object.

    ``from_wire``: ``data`` and ``metadata`` were parsed from a frame (the dev engine relaying
    a call). orjson refuses NaN, the infinities and numbers that overflow a double when it
    parses, so they cannot hold one and the test for them is skipped.

    Raises:
        TypeError: ``data`` or ``metadata`` is not JSON (see :func:`encode_json`).
    """
    # One dict display for the common case rather than a display and an assignment.
    fields: dict[str, Any]
    if invocation_id is not None:
        fields = {
            "type": "invokefunction",
            "function_id": function_id,
            "data": data,
            "invocation_id": invocation_id,
        }
    else:
        fields = {"type": "invokefunction", "function_id": function_id, "data": data}
    if metadata is not None:
        fields["metadata"] = metadata
    if namespace is not None:
        fields["namespace"] = namespace
    if traceparent is not None:
        fields["traceparent"] = traceparent
    if baggage is not None:
        fields["baggage"] = baggage
    if action is not None:
        fields["action"] = (
            {"type": "enqueue", "queue": action.queue}
            if isinstance(action, EnqueueAction)
            else {"type": "void"}
        )
    # encode_json's test, with the byte test first (see the notes above _SEARCHED_UP_TO).
    try:
        frame = _dumps(fields)
    except TypeError:  # a channel ref or end, perhaps: see the notes on the hook
        frame = _dumps(fields, json_default)
    if not from_wire and _L in frame and _may_hold_non_finite(frame, fields):
        reject_non_finite(fields)
    return frame


def encode_invocation(message: InvokeFunction) -> bytes:
    """:func:`encode_call` of a message object."""
    return encode_call(
        message.function_id,
        message.data,
        message.invocation_id,
        metadata=message.metadata,
        namespace=message.namespace,
        traceparent=message.traceparent,
        baggage=message.baggage,
        action=message.action,
    )


def encode_result(
    invocation_id: str,
    function_id: str,
    result: Any,
    *,
    traceparent: str | None = None,
    baggage: str | None = None,
    from_wire: bool = False,
) -> bytes:
    """The frame of a successful ``invocationresult``, without building the message object.

    ``from_wire``: as for :func:`encode_call`.

    Raises:
        TypeError: ``result`` is not JSON (see :func:`encode_json`).
    """
    # One dict display for the common case rather than a display and an assignment.
    fields: dict[str, Any]
    if result is not None:
        fields = {
            "type": "invocationresult",
            "invocation_id": invocation_id,
            "function_id": function_id,
            "result": result,
        }
    else:
        fields = {
            "type": "invocationresult",
            "invocation_id": invocation_id,
            "function_id": function_id,
        }
    if traceparent is not None:
        fields["traceparent"] = traceparent
    if baggage is not None:
        fields["baggage"] = baggage
    try:
        frame = _dumps(fields)
    except TypeError:  # a channel ref or end, perhaps: see the notes on the hook
        frame = _dumps(fields, json_default)
    # Without a result nothing in the frame is a number, so there is nothing to look for.
    if not from_wire and result is not None and _may_hold_non_finite(frame, result):
        reject_non_finite(fields)
    return frame


# --- decoding ---------------------------------------------------------------------------------
# Each check takes a parsed frame whose "type" the caller has already looked at, and answers
# only for frames the converter would decode without error; None or False means "decode it".


def is_plain_invocation(raw: dict[str, Any]) -> bool:
    """Whether ``raw``, a parsed ``invokefunction`` frame, decodes without error into an
    :class:`InvokeFunction` with no ``action`` (its ``invocation_id`` may be absent)."""
    invocation_id = raw.get("invocation_id")
    traceparent = raw.get("traceparent")
    baggage = raw.get("baggage")
    namespace = raw.get("namespace")
    return (
        type(raw.get("function_id")) is str
        and "data" in raw
        and raw.get("action") is None
        and (invocation_id is None or type(invocation_id) is str)
        and (traceparent is None or type(traceparent) is str)
        and (baggage is None or type(baggage) is str)
        and (namespace is None or type(namespace) is str)
    )


def routable_invocation_id(raw: dict[str, Any]) -> str | None:
    """The invocation id of ``raw``, a parsed ``invokefunction`` frame, when it is a plain
    call that waits for its result (:func:`is_plain_invocation`, with an id); None otherwise.

    Such a call needs only its fields, so the dev engine routes it without the message object.
    """
    invocation_id = raw.get("invocation_id")
    if type(invocation_id) is not str or not is_plain_invocation(raw):
        return None
    return invocation_id


def decode_invocation(raw: dict[str, Any]) -> InvokeFunction | None:
    """The message of ``raw``, a parsed ``invokefunction`` frame, when it is a plain one
    (:func:`is_plain_invocation`); None when the converter must decode it."""
    if not is_plain_invocation(raw):
        return None
    return InvokeFunction(
        raw["function_id"],
        raw["data"],
        raw.get("invocation_id"),
        raw.get("traceparent"),
        raw.get("baggage"),
        None,
        raw.get("metadata"),
        raw.get("namespace"),
    )


def successful_result_id(raw: dict[str, Any]) -> str | None:
    """The invocation id of ``raw``, a parsed ``invocationresult`` frame, when it decodes
    without error into a success; None when it is a failure or must be decoded to be judged.

    A pending call's result needs only its id and ``result``, so the worker's reader and the dev
    engine take successes this way, without building the message object.
    """
    invocation_id = raw.get("invocation_id")
    traceparent = raw.get("traceparent")
    baggage = raw.get("baggage")
    if (
        type(invocation_id) is not str
        or type(raw.get("function_id")) is not str
        or raw.get("error") is not None
        or (traceparent is not None and type(traceparent) is not str)
        or (baggage is not None and type(baggage) is not str)
    ):
        return None
    return invocation_id


def decode_success(raw: dict[str, Any]) -> InvocationResult | None:
    """The message of ``raw``, a parsed ``invocationresult`` frame, when it is a success
    (:func:`successful_result_id`); None when the converter must decode it."""
    invocation_id = successful_result_id(raw)
    if invocation_id is None:
        return None
    return InvocationResult(
        invocation_id,
        raw["function_id"],
        raw.get("result"),
        None,
        raw.get("traceparent"),
        raw.get("baggage"),
    )
