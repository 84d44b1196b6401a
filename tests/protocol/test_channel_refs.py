"""Channel refs on the wire (spec/protocol.md 6.2-6.3): the ChannelRef type, recognising refs in
payloads, replacing them by live ends, writing them back out, and the data socket's URL."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from iii_trio import ChannelRef
from iii_trio._protocol._channels import (
    channel_url,
    has_channel_refs,
    is_channel_ref,
    ref_to_json,
    replace_channel_refs,
)
from iii_trio._protocol._codec import encode_json
from iii_trio._protocol._fastpath import encode_call, encode_result

READ = {"channel_id": "c1", "access_key": "k1", "direction": "read"}
WRITE = {"channel_id": "c2", "access_key": "k2", "direction": "write"}


class _End:
    """Stands for a live end: what the replacement factory made, and from which ref."""

    def __init__(self, ref: ChannelRef) -> None:
        self.ref = ref


# --- ChannelRef ---------------------------------------------------------------------------------


def test_a_ref_is_a_frozen_value_whose_repr_hides_the_key() -> None:
    ref = ChannelRef("c1", "s3cret", "read")
    assert ref == ChannelRef("c1", "s3cret", "read")
    assert "s3cret" not in repr(ref)
    with pytest.raises(AttributeError):
        ref.direction = "write"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ((1, "k", "read"), TypeError, "channel_id"),
        (("c", None, "read"), TypeError, "access_key"),
        (("c", "k", "both"), ValueError, "direction"),
        (("c", "k", "READ"), ValueError, "direction"),
    ],
)
def test_a_ref_refuses_wrong_fields_naming_them(
    arguments: tuple[Any, Any, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        ChannelRef(*arguments)


# --- recognising refs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        READ,
        WRITE,
        {**READ, "extra": [1, 2]},
        {"direction": "write", "access_key": "", "channel_id": ""},
    ],
)
def test_what_counts_as_a_ref(value: Any) -> None:
    assert is_channel_ref(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "c1",
        [READ],
        {"channel_id": "c1", "access_key": "k1"},
        {**READ, "direction": "sideways"},
        {**READ, "direction": None},
        {**READ, "channel_id": 7},
        {**READ, "access_key": None},
    ],
)
def test_what_does_not_count_as_a_ref(value: Any) -> None:
    assert not is_channel_ref(value)


# --- replacing refs by live ends ----------------------------------------------------------------


def test_refs_anywhere_in_a_payload_become_ends_in_place() -> None:
    payload = {
        "name": "upload",
        "body": dict(READ),
        "parts": [1, dict(WRITE), {"deeper": [[dict(READ)]]}],
        "plain": {"a": 1},
    }
    made: list[_End] = []

    def make(ref: ChannelRef) -> _End:
        made.append(_End(ref))
        return made[-1]

    result = replace_channel_refs(payload, make)
    assert result is payload
    assert {end.ref for end in made} == {
        ChannelRef("c1", "k1", "read"),
        ChannelRef("c2", "k2", "write"),
    }
    assert len(made) == 3
    assert isinstance(payload["body"], _End)
    assert isinstance(payload["parts"][1], _End)
    assert payload["parts"][1].ref.direction == "write"
    assert isinstance(payload["parts"][2]["deeper"][0][0], _End)
    assert payload["plain"] == {"a": 1}
    assert payload["name"] == "upload"


def test_a_payload_that_is_a_ref_becomes_an_end() -> None:
    end = replace_channel_refs(dict(READ), _End)
    assert isinstance(end, _End)
    assert end.ref == ChannelRef("c1", "k1", "read")


@pytest.mark.parametrize(
    "value",
    [None, 3, "text", [], {}, {"a": 1, "b": "x"}, [1, [2, [3]], {"c": None}], {"x": {"y": [{}]}}],
)
def test_payloads_without_refs_are_left_as_they_are(value: Any) -> None:
    before = copy.deepcopy(value)
    assert replace_channel_refs(value, _End) is value
    assert value == before
    assert not has_channel_refs(value)


def test_refs_are_found_at_any_depth_without_recursion() -> None:
    deep: Any = dict(WRITE)
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    assert has_channel_refs(deep)
    replace_channel_refs(deep, _End)
    innermost = deep
    while isinstance(innermost, list):
        innermost = innermost[0]
    assert isinstance(innermost, _End)


@pytest.mark.parametrize(
    "value", [dict(READ), [dict(WRITE)], {"a": {"b": [0, dict(READ)]}}, [[], [[dict(READ)]]]]
)
def test_has_channel_refs_finds_them(value: Any) -> None:
    assert has_channel_refs(value)


# --- writing refs and ends out ------------------------------------------------------------------


def test_refs_and_ends_are_written_as_the_ref_object_anywhere_in_a_frame() -> None:
    ref = ChannelRef("c1", "k1", "read")
    end = _End(ChannelRef("c2", "k2", "write"))
    payload = {"reader": ref, "items": [end]}
    assert orjson.loads(encode_json(payload)) == {"reader": READ, "items": [WRITE]}
    call = orjson.loads(encode_call("svc::f", payload, "id-1"))
    assert call["data"] == {"reader": READ, "items": [WRITE]}
    result = orjson.loads(encode_result("id-1", "svc::f", [ref]))
    assert result["result"] == [READ]
    assert ref_to_json(ref) == READ


def test_other_unknown_objects_are_still_not_json() -> None:
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        encode_json({"x": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_json({"x": _End("not a ref")})  # type: ignore[arg-type]


# --- the data socket's URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine_url", "ref", "expected"),
    [
        (
            "ws://127.0.0.1:49134",
            ChannelRef("c1", "k1", "read"),
            "ws://127.0.0.1:49134/ws/channels/c1?key=k1&dir=read",
        ),
        (
            "wss://engine.example/",
            ChannelRef("c1", "k1", "write"),
            "wss://engine.example/ws/channels/c1?key=k1&dir=write",
        ),
        (
            "ws://h:1?token=abc",
            ChannelRef("c1", "k1", "read"),
            "ws://h:1/ws/channels/c1?token=abc&key=k1&dir=read",
        ),
        (
            "ws://h:1",
            ChannelRef("c/1", "a+b&c=d", "write"),
            "ws://h:1/ws/channels/c%2F1?key=a%2Bb%26c%3Dd&dir=write",
        ),
        (
            "ws://[::1]:5",
            ChannelRef("c1", "k1", "read"),
            "ws://[::1]:5/ws/channels/c1?key=k1&dir=read",
        ),
    ],
)
def test_channel_url(engine_url: str, ref: ChannelRef, expected: str) -> None:
    assert channel_url(engine_url, ref) == expected
