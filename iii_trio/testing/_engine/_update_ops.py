"""The update operations of ``state::update`` and ``stream::update`` (spec/engine.md section 5.3).

An update is a list of ``{"type": ...}``-tagged operations applied in order to a working copy of
the stored value (``{}`` when there is none). An operation that cannot apply is skipped and
reported as an error item; the ones that can still apply, and the result is stored either way.
Paths of ``set``, ``increment``, ``decrement`` and ``remove`` are one literal top-level key
(``""`` is the root; dots are not separators); ``merge`` and ``append`` also take a list of
literal segments (a nested path), and no path means the root.

Parsing is separate from applying: a malformed operation (unknown type, a ``by`` that is not a
64-bit integer, a missing field) fails the whole call with ``deserialization_error`` before
anything is applied, as the engine's input decoding does. No I/O here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Final, TypeAlias

import attrs

from ..._protocol._messages import JSON
from ._model import describe_value
from ._plugin import Input

__all__ = ["UpdateOp", "apply_update_ops", "parse_update_ops", "rust_debug"]

#: Where every error item points for the meaning of its code.
DOC_URL: Final = "https://iii.dev/docs/workers/iii-state#error-codes"
_OP_TYPES: Final = ("set", "merge", "increment", "decrement", "append", "remove")
_MAX_PATH_DEPTH: Final = 32
_MAX_SEGMENT_BYTES: Final = 256
_MAX_VALUE_DEPTH: Final = 16
_MAX_VALUE_KEYS: Final = 1024
_POLLUTION_KEYS: Final = frozenset({"__proto__", "constructor", "prototype"})
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_U64_MAX: Final = 2**64 - 1


@attrs.frozen
class UpdateOp:
    """One parsed operation.

    ``path`` is the literal key for the single-key operations and the list of segments for
    ``merge`` and ``append`` (empty: the root).
    """

    type: str
    path: str | tuple[str, ...]
    value: JSON = None
    by: int = 0
    #: ``merge`` and ``append``: the path as sent (a string or a list), ``None`` when absent.
    path_as_sent: JSON = None

    def to_json(self) -> dict[str, JSON]:
        """The operation as the engine writes it when it forwards an update."""
        shaped: dict[str, JSON] = {"type": self.type}
        if self.type in ("merge", "append"):
            if self.path_as_sent is not None:
                shaped["path"] = self.path_as_sent
            shaped["value"] = self.value
            return shaped
        shaped["path"] = self.path
        if self.type == "set":
            shaped["value"] = self.value
        elif self.type != "remove":
            shaped["by"] = self.by
        return shaped


_Errors: TypeAlias = list[dict[str, JSON]]


def parse_update_ops(data: Input, key: str = "ops") -> list[UpdateOp]:
    """The ``ops`` field of an update call, checked as the engine's decoder checks it.

    Raises:
        BuiltinFailure: ``deserialization_error`` naming what does not fit.
    """
    raw = data.required(key)
    if not isinstance(raw, list):
        raise data.fail(f"invalid type: {describe_value(raw)}, expected a sequence")
    return [_parse_op(data, item) for item in raw]


def _parse_op(data: Input, item: JSON) -> UpdateOp:
    if not isinstance(item, dict):
        raise data.fail(
            f"invalid type: {describe_value(item)}, expected internally tagged enum UpdateOp"
        )
    if "type" not in item:
        raise data.fail("missing field `type`")
    op_type = item["type"]
    if not isinstance(op_type, str):
        raise data.fail(f"invalid type: {describe_value(op_type)}, expected variant identifier")
    if op_type not in _OP_TYPES:
        expected = ", ".join(f"`{name}`" for name in _OP_TYPES)
        raise data.fail(f"unknown variant `{op_type}`, expected one of {expected}")
    fields = data.nested(item)
    if op_type in ("merge", "append"):
        path = _merge_path(data, item.get("path"))
        if "value" not in item:
            raise data.fail("missing field `value`")
        return UpdateOp(op_type, path, item["value"], path_as_sent=item.get("path"))
    single = fields.required_str("path")
    if op_type == "set":
        return UpdateOp(op_type, single, item.get("value"))
    if op_type == "remove":
        return UpdateOp(op_type, single)
    if "by" not in item:
        raise data.fail("missing field `by`")
    by = item["by"]
    if isinstance(by, bool) or not isinstance(by, int):
        raise data.fail(f"invalid type: {describe_value(by)}, expected i64")
    if not _I64_MIN <= by <= _I64_MAX:
        raise data.fail(f"invalid value: integer `{by}`, expected i64")
    return UpdateOp(op_type, single, by=by)


def _merge_path(data: Input, path: JSON) -> tuple[str, ...]:
    # A string is one key ("" the root); a list, literal segments; absent or null, the root.
    if path is None:
        return ()
    if isinstance(path, str):
        return (path,) if path else ()
    if isinstance(path, list) and all(isinstance(segment, str) for segment in path):
        return tuple(str(segment) for segment in path)
    raise data.fail("data did not match any variant of untagged enum MergePath")


def apply_update_ops(
    old_value: JSON, exists: bool, ops: Sequence[UpdateOp]
) -> tuple[JSON, _Errors]:
    """Apply ``ops`` to a copy of ``old_value`` (``exists`` false: there is no stored value).

    Returns:
        The value to store, and the error items of the operations that were skipped.
    """
    # Stored values are never changed in place: results and trigger payloads share them.
    current: JSON = copy.deepcopy(old_value) if exists else {}
    missing = not exists
    errors: _Errors = []
    for index, op in enumerate(ops):
        if op.type == "set":
            current, missing = _apply_set(current, missing, index, op, errors)
        elif op.type == "merge":
            current, missing = _apply_merge(current, missing, index, op, errors)
        elif op.type in ("increment", "decrement"):
            current, missing = _apply_step(current, missing, index, op, errors)
        elif op.type == "append":
            current, missing = _apply_append(current, missing, index, op, errors)
        else:
            current, missing = _apply_remove(current, missing, index, op, errors)
    return current, errors


def _error(errors: _Errors, index: int, code: str, message: str) -> None:
    errors.append({"op_index": index, "code": code, "message": message, "doc_url": DOC_URL})


def _single_segments(path: str | tuple[str, ...]) -> tuple[str, ...]:
    assert isinstance(path, str)
    return (path,) if path else ()


def _path_ok(name: str, index: int, segments: tuple[str, ...], errors: _Errors) -> bool:
    if len(segments) > _MAX_PATH_DEPTH:
        _error(
            errors,
            index,
            f"{name}.path.too_deep",
            f"Path depth {len(segments)} exceeds maximum of {_MAX_PATH_DEPTH}",
        )
        return False
    for segment in segments:
        if not segment:
            _error(errors, index, f"{name}.path.empty_segment", "Path contains an empty segment")
            return False
        size = len(segment.encode())
        if size > _MAX_SEGMENT_BYTES:
            _error(
                errors,
                index,
                f"{name}.path.segment_too_long",
                f"Path segment of {size} bytes exceeds maximum of {_MAX_SEGMENT_BYTES}",
            )
            return False
        if segment in _POLLUTION_KEYS:
            _error(
                errors,
                index,
                f"{name}.path.proto_polluted",
                f"Path segment '{segment}' is not allowed (prototype pollution).",
            )
            return False
    return True


def _type_name(value: JSON) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _label(path: str) -> str:
    return path or "root"


def _not_object(verb: str, label: str, target: JSON) -> str:
    return f"Cannot {verb} at path '{label}': target is {_type_name(target)}, expected object."


def _apply_set(
    current: JSON, missing: bool, index: int, op: UpdateOp, errors: _Errors
) -> tuple[JSON, bool]:
    assert isinstance(op.path, str)
    if not _path_ok("set", index, _single_segments(op.path), errors):
        return current, missing
    if not op.path:
        return copy.deepcopy(op.value), False
    if isinstance(current, dict):
        current[op.path] = copy.deepcopy(op.value)
        return current, False
    message = _not_object("set", _label(op.path), current)
    _error(errors, index, "set.target_not_object", message)
    return current, missing


def _json_depth(value: JSON) -> int:
    if isinstance(value, dict):
        return 1 + max((_json_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_json_depth(item) for item in value), default=0)
    return 0


def _merge_value_ok(index: int, value: JSON, errors: _Errors) -> bool:
    if not isinstance(value, dict):
        _error(errors, index, "merge.value.not_an_object", "Merge value must be a JSON object")
        return False
    if len(value) > _MAX_VALUE_KEYS:
        _error(
            errors,
            index,
            "merge.value.too_many_keys",
            f"Merge value has {len(value)} top-level keys, exceeds maximum of {_MAX_VALUE_KEYS}",
        )
        return False
    for key in value:
        if key in _POLLUTION_KEYS:
            _error(
                errors,
                index,
                "merge.value.proto_polluted",
                f"Merge value top-level key {rust_debug(key)} is a prototype-pollution sink",
            )
            return False
    depth = _json_depth(value)
    if depth > _MAX_VALUE_DEPTH:
        _error(
            errors,
            index,
            "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {_MAX_VALUE_DEPTH}",
        )
        return False
    return True


def _walk_or_create(current: JSON, segments: tuple[str, ...]) -> tuple[JSON, dict[str, JSON]]:
    """The root (made an object if it is not one) and the object at ``segments`` below it,
    created or replacing whatever non-object was on the way."""
    root = current if isinstance(current, dict) else {}
    node = root
    for segment in segments:
        child = node.get(segment)
        if not isinstance(child, dict):
            child = {}
            node[segment] = child
        node = child
    return root, node


def _apply_merge(
    current: JSON, missing: bool, index: int, op: UpdateOp, errors: _Errors
) -> tuple[JSON, bool]:
    assert isinstance(op.path, tuple)
    if not _path_ok("merge", index, op.path, errors) or not _merge_value_ok(
        index, op.value, errors
    ):
        return current, missing
    assert isinstance(op.value, dict)
    if not op.path:
        if not isinstance(current, dict):
            # The engine only logs this one: a root merge needs an object to merge into.
            return current, missing
        current.update(copy.deepcopy(op.value))
        return current, False
    current, target = _walk_or_create(current, op.path)
    target.update(copy.deepcopy(op.value))
    return current, False


def _step(value: JSON, delta: int) -> JSON:
    """``value + delta`` as the engine's JSON numbers add, or None when they do not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        if _I64_MIN <= value <= _I64_MAX and _I64_MIN <= value + delta <= _I64_MAX:
            return value + delta
        if 0 <= value <= _U64_MAX:
            total = value + delta
            return total if 0 <= total <= _U64_MAX else None
        if value >= _I64_MIN:
            return None
        value = float(value)  # beyond 64 bits, the engine holds the number as a float
    total = value + delta
    return total if math.isfinite(total) else None


