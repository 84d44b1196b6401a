"""The hand-written fast paths of the two per-call frames against the converter, the reference
for the wire format, on generated messages and frames.

Each direction is checked: the fast encoders write the JSON the reference writes, or both refuse
the value; fast decoding gives the message the reference gives, or both raise ProtocolError; and
the checks the worker's reader and the dev engine route by accept exactly the frames the
reference decodes into a plain call or a success.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iii_trio import ProtocolError
from iii_trio._protocol._codec import (
    decode,
    decode_parsed,
    decode_reference,
    encode,
    encode_reference,
)
from iii_trio._protocol._fastpath import (
    decode_invocation,
    decode_success,
    encode_call,
    encode_invocation,
    encode_result,
    is_plain_invocation,
    routable_invocation_id,
    successful_result_id,
)
from iii_trio._protocol._messages import (
    EnqueueAction,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    VoidAction,
)

# Few examples and no example database: the file runs in seconds. Hypothesis also caches what it
# learns from the source files in its storage directory (./.hypothesis unless told otherwise),
# whatever the database setting, so send that out of the work tree. Hypothesis reads this when it
# first touches the disk, in a test, after every test module has been imported.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "iii-trio-hypothesis")
)
checked = settings(deadline=None, database=None, max_examples=50)

# --- JSON values --------------------------------------------------------------------------------

# Strings mix any code point (astral ones included) with the characters JSON must escape, and the
# word the encoders search frames for.
_characters = st.one_of(
    st.characters(exclude_categories=["Cs"]),
    st.characters(min_codepoint=0x10000, exclude_categories=["Cs"]),
    st.sampled_from('"\\/\b\f\n\r\t\x00\x1f\x7f\u2028'),
)
texts = st.one_of(st.text(_characters, max_size=12), st.sampled_from(["", "null", "nullable"]))
finite_numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), finite_numbers, texts)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(texts, children, max_size=4),
    )


json_values = st.recursive(scalars, _containers, max_leaves=12)
# As above, with now and then a number JSON has no spelling for.
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
maybe_non_json_values = st.recursive(st.one_of(scalars, non_finite), _containers, max_leaves=12)
optional_texts = st.none() | texts
actions = st.one_of(st.none(), st.just(VoidAction()), st.builds(EnqueueAction, queue=texts))
error_bodies = st.builds(ErrorBody, code=texts, message=texts, stacktrace=optional_texts)
optional_error_bodies = st.none() | error_bodies


def invocations(values: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[InvokeFunction]:
    return st.builds(
        InvokeFunction,
        function_id=texts,
        data=values,
        invocation_id=optional_texts,
        traceparent=optional_texts,
        baggage=optional_texts,
        action=actions,
        metadata=values,
        namespace=optional_texts,
    )


def results(
    values: st.SearchStrategy[Any] = json_values,
    errors: st.SearchStrategy[ErrorBody | None] = optional_error_bodies,
) -> st.SearchStrategy[InvocationResult]:
    return st.builds(
        InvocationResult,
        invocation_id=texts,
        function_id=texts,
        result=values,
        error=errors,
        traceparent=optional_texts,
        baggage=optional_texts,
    )


def canonical(frame: bytes) -> bytes:
    """The frame's JSON with sorted keys: equal for equal JSON, and unlike ``==`` on the parsed
    values it tells 1, 1.0 and true apart."""
    return orjson.dumps(orjson.loads(frame), option=orjson.OPT_SORT_KEYS)


def fast_result_frame(message: InvocationResult) -> bytes:
    assert message.error is None
    return encode_result(
        message.invocation_id,
        message.function_id,
        message.result,
        traceparent=message.traceparent,
        baggage=message.baggage,
    )


def same_message(actual: object, expected: object) -> bool:
    # repr too, since == on the payloads takes 1, 1.0 and True for one another.
    return type(actual) is type(expected) and actual == expected and repr(actual) == repr(expected)


# --- encoding ------------------------------------------------------------------------------------


@checked
@given(invocations())
def test_encode_call_writes_what_the_reference_writes(message: InvokeFunction) -> None:
    expected = canonical(encode_reference(message))
    assert canonical(encode_invocation(message)) == expected
    assert canonical(encode(message)) == expected
    # The same call as the dev engine delivers it: with an id, without namespace and action.
    delivered = attrs.evolve(
        message, invocation_id=message.invocation_id or "id", namespace=None, action=None
    )
    relayed = encode_call(
        delivered.function_id,
        delivered.data,
        delivered.invocation_id or "",
        metadata=delivered.metadata,
        traceparent=delivered.traceparent,
        baggage=delivered.baggage,
        from_wire=True,
    )
    assert canonical(relayed) == canonical(encode_reference(delivered))


@checked
@given(results(errors=st.none()))
def test_encode_result_writes_what_the_reference_writes(message: InvocationResult) -> None:
    expected = canonical(encode_reference(message))
    assert canonical(fast_result_frame(message)) == expected
    assert canonical(encode(message)) == expected
    relayed = encode_result(
        message.invocation_id,
        message.function_id,
        message.result,
        traceparent=message.traceparent,
        baggage=message.baggage,
        from_wire=True,
    )
    assert canonical(relayed) == expected


@checked
@given(invocations())
def test_a_fast_invocation_frame_decodes_back_to_its_message(message: InvokeFunction) -> None:
    frame = encode_invocation(message)
    assert same_message(decode_reference(frame), message)
    assert same_message(decode(frame), message)


@checked
@given(results())
def test_a_result_frame_decodes_back_to_its_message(message: InvocationResult) -> None:
    frames = [encode(message)]
    if message.error is None:
        frames.append(fast_result_frame(message))
    for frame in frames:
        assert same_message(decode_reference(frame), message)
        assert same_message(decode(frame), message)


def _outcome(encoder: Any, message: Any) -> bytes | type[TypeError]:
    try:
        return canonical(encoder(message))
    except TypeError:
        return TypeError


def _is_json(value: Any) -> bool:
    # The standard library's encoder is the independent judge of what is JSON.
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


@checked
@given(invocations(maybe_non_json_values))
def test_encode_call_refuses_what_the_reference_refuses(message: InvokeFunction) -> None:
    expected = _outcome(encode_reference, message)
    assert _outcome(encode_invocation, message) == expected
    assert _outcome(encode, message) == expected
    assert (expected is TypeError) == (not _is_json([message.data, message.metadata]))


@checked
@given(results(maybe_non_json_values, errors=st.none()))
def test_encode_result_refuses_what_the_reference_refuses(message: InvocationResult) -> None:
    expected = _outcome(encode_reference, message)
    assert _outcome(fast_result_frame, message) == expected
    assert _outcome(encode, message) == expected
    assert (expected is TypeError) == (not _is_json(message.result))


# --- decoding ------------------------------------------------------------------------------------

# Any JSON value of a few leaves, to put where a field belongs.
anything = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(texts, scalars))
_REMOVE: Any = object()
# What a field may be replaced with: left out, null, or one of each JSON type.
REPLACEMENTS = [_REMOVE, None, True, 0, -1.5, "s", [], {}, ["s"], {"type": "void"}]
INVOKEFUNCTION_FIELDS = [
    "function_id",
    "data",
    "invocation_id",
    "traceparent",
    "baggage",
    "action",
    "metadata",
    "namespace",
]
INVOCATIONRESULT_FIELDS = [
    "invocation_id",
    "function_id",
    "result",
    "error",
    "traceparent",
    "baggage",
]


def edited(message: Message, changes: list[tuple[str, Any]]) -> dict[str, Any]:
    """The wire form of ``message`` with each named field removed or replaced."""
    raw: dict[str, Any] = orjson.loads(encode_reference(message))
    for name, value in changes:
        if value is _REMOVE:
            raw.pop(name, None)
        else:
            raw[name] = value
    return raw


def edited_frames(
    messages: st.SearchStrategy[Any], names: list[str]
) -> st.SearchStrategy[dict[str, Any]]:
    """The wire form of a generated message with one or two fields (or the tag, or an unknown
    key) removed or replaced: frames on the edge of what decodes."""
    edit = st.tuples(
        st.sampled_from([*names, "type", "extra"]),
        st.one_of(st.sampled_from(REPLACEMENTS), anything),
    )
    return st.builds(edited, messages, st.lists(edit, min_size=1, max_size=2))


def assembled_frames(
    tag: str, fields: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects tagged ``tag`` (mostly) with any subset of ``fields``, each well-formed, null or
    any JSON value, and maybe unknown keys: frames far from what decodes."""
    tagged = st.fixed_dictionaries(
        {"type": st.sampled_from([tag, tag, tag, tag.upper(), "ping"])},
        optional={
            name: st.one_of(well_formed, st.none(), anything)
            for name, well_formed in fields.items()
        },
    )
    extra = st.dictionaries(st.sampled_from(["extra", "caller", "_x", "type"]), anything)
    return st.builds(lambda known, unknown: {**unknown, **known}, tagged, extra)


