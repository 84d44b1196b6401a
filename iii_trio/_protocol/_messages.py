"""One frozen attrs class per message of the iii worker protocol (spec/protocol.md section 3).

These are plain values: they know nothing of JSON (that is :mod:`._codec`), of sockets or of trio.
Field names are the wire names. ``None`` means "absent on the wire", except for the fields the
engine requires to be present even when null (``InvokeFunction.data``,
``RegisterTrigger.config``), which the codec always writes.

Direction markers: W→E worker to engine, E→W engine to worker.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import attrs

__all__ = [
    "ApiKeyAuth",
    "BearerAuth",
    "EnqueueAction",
    "ErrorBody",
    "HmacAuth",
    "HttpAuth",
    "HttpInvocationRef",
    "InvocationResult",
    "InvokeFunction",
    "MESSAGE_TYPES",
    "Message",
    "Ping",
    "Pong",
    "Reattach",
    "RegisterFunction",
    "RegisterService",
    "RegisterTrigger",
    "RegisterTriggerType",
    "RegistrationRejected",
    "TriggerAction",
    "TriggerRegistrationResult",
    "UnknownMessage",
    "UnregisterFunction",
    "UnregisterTrigger",
    "UnregisterTriggerType",
    "VoidAction",
    "WorkerRegistered",
]

# A JSON value as carried in payloads, configs, schemas and results. ``Any`` on purpose: these are
# opaque to the protocol layer and checked only where a user's type asks for it.
JSON: TypeAlias = Any


# --- shared shapes (section 3.0) -------------------------------------------------------------


@attrs.frozen
class ErrorBody:
    """``{"code", "message", "stacktrace"?}``; both strings are required on the wire."""

    code: str
    message: str
    stacktrace: str | None = None


@attrs.frozen
class VoidAction:
    """``{"type": "void"}``: fire and forget."""


@attrs.frozen
class EnqueueAction:
    """``{"type": "enqueue", "queue": ...}``: route the call through a named queue."""

    queue: str


TriggerAction: TypeAlias = VoidAction | EnqueueAction


@attrs.frozen
class BearerAuth:
    """``Authorization: Bearer <value of env var token_key on the engine host>``."""

    token_key: str


@attrs.frozen
class ApiKeyAuth:
    """``<header>: <value of env var value_key on the engine host>``."""

    header: str
    value_key: str


@attrs.frozen
class HmacAuth:
    """``x-iii-Signature`` computed with the secret in env var ``secret_key`` on the engine host."""

    secret_key: str


HttpAuth: TypeAlias = BearerAuth | ApiKeyAuth | HmacAuth

HttpMethod: TypeAlias = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


@attrs.frozen
class HttpInvocationRef:
    """``registerfunction.invocation``: the engine calls this HTTP endpoint (section 9)."""

    url: str
    method: HttpMethod = "POST"
    timeout_ms: int | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    auth: HttpAuth | None = None


# --- messages --------------------------------------------------------------------------------


@attrs.frozen
class RegisterTriggerType:
    """W→E 3.1: declare a trigger type this worker provides."""

    id: str
    description: str
    trigger_request_format: JSON = None
    call_request_format: JSON = None
    namespace: str | None = None


@attrs.frozen
class UnregisterTriggerType:
    """W→E 3.15: unknown to the 0.23 engine (dropped there); harmless to send."""

    id: str
    namespace: str | None = None


@attrs.frozen
class RegisterTrigger:
    """W→E and E→W 3.2: bind ``function_id`` to a trigger type with a per-binding ``config``."""

    id: str
    trigger_type: str
    function_id: str
    config: JSON = None
    metadata: JSON = None
    namespace: str | None = None
    trigger_namespace: str | None = None


@attrs.frozen
class TriggerRegistrationResult:
    """W→E and E→W 3.3: a provider's answer; ``error`` absent means success."""

    id: str
    trigger_type: str
    function_id: str
    error: ErrorBody | None = None


@attrs.frozen
class UnregisterTrigger:
    """W→E and E→W 3.4."""

    id: str
    trigger_type: str | None = None


@attrs.frozen
class RegisterFunction:
    """W→E 3.5."""

    id: str
    description: str | None = None
    request_format: JSON = None
    response_format: JSON = None
    metadata: JSON = None
    invocation: HttpInvocationRef | None = None


@attrs.frozen
class UnregisterFunction:
    """W→E 3.6."""

    id: str


@attrs.frozen
class InvokeFunction:
    """W→E and E→W 3.7. ``invocation_id`` absent (W→E) means nobody waits for a result."""

    function_id: str
    data: JSON = None
    invocation_id: str | None = None
    traceparent: str | None = None
    baggage: str | None = None
    action: TriggerAction | None = None
    metadata: JSON = None
    namespace: str | None = None


@attrs.frozen
class InvocationResult:
    """W→E and E→W 3.8. ``error`` present means failure and wins over ``result``."""

    invocation_id: str
    function_id: str
    result: JSON = None
    error: ErrorBody | None = None
    traceparent: str | None = None
    baggage: str | None = None


@attrs.frozen
class RegisterService:
    """W→E 3.9: groups functions for display."""

    id: str
    name: str = ""
    description: str | None = None
    parent_service_id: str | None = None


@attrs.frozen
class Ping:
    """Both directions 3.10: the engine answers with :class:`Pong`."""


@attrs.frozen
class Pong:
    """Both directions 3.11."""


@attrs.frozen
class Reattach:
    """W→E 3.12: first frame of a reconnect, retires the previous connection."""

    previous_worker_id: str
    reattach_token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class WorkerRegistered:
    """E→W 3.13: always the engine's first frame. The token is a secret: never logged."""

    worker_id: str
    reattach_token: str | None = attrs.field(default=None, repr=False)
    features: list[str] | None = None


@attrs.frozen
class RegistrationRejected:
    """E→W 3.14."""

    code: str
    namespace: str
    owner_worker_id: str
    worker_name: str | None = None
    function_id: str | None = None


@attrs.frozen
class UnknownMessage:
    """A frame whose ``type`` this version does not know (for example the engine's auth
    ``error`` frame or the 0.25 observe family). Kept, not dropped, so callers can log it."""

    type: str
    fields: dict[str, JSON] = attrs.field(factory=dict, repr=False)


Message: TypeAlias = (
    RegisterTriggerType
    | UnregisterTriggerType
    | RegisterTrigger
    | TriggerRegistrationResult
    | UnregisterTrigger
    | RegisterFunction
    | UnregisterFunction
    | InvokeFunction
    | InvocationResult
    | RegisterService
    | Ping
    | Pong
    | Reattach
    | WorkerRegistered
    | RegistrationRejected
    | UnknownMessage
)

#: The wire ``type`` tag of every known message class.
MESSAGE_TYPES: dict[str, type[Message]] = {
    "registertriggertype": RegisterTriggerType,
    "unregistertriggertype": UnregisterTriggerType,
    "registertrigger": RegisterTrigger,
    "triggerregistrationresult": TriggerRegistrationResult,
    "unregistertrigger": UnregisterTrigger,
    "registerfunction": RegisterFunction,
    "unregisterfunction": UnregisterFunction,
    "invokefunction": InvokeFunction,
    "invocationresult": InvocationResult,
    "registerservice": RegisterService,
    "ping": Ping,
    "pong": Pong,
    "reattach": Reattach,
    "workerregistered": WorkerRegistered,
    "registrationrejected": RegistrationRejected,
}
