"""The update operations of ``state::update`` / ``stream::update`` (spec/engine.md 5.3), driven
through ``state::update`` on the sans-io core; the cases follow spec/engine-observed.md 3."""

from __future__ import annotations

from typing import Any

import pytest

from iii_trio._protocol._messages import ErrorBody
from iii_trio.testing._engine._state_worker import StateWorker

from .engine_driver import Engine, Worker

DOC = "https://iii.dev/docs/workers/iii-state#error-codes"
START = {"a": 1, "n": 10, "f": 1.5, "s": "x", "arr": [1], "nested": {"x": {"y": 1}}}


@pytest.fixture
def worker() -> Worker:
    return Engine(plugins=[StateWorker()]).worker("ops")


def update(worker: Worker, ops: list[Any], start: Any = START, *, key: str = "k") -> Any:
    if start is not None:
        worker.result("state::set", {"scope": "s", "key": key, "value": start})
    return worker.result("state::update", {"scope": "s", "key": key, "ops": ops})


def error(index: int, code: str, message: str) -> dict[str, Any]:
    return {"op_index": index, "code": code, "message": message, "doc_url": DOC}


@pytest.mark.parametrize(
    ("ops", "new_value"),
    [
        ([{"type": "set", "path": "a", "value": 1}], {"a": 1}),
        ([{"type": "increment", "path": "n", "by": 2}], {"n": 2}),
        ([{"type": "decrement", "path": "n", "by": 2}], {"n": -2}),
        ([{"type": "set", "path": "", "value": 5}], 5),
        ([{"type": "set", "path": ""}], None),
        ([], {}),
        ([{"type": "increment", "path": "", "by": 3}], 3),
        ([{"type": "decrement", "path": "", "by": 3}], -3),
        ([{"type": "append", "value": 1}], [1]),
        ([{"type": "append", "path": "", "value": "t"}], "t"),
        ([{"type": "merge", "value": {"m": 1}}], {"m": 1}),
        ([{"type": "remove", "path": ""}], None),
    ],
)
def test_a_missing_key_starts_from_an_empty_object_and_reports_no_old_value(
    worker: Worker, ops: list[Any], new_value: Any
) -> None:
    assert update(worker, ops, None) == {"old_value": None, "new_value": new_value}
    assert worker.result("state::get", {"scope": "s", "key": "k"}) == new_value


@pytest.mark.parametrize(
    ("ops", "changed"),
    [
        (
            [{"type": "set", "path": "a", "value": 2}, {"type": "set", "path": "b.c", "value": 3}],
            {"a": 2, "b.c": 3},
        ),
        ([{"type": "merge", "value": {"m": 1}}], {"m": 1}),
        (
            [{"type": "merge", "path": "nested", "value": {"z": 2}}],
            {"nested": {"x": {"y": 1}, "z": 2}},
        ),
        (
            [{"type": "merge", "path": ["nested", "x"], "value": {"w": 3}}],
            {"nested": {"x": {"y": 1, "w": 3}}},
        ),
        (
            [{"type": "merge", "path": ["new1", "new2"], "value": {"k": 1}}],
            {"new1": {"new2": {"k": 1}}},
        ),
        ([{"type": "merge", "path": "a", "value": {"k": 1}}], {"a": {"k": 1}}),
        ([{"type": "merge", "path": [], "value": {"a": 0}}], {"a": 0}),
        ([{"type": "merge", "path": None, "value": {"a": 0}}], {"a": 0}),
        (
            [
                {"type": "increment", "path": "n", "by": 5},
                {"type": "decrement", "path": "n", "by": 2},
            ],
            {"n": 13},
        ),
        ([{"type": "increment", "path": "f", "by": 1}], {"f": 2.5}),
        ([{"type": "decrement", "path": "newd", "by": 3}], {"newd": -3}),
        ([{"type": "append", "path": "arr", "value": 2}], {"arr": [1, 2]}),
        ([{"type": "append", "path": "s", "value": "y"}], {"s": "xy"}),
        ([{"type": "append", "path": "newarr", "value": 1}], {"newarr": [1]}),
        ([{"type": "append", "path": "newstr", "value": "t"}], {"newstr": "t"}),
        (
            [{"type": "append", "path": ["nested", "x", "list"], "value": 9}],
            {"nested": {"x": {"y": 1, "list": [9]}}},
        ),
        ([{"type": "append", "path": ["deep", "str"], "value": "t"}], {"deep": {"str": ["t"]}}),
        ([{"type": "remove", "path": "s"}, {"type": "remove", "path": "ghost"}], {"s": None}),
        ([{"type": "set", "path": "ok", "value": 1, "extra": "ignored"}], {"ok": 1}),
    ],
)
def test_operations_apply_in_order(worker: Worker, ops: list[Any], changed: dict[str, Any]) -> None:
    expected = {**START, **changed}
    for key, value in changed.items():
        if value is None:
            del expected[key]
    assert update(worker, ops) == {"old_value": START, "new_value": expected}


