"""The wire codec against the message shapes of spec/protocol.md section 3 and the leniency and
strictness rules of sections 1.3 and 11.1.

The example frames below are copied from the spec (section numbers in the ids), plus a few frames
built from the spec's field tables where the spec shows no example. The round trips run both
through encode/decode and through the converter alone (encode_reference/decode_reference);
tests/protocol/test_fastpath.py compares the two on generated frames.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from iii_trio import IIIError, ProtocolError
from iii_trio._protocol._codec import (
    decode,
    decode_parsed,
    decode_reference,
    encode,
    encode_call,
    encode_json,
    encode_reference,
    encode_result,
    successful_result_id,
)
from iii_trio._protocol._messages import (
    MESSAGE_TYPES,
    ApiKeyAuth,
    BearerAuth,
    EnqueueAction,
    ErrorBody,
    HmacAuth,
    HttpInvocationRef,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnknownMessage,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    VoidAction,
    WorkerRegistered,
)

TRIGGER_ID = "0d7c1c52-4a1f-4d7e-b1a3-2f0f3f9b7d11"
INVOCATION_ID = "6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ADD_REQUEST_FORMAT = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}
WORKERS_REGISTER_DATA = {
    "runtime": "python",
    "version": "0.23.0rc4",
    "name": "myhost:4242",
    "os": "Linux 6.8.0 (x86_64)",
    "pid": 4242,
    "isolation": None,
    "namespace": None,
    "telemetry": {
        "language": "en_US",
        "project_name": "demo",
        "framework": "iii-py",
        "amplitude_api_key": None,
    },
}

# (frame text, the message it means)
EXAMPLES = [
    pytest.param(
        """{"type":"registertriggertype","id":"webhook","description":"Webhook trigger",
        "trigger_request_format":{"type":"object","properties":{"url":{"type":"string"}}}}""",
        RegisterTriggerType(
            id="webhook",
            description="Webhook trigger",
            trigger_request_format={
                "type": "object",
                "properties": {"url": {"type": "string"}},
            },
        ),
        id="3.1-registertriggertype",
    ),
    pytest.param(
        """{"type":"registertriggertype","id":"cron2","description":"",
        "trigger_request_format":{"type":"object"},"call_request_format":{"type":"string"},
        "namespace":"jobs"}""",
        RegisterTriggerType(
            id="cron2",
            description="",
            trigger_request_format={"type": "object"},
            call_request_format={"type": "string"},
            namespace="jobs",
        ),
        id="3.1-registertriggertype-all-fields",
    ),
    pytest.param(
        """{"type":"registertrigger","id":"0d7c1c52-4a1f-4d7e-b1a3-2f0f3f9b7d11",
        "trigger_type":"http","function_id":"math::add",
        "config":{"api_path":"/math/add","http_method":"POST"},"metadata":{"tenant":"acme"}}""",
        RegisterTrigger(
            id=TRIGGER_ID,
            trigger_type="http",
            function_id="math::add",
            config={"api_path": "/math/add", "http_method": "POST"},
            metadata={"tenant": "acme"},
        ),
        id="3.2-registertrigger",
    ),
    pytest.param(
        """{"type":"registertrigger","id":"t1","trigger_type":"webhook","function_id":"a::b",
        "config":null,"namespace":"orders","trigger_namespace":"hooks"}""",
        RegisterTrigger(
            id="t1",
            trigger_type="webhook",
            function_id="a::b",
            config=None,
            namespace="orders",
            trigger_namespace="hooks",
        ),
        id="3.2-registertrigger-null-config-and-namespaces",
    ),
    pytest.param(
        """{"type":"triggerregistrationresult","id":"0d7c…","trigger_type":"http",
        "function_id":"math::add","error":{"code":"trigger_registration_failed",
        "message":"api_path is required for http triggers"}}""",
        TriggerRegistrationResult(
            id="0d7c…",
            trigger_type="http",
            function_id="math::add",
            error=ErrorBody(
                code="trigger_registration_failed",
                message="api_path is required for http triggers",
            ),
        ),
        id="3.3-triggerregistrationresult-error",
    ),
    pytest.param(
        """{"type":"triggerregistrationresult","id":"0d7c…","trigger_type":"http",
        "function_id":"math::add"}""",
        TriggerRegistrationResult(id="0d7c…", trigger_type="http", function_id="math::add"),
        id="3.3-triggerregistrationresult-success",
    ),
    pytest.param(
        """{"type":"unregistertrigger","id":"0d7c1c52-4a1f-4d7e-b1a3-2f0f3f9b7d11",
        "trigger_type":"http"}""",
        UnregisterTrigger(id=TRIGGER_ID, trigger_type="http"),
        id="3.4-unregistertrigger",
    ),
    pytest.param(
        '{"type":"unregistertrigger","id":"0d7c1c52-4a1f-4d7e-b1a3-2f0f3f9b7d11"}',
        UnregisterTrigger(id=TRIGGER_ID),
        id="3.4-unregistertrigger-without-type",
    ),
    pytest.param(
        """{"type":"registerfunction","id":"math::add","description":"Add two numbers",
        "request_format":{"type":"object","properties":{"a":{"type":"number"},
        "b":{"type":"number"}},"required":["a","b"]},
        "response_format":{"type":"number"},"metadata":{"owner":"math-team"}}""",
        RegisterFunction(
            id="math::add",
            description="Add two numbers",
            request_format=ADD_REQUEST_FORMAT,
            response_format={"type": "number"},
            metadata={"owner": "math-team"},
        ),
        id="3.5-registerfunction",
    ),
    pytest.param(
        """{"type":"registerfunction","id":"external::lambda","description":"Lambda",
        "invocation":{"url":"https://example.com/fn","method":"POST","timeout_ms":30000,
        "headers":{"x-custom":"v"},"auth":{"type":"hmac","secret_key":"LAMBDA_SECRET"}}}""",
        RegisterFunction(
            id="external::lambda",
            description="Lambda",
            invocation=HttpInvocationRef(
                url="https://example.com/fn",
                method="POST",
                timeout_ms=30000,
                headers={"x-custom": "v"},
                auth=HmacAuth(secret_key="LAMBDA_SECRET"),
            ),
        ),
        id="9.1-registerfunction-http-hmac",
    ),
    pytest.param(
        """{"type":"registerfunction","id":"external::get",
        "invocation":{"url":"https://example.com/get","method":"GET",
        "auth":{"type":"bearer","token_key":"API_TOKEN"}}}""",
        RegisterFunction(
            id="external::get",
            invocation=HttpInvocationRef(
                url="https://example.com/get",
                method="GET",
                auth=BearerAuth(token_key="API_TOKEN"),
            ),
        ),
        id="9.1-registerfunction-http-bearer",
    ),
    pytest.param(
        """{"type":"registerfunction","id":"external::put",
        "invocation":{"url":"https://example.com/put","method":"PUT","timeout_ms":500,
        "auth":{"type":"api_key","header":"X-Api-Key","value_key":"PUT_KEY"}}}""",
        RegisterFunction(
            id="external::put",
            invocation=HttpInvocationRef(
                url="https://example.com/put",
                method="PUT",
                timeout_ms=500,
                auth=ApiKeyAuth(header="X-Api-Key", value_key="PUT_KEY"),
            ),
        ),
        id="9.1-registerfunction-http-api-key",
    ),
    pytest.param(
        '{"type":"unregisterfunction","id":"math::add"}',
        UnregisterFunction(id="math::add"),
        id="3.6-unregisterfunction",
    ),
    pytest.param(
        """{"type":"invokefunction","invocation_id":"6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e",
        "function_id":"math::add","data":{"a":2,"b":3},"namespace":"orders",
        "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}""",
        InvokeFunction(
            invocation_id=INVOCATION_ID,
            function_id="math::add",
            data={"a": 2, "b": 3},
            namespace="orders",
            traceparent=TRACEPARENT,
        ),
        id="3.7-invokefunction-worker-to-engine",
    ),
    pytest.param(
        """{"type":"invokefunction","invocation_id":"6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e",
        "function_id":"math::add","data":{"_caller_worker_id":"9a3e…","a":2,"b":3}}""",
        InvokeFunction(
            invocation_id=INVOCATION_ID,
            function_id="math::add",
            data={"_caller_worker_id": "9a3e…", "a": 2, "b": 3},
        ),
        id="3.7-invokefunction-engine-to-worker",
    ),
    pytest.param(
        """{"function_id":"engine::workers::register",
        "data":{"runtime":"python","version":"0.23.0rc4","name":"myhost:4242",
        "os":"Linux 6.8.0 (x86_64)","pid":4242,"isolation":null,"namespace":null,
        "telemetry":{"language":"en_US","project_name":"demo","framework":"iii-py",
        "amplitude_api_key":null}},
        "action":{"type":"void"},"type":"invokefunction"}""",
        InvokeFunction(
            function_id="engine::workers::register",
            data=WORKERS_REGISTER_DATA,
            action=VoidAction(),
        ),
        id="2.4-invokefunction-void",
    ),
    pytest.param(
        """{"type":"invokefunction","invocation_id":"6b1f0c0e-2a55-4b47-9d0a-7f0d6a1c2b3e",
        "function_id":"orders::process","data":null,
        "action":{"type":"enqueue","queue":"orders"},"metadata":{"attempt":1},
        "baggage":"iii.function.id=orders::process"}""",
        InvokeFunction(
            invocation_id=INVOCATION_ID,
            function_id="orders::process",
            data=None,
            action=EnqueueAction(queue="orders"),
            metadata={"attempt": 1},
            baggage="iii.function.id=orders::process",
        ),
        id="4.5-invokefunction-enqueue",
    ),
    pytest.param(
        """{"type":"invocationresult","invocation_id":"6b1f…","function_id":"math::add",
        "result":5}""",
        InvocationResult(invocation_id="6b1f…", function_id="math::add", result=5),
        id="3.8-invocationresult-value",
    ),
    pytest.param(
        '{"type":"invocationresult","invocation_id":"6b1f…","function_id":"audit::log"}',
        InvocationResult(invocation_id="6b1f…", function_id="audit::log"),
        id="3.8-invocationresult-no-value",
    ),
    pytest.param(
        """{"type":"invocationresult","invocation_id":"6b1f…","function_id":"math::add",
        "error":{"code":"invocation_failed","message":"division by zero",
        "stacktrace":"Traceback (most recent call last): …"}}""",
        InvocationResult(
            invocation_id="6b1f…",
            function_id="math::add",
            error=ErrorBody(
                code="invocation_failed",
                message="division by zero",
                stacktrace="Traceback (most recent call last): …",
            ),
        ),
        id="3.8-invocationresult-error",
    ),
    pytest.param(
        '{"type":"registerservice","id":"math","name":"Math"}',
        RegisterService(id="math", name="Math"),
        id="3.9-registerservice",
    ),
    pytest.param(
        """{"type":"registerservice","id":"math.basic","name":"Basic",
        "description":"Arithmetic","parent_service_id":"math"}""",
        RegisterService(
            id="math.basic",
            name="Basic",
            description="Arithmetic",
            parent_service_id="math",
        ),
        id="3.9-registerservice-all-fields",
    ),
    pytest.param('{"type":"ping"}', Ping(), id="3.10-ping"),
    pytest.param('{"type":"pong"}', Pong(), id="3.11-pong"),
    pytest.param(
        '{"type":"reattach","previous_worker_id":"9a3e…","reattach_token":"5c2b…"}',
        Reattach(previous_worker_id="9a3e…", reattach_token="5c2b…"),
        id="3.12-reattach",
    ),
    pytest.param(
        '{"type":"reattach","previous_worker_id":"9a3e…"}',
        Reattach(previous_worker_id="9a3e…"),
        id="3.12-reattach-without-token",
    ),
    pytest.param(
        '{"type":"workerregistered","worker_id":"9a3e1b7c-…","reattach_token":"5c2b0e44-…"}',
        WorkerRegistered(worker_id="9a3e1b7c-…", reattach_token="5c2b0e44-…"),
        id="3.13-workerregistered",
    ),
    pytest.param(
        '{"type":"workerregistered","worker_id":"9a3e1b7c-…"}',
        WorkerRegistered(worker_id="9a3e1b7c-…"),
        id="3.13-workerregistered-without-token",
    ),
    pytest.param(
        """{"type":"workerregistered","worker_id":"9a3e1b7c-…","reattach_token":"5c2b0e44-…",
        "features":["observe.v1","local-dispatch.v1","large-messages.v1"]}""",
        WorkerRegistered(
            worker_id="9a3e1b7c-…",
            reattach_token="5c2b0e44-…",
            features=["observe.v1", "local-dispatch.v1", "large-messages.v1"],
        ),
        id="3.13-workerregistered-with-features",
    ),
    pytest.param(
        """{"type":"registrationrejected","code":"FUNCTION_NAMESPACE_CONFLICT",
        "namespace":"orders","function_id":"orders::create","owner_worker_id":"1f0e…"}""",
        RegistrationRejected(
            code="FUNCTION_NAMESPACE_CONFLICT",
            namespace="orders",
            function_id="orders::create",
            owner_worker_id="1f0e…",
        ),
        id="3.14-registrationrejected-function-conflict",
    ),
    pytest.param(
        """{"type":"registrationrejected","code":"WORKER_NAMESPACE_CONFLICT",
        "namespace":"default","worker_name":"billing","owner_worker_id":"1f0e…"}""",
        RegistrationRejected(
            code="WORKER_NAMESPACE_CONFLICT",
            namespace="default",
            worker_name="billing",
            owner_worker_id="1f0e…",
        ),
        id="3.14-registrationrejected-worker-conflict",
    ),
    pytest.param(
        '{"type":"unregistertriggertype","id":"webhook"}',
        UnregisterTriggerType(id="webhook"),
        id="3.15-unregistertriggertype",
    ),
    pytest.param(
        '{"type":"unregistertriggertype","id":"webhook","namespace":"hooks"}',
        UnregisterTriggerType(id="webhook", namespace="hooks"),
        id="3.15-unregistertriggertype-with-namespace",
    ),
]