invokefunction_frames = st.one_of(
    edited_frames(invocations(), INVOKEFUNCTION_FIELDS),
    assembled_frames(
        "invokefunction",
        {
            "function_id": texts,
            "data": json_values,
            "invocation_id": texts,
            "traceparent": texts,
            "baggage": texts,
            "action": st.one_of(
                st.fixed_dictionaries({"type": st.just("void")}),
                st.fixed_dictionaries({"type": st.just("enqueue"), "queue": texts}),
                st.fixed_dictionaries({"type": st.sampled_from(["enqueue", "Void", "other"])}),
            ),
            "metadata": json_values,
            "namespace": texts,
        },
    ),
)
invocationresult_frames = st.one_of(
    edited_frames(results(), INVOCATIONRESULT_FIELDS),
    assembled_frames(
        "invocationresult",
        {
            "invocation_id": texts,
            "function_id": texts,
            "result": json_values,
            "error": st.fixed_dictionaries(
                {"code": texts, "message": texts}, optional={"stacktrace": st.none() | texts}
            ),
            "traceparent": texts,
            "baggage": texts,
        },
    ),
)
frames = st.one_of(
    invokefunction_frames,
    invocationresult_frames,
    json_values,  # non-objects, and objects without a string "type"
    st.dictionaries(st.just("type"), anything),
)