@pytest.mark.parametrize(
    ("ops", "errors", "changed"),
    [
        (
            [{"type": "merge", "value": 5}],
            [error(0, "merge.value.not_an_object", "Merge value must be a JSON object")],
            {},
        ),
        (
            [{"type": "increment", "path": "s", "by": 1}],
            [error(0, "increment.not_number", "Expected number at path 's', got string.")],
            {},
        ),
        (
            [{"type": "decrement", "path": "arr", "by": 1}],
            [error(0, "decrement.not_number", "Expected number at path 'arr', got array.")],
            {},
        ),
        (
            [{"type": "append", "path": "s", "value": 1}],
            [
                error(
                    0,
                    "append.type_mismatch",
                    "Expected string append value at path 's', got number.",
                )
            ],
            {},
        ),
        (
            [{"type": "append", "path": "n", "value": 1}],
            [
                error(
                    0,
                    "append.type_mismatch",
                    "Cannot append at path 'n': target is number, expected array, string, "
                    "null, or missing field.",
                )
            ],
            {},
        ),
        (
            [
                {"type": "set", "path": "__proto__", "value": 1},
                {"type": "merge", "value": {"__proto__": 1}},
                {"type": "set", "path": "ok", "value": 1},
            ],
            [
                error(
                    0,
                    "set.path.proto_polluted",
                    "Path segment '__proto__' is not allowed (prototype pollution).",
                ),
                error(
                    1,
                    "merge.value.proto_polluted",
                    'Merge value top-level key "__proto__" is a prototype-pollution sink',
                ),
            ],
            {"ok": 1},
        ),
        (
            [{"type": "merge", "path": ["a", ""], "value": {}}],
            [error(0, "merge.path.empty_segment", "Path contains an empty segment")],
            {},
        ),
        (
            [{"type": "append", "path": ["constructor"], "value": 1}],
            [
                error(
                    0,
                    "append.path.proto_polluted",
                    "Path segment 'constructor' is not allowed (prototype pollution).",
                )
            ],
            {},
        ),
        (
            [{"type": "merge", "path": ["p"] * 33, "value": {}}],
            [error(0, "merge.path.too_deep", "Path depth 33 exceeds maximum of 32")],
            {},
        ),
        (
            [{"type": "remove", "path": "é" * 129}],
            [
                error(
                    0,
                    "remove.path.segment_too_long",
                    "Path segment of 258 bytes exceeds maximum of 256",
                )
            ],
            {},
        ),
        (
            [{"type": "merge", "value": {str(n): n for n in range(1025)}}],
            [
                error(
                    0,
                    "merge.value.too_many_keys",
                    "Merge value has 1025 top-level keys, exceeds maximum of 1024",
                )
            ],
            {},
        ),
        (
            [{"type": "merge", "value": {"d": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}}],
            [
                error(
                    0,
                    "merge.value.too_deep",
                    "Merge value JSON nesting depth 17 exceeds maximum of 16",
                )
            ],
            {},
        ),
        (
            [
                {"type": "increment", "path": "n", "by": 10},
                {"type": "append", "path": "n", "value": 1},
            ],
            [
                error(
                    1,
                    "append.type_mismatch",
                    "Cannot append at path 'n': target is number, expected array, string, "
                    "null, or missing field.",
                )
            ],
            {"n": 20},
        ),
    ],
)
def test_a_failing_operation_is_reported_and_the_others_still_apply(
    worker: Worker, ops: list[Any], errors: list[Any], changed: dict[str, Any]
) -> None:
    assert update(worker, ops) == {
        "old_value": START,
        "new_value": {**START, **changed},
        "errors": errors,
    }


def test_operations_on_a_value_that_is_not_an_object(worker: Worker) -> None:
    ops = [
        {"type": "set", "path": "a", "value": 1},
        {"type": "increment", "path": "a", "by": 1},
        {"type": "append", "path": "a", "value": 1},
        {"type": "remove", "path": "a"},
        {"type": "merge", "value": {"x": 1}},
        {"type": "increment", "path": "", "by": 1},
    ]
    assert update(worker, ops, 7) == {
        "old_value": 7,
        "new_value": 8,
        "errors": [
            error(
                0,
                "set.target_not_object",
                "Cannot set at path 'a': target is number, expected object.",
            ),
            error(
                1,
                "increment.target_not_object",
                "Cannot increment at path 'a': target is number, expected object.",
            ),
            error(
                2,
                "append.target_not_object",
                "Cannot append at path '[a]': target is number, expected object.",
            ),
            error(
                3,
                "remove.target_not_object",
                "Cannot remove at path 'a': target is number, expected object.",
            ),
        ],
    }