# Message fields holding a nested protocol shape (rather than a free-form JSON value).
_NESTED_SHAPES = ("error", "invocation", "action", "auth")
# What the engine assumes for an absent key of a nested shape (spec/protocol.md section 9.1).
_ENGINE_DEFAULTS = {"invocation": {"method": "POST", "headers": {}}}


def _normalized(frame: dict[str, Any], shape: str | None = None) -> dict[str, Any]:
    """The frame as the engine reads it: a null key is an absent key, and so is a key holding
    the engine's own default. Free-form values (payloads, configs, schemas) are left alone."""
    defaults = _ENGINE_DEFAULTS.get(shape or "", {})
    result: dict[str, Any] = {}
    for key, value in frame.items():
        if value is None or (key in defaults and defaults[key] == value):
            continue
        if key in _NESTED_SHAPES and isinstance(value, dict):
            value = _normalized(value, key)
        result[key] = value
    return result


def _wire(message: Message) -> dict[str, Any]:
    parsed = json.loads(encode(message))
    assert isinstance(parsed, dict)
    return parsed


def _example_messages() -> list[Any]:
    return [param.values[1] for param in EXAMPLES]


# --- round trips ----------------------------------------------------------------------------


def test_every_message_type_has_an_example() -> None:
    tags = {json.loads(str(param.values[0]))["type"] for param in EXAMPLES}
    assert tags == set(MESSAGE_TYPES)


