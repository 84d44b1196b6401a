"""How handlers are prepared: what is decided once, at registration (no sockets here)."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import pytest
import trio

from iii_trio._dispatch import InvalidPayload, prepare_handler


@attrs.frozen
class Item:
    name: str
    quantity: int = 1


async def pure(payload: Any) -> Any:
    return payload


async def awaits(payload: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return payload


async def uses_async_with(payload: Any) -> None:
    async with trio.open_nursery():
        pass


async def uses_async_for(payload: Any) -> None:
    async for _ in payload:
        pass


class Service:
    async def method(self, payload: Any) -> Any:
        return payload


@pytest.mark.parametrize(
    ("handler", "inline"),
    [
        (pure, True),
        (Service().method, True),
        (awaits, False),
        (uses_async_with, False),
        (uses_async_for, False),
        (lambda payload: payload, False),  # sync: runs in a thread
        (functools.partial(pure), False),  # not inspected: served by a task
    ],
)
def test_only_handlers_that_cannot_suspend_run_inline(handler: Any, inline: bool) -> None:
    prepared = prepare_handler("svc::f", handler)
    assert (prepared.call_inline is not None) is inline


def test_inline_call_returns_the_result() -> None:
    prepared = prepare_handler("svc::f", pure)
    assert prepared.call_inline is not None
    assert prepared.call_inline({"a": 1}, None) == {"a": 1}


def test_payload_type_and_schemas_come_from_annotations() -> None:
    async def add(item: Item) -> list[Item]:
        return [item]

    prepared = prepare_handler("svc::add", add)
    assert prepared.structure is not None
    assert prepared.structure({"name": "pen"}) == Item("pen", 1)
    assert prepared.request_format["required"] == ["name"]
    assert prepared.response_format["type"] == "array"


@attrs.frozen
class Options:
    verbose: bool = False


@attrs.frozen
class Order:
    item: Item
    options: Options = Options()


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ("verbose", "(expected an object, got a string) @ payload"),
        (["verbose"], "(expected an object, got an array) @ payload"),
        ({"item": 3}, "expected Item @ payload.item"),
        ({"item": {"name": "pen"}, "options": "quiet"}, "expected Options @ payload.options"),
    ],
)
def test_attrs_classes_are_structured_from_objects_only(payload: Any, where: str) -> None:
    # A class whose fields all have defaults would otherwise take any string or list.
    async def handler(order: Order) -> None:
        return None

    prepared = prepare_handler("svc::order", handler)
    assert prepared.structure is not None
    with pytest.raises(InvalidPayload) as refused:
        prepared.structure(payload)
    assert where in str(refused.value)
    assert prepared.structure({"item": {"name": "pen"}}) == Order(Item("pen"))


def test_raw_payloads_are_not_structured() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        return None

    assert prepare_handler("svc::raw", handler).structure is None


def test_metadata_parameter_is_detected() -> None:
    async def handler(payload: Any, *, metadata: Any = None) -> Any:
        return metadata

    prepared = prepare_handler("svc::meta", handler)
    assert prepared.call_inline is not None
    assert prepared.call_inline({}, {"k": "v"}) == {"k": "v"}


def test_handler_needing_more_arguments_is_refused() -> None:
    async def handler(payload: Any, other: Any) -> None:
        return None

    with pytest.raises(TypeError, match="positional arguments"):
        prepare_handler("svc::bad", handler)


def test_required_keyword_only_parameter_is_refused() -> None:
    async def handler(payload: Any, *, flag: bool) -> None:
        return None

    with pytest.raises(TypeError, match="keyword-only parameter 'flag'"):
        prepare_handler("svc::bad", handler)


def test_non_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        prepare_handler("svc::bad", 42)  # type: ignore[arg-type]
