"""``iii-http-functions`` in the dev engine's sans-io core (spec/protocol.md section 9).

The plugin accepts or drops registrations, turns calls into :class:`HttpRequest` outputs and
answers callers from the outcomes the shell reports; here the tests play the shell.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging

import pytest

from iii_trio._protocol._messages import (
    ApiKeyAuth,
    BearerAuth,
    ErrorBody,
    HmacAuth,
    HttpInvocationRef,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    RegistrationRejected,
    UnregisterFunction,
)
from iii_trio.testing._engine import HttpRequest, Output
from iii_trio.testing._engine._http_functions import (
    ENGINE_SECURITY,
    HTTP_REQUEST_FAILED,
    HTTP_RESPONSE_FAILED,
    PERMISSIVE_SECURITY,
    URL_VALIDATION_FAILED,
    HttpFailure,
    HttpFunctions,
    HttpOutcome,
    HttpResponse,
    HttpSecurity,
    answer_for,
    url_problem,
)

from .engine_driver import CALL_ID, Engine, Worker, function_ids, messages_to

URL = "http://127.0.0.1:8080/hook"
PUBLIC_API = HttpSecurity(("api.example.com",), block_private_ips=False)
SECRETS = {"HOOK_TOKEN": "planted-token", "HOOK_SECRET": "planted-secret", "HOOK_KEY": "k3y"}


def _engine(security: HttpSecurity = PERMISSIVE_SECURITY) -> tuple[Engine, HttpFunctions]:
    plugin = HttpFunctions(security, environ=SECRETS)
    return Engine(plugins=[plugin]), plugin


def _register(worker: Worker, function_id: str = "ext::hook", **invocation: object) -> None:
    fields: dict[str, object] = {"url": URL, **invocation}
    worker.send(RegisterFunction(function_id, invocation=HttpInvocationRef(**fields)))  # type: ignore[arg-type]


def _requests(outputs: list[Output]) -> list[HttpRequest]:
    return [output for output in outputs if isinstance(output, HttpRequest)]


def _only_request(outputs: list[Output]) -> HttpRequest:
    (request,) = _requests(outputs)
    return request


def _answer(plugin: HttpFunctions, request: HttpRequest, outcome: HttpOutcome) -> InvocationResult:
    (output,) = plugin.finish(request.request_id, outcome)
    message = getattr(output, "message", None)
    assert isinstance(message, InvocationResult), output
    return message


# --- registration ---------------------------------------------------------------------------


def test_without_the_plugin_the_registration_is_dropped_as_by_an_engine_without_the_worker() -> (
    None
):
    engine = Engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(owner)
    assert not any(
        isinstance(m, RegistrationRejected) for m in messages_to(owner.outputs, owner.id)
    )
    assert "ext::hook" not in function_ids(caller)
    assert caller.error("ext::hook", {}).code == "function_not_found"


def test_an_http_function_is_listed_and_its_calls_become_requests_not_invocations() -> None:
    engine, _ = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    owner.outputs.clear()
    _register(owner)
    assert "ext::hook" in function_ids(caller)
    outputs = caller.send(_call("ext::hook", {"b": 2, "a": 1}))
    request = _only_request(outputs)
    assert messages_to(outputs, owner.id) == []  # the worker that registered it runs nothing
    assert (request.method, request.url, request.timeout) == ("POST", URL, 30.0)
    # Compact JSON, keys sorted as the engine's maps are, with the caller's id added.
    assert (
        request.body
        == json.dumps(
            {"_caller_worker_id": caller.id, "a": 1, "b": 2}, separators=(",", ":")
        ).encode()
    )
    assert request.request_id != CALL_ID  # a fresh id of the engine's, not the caller's
    assert request.headers_at(1_700_000_000) == [
        ("content-type", "application/json"),
        ("x-iii-function-path", "ext::hook"),
        ("x-iii-invocation-id", request.request_id),
        ("x-iii-timestamp", "1700000000"),
    ]
    assert request.check_host is None


def test_the_fast_path_leaves_http_functions_to_the_general_path() -> None:
    engine, _ = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(owner)
    routed = engine.state.route_invocation(
        caller.id, "ext::hook", {}, CALL_ID, None, None, None, None
    )
    assert routed is None
    assert engine.state.statistics().pending_invocations == 0


def test_registered_headers_and_auth_follow_the_timestamp_with_secrets_from_the_environment() -> (
    None
):
    engine, _ = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(
        owner,
        "ext::bearer",
        method="PUT",
        timeout_ms=1500,
        headers={"X-Custom": "v"},
        auth=BearerAuth("HOOK_TOKEN"),
    )
    _register(owner, "ext::key", auth=ApiKeyAuth("X-Api-Key", "HOOK_KEY"))
    bearer = _only_request(caller.send(_call("ext::bearer")))
    assert (bearer.method, bearer.timeout) == ("PUT", 1.5)
    assert bearer.headers_at(5)[3:] == [
        ("x-iii-timestamp", "5"),
        ("x-custom", "v"),
        ("authorization", "Bearer planted-token"),
    ]
    key = _only_request(caller.send(_call("ext::key")))
    assert key.headers_at(5)[-1] == ("x-api-key", "k3y")
    # Credentials never show in a repr (the shell may log requests).
    assert "planted-token" not in repr(bearer)


def test_hmac_signs_the_timestamp_and_the_exact_body() -> None:
    engine, _ = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(owner, auth=HmacAuth("HOOK_SECRET"))
    request = _only_request(caller.send(_call("ext::hook", ["x", 1])))
    assert request.body == b'["x",1]'
    headers = request.headers_at(1_700_000_123)
    signed = b"1700000123:" + base64.b64encode(request.body)
    expected = hmac.new(b"planted-secret", signed, hashlib.sha256).hexdigest()
    assert headers[-1] == ("x-iii-signature", f"sha256={expected}")
    assert headers[3] == ("x-iii-timestamp", "1700000123")
    assert "planted-secret" not in repr(request)


@pytest.mark.parametrize(
    ("auth", "variable"),
    [
        (BearerAuth("UNSET_TOKEN"), "UNSET_TOKEN"),
        (HmacAuth("UNSET_SECRET"), "UNSET_SECRET"),
        (ApiKeyAuth("X-Api-Key", "UNSET_KEY"), "UNSET_KEY"),
    ],
)
def test_a_registration_whose_credential_is_not_in_the_environment_is_dropped_and_logged(
    auth: BearerAuth | HmacAuth | ApiKeyAuth, variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine, _ = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    with caplog.at_level(logging.WARNING, logger="iii_trio.dev_engine"):
        _register(owner, auth=auth)
    assert caller.error("ext::hook", {}).code == "function_not_found"
    assert not any(
        isinstance(m, RegistrationRejected) for m in messages_to(owner.outputs, owner.id)
    )
    (record,) = caplog.records
    assert "ext::hook" in record.getMessage()
    assert variable in record.getMessage()


@pytest.mark.parametrize(
    ("url", "security", "problem"),
    [
        ("http://127.0.0.1:8080/x", PERMISSIVE_SECURITY, None),
        ("http://localhost/x", PERMISSIVE_SECURITY, None),
        ("not a url", PERMISSIVE_SECURITY, "Invalid URL"),
        ("/relative/path", PERMISSIVE_SECURITY, "Invalid URL"),
        ("http://host:99999/", PERMISSIVE_SECURITY, "Invalid URL"),
        ("http://example.com/x", ENGINE_SECURITY, "HTTPS is required"),
        ("mailto:someone", HttpSecurity(require_https=False), "Invalid URL"),
        ("https://example.com/x", HttpSecurity(("api.example.com",)), "URL not in allowlist"),
        ("https://api.example.com/x", PUBLIC_API, None),
        ("https://eu.api.example.com/x", HttpSecurity(("*.example.com",), False), None),
        ("https://API.Example.com/x", PUBLIC_API, None),
        ("https://10.1.2.3/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://127.0.0.1/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://169.254.169.254/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://192.0.2.7/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://0.0.0.0/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://[::1]/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://[fd00::1]/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://[fe80::1]/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://[::ffff:192.168.1.1]/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://localhost/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://app.localhost/x", ENGINE_SECURITY, "Private IP blocked"),
        ("https://8.8.8.8/x", ENGINE_SECURITY, None),
        ("https://[2001:4860::8888]/x", ENGINE_SECURITY, None),
        # The host of an IPv6 URL is matched in brackets (escaped in a glob).
        ("https://[::1]/x", HttpSecurity(("[[]::1[]]",), block_private_ips=False), None),
        (
            "https://[::1]/x",
            HttpSecurity(("::1",), block_private_ips=False),
            "URL not in allowlist",
        ),
    ],
)
def test_urls_are_checked_in_the_engines_order_with_its_messages(
    url: str, security: HttpSecurity, problem: str | None
) -> None:
    assert url_problem(url, security) == (problem, None)


def test_a_host_name_is_left_to_the_shell_to_resolve_when_private_addresses_are_blocked() -> None:
    assert url_problem("https://example.com/x", ENGINE_SECURITY) == (None, "example.com")
    assert url_problem("https://example.com/x", HttpSecurity(block_private_ips=False)) == (
        None,
        None,
    )
    engine, _ = _engine(ENGINE_SECURITY)
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(owner, url="https://Example.com/x")
    assert _only_request(caller.send(_call("ext::hook"))).check_host == "example.com"


@pytest.mark.parametrize(
    "invocation",
    [
        {"url": "http://127.0.0.1/x"},  # require_https
        {"url": "https://127.0.0.1/x"},  # block_private_ips
        {"url": "https://8.8.8.8/x", "timeout_ms": -1},  # not an unsigned timeout
    ],
)
def test_a_refused_endpoint_is_dropped_silently_and_logged(
    invocation: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    engine, _ = _engine(ENGINE_SECURITY)
    owner, caller = engine.worker("owner"), engine.worker("caller")
    owner.outputs.clear()
    with caplog.at_level(logging.WARNING, logger="iii_trio.dev_engine"):
        _register(owner, "ext::hook", **invocation)
    assert messages_to(owner.outputs, owner.id) == []
    assert caller.error("ext::hook", {}).code == "function_not_found"
    assert "ext::hook" in caplog.text


def test_the_lease_is_checked_before_the_endpoint() -> None:
    engine, _ = _engine(ENGINE_SECURITY)
    holder, latecomer = engine.worker("holder"), engine.worker("latecomer")
    holder.send(RegisterFunction("ext::hook"))
    _register(latecomer, url="http://refused.example/x")
    (rejection,) = [
        m
        for m in messages_to(latecomer.outputs, latecomer.id)
        if isinstance(m, RegistrationRejected)
    ]
    assert rejection.code == "FUNCTION_NAMESPACE_CONFLICT"
    assert rejection.owner_worker_id == holder.id


def test_unregistering_or_leaving_removes_the_function_but_not_a_request_in_flight() -> None:
    engine, plugin = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(owner, "ext::a")
    _register(owner, "ext::b")
    owner.send(UnregisterFunction("ext::a"))
    assert caller.error("ext::a", {}).code == "function_not_found"
    request = _only_request(caller.send(_call("ext::b")))
    owner.disconnect()
    assert caller.error("ext::b", {}).code == "function_not_found"
    # The request went out before: its caller still gets the answer.
    assert _answer(plugin, request, HttpResponse(200, b"7")).result == 7


# --- answers --------------------------------------------------------------------------------


def test_the_caller_gets_the_answer_with_its_own_ids_and_trace_fields() -> None:
    engine, plugin = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(owner)
    call = _call(
        "ext::hook", {}, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    )
    request = _only_request(caller.send(call))
    answer = _answer(plugin, request, HttpResponse(200, b'{"ok":true}'))
    assert answer.invocation_id == CALL_ID
    assert answer.function_id == "ext::hook"
    assert answer.result == {"ok": True}
    assert answer.traceparent == call.traceparent
    assert plugin.requests_in_flight == 0
    assert plugin.finish(request.request_id, HttpResponse(200, b"")) == []  # once only


def test_nobody_is_answered_for_a_void_call_or_a_caller_that_left() -> None:
    engine, plugin = _engine()
    owner, caller = engine.worker("owner"), engine.worker("caller")
    _register(owner)
    void = _only_request(caller.send(_call("ext::hook", invocation_id=None)))
    assert plugin.finish(void.request_id, HttpResponse(200, b"1")) == []
    request = _only_request(caller.send(_call("ext::hook")))
    caller.disconnect()
    assert plugin.finish(request.request_id, HttpResponse(200, b"1")) == []


def test_a_trigger_of_the_engine_fires_an_http_function() -> None:
    engine, _ = _engine()
    owner = engine.worker("owner")
    _register(owner)
    owner.send(
        RegisterTrigger(
            id="0d7c1c52-4a1f-4d7e-b1a3-2f0f3f9b7d11",
            trigger_type="engine::workers-available",
            function_id="ext::hook",
            config={},
        )
    )
    connection_id, outputs = engine.connect()
    request = _only_request(outputs)
    assert json.loads(request.body)["event"] == "worker_connected"
    assert connection_id in request.body.decode()


@pytest.mark.parametrize(
    ("outcome", "result", "error"),
    [
        (HttpResponse(200, b'{"a":[1,2]}'), {"a": [1, 2]}, None),
        (HttpResponse(201, b"3"), 3, None),
        (HttpResponse(204, b""), None, None),
        (HttpResponse(200, b""), None, None),
        (HttpResponse(302, b'{"moved":1}'), {"moved": 1}, None),
        (HttpResponse(302, b"<html>"), None, None),
        (
            HttpResponse(500, b'{"error":{"code":"boom","message":"kaput"}}'),
            None,
            ErrorBody("boom", "kaput"),
        ),
        (HttpResponse(502, b'{"error":{"message":"m"}}'), None, ErrorBody("http_error", "m")),
        (
            HttpResponse(503, b'{"error":"down"}'),
            None,
            ErrorBody("http_error", "HTTP request failed"),
        ),
        (HttpResponse(404, b"no such page"), None, ErrorBody("http_error", "HTTP 404 Not Found")),
        (
            HttpResponse(500, b'["error"]'),
            None,
            ErrorBody("http_error", "HTTP 500 Internal Server Error"),
        ),
        (HttpResponse(599, b""), None, ErrorBody("http_error", "HTTP 599 <unknown status code>")),
        (
            HttpFailure(HTTP_REQUEST_FAILED, "error sending request: refused"),
            None,
            ErrorBody(HTTP_REQUEST_FAILED, "error sending request: refused"),
        ),
        (
            HttpFailure(HTTP_RESPONSE_FAILED, "cut"),
            None,
            ErrorBody(HTTP_RESPONSE_FAILED, "cut"),
        ),
        (
            HttpFailure(URL_VALIDATION_FAILED, "Private IP blocked"),
            None,
            ErrorBody(URL_VALIDATION_FAILED, "Private IP blocked"),
        ),
    ],
)
def test_outcomes_map_to_answers_as_in_section_9_3(
    outcome: HttpOutcome, result: object, error: ErrorBody | None
) -> None:
    assert answer_for(outcome) == (result, error)


@pytest.mark.parametrize("body", [b"not json", b'{"a":NaN}', b"\xff"])
def test_a_2xx_body_that_is_not_json_is_an_invalid_response(body: bytes) -> None:
    result, error = answer_for(HttpResponse(200, body))
    assert result is None
    assert error is not None
    assert error.code == "invalid_response"
    assert error.message


def _call(
    function_id: str,
    data: object = None,
    *,
    invocation_id: str | None = CALL_ID,
    traceparent: str | None = None,
) -> InvokeFunction:
    return InvokeFunction(
        function_id, data=data, invocation_id=invocation_id, traceparent=traceparent
    )