Decoder = Callable[[str | bytes], Message]
Encoder = Callable[[Message], bytes]
# Every round trip runs through the codec's entry points and through the converter alone.
DECODERS = pytest.mark.parametrize(
    "decoder", [decode, decode_reference], ids=["decode", "reference"]
)
ENCODERS = pytest.mark.parametrize(
    "encoder", [encode, encode_reference], ids=["encode", "reference"]
)


@DECODERS
@pytest.mark.parametrize(("frame", "expected"), EXAMPLES)
def test_spec_frame_decodes_to_the_expected_message(
    frame: str, expected: Message, decoder: Decoder
) -> None:
    assert decoder(frame) == expected


@ENCODERS
@pytest.mark.parametrize(("frame", "expected"), EXAMPLES)
def test_decoded_spec_frame_encodes_back_to_the_same_json(
    frame: str, expected: Message, encoder: Encoder
) -> None:
    assert _normalized(json.loads(encoder(decode(frame)))) == _normalized(json.loads(frame))


@DECODERS
@ENCODERS
@pytest.mark.parametrize(("frame", "message"), EXAMPLES)
def test_message_survives_encode_then_decode(
    frame: str, message: Message, encoder: Encoder, decoder: Decoder
) -> None:
    assert decoder(encoder(message)) == message