def _apply_step(
    current: JSON, missing: bool, index: int, op: UpdateOp, errors: _Errors
) -> tuple[JSON, bool]:
    assert isinstance(op.path, str)
    name = op.type
    if not _path_ok(name, index, _single_segments(op.path), errors):
        return current, missing
    delta = op.by if name == "increment" else -op.by
    if not op.path:
        if missing:
            return delta, False
        stepped = _step(current, delta)
        if stepped is None:
            message = f"Expected number at path 'root', got {_type_name(current)}."
            _error(errors, index, f"{name}.not_number", message)
            return current, missing
        return stepped, False
    if not isinstance(current, dict):
        message = _not_object(name, op.path, current)
        _error(errors, index, f"{name}.target_not_object", message)
        return current, missing
    if op.path not in current:
        current[op.path] = delta
        return current, False
    stepped = _step(current[op.path], delta)
    if stepped is None:
        got = _type_name(current[op.path])
        _error(
            errors, index, f"{name}.not_number", f"Expected number at path '{op.path}', got {got}."
        )
        return current, missing
    current[op.path] = stepped
    return current, False


def _initial_append(value: JSON) -> JSON:
    return value if isinstance(value, str) else [copy.deepcopy(value)]


def _append_to(
    holder: dict[str, JSON] | None,
    key: str,
    target: JSON,
    value: JSON,
    label: str,
    index: int,
    errors: _Errors,
) -> tuple[JSON, bool]:
    """Append ``value`` to ``target``: the new target and whether it worked. ``holder[key]``
    gets the new target when a holder is given."""
    if isinstance(target, list):
        target.append(copy.deepcopy(value))
        appended: JSON = target
    elif isinstance(target, str):
        if not isinstance(value, str):
            message = f"Expected string append value at path '{label}', got {_type_name(value)}."
            _error(errors, index, "append.type_mismatch", message)
            return target, False
        appended = target + value
    elif target is None:
        appended = _initial_append(value)
    else:
        message = (
            f"Cannot append at path '{label}': target is {_type_name(target)}, expected "
            "array, string, null, or missing field."
        )
        _error(errors, index, "append.type_mismatch", message)
        return target, False
    if holder is not None:
        holder[key] = appended
    return appended, True