def _decoded(decoder: Any, *args: Any) -> Message | type[ProtocolError]:
    try:
        message: Message = decoder(*args)
    except ProtocolError:
        return ProtocolError
    return message


@checked
@given(frames)
def test_decode_gives_what_the_reference_gives(raw: Any) -> None:
    frame = orjson.dumps(raw)
    expected = _decoded(decode_reference, frame)
    assert same_message(_decoded(decode, frame), expected)
    assert same_message(_decoded(decode_parsed, orjson.loads(frame), frame), expected)


@checked
@given(invokefunction_frames)
def test_the_invocation_checks_accept_exactly_the_plain_calls(raw: dict[str, Any]) -> None:
    if raw.get("type") != "invokefunction":
        return
    reference = _decoded(decode_reference, orjson.dumps(raw))
    plain = isinstance(reference, InvokeFunction) and reference.action is None
    assert is_plain_invocation(raw) == plain
    decoded = decode_invocation(raw)
    assert same_message(decoded, reference) if plain else decoded is None
    expected_id = reference.invocation_id if isinstance(reference, InvokeFunction) else None
    assert routable_invocation_id(raw) == (expected_id if plain else None)


@checked
@given(invocationresult_frames)
def test_the_result_checks_accept_exactly_the_successes(raw: dict[str, Any]) -> None:
    if raw.get("type") != "invocationresult":
        return
    reference = _decoded(decode_reference, orjson.dumps(raw))
    success = isinstance(reference, InvocationResult) and reference.error is None
    decoded = decode_success(raw)
    assert same_message(decoded, reference) if success else decoded is None
    expected_id = reference.invocation_id if isinstance(reference, InvocationResult) else None
    assert successful_result_id(raw) == (expected_id if success else None)


# Every single wrong field, not left to chance: each field of a full call and of a full success
# replaced in turn by each kind of value.
FULL_CALL = InvokeFunction("f", {"a": 1}, "i", "t", "b", None, {"m": 1}, "n")
FULL_SUCCESS = InvocationResult("i", "f", {"r": 1}, None, "t", "b")


@pytest.mark.parametrize("replacement", REPLACEMENTS, ids=repr)
@pytest.mark.parametrize("name", [*INVOKEFUNCTION_FIELDS, "type", "extra"])
def test_one_replaced_field_of_a_call_is_judged_as_the_reference_judges_it(
    name: str, replacement: Any
) -> None:
    raw = edited(FULL_CALL, [(name, replacement)])
    reference = _decoded(decode_reference, orjson.dumps(raw))
    assert same_message(_decoded(decode_parsed, raw, b""), reference)
    if raw.get("type") == "invokefunction":
        plain = isinstance(reference, InvokeFunction) and reference.action is None
        assert is_plain_invocation(raw) == plain
        expected_id = reference.invocation_id if isinstance(reference, InvokeFunction) else None
        assert routable_invocation_id(raw) == (expected_id if plain else None)


@pytest.mark.parametrize("replacement", REPLACEMENTS, ids=repr)
@pytest.mark.parametrize("name", [*INVOCATIONRESULT_FIELDS, "type", "extra"])
def test_one_replaced_field_of_a_success_is_judged_as_the_reference_judges_it(
    name: str, replacement: Any
) -> None:
    raw = edited(FULL_SUCCESS, [(name, replacement)])
    reference = _decoded(decode_reference, orjson.dumps(raw))
    assert same_message(_decoded(decode_parsed, raw, b""), reference)
    if raw.get("type") == "invocationresult":
        success = isinstance(reference, InvocationResult) and reference.error is None
        expected_id = reference.invocation_id if isinstance(reference, InvocationResult) else None
        assert successful_result_id(raw) == (expected_id if success else None)
