"""What a worker has registered, and what it must send when a connection opens.

The engine forgets everything a connection registered when that connection closes, so the worker
keeps the registrations here and replays them on every connection (spec/protocol.md section 11.2):
trigger types, services, functions, triggers, each kind in registration order. They follow the
``reattach`` frame and the ``engine::workers::register`` announce (section 2.3).
"""

from __future__ import annotations

from typing import TypeVar

import attrs

from ._messages import (
    Message,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
)

__all__ = ["ConnectionIdentity", "Registry"]

_Registration = TypeVar("_Registration")


@attrs.frozen
class ConnectionIdentity:
    """What ``workerregistered`` told us; the token is a secret and never shown."""

    worker_id: str
    reattach_token: str | None = attrs.field(default=None, repr=False)

    def reattach(self) -> Reattach:
        return Reattach(previous_worker_id=self.worker_id, reattach_token=self.reattach_token)


@attrs.define
class Registry:
    """Registrations to replay, each kind in the order it was made.

    Raises ``ValueError`` on duplicate ids, as re-registering an id in one worker is almost always
    a bug (the engine would silently overwrite it).
    """

    _trigger_types: dict[str, RegisterTriggerType] = attrs.field(factory=dict)
    _services: dict[str, RegisterService] = attrs.field(factory=dict)
    _functions: dict[str, RegisterFunction] = attrs.field(factory=dict)
    _triggers: dict[str, RegisterTrigger] = attrs.field(factory=dict)

    def add_function(self, message: RegisterFunction) -> None:
        _add_unique(self._functions, message.id, message, "function")

    def remove_function(self, function_id: str) -> UnregisterFunction | None:
        if self._functions.pop(function_id, None) is None:
            return None
        return UnregisterFunction(id=function_id)

    def has_function(self, function_id: str) -> bool:
        return function_id in self._functions

    def add_trigger_type(self, message: RegisterTriggerType) -> None:
        _add_unique(self._trigger_types, message.id, message, "trigger type")

    def remove_trigger_type(self, trigger_type_id: str) -> UnregisterTriggerType | None:
        message = self._trigger_types.pop(trigger_type_id, None)
        if message is None:
            return None
        return UnregisterTriggerType(id=trigger_type_id, namespace=message.namespace)

    def add_service(self, message: RegisterService) -> None:
        _add_unique(self._services, message.id, message, "service")

    def add_trigger(self, message: RegisterTrigger) -> None:
        _add_unique(self._triggers, message.id, message, "trigger")

    def remove_trigger(self, trigger_id: str) -> UnregisterTrigger | None:
        message = self._triggers.pop(trigger_id, None)
        if message is None:
            return None
        return UnregisterTrigger(id=trigger_id, trigger_type=message.trigger_type)

    def trigger(self, trigger_id: str) -> RegisterTrigger | None:
        """The binding registered under ``trigger_id``, if it is still registered."""
        return self._triggers.get(trigger_id)

    @property
    def function_count(self) -> int:
        return len(self._functions)

    def replay(self) -> list[Message]:
        """Every registration, in the order a fresh connection must receive them."""
        return [
            *self._trigger_types.values(),
            *self._services.values(),
            *self._functions.values(),
            *self._triggers.values(),
        ]


def _add_unique(table: dict[str, _Registration], key: str, value: _Registration, kind: str) -> None:
    if not key or not key.strip():
        raise ValueError(f"{kind} id must be a non-empty string")
    if key in table:
        raise ValueError(f"{kind} {key!r} is already registered on this worker")
    table[key] = value