def _apply_append(
    current: JSON, missing: bool, index: int, op: UpdateOp, errors: _Errors
) -> tuple[JSON, bool]:
    assert isinstance(op.path, tuple)
    segments = op.path
    if not _path_ok("append", index, segments, errors):
        return current, missing
    if not segments:
        target = None if missing else current
        appended, done = _append_to(None, "", target, op.value, "root", index, errors)
        return (appended, False) if done else (target, missing)
    if not isinstance(current, dict):
        label = f"[{', '.join(segments)}]"
        message = _not_object("append", label, current)
        _error(errors, index, "append.target_not_object", message)
        return current, missing
    *parents, leaf = segments
    if parents:
        current, holder = _walk_or_create(current, tuple(parents))
        if leaf in holder:
            _append_to(holder, leaf, holder[leaf], op.value, leaf, index, errors)
        else:
            # A missing leaf under a nested path is always an array, even for a string.
            holder[leaf] = [copy.deepcopy(op.value)]
        return current, False
    if leaf in current:
        _append_to(current, leaf, current[leaf], op.value, leaf, index, errors)
    else:
        current[leaf] = _initial_append(op.value)
    return current, False


def _apply_remove(
    current: JSON, missing: bool, index: int, op: UpdateOp, errors: _Errors
) -> tuple[JSON, bool]:
    assert isinstance(op.path, str)
    if not _path_ok("remove", index, _single_segments(op.path), errors):
        return current, missing
    if not op.path:
        return None, False
    if isinstance(current, dict):
        current.pop(op.path, None)
        return current, False
    message = _not_object("remove", op.path, current)
    _error(errors, index, "remove.target_not_object", message)
    return current, missing


def rust_debug(text: str) -> str:
    """``text`` as Rust's ``{:?}`` prints a string (quoted, with escapes)."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\r":
            escaped.append("\\r")
        elif char == "\t":
            escaped.append("\\t")
        elif char == "\0":
            escaped.append("\\0")
        elif not char.isprintable() and char != " ":
            escaped.append(f"\\u{{{ord(char):x}}}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'