def test_a_root_append_extends_an_array_and_a_root_increment_a_number(worker: Worker) -> None:
    ops = [{"type": "append", "path": "", "value": 2}, {"type": "append", "value": 3}]
    assert update(worker, ops, [1])["new_value"] == [1, 2, 3]
    ops = [{"type": "increment", "path": "", "by": 1}]
    assert update(worker, ops, "x") == {
        "old_value": "x",
        "new_value": "x",
        "errors": [error(0, "increment.not_number", "Expected number at path 'root', got string.")],
    }


def test_a_nested_merge_replaces_a_value_that_is_not_an_object(worker: Worker) -> None:
    ops = [{"type": "merge", "path": ["a", "b"], "value": {"c": 1}}]
    assert update(worker, ops, 7)["new_value"] == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    ("start", "by", "result"),
    [
        (2**63 - 1, 1, 2**63),
        (2**64 - 1, -1, 2**64 - 2),
        (-(2**63), -1, None),
        (2**64 - 1, 1, None),
        (-5, -(2**63), None),
    ],
)
def test_increments_follow_64_bit_integer_arithmetic(
    worker: Worker, start: int, by: int, result: int | None
) -> None:
    answer = update(worker, [{"type": "increment", "path": "v", "by": by}], {"v": start})
    if result is None:
        assert answer["new_value"] == {"v": start}
        assert answer["errors"][0]["code"] == "increment.not_number"
    else:
        assert answer == {"old_value": {"v": start}, "new_value": {"v": result}}


@pytest.mark.parametrize(
    ("ops", "detail"),
    [
        (
            [{"type": "increment", "path": "n", "by": 1.5}],
            "invalid type: floating point `1.5`, expected i64",
        ),
        ([{"type": "increment", "path": "n"}], "missing field `by`"),
        (
            [{"type": "increment", "path": "n", "by": True}],
            "invalid type: boolean `true`, expected i64",
        ),
        (
            [{"type": "decrement", "path": "n", "by": 2**63}],
            "invalid value: integer `9223372036854775808`, expected i64",
        ),
        (
            [{"type": "bogus"}],
            "unknown variant `bogus`, expected one of `set`, `merge`, `increment`, "
            "`decrement`, `append`, `remove`",
        ),
        ([{"path": "a"}], "missing field `type`"),
        ([{"type": 3}], "invalid type: integer `3`, expected variant identifier"),
        (["set"], 'invalid type: string "set", expected internally tagged enum UpdateOp'),
        ([{"type": "set", "value": 1}], "missing field `path`"),
        ([{"type": "remove", "path": 1}], "invalid type: integer `1`, expected a string"),
        ([{"type": "merge", "path": "a"}], "missing field `value`"),
        (
            [{"type": "append", "path": 5, "value": 1}],
            "data did not match any variant of untagged enum MergePath",
        ),
        (
            [{"type": "append", "path": ["a", 1], "value": 1}],
            "data did not match any variant of untagged enum MergePath",
        ),
        ({"type": "set"}, "invalid type: map, expected a sequence"),
        (None, "invalid type: null, expected a sequence"),
    ],
)
def test_a_malformed_operation_fails_the_whole_call_and_changes_nothing(
    worker: Worker, ops: Any, detail: str
) -> None:
    worker.result("state::set", {"scope": "s", "key": "k", "value": START})
    failed = worker.error("state::update", {"scope": "s", "key": "k", "ops": ops})
    message = f"Failed to deserialize input for state::update: {detail}"
    assert failed == ErrorBody("deserialization_error", message)
    assert worker.result("state::get", {"scope": "s", "key": "k"}) == START


def test_missing_ops_fails(worker: Worker) -> None:
    failed = worker.error("state::update", {"scope": "s", "key": "k"})
    assert failed.message == "Failed to deserialize input for state::update: missing field `ops`"


def test_stored_values_are_never_changed_in_place(worker: Worker) -> None:
    first = worker.result("state::set", {"scope": "s", "key": "k", "value": {"list": [1]}})
    second = update(worker, [{"type": "append", "path": "list", "value": 2}], None)
    assert first == {"old_value": None, "new_value": {"list": [1]}}
    assert second == {"old_value": {"list": [1]}, "new_value": {"list": [1, 2]}}