@pytest.mark.parametrize(("tag", "cls"), sorted(MESSAGE_TYPES.items()))
def test_encode_writes_the_type_tag_of_the_message_class(tag: str, cls: type[Message]) -> None:
    instances = [m for m in _example_messages() if type(m) is cls]
    assert instances, f"no example of {cls.__name__}"
    for message in instances:
        assert _wire(message)["type"] == tag


def test_decode_accepts_text_bytes_bytearray_and_memoryview() -> None:
    frame = '{"type":"unregisterfunction","id":"math::add"}'
    expected = UnregisterFunction(id="math::add")
    raw = frame.encode()
    assert decode(frame) == expected
    assert decode(raw) == expected
    assert decode(bytearray(raw)) == expected
    assert decode(memoryview(raw)) == expected


# --- leniency: unknown types, unknown keys, nulls -------------------------------------------


def test_unknown_type_decodes_to_unknown_message_with_its_fields() -> None:
    frame = (
        '{"type":"error","error":{"code":"AUTH_ERROR",'
        '"message":"auth function returned no result"}}'
    )
    message = decode(frame)
    assert message == UnknownMessage(
        type="error",
        fields={"error": {"code": "AUTH_ERROR", "message": "auth function returned no result"}},
    )


def test_unknown_message_encodes_back_to_the_frame_it_came_from() -> None:
    frame = '{"type":"observeresult","id":"o1","observers":[1,2],"extra":null}'
    assert json.loads(encode(decode(frame))) == json.loads(frame)


def test_type_tag_is_case_sensitive() -> None:
    assert decode('{"type":"Ping"}') == UnknownMessage(type="Ping")


def test_unknown_extra_keys_are_ignored() -> None:
    frame = (
        '{"type":"invokefunction","invocation_id":"i1","function_id":"a::b","data":1,'
        '"caller":{"worker_id":"w"},"observe_depth":2,"activation":"local"}'
    )
    assert decode(frame) == InvokeFunction(invocation_id="i1", function_id="a::b", data=1)


def test_workerregistered_from_a_newer_engine_keeps_features_and_ignores_the_rest() -> None:
    frame = '{"type":"workerregistered","worker_id":"w1","features":["observe.v1"],"x":{}}'
    assert decode(frame) == WorkerRegistered(worker_id="w1", features=["observe.v1"])


# Every optional field of each message, sent as an explicit null, must read as absent.
NULL_OPTIONALS = [
    pytest.param(
        {"type": "registertriggertype", "id": "t", "description": "d"},
        ["trigger_request_format", "call_request_format", "namespace"],
        id="registertriggertype",
    ),
    pytest.param(
        {"type": "unregistertriggertype", "id": "t"}, ["namespace"], id="unregistertriggertype"
    ),
    pytest.param(
        {"type": "registertrigger", "id": "t", "trigger_type": "x", "function_id": "f"},
        ["config", "metadata", "namespace", "trigger_namespace"],
        id="registertrigger",
    ),
    pytest.param(
        {"type": "triggerregistrationresult", "id": "t", "trigger_type": "x", "function_id": "f"},
        ["error"],
        id="triggerregistrationresult",
    ),
    pytest.param(
        {"type": "unregistertrigger", "id": "t"}, ["trigger_type"], id="unregistertrigger"
    ),
    pytest.param(
        {"type": "registerfunction", "id": "f"},
        ["description", "request_format", "response_format", "metadata", "invocation"],
        id="registerfunction",
    ),
    pytest.param(
        {"type": "invokefunction", "function_id": "f"},
        ["data", "invocation_id", "traceparent", "baggage", "action", "metadata", "namespace"],
        id="invokefunction",
    ),
    pytest.param(
        {"type": "invocationresult", "invocation_id": "i", "function_id": "f"},
        ["result", "error", "traceparent", "baggage"],
        id="invocationresult",
    ),
    pytest.param(
        {"type": "registerservice", "id": "s"},
        ["description", "parent_service_id"],
        id="registerservice",
    ),
    pytest.param(
        {"type": "reattach", "previous_worker_id": "w"}, ["reattach_token"], id="reattach"
    ),
    pytest.param(
        {"type": "workerregistered", "worker_id": "w"},
        ["reattach_token", "features"],
        id="workerregistered",
    ),
    pytest.param(
        {"type": "registrationrejected", "code": "C", "namespace": "n", "owner_worker_id": ""},
        ["worker_name", "function_id"],
        id="registrationrejected",
    ),
]


