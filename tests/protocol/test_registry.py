"""The worker's registration table and what it replays on a fresh connection
(spec/protocol.md sections 2.3 and 11.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from iii_trio._protocol._messages import (
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
)
from iii_trio._protocol._registry import ConnectionIdentity, Registry


def _function(function_id: str) -> RegisterFunction:
    return RegisterFunction(id=function_id, description=f"does {function_id}")


def _trigger_type(type_id: str, namespace: str | None = None) -> RegisterTriggerType:
    return RegisterTriggerType(id=type_id, description=f"{type_id} events", namespace=namespace)


def _trigger(trigger_id: str, trigger_type: str = "cron") -> RegisterTrigger:
    return RegisterTrigger(
        id=trigger_id, trigger_type=trigger_type, function_id="jobs::run", config={}
    )


def test_empty_registry_replays_nothing() -> None:
    assert Registry().replay() == []


def test_replay_sends_trigger_types_then_services_then_functions_then_triggers() -> None:
    registry = Registry()
    # Added in an order unlike the replay order, to show the kinds are regrouped.
    registry.add_trigger(_trigger("t1"))
    registry.add_function(_function("b::one"))
    registry.add_service(RegisterService(id="svc"))
    registry.add_trigger_type(_trigger_type("webhook"))
    registry.add_function(_function("a::two"))
    registry.add_trigger_type(_trigger_type("cron"))
    registry.add_trigger(_trigger("t0"))

    assert registry.replay() == [
        _trigger_type("webhook"),
        _trigger_type("cron"),
        RegisterService(id="svc"),
        _function("b::one"),
        _function("a::two"),
        _trigger("t1"),
        _trigger("t0"),
    ]


def test_replay_keeps_registration_order_not_alphabetical_order() -> None:
    registry = Registry()
    for function_id in ["z::last", "a::first", "m::middle"]:
        registry.add_function(_function(function_id))
    assert [message.id for message in registry.replay()] == ["z::last", "a::first", "m::middle"]


def test_replay_can_be_repeated_for_every_reconnect() -> None:
    registry = Registry()
    registry.add_function(_function("a::b"))
    registry.add_trigger(_trigger("t1"))
    first = registry.replay()
    assert registry.replay() == first
    first.clear()
    assert registry.replay() == [_function("a::b"), _trigger("t1")]


def test_replay_sends_the_registered_messages_unchanged() -> None:
    registry = Registry()
    message = RegisterFunction(
        id="math::add",
        description="Add",
        request_format={"type": "object"},
        response_format={"type": "number"},
        metadata={"owner": "math"},
    )
    registry.add_function(message)
    assert registry.replay() == [message]


@pytest.mark.parametrize(
    ("add", "first", "again"),
    [
        pytest.param(Registry.add_function, _function("a::b"), _function("a::b"), id="function"),
        pytest.param(
            Registry.add_trigger_type, _trigger_type("x"), _trigger_type("x"), id="trigger-type"
        ),
        pytest.param(
            Registry.add_service,
            RegisterService(id="svc"),
            RegisterService(id="svc", name="Other"),
            id="service",
        ),
        pytest.param(Registry.add_trigger, _trigger("t1"), _trigger("t1", "http"), id="trigger"),
    ],
)
def test_duplicate_id_is_rejected_and_keeps_the_first(
    add: Callable[[Registry, Any], None], first: Any, again: Any
) -> None:
    registry = Registry()
    add(registry, first)
    with pytest.raises(ValueError, match="already registered"):
        add(registry, again)
    assert registry.replay() == [first]


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda i: (Registry.add_function, _function(i)), id="function"),
        pytest.param(lambda i: (Registry.add_trigger_type, _trigger_type(i)), id="trigger-type"),
        pytest.param(lambda i: (Registry.add_service, RegisterService(id=i)), id="service"),
        pytest.param(lambda i: (Registry.add_trigger, _trigger(i)), id="trigger"),
    ],
)
def test_blank_id_is_rejected(
    make: Callable[[str], tuple[Callable[[Registry, Any], None], Any]], blank: str
) -> None:
    registry = Registry()
    add, message = make(blank)
    with pytest.raises(ValueError, match="non-empty"):
        add(registry, message)
    assert registry.replay() == []


def test_same_id_may_be_used_by_different_kinds() -> None:
    registry = Registry()
    registry.add_trigger_type(_trigger_type("orders"))
    registry.add_service(RegisterService(id="orders"))
    registry.add_function(_function("orders"))
    registry.add_trigger(_trigger("orders"))
    assert len(registry.replay()) == 4


def test_remove_function_returns_unregister_and_drops_it_from_replay() -> None:
    registry = Registry()
    registry.add_function(_function("a::one"))
    registry.add_function(_function("a::two"))
    assert registry.remove_function("a::one") == UnregisterFunction(id="a::one")
    assert registry.replay() == [_function("a::two")]
    assert not registry.has_function("a::one")
    assert registry.has_function("a::two")
    assert registry.function_count == 1


def test_remove_unknown_function_returns_none() -> None:
    registry = Registry()
    registry.add_function(_function("a::one"))
    assert registry.remove_function("a::other") is None
    assert registry.replay() == [_function("a::one")]


def test_remove_function_twice_returns_none_the_second_time() -> None:
    registry = Registry()
    registry.add_function(_function("a::one"))
    assert registry.remove_function("a::one") == UnregisterFunction(id="a::one")
    assert registry.remove_function("a::one") is None


def test_removed_function_can_be_registered_again_and_replays_last() -> None:
    registry = Registry()
    registry.add_function(_function("a::one"))
    registry.add_function(_function("a::two"))
    registry.remove_function("a::one")
    registry.add_function(_function("a::one"))
    assert [message.id for message in registry.replay()] == ["a::two", "a::one"]


def test_remove_trigger_type_returns_unregister_with_its_namespace() -> None:
    registry = Registry()
    registry.add_trigger_type(_trigger_type("webhook", namespace="hooks"))
    registry.add_trigger_type(_trigger_type("cron"))
    assert registry.remove_trigger_type("webhook") == UnregisterTriggerType(
        id="webhook", namespace="hooks"
    )
    assert registry.remove_trigger_type("cron") == UnregisterTriggerType(id="cron")
    assert registry.remove_trigger_type("cron") is None
    assert registry.replay() == []


def test_remove_trigger_returns_unregister_with_its_trigger_type() -> None:
    registry = Registry()
    registry.add_trigger(_trigger("t1", trigger_type="http"))
    registry.add_trigger(_trigger("t2"))
    assert registry.remove_trigger("t1") == UnregisterTrigger(id="t1", trigger_type="http")
    assert registry.remove_trigger("t1") is None
    assert registry.replay() == [_trigger("t2")]


def test_a_trigger_is_looked_up_by_id_until_it_is_removed() -> None:
    registry = Registry()
    registry.add_trigger(_trigger("t1", trigger_type="http"))
    assert registry.trigger("t1") == _trigger("t1", trigger_type="http")
    assert registry.trigger("t2") is None
    registry.remove_trigger("t1")
    assert registry.trigger("t1") is None


def test_function_count_counts_only_functions() -> None:
    registry = Registry()
    assert registry.function_count == 0
    registry.add_function(_function("a::one"))
    registry.add_function(_function("a::two"))
    registry.add_trigger(_trigger("t1"))
    registry.add_service(RegisterService(id="svc"))
    assert registry.function_count == 2


def test_registries_do_not_share_state() -> None:
    first, second = Registry(), Registry()
    first.add_function(_function("a::one"))
    assert second.replay() == []
    second.add_function(_function("a::one"))  # no duplicate error across registries


def test_connection_identity_builds_the_reattach_frame() -> None:
    identity = ConnectionIdentity(worker_id="9a3e-old", reattach_token="5c2b-secret")
    assert identity.reattach() == Reattach(
        previous_worker_id="9a3e-old", reattach_token="5c2b-secret"
    )


def test_connection_identity_without_token_reattaches_without_token() -> None:
    assert ConnectionIdentity(worker_id="9a3e-old").reattach() == Reattach(
        previous_worker_id="9a3e-old"
    )


def test_connection_identity_repr_hides_the_token() -> None:
    identity = ConnectionIdentity(worker_id="9a3e-old", reattach_token="5c2b-secret")
    assert "5c2b-secret" not in repr(identity)
    assert "9a3e-old" in repr(identity)
    assert "5c2b-secret" not in repr(identity.reattach())
