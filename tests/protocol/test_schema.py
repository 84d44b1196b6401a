"""JSON Schemas derived from handler annotations (``request_format`` / ``response_format``)."""

from __future__ import annotations

import enum
import typing
from typing import Any, Literal, Optional, Union

import attrs
import pytest

from iii_trio._schema import schema_for

if typing.TYPE_CHECKING:
    from decimal import Decimal

DIALECT = "https://json-schema.org/draft/2020-12/schema"


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Point:
    x: float
    y: float
    label: str = ""


@attrs.define
class Shape:
    name: str
    points: list[Point]
    color: Color
    fill: Optional[Color] = None  # noqa: UP045 - the typing.Optional spelling is under test
    tags: list[str] = attrs.Factory(list)
    origin: Point | None = None


@attrs.frozen
class Node:
    value: int
    children: list[Node] = attrs.field(factory=list)


@attrs.frozen
class Order:
    amount: Decimal  # resolvable only by a type checker


@attrs.frozen
class Counter:
    start: int
    current: int = attrs.field(init=False, default=0)


class Plain:
    pass


def _body(annotation: Any) -> dict[str, Any]:
    schema = schema_for(annotation)
    assert schema is not None
    assert schema.pop("$schema") == DIALECT
    return schema


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param(str, {"type": "string"}, id="str"),
        pytest.param(int, {"type": "integer"}, id="int"),
        pytest.param(float, {"type": "number"}, id="float"),
        pytest.param(bool, {"type": "boolean"}, id="bool"),
        pytest.param(None, {"type": "null"}, id="None"),
        pytest.param(type(None), {"type": "null"}, id="NoneType"),
    ],
)
def test_primitive_types(annotation: Any, expected: dict[str, Any]) -> None:
    assert _body(annotation) == expected


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param(list[int], {"type": "array", "items": {"type": "integer"}}, id="list-int"),
        pytest.param(
            list[list[str]],
            {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            id="nested-list",
        ),
        pytest.param(list, {"type": "array"}, id="bare-list"),
        pytest.param(list[Any], {"type": "array", "items": {}}, id="list-any"),
        pytest.param(
            tuple[int, ...], {"type": "array", "items": {"type": "integer"}}, id="tuple-varlen"
        ),
        pytest.param(
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "items": False,
            },
            id="tuple-fixed",
        ),
    ],
)
def test_sequences(annotation: Any, expected: dict[str, Any]) -> None:
    assert _body(annotation) == expected


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param(
            dict[str, int],
            {"type": "object", "additionalProperties": {"type": "integer"}},
            id="dict-str-int",
        ),
        pytest.param(
            dict[str, list[bool]],
            {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "boolean"}},
            },
            id="dict-str-list",
        ),
        pytest.param(dict, {"type": "object"}, id="bare-dict"),
        pytest.param(
            dict[str, Any], {"type": "object", "additionalProperties": {}}, id="dict-str-any"
        ),
    ],
)
def test_mappings(annotation: Any, expected: dict[str, Any]) -> None:
    assert _body(annotation) == expected


def test_dict_with_non_string_keys_has_no_schema() -> None:
    # JSON object keys are strings; an int-keyed dict cannot be described faithfully.
    assert schema_for(dict[int, str]) is None


@pytest.mark.parametrize(
    "annotation",
    [
        Optional[int],  # noqa: UP045 - both spellings are under test
        Union[int, None],  # noqa: UP007
        int | None,
    ],
    ids=["Optional", "Union", "pipe"],
)
def test_optional_primitive_is_a_type_list_with_null(annotation: Any) -> None:
    assert _body(annotation) == {"type": ["integer", "null"]}


def test_union_of_primitives_lists_the_types_in_order() -> None:
    assert _body(str | int | bool) == {"type": ["string", "integer", "boolean"]}


def test_union_with_a_structured_member_uses_any_of() -> None:
    assert _body(list[int] | str) == {
        "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "string"}]
    }


def test_optional_attrs_class_uses_any_of_with_null() -> None:
    assert _body(Point | None) == {"anyOf": [_body(Point), {"type": "null"}]}


def test_union_with_an_undescribable_member_has_no_schema() -> None:
    assert schema_for(int | Plain) is None


def test_literal_gives_an_enum_of_its_values() -> None:
    assert _body(Literal["GET", "POST"]) == {"enum": ["GET", "POST"]}
    assert _body(Literal[1, "one", True]) == {"enum": [1, "one", True]}


def test_string_enum_gives_its_member_values() -> None:
    assert _body(Color) == {"enum": ["red", "green"]}


def test_int_enum_gives_its_member_values() -> None:
    assert _body(Priority) == {"enum": [1, 2]}


def test_attrs_class_is_an_object_with_required_fields_without_defaults() -> None:
    assert _body(Point) == {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "number"},
            "label": {"type": "string"},
        },
        "required": ["x", "y"],
    }


def test_nested_attrs_classes_are_described_inline() -> None:
    point = {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "number"},
            "label": {"type": "string"},
        },
        "required": ["x", "y"],
    }
    assert _body(Shape) == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "points": {"type": "array", "items": point},
            "color": {"enum": ["red", "green"]},
            "fill": {"anyOf": [{"enum": ["red", "green"]}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "origin": {"anyOf": [point, {"type": "null"}]},
        },
        "required": ["name", "points", "color"],
    }


def test_attrs_class_with_only_defaults_has_no_required_list() -> None:
    @attrs.frozen
    class Options:
        verbose: bool = False
        retries: int = 3

    assert _body(Options) == {
        "type": "object",
        "properties": {"verbose": {"type": "boolean"}, "retries": {"type": "integer"}},
    }


def test_attrs_field_excluded_from_init_is_not_a_property() -> None:
    assert _body(Counter) == {
        "type": "object",
        "properties": {"start": {"type": "integer"}},
        "required": ["start"],
    }


def test_schema_dialect_is_declared_at_the_top_level_only() -> None:
    schema = schema_for(Shape)
    assert schema is not None
    assert schema["$schema"] == DIALECT

    def nested_dialects(value: Any) -> int:
        if isinstance(value, dict):
            return sum(("$schema" in value) + nested_dialects(v) for v in value.values())
        if isinstance(value, list):
            return sum(nested_dialects(v) for v in value)
        return 0

    assert nested_dialects({key: v for key, v in schema.items() if key != "$schema"}) == 0


@pytest.mark.parametrize(
    "annotation",
    [
        pytest.param(Any, id="Any"),
        pytest.param(Plain, id="plain-class"),
        pytest.param(bytes, id="bytes"),
        pytest.param(list[Plain], id="list-of-plain-class"),
        pytest.param(dict[str, Plain], id="dict-of-plain-class"),
    ],
)
def test_unknown_or_any_annotation_has_no_schema(annotation: Any) -> None:
    assert schema_for(annotation) is None


def test_recursive_attrs_class_has_no_schema() -> None:
    assert schema_for(Node) is None


def test_attrs_class_with_an_unresolvable_annotation_has_no_schema() -> None:
    # ``Decimal`` is imported for type checkers only, so the annotation cannot be evaluated.
    assert schema_for(Order) is None


def test_schema_is_a_fresh_dict_each_time() -> None:
    first = schema_for(Point)
    assert first is not None
    first["properties"]["x"]["type"] = "changed"
    assert _body(Point)["properties"]["x"] == {"type": "number"}