@pytest.mark.parametrize(("required", "optional"), NULL_OPTIONALS)
def test_null_optional_fields_decode_as_absent(
    required: dict[str, Any], optional: list[str]
) -> None:
    with_nulls = {**required, **dict.fromkeys(optional)}
    # data and config may not be left out, but null is their absent value too.
    without = {k: v for k, v in with_nulls.items() if k in required or k in ("data", "config")}
    message = decode(json.dumps(with_nulls))
    assert message == decode(json.dumps(without))
    for name in optional:
        assert getattr(message, name) is None


def test_null_optional_fields_in_nested_shapes_decode_as_absent() -> None:
    frame = (
        '{"type":"registerfunction","id":"x::y","invocation":{"url":"https://e.com",'
        '"timeout_ms":null,"auth":null}}'
    )
    message = decode(frame)
    assert isinstance(message, RegisterFunction)
    assert message.invocation == HttpInvocationRef(url="https://e.com")
    result = decode(
        '{"type":"invocationresult","invocation_id":"i","function_id":"f",'
        '"error":{"code":"c","message":"m","stacktrace":null}}'
    )
    assert isinstance(result, InvocationResult)
    assert result.error == ErrorBody(code="c", message="m")


# --- what encode writes -------------------------------------------------------------------


def test_invokefunction_encodes_data_even_when_none() -> None:
    assert _wire(InvokeFunction(function_id="audit::log")) == {
        "type": "invokefunction",
        "function_id": "audit::log",
        "data": None,
    }


def test_registertrigger_encodes_config_even_when_none() -> None:
    assert _wire(RegisterTrigger(id="t1", trigger_type="cron", function_id="a::b")) == {
        "type": "registertrigger",
        "id": "t1",
        "trigger_type": "cron",
        "function_id": "a::b",
        "config": None,
    }


def test_encode_omits_absent_optional_fields() -> None:
    assert _wire(InvocationResult(invocation_id="i", function_id="f")) == {
        "type": "invocationresult",
        "invocation_id": "i",
        "function_id": "f",
    }
    assert _wire(WorkerRegistered(worker_id="w")) == {"type": "workerregistered", "worker_id": "w"}
    assert _wire(Reattach(previous_worker_id="w")) == {
        "type": "reattach",
        "previous_worker_id": "w",
    }


def test_error_body_without_stacktrace_omits_the_key() -> None:
    message = InvocationResult(
        invocation_id="i", function_id="f", error=ErrorBody(code="c", message="m")
    )
    assert _wire(message)["error"] == {"code": "c", "message": "m"}


def test_http_invocation_without_options_encodes_only_the_url() -> None:
    message = RegisterFunction(id="x::y", invocation=HttpInvocationRef(url="https://e.com"))
    assert _wire(message)["invocation"] == {"url": "https://e.com"}


def test_http_invocation_writes_every_auth_kind_with_its_tag() -> None:
    def auth_of(auth: BearerAuth | ApiKeyAuth | HmacAuth) -> Any:
        message = RegisterFunction(id="x", invocation=HttpInvocationRef(url="u", auth=auth))
        return _wire(message)["invocation"]["auth"]

    assert auth_of(BearerAuth(token_key="T")) == {"type": "bearer", "token_key": "T"}
    assert auth_of(ApiKeyAuth(header="X-Key", value_key="K")) == {
        "type": "api_key",
        "header": "X-Key",
        "value_key": "K",
    }
    assert auth_of(HmacAuth(secret_key="S")) == {"type": "hmac", "secret_key": "S"}


@pytest.mark.parametrize("value", [0, False, "", [], {}, 0.0])
def test_falsy_results_are_written_not_dropped(value: Any) -> None:
    wire = _wire(InvocationResult(invocation_id="i", function_id="f", result=value))
    assert "result" in wire
    assert wire["result"] == value
    assert type(wire["result"]) is type(value)


def test_nulls_inside_payloads_are_kept() -> None:
    message = InvokeFunction(function_id="engine::workers::register", data=WORKERS_REGISTER_DATA)
    data = _wire(message)["data"]
    assert data == WORKERS_REGISTER_DATA
    assert data["isolation"] is None
    assert data["telemetry"]["amplitude_api_key"] is None


def test_encode_returns_compact_json_bytes() -> None:
    encoded = encode(RegisterService(id="math", name="Math", description="Add,sub:mul"))
    assert isinstance(encoded, bytes)
    assert b" " not in encoded
    assert b"\n" not in encoded
    assert json.loads(encoded) == {
        "type": "registerservice",
        "id": "math",
        "name": "Math",
        "description": "Add,sub:mul",
    }


def test_encode_writes_non_ascii_as_raw_utf8() -> None:
    text = "héllo ✓ 日本 😀"
    encoded = encode(InvokeFunction(function_id="i18n::echo", data={"text": text}))
    assert text.encode("utf-8") in encoded
    assert b"\\u" not in encoded
    assert _wire(InvokeFunction(function_id="i18n::echo", data={"text": text}))["data"] == {
        "text": text
    }


def test_encode_escapes_control_characters() -> None:
    encoded = encode(InvokeFunction(function_id="f", data="a\x01b\nc"))
    assert b"\x01" not in encoded
    assert b"\n" not in encoded
    assert json.loads(encoded)["data"] == "a\x01b\nc"


# --- NaN and infinities: not JSON (section 1.3) -----------------------------------------------
# orjson would write them as null, so that the receiver would get a value nobody sent. Every
# encoder refuses them instead, with the TypeError it raises for other values JSON lacks.

NON_FINITE = pytest.mark.parametrize(
    ("number", "name"),
    [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")],
    ids=["nan", "infinity", "minus-infinity"],
)

# Each encoder, fed one value, and the key its frame holds that value under ("" for the frame).
VALUE_ENCODERS = {
    "encode_call-data": (lambda value: encode_call("f", value, INVOCATION_ID), "data"),
    "encode_call-metadata": (lambda value: encode_call("f", {}, None, metadata=value), "metadata"),
    "encode_result": (lambda value: encode_result(INVOCATION_ID, "f", value), "result"),
    "encode-invokefunction": (lambda value: encode(InvokeFunction("f", data=value)), "data"),
    "encode-invocationresult": (
        lambda value: encode(InvocationResult("i", "f", result=value)),
        "result",
    ),
    "encode-registertrigger": (
        lambda value: encode(RegisterTrigger("t", "cron", "f", config=value)),
        "config",
    ),
    "encode-registerfunction": (
        lambda value: encode(RegisterFunction("f", response_format=value)),
        "response_format",
    ),
    "encode-unknown": (
        lambda value: encode(UnknownMessage(type="observe", fields={"value": value})),
        "value",
    ),
    "encode_reference-invokefunction": (
        lambda value: encode_reference(InvokeFunction("f", data={}, metadata=value)),
        "metadata",
    ),
    "encode_reference-registertriggertype": (
        lambda value: encode_reference(RegisterTriggerType("t", "d", trigger_request_format=value)),
        "trigger_request_format",
    ),
    "encode_json": (encode_json, ""),
}
EACH_ENCODER = pytest.mark.parametrize(
    ("encoder", "key"), list(VALUE_ENCODERS.values()), ids=list(VALUE_ENCODERS)
)


@EACH_ENCODER
@NON_FINITE
def test_a_non_finite_number_is_refused(
    encoder: Callable[[Any], bytes], key: str, number: float, name: str
) -> None:
    with pytest.raises(TypeError) as caught:
        encoder(number)
    where = f" (at {key})" if key else ""
    assert str(caught.value) == f"{name} is not a JSON value{where}"


@EACH_ENCODER
@NON_FINITE
def test_a_non_finite_number_deep_inside_is_refused_naming_where_it_is(
    encoder: Callable[[Any], bytes], key: str, number: float, name: str
) -> None:
    value = {"text": "null", "items": [None, {"null": None}, number, 1.5], "after": math.nan}
    with pytest.raises(TypeError) as caught:
        encoder(value)
    path = f"{key}.items[2]" if key else "items[2]"
    assert str(caught.value) == f"{name} is not a JSON value (at {path})"


@EACH_ENCODER
def test_nulls_and_the_word_null_are_written_unchanged(
    encoder: Callable[[Any], bytes], key: str
) -> None:
    value = {
        "null": None,
        "text": "null",
        "items": [None, "nullable", 1.5, -0.0, 0, 1e308, [], {}],
        "nested": {"deeper": [None, {"null": "null"}]},
    }
    written = json.loads(encoder(value))
    assert (written[key] if key else written) == value


@pytest.mark.parametrize("number", [0.0, -0.0, 5e-324, 1.7976931348623157e308])
def test_finite_extremes_are_written(number: float) -> None:
    assert json.loads(encode_result("i", "f", [number, None])) == {
        "type": "invocationresult",
        "invocation_id": "i",
        "function_id": "f",
        "result": [number, None],
    }


@dataclasses.dataclass
class _Point:
    x: float
    # orjson leaves out fields named with an underscore, so this one may hold anything.
    _scale: float = math.nan


class _Limit(enum.Enum):
    CEILING = math.inf


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((1, math.nan), "NaN is not a JSON value (at [1])"),
        ({"at": _Point(x=-math.inf)}, "-Infinity is not a JSON value (at at.x)"),
        ([_Limit.CEILING], "Infinity is not a JSON value (at [0])"),
    ],
    ids=["tuple", "dataclass", "enum"],
)
def test_non_finite_numbers_in_other_values_orjson_writes_are_refused(
    value: Any, message: str
) -> None:
    with pytest.raises(TypeError) as caught:
        encode_json(value)
    assert str(caught.value) == message


def test_a_field_orjson_leaves_out_is_not_looked_at() -> None:
    assert json.loads(encode_json({"point": _Point(x=1.0), "none": None})) == {
        "point": {"x": 1.0},
        "none": None,
    }


@pytest.mark.parametrize("value", [object(), {1, 2}, {"a": [b"bytes"]}])
def test_other_values_json_lacks_raise_the_same_exception(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_json(value)
    with pytest.raises(TypeError):
        encode_result("i", "f", value)


# --- strictness: required fields and field types --------------------------------------------


def test_invokefunction_without_data_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="data") as caught:
        decode('{"type":"invokefunction","invocation_id":"i","function_id":"a::b"}')
    assert "invokefunction" in str(caught.value)


def test_registertrigger_without_config_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="config") as caught:
        decode('{"type":"registertrigger","id":"t","trigger_type":"http","function_id":"a::b"}')
    assert "registertrigger" in str(caught.value)


def test_registertriggertype_without_description_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="description"):
        decode('{"type":"registertriggertype","id":"webhook"}')


# (frame, the field path the error must name)
MALFORMED = [
    pytest.param(
        '{"type":"invokefunction","function_id":5,"data":null}',
        "function_id",
        id="function_id-is-a-number",
    ),
    pytest.param(
        '{"type":"invokefunction","data":null}', "function_id", id="function_id-is-missing"
    ),
    pytest.param(
        '{"type":"invokefunction","function_id":"f","data":null,"invocation_id":5}',
        "invocation_id",
        id="invocation_id-is-a-number",
    ),
    pytest.param(
        '{"type":"invokefunction","function_id":"f","data":null,"action":{"type":"enqueue"}}',
        "action",
        id="enqueue-action-without-queue",
    ),
    pytest.param(
        '{"type":"invokefunction","function_id":"f","data":null,"action":{"type":"later"}}',
        "action",
        id="unknown-action",
    ),
    pytest.param(
        '{"type":"invokefunction","function_id":"f","data":null,"action":"void"}',
        "action",
        id="action-is-a-string",
    ),
    pytest.param(
        '{"type":"invocationresult","invocation_id":"i","function_id":"f",'
        '"error":{"code":5,"message":"m"}}',
        "error.code",
        id="error-code-is-a-number",
    ),
    pytest.param(
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","error":{"code":"c"}}',
        "error.message",
        id="error-message-is-missing",
    ),
    pytest.param(
        '{"type":"invocationresult","invocation_id":"i","function_id":"f",'
        '"error":{"code":"c","message":"m","stacktrace":["line"]}}',
        "error.stacktrace",
        id="error-stacktrace-is-a-list",
    ),
    pytest.param(
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","error":"boom"}',
        "error",
        id="error-is-a-string",
    ),
    pytest.param(
        '{"type":"invocationresult","function_id":"f","result":1}',
        "invocation_id",
        id="invocationresult-without-invocation_id",
    ),
    pytest.param(
        '{"type":"triggerregistrationresult","id":"t","trigger_type":"x","function_id":"f",'
        '"error":{"message":"m"}}',
        "error.code",
        id="trigger-result-error-without-code",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","method":"post"}}',
        "invocation.method",
        id="lowercase-http-method",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","method":"TRACE"}}',
        "invocation.method",
        id="unknown-http-method",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","headers":null}}',
        "invocation.headers",
        id="null-http-headers",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","headers":{"a":1}}}',
        "invocation.headers",
        id="non-string-http-header-value",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"method":"GET"}}',
        "invocation.url",
        id="http-invocation-without-url",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","timeout_ms":true}}',
        "invocation.timeout_ms",
        id="boolean-timeout",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","timeout_ms":"5"}}',
        "invocation.timeout_ms",
        id="string-timeout",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","auth":{"type":"basic"}}}',
        "invocation.auth",
        id="unknown-auth-kind",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u",'
        '"auth":{"type":"api_key","header":"X-Key"}}}',
        "invocation.auth.value_key",
        id="api-key-auth-without-value_key",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u","auth":{"type":"bearer"}}}',
        "invocation.auth.token_key",
        id="bearer-auth-without-token_key",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","invocation":{"url":"u",'
        '"auth":{"type":"hmac","secret_key":7}}}',
        "invocation.auth.secret_key",
        id="hmac-auth-with-numeric-secret_key",
    ),
    pytest.param(
        '{"type":"registerfunction","id":"x","description":false}',
        "description",
        id="description-is-a-boolean",
    ),
    pytest.param('{"type":"registerservice","id":"s","name":null}', "name", id="null-name"),
    pytest.param('{"type":"unregisterfunction","id":true}', "id", id="id-is-a-boolean"),
    pytest.param(
        '{"type":"registertrigger","id":"t","trigger_type":"x","config":{}}',
        "function_id",
        id="registertrigger-without-function_id",
    ),
    pytest.param(
        '{"type":"reattach","previous_worker_id":null}',
        "previous_worker_id",
        id="null-previous_worker_id",
    ),
    pytest.param('{"type":"workerregistered"}', "worker_id", id="workerregistered-without-id"),
    pytest.param(
        '{"type":"workerregistered","worker_id":"w","features":[1]}',
        "features",
        id="feature-is-a-number",
    ),
    pytest.param(
        '{"type":"workerregistered","worker_id":"w","features":"observe.v1"}',
        "features",
        id="features-is-a-string",
    ),
    pytest.param(
        '{"type":"workerregistered","worker_id":"w","features":{"observe.v1":true}}',
        "features",
        id="features-is-an-object",
    ),
    pytest.param(
        '{"type":"registrationrejected","code":"WORKER_NAMESPACE_CONFLICT","namespace":"n"}',
        "owner_worker_id",
        id="registrationrejected-without-owner",
    ),
]


@DECODERS
@pytest.mark.parametrize(("frame", "path"), MALFORMED)
def test_malformed_message_is_rejected_naming_the_field(
    frame: str, path: str, decoder: Decoder
) -> None:
    with pytest.raises(ProtocolError) as caught:
        decoder(frame)
    message = str(caught.value)
    assert path in message
    assert json.loads(frame)["type"] in message


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"invokefunction","function_id":"f","data":NaN}',
        '{"type":"invokefunction","function_id":"f","data":Infinity}',
        '{"type":"invokefunction","function_id":"f","data":-Infinity}',
    ],
    ids=["nan", "infinity", "minus-infinity"],
)
def test_nan_and_infinity_are_rejected(frame: str) -> None:
    with pytest.raises(ProtocolError, match="invalid JSON"):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    ["", "   ", "nope", '{"type":"ping"', "{'type': 'ping'}", '{"type":"ping"} {}'],
    ids=["empty", "blank", "bare-word", "truncated", "single-quotes", "two-values"],
)
def test_invalid_json_is_rejected(frame: str) -> None:
    with pytest.raises(ProtocolError, match="invalid JSON"):
        decode(frame)


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        decode(b'{"type":"ping","x":"\xff"}')


def test_lone_surrogate_escape_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        decode('{"type":"invokefunction","function_id":"f","data":"\\ud800"}')


@pytest.mark.parametrize("frame", ["[]", '["ping"]', '"ping"', "1", "null", "true"])
def test_non_object_json_is_rejected(frame: str) -> None:
    with pytest.raises(ProtocolError, match="not an object"):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    ["{}", '{"type":null}', '{"type":5}', '{"type":["ping"]}', '{"kind":"ping"}'],
    ids=["empty-object", "null-type", "number-type", "list-type", "no-type-key"],
)
def test_missing_or_non_string_type_is_rejected(frame: str) -> None:
    with pytest.raises(ProtocolError, match="'type'"):
        decode(frame)


# --- the error itself -----------------------------------------------------------------------


def test_protocol_error_is_an_iii_error() -> None:
    assert issubclass(ProtocolError, IIIError)


def test_protocol_error_keeps_a_short_frame_whole() -> None:
    frame = '{"type":"invokefunction","function_id":"f"}'
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.frame == frame


def test_protocol_error_keeps_at_most_200_characters_of_a_text_frame() -> None:
    frame = '{"type":"invokefunction","function_id":"' + "x" * 1000 + '"}'
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.frame == frame[:200]


def test_protocol_error_keeps_at_most_200_characters_of_a_binary_frame() -> None:
    frame = b'{"type":"unregisterfunction","id":' + b"9" * 1000 + b"}"
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.frame == frame[:200].decode()


def test_protocol_error_frame_is_text_even_when_the_frame_is_not_utf8() -> None:
    frame = b"\xff" * 300
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    kept = caught.value.frame
    assert isinstance(kept, str)
    assert 0 < len(kept) <= 200


# --- secrets ---------------------------------------------------------------------------------


def test_reattach_token_is_not_in_the_repr_of_reattach() -> None:
    message = decode('{"type":"reattach","previous_worker_id":"w-old","reattach_token":"s3cr3t"}')
    assert isinstance(message, Reattach)
    assert message.reattach_token == "s3cr3t"
    assert "s3cr3t" not in repr(message)
    assert "s3cr3t" not in str(message)
    assert "w-old" in repr(message)


def test_reattach_token_is_not_in_the_repr_of_workerregistered() -> None:
    message = decode('{"type":"workerregistered","worker_id":"w-new","reattach_token":"s3cr3t"}')
    assert isinstance(message, WorkerRegistered)
    assert message.reattach_token == "s3cr3t"
    assert "s3cr3t" not in repr(message)
    assert "s3cr3t" not in str(message)
    assert "w-new" in repr(message)


# -- the reader's shortcut for successful results ------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","result":{"a":1}}',
        '{"type":"invocationresult","invocation_id":"i","function_id":"f"}',
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","result":null}',
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","error":null}',
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","traceparent":"t",'
        '"baggage":"b","extra":[1]}',
    ],
    ids=["object", "no-result", "null-result", "null-error", "trace-and-unknown-key"],
)
def test_successful_result_id_accepts_what_the_converter_reads_as_a_success(frame: str) -> None:
    message = decode_reference(frame)
    assert isinstance(message, InvocationResult)
    assert message.error is None
    assert successful_result_id(json.loads(frame)) == message.invocation_id


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"invocationresult","invocation_id":"i","function_id":"f",'
        '"error":{"code":"c","message":"m"}}',
        '{"type":"invocationresult","invocation_id":7,"function_id":"f"}',
        '{"type":"invocationresult","invocation_id":"i"}',
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","traceparent":1}',
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","baggage":{}}',
        '{"type":"invocationresult","invocation_id":"i","function_id":"f","error":"bad"}',
    ],
    ids=[
        "error",
        "numeric-id",
        "no-function-id",
        "numeric-traceparent",
        "object-baggage",
        "bad-error",
    ],
)
def test_successful_result_id_leaves_failures_and_bad_frames_to_decode(frame: str) -> None:
    assert successful_result_id(json.loads(frame)) is None
    message = _decoded_or_none(frame)
    assert not isinstance(message, InvocationResult) or message.error is not None


def _decoded_or_none(frame: str) -> Message | None:
    try:
        return decode_reference(frame)
    except ProtocolError:
        return None


@pytest.mark.parametrize(("frame", "expected"), EXAMPLES)
def test_decode_parsed_gives_what_decode_gives(frame: str, expected: Message) -> None:
    assert decode_parsed(json.loads(frame), frame) == expected


@pytest.mark.parametrize(("frame", "path"), MALFORMED)
def test_decode_parsed_rejects_what_decode_rejects(frame: str, path: str) -> None:
    with pytest.raises(ProtocolError, match=path):
        decode_parsed(json.loads(frame), frame)
