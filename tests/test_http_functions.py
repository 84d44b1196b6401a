"""HTTP-invoked functions: ``register_function(id, HttpInvocation(...))`` end to end.

A worker registers endpoints of a small HTTP server the test runs on loopback
(:mod:`http_endpoint`); the dev engine calls them with httpx. The value types' checks need no
engine at all.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from http_endpoint import (
    HttpEndpoint,
    Received,
    Reply,
    Route,
    never_answer,
    reply,
    serve_http_endpoint,
)
from scripted_engine import answer_register_then, serve_scripted_engine
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

import iii_trio
from iii_trio import HttpAuth, HttpInvocation
from iii_trio._protocol._codec import encode
from iii_trio._protocol._messages import InvocationResult, InvokeFunction
from iii_trio._transport import WebSocket
from iii_trio.testing import DevEngine, open_dev_engine
from iii_trio.testing._http_client import _check_host, _HostRefused

#: Upper bound for any single wait; loopback answers take milliseconds.
PATIENCE = 10.0


async def _echo(request: Received) -> Reply:
    await trio.lowlevel.checkpoint()
    return Reply(200, json.dumps({"method": request.method, "got": request.body.decode()}).encode())


ROUTES: dict[str, Route] = {
    "/echo": _echo,
    "/empty": reply(204),
    "/plain": reply(200, b"hello", "text/plain"),
    "/fail": reply(500, b'{"error":{"code":"ledger_locked","message":"try later"}}'),
    "/crash": reply(500, b"Internal trouble", "text/plain"),
    "/slow": never_answer,
}


@pytest.fixture
async def endpoint(nursery: trio.Nursery) -> HttpEndpoint:
    served: HttpEndpoint = await nursery.start(serve_http_endpoint, ROUTES)
    return served


@pytest.fixture
async def engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


@pytest.fixture
async def worker(engine: DevEngine) -> AsyncIterator[iii_trio.Worker]:
    async with iii_trio.open_worker(engine.url, name="http-functions") as connected:
        yield connected


async def _trigger(worker: iii_trio.Worker, function_id: str, payload: Any = None) -> Any:
    with trio.fail_after(PATIENCE):
        return await worker.trigger(function_id, payload)


async def _failure(worker: iii_trio.Worker, function_id: str) -> iii_trio.InvocationError:
    with pytest.raises(iii_trio.InvocationError) as raised:
        await _trigger(worker, function_id, {"n": 1})
    return raised.value


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


# --- the value types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"url": 8080}, TypeError, "url"),
        ({"url": "ftp://files.example.com/x"}, ValueError, "url"),
        ({"url": "127.0.0.1:8080/x"}, ValueError, "url"),
        ({"url": "/relative"}, ValueError, "url"),
        ({"url": "http://host:99999/"}, ValueError, "url"),
        ({"url": "http://exa mple.com/"}, ValueError, "url"),
        ({"timeout_ms": 0}, ValueError, "timeout_ms"),
        ({"timeout_ms": -5}, ValueError, "timeout_ms"),
        ({"timeout_ms": 1.5}, TypeError, "timeout_ms"),
        ({"timeout_ms": True}, TypeError, "timeout_ms"),
        ({"timeout_ms": None}, TypeError, "timeout_ms"),
        ({"method": "HEAD"}, ValueError, "method"),
        ({"method": 1}, TypeError, "method"),
        ({"headers": [("a", "b")]}, TypeError, "headers"),
        ({"headers": {"a b": "c"}}, ValueError, "headers"),
        ({"headers": {"a": 1}}, TypeError, "headers"),
        ({"headers": {"a": "line\r\nInjected: yes"}}, ValueError, "headers"),
        ({"auth": "MY_TOKEN"}, TypeError, "auth"),
    ],
)
def test_a_bad_http_invocation_is_refused_naming_the_argument(
    arguments: dict[str, Any], error: type[Exception], named: str
) -> None:
    arguments = {"url": "https://example.com/fn", **arguments}
    with pytest.raises(error, match=named):
        HttpInvocation(**arguments)


@pytest.mark.parametrize(
    ("build", "error", "named"),
    [
        (lambda: HttpAuth.bearer(7), TypeError, "token_key"),  # type: ignore[arg-type]
        (lambda: HttpAuth.bearer(" "), ValueError, "token_key"),
        (lambda: HttpAuth.hmac("A=B"), ValueError, "secret_key"),
        (lambda: HttpAuth.api_key("X Key", "KEY"), ValueError, "header"),
        (lambda: HttpAuth.api_key("X-Key", None), TypeError, "value_key"),  # type: ignore[arg-type]
        (lambda: HttpAuth("basic", "USER"), ValueError, "bearer"),  # type: ignore[arg-type]
        (lambda: HttpAuth("bearer", "TOKEN", "X-Key"), ValueError, "api_key"),
    ],
)
def test_a_bad_auth_is_refused_naming_the_argument(
    build: Any, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        build()


def test_the_values_are_frozen_and_compare_by_value() -> None:
    built = HttpInvocation(
        "http://127.0.0.1:8080/fn", method="put", headers={"X-A": "1"}, auth=HttpAuth.hmac("S")
    )
    assert built.method == "PUT"
    assert built.timeout_ms == 30_000
    assert built == HttpInvocation(
        "http://127.0.0.1:8080/fn", method="PUT", headers={"X-A": "1"}, auth=HttpAuth.hmac("S")
    )
    assert hash(built) == hash(attrs.evolve(built))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.url = "http://elsewhere/"  # type: ignore[misc]
    with pytest.raises(TypeError):
        built.headers["X-B"] = "2"  # type: ignore[index]
    assert HttpInvocation("https://example.com/").headers == {}
    assert HttpAuth.api_key("X-Key", "KEY") == HttpAuth("api_key", "KEY", "X-Key")


async def test_a_handler_that_is_neither_callable_nor_an_invocation_is_a_type_error(
    worker: iii_trio.Worker,
) -> None:
    with pytest.raises(TypeError):
        worker.register_function("ext::x", {"url": "https://example.com/"})  # type: ignore[arg-type]


# --- the engine calls the endpoint --------------------------------------------------------------


async def test_the_engine_posts_the_payload_and_the_json_answer_is_the_result(
    worker: iii_trio.Worker, endpoint: HttpEndpoint
) -> None:
    worker.register_function(
        "ext::echo",
        HttpInvocation(endpoint.url("/echo"), headers={"X-Tenant": "acme"}),
        description="Echo over HTTP",
    )
    await worker.wait_registered()
    before = int(time.time())
    answer = await _trigger(worker, "ext::echo", {"b": [1, 2], "a": "x"})
    assert answer["method"] == "POST"
    # Compact JSON of the data as the engine holds it: the caller's id added, keys in order.
    assert json.loads(answer["got"]) == {
        "_caller_worker_id": worker.worker_id,
        "a": "x",
        "b": [1, 2],
    }
    assert answer["got"] == json.dumps(json.loads(answer["got"]), separators=(",", ":"))
    (received,) = endpoint.received
    assert received.header("content-type") == "application/json"
    assert received.header("x-iii-function-path") == "ext::echo"
    assert uuid.UUID(received.header("x-iii-invocation-id") or "").version == 4
    assert before <= int(received.header("x-iii-timestamp") or "0") <= int(time.time())
    assert received.header("x-tenant") == "acme"
    assert received.header("authorization") is None
    (info,) = [f for f in await worker.list_functions() if f.function_id == "ext::echo"]
    assert info.description == "Echo over HTTP"


async def test_each_method_is_used_as_registered(
    worker: iii_trio.Worker, endpoint: HttpEndpoint
) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        worker.register_function(f"ext::{method}", HttpInvocation(endpoint.url("/echo"), method))
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert (await _trigger(worker, f"ext::{method}", {}))["method"] == method


async def test_credentials_come_from_the_engines_environment(
    worker: iii_trio.Worker, endpoint: HttpEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPFN_TOKEN", "bearer-value")
    monkeypatch.setenv("HTTPFN_KEY", "key-value")
    monkeypatch.setenv("HTTPFN_SECRET", "hmac-value")
    url = endpoint.url("/echo")
    worker.register_function(
        "ext::bearer", HttpInvocation(url, auth=HttpAuth.bearer("HTTPFN_TOKEN"))
    )
    worker.register_function(
        "ext::key", HttpInvocation(url, auth=HttpAuth.api_key("X-Api-Key", "HTTPFN_KEY"))
    )
    worker.register_function("ext::hmac", HttpInvocation(url, auth=HttpAuth.hmac("HTTPFN_SECRET")))
    for function_id in ("ext::bearer", "ext::key", "ext::hmac"):
        await _trigger(worker, function_id, {"n": 1})
    bearer, key, signed = endpoint.received
    assert bearer.header("authorization") == "Bearer bearer-value"
    assert key.header("x-api-key") == "key-value"
    # The endpoint's side of HMAC: recompute the signature from the timestamp and the body.
    timestamp = signed.header("x-iii-timestamp")
    message = f"{timestamp}:{base64.b64encode(signed.body).decode()}".encode()
    digest = hmac.new(b"hmac-value", message, hashlib.sha256).hexdigest()
    assert signed.header("x-iii-signature") == f"sha256={digest}"
    assert signed.header("authorization") is None


# --- error paths --------------------------------------------------------------------------------


async def test_an_endpoint_answering_500_with_an_error_object_gives_its_code_and_message(
    worker: iii_trio.Worker, endpoint: HttpEndpoint
) -> None:
    worker.register_function("ext::fail", HttpInvocation(endpoint.url("/fail")))
    error = await _failure(worker, "ext::fail")
    assert (error.code, error.message) == ("ledger_locked", "try later")
    assert error.function_id == "ext::fail"


async def test_other_error_answers_are_http_errors_with_the_status_line(
    worker: iii_trio.Worker, endpoint: HttpEndpoint
) -> None:
    worker.register_function("ext::crash", HttpInvocation(endpoint.url("/crash")))
    worker.register_function("ext::missing", HttpInvocation(endpoint.url("/no-such-path")))
    crash = await _failure(worker, "ext::crash")
    assert (crash.code, crash.message) == ("http_error", "HTTP 500 Internal Server Error")
    missing = await _failure(worker, "ext::missing")
    assert (missing.code, missing.message) == ("http_error", "HTTP 404 Not Found")


async def test_an_empty_2xx_answer_is_no_result_and_a_non_json_one_is_an_invalid_response(
    worker: iii_trio.Worker, endpoint: HttpEndpoint
) -> None:
    worker.register_function("ext::empty", HttpInvocation(endpoint.url("/empty")))
    worker.register_function("ext::plain", HttpInvocation(endpoint.url("/plain")))
    assert await _trigger(worker, "ext::empty", {}) is None
    error = await _failure(worker, "ext::plain")
    assert error.code == "invalid_response"


async def test_an_endpoint_that_does_not_answer_in_time_fails_the_call(
    worker: iii_trio.Worker, endpoint: HttpEndpoint
) -> None:
    worker.register_function("ext::slow", HttpInvocation(endpoint.url("/slow"), timeout_ms=200))
    started = trio.current_time()
    error = await _failure(worker, "ext::slow")
    assert error.code == "http_request_failed"
    assert "timed out" in error.message
    assert endpoint.url("/slow") in error.message
    assert trio.current_time() - started < PATIENCE


async def test_an_unreachable_endpoint_fails_the_call_with_the_network_error(
    worker: iii_trio.Worker,
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/fn"
    worker.register_function("ext::down", HttpInvocation(url, timeout_ms=5000))
    error = await _failure(worker, "ext::down")
    assert error.code == "http_request_failed"
    assert error.message.startswith(f"error sending request for url ({url}): ")


async def test_a_credential_missing_from_the_environment_drops_the_registration(
    worker: iii_trio.Worker,
    endpoint: HttpEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("HTTPFN_UNSET_TOKEN", raising=False)
    with caplog.at_level(logging.WARNING, logger="iii_trio.dev_engine"):
        ref = worker.register_function(
            "ext::nokey",
            HttpInvocation(endpoint.url("/echo"), auth=HttpAuth.bearer("HTTPFN_UNSET_TOKEN")),
        )
        await worker.wait_registered()  # the engine says nothing: the registration is just gone
    assert ref.rejection is None
    with pytest.raises(iii_trio.FunctionNotFound):
        await _trigger(worker, "ext::nokey")
    assert "HTTPFN_UNSET_TOKEN" in caplog.text
    assert endpoint.received == []


async def test_unregistering_or_leaving_removes_the_function(
    engine: DevEngine, worker: iii_trio.Worker, endpoint: HttpEndpoint
) -> None:
    ref = worker.register_function("ext::echo", HttpInvocation(endpoint.url("/echo")))
    await _trigger(worker, "ext::echo", {})
    ref.unregister()
    with pytest.raises(iii_trio.FunctionNotFound):
        await _trigger(worker, "ext::echo")
    async with iii_trio.open_worker(engine.url, name="short-lived") as other:
        other.register_function("ext::other", HttpInvocation(endpoint.url("/echo")))
        await other.wait_registered()
        await _trigger(worker, "ext::other", {})
    with pytest.raises(iii_trio.FunctionNotFound):
        await _trigger(worker, "ext::other")


async def test_a_call_that_reaches_the_worker_itself_is_refused_as_not_invokable(
    nursery: trio.Nursery,
) -> None:
    answers: list[InvocationResult] = []
    done = trio.Event()

    def respond(websocket: WebSocket, message: InvokeFunction) -> None:
        del websocket, message  # the worker's own calls: none in this test

    def on_message(websocket: WebSocket, message: Any) -> bool | None:
        if isinstance(message, InvocationResult):
            answers.append(message)
            done.set()
            return None
        if getattr(message, "invocation", None) is not None:
            # An engine routing the call to the registering worker, which must not run it.
            call = InvokeFunction(message.id, data={}, invocation_id=str(uuid.uuid4()))
            websocket.send_text(encode(call))
            return None
        return answer_register_then(respond)(websocket, message)

    url: str = await nursery.start(serve_scripted_engine, on_message)
    async with iii_trio.open_worker(url, name="not-invokable") as worker:
        worker.register_function("ext::remote", HttpInvocation("https://example.com/fn"))
        with trio.fail_after(PATIENCE):
            await done.wait()
    (answer,) = answers
    assert answer.error is not None
    assert answer.error.code == "function_not_invokable"
    assert answer.error.message == "Function is HTTP-invoked and cannot be invoked locally"


# --- the engine's URL rules ---------------------------------------------------------------------


def _config(tmp_path: Path, security: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config: {port: 0}\n"
        "  - name: iii-http-functions\n"
        f"    config: {{security: {security}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("security", "url", "problem"),
    [
        (
            "{require_https: true, block_private_ips: false}",
            "http://127.0.0.1:{port}/echo",
            "HTTPS is required",
        ),
        ("{require_https: false}", "http://127.0.0.1:{port}/echo", "Private IP blocked"),
        ("{require_https: false}", "http://localhost:{port}/echo", "Private IP blocked"),
        (
            "{require_https: false, block_private_ips: false, url_allowlist: [api.example.com]}",
            "http://127.0.0.1:{port}/echo",
            "URL not in allowlist",
        ),
        (
            "{require_https: false, block_private_ips: false, url_allowlist: ['127.0.0.*']}",
            "http://127.0.0.1:{port}/echo",
            None,
        ),
    ],
)
async def test_the_config_files_security_settings_decide_which_endpoints_register(
    tmp_path: Path,
    endpoint: HttpEndpoint,
    caplog: pytest.LogCaptureFixture,
    security: str,
    url: str,
    problem: str | None,
) -> None:
    config = _config(tmp_path, security)
    with caplog.at_level(logging.WARNING, logger="iii_trio.dev_engine"):
        async with (
            open_dev_engine(config=config) as engine,
            iii_trio.open_worker(engine.url, name="secured") as worker,
        ):
            worker.register_function("ext::echo", HttpInvocation(url.format(port=endpoint.port)))
            await worker.wait_registered()
            if problem is None:
                assert (await _trigger(worker, "ext::echo", {}))["method"] == "POST"
            else:
                with pytest.raises(iii_trio.FunctionNotFound):
                    await _trigger(worker, "ext::echo")
                assert problem in caplog.text
                assert endpoint.received == []


async def test_a_host_name_resolving_to_a_private_address_is_refused_before_sending() -> None:
    # What the shell checks before each request when private addresses are blocked and the
    # URL names a host (resolved from the hosts file here: no query leaves the machine).
    with pytest.raises(_HostRefused, match="Private IP blocked"):
        await _check_host("localhost")


# --- secrets never travel -----------------------------------------------------------------------


@attrs.define
class _Recording:
    port: int
    #: Per connection, the bytes the worker sent and the bytes the engine sent.
    from_worker: list[bytearray] = attrs.Factory(list)
    from_engine: list[bytearray] = attrs.Factory(list)


async def _serve_recording_relay(
    target_port: int, *, task_status: trio.TaskStatus[_Recording]
) -> None:
    """A loopback TCP relay in front of the engine that keeps every byte, both ways."""

    async def forward(source: trio.SocketStream, sink: trio.SocketStream, kept: bytearray) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some():
                kept += data
                await sink.send_all(data)
            await sink.send_eof()

    async def relay(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
        recording.from_worker.append(bytearray())
        recording.from_engine.append(bytearray())
        async with client, upstream, trio.open_nursery() as pipes:
            pipes.start_soon(forward, client, upstream, recording.from_worker[-1])
            pipes.start_soon(forward, upstream, client, recording.from_engine[-1])

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    recording = _Recording(listeners[0].socket.getsockname()[1])
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, relay, listeners)
        task_status.started(recording)


def _worker_frames(sent: bytes) -> tuple[str, list[str]]:
    """What a worker sent on one connection, decoded by an independent WebSocket parser: the
    upgrade request and every text message."""
    head_end = sent.index(b"\r\n\r\n") + 4
    connection = WSConnection(ConnectionType.SERVER)
    connection.receive_data(sent[:head_end])
    (request,) = connection.events()
    assert isinstance(request, Request)
    connection.send(AcceptConnection())
    # Frames follow the request; wsproto parses them only once the upgrade is accepted.
    connection.receive_data(sent[head_end:])
    messages: list[str] = []
    partial = ""
    for event in connection.events():
        if isinstance(event, TextMessage):
            partial += event.data
            if event.message_finished:
                messages.append(partial)
                partial = ""
    return repr(request), messages


async def test_no_secret_crosses_the_workers_socket_only_the_variables_names(
    nursery: trio.Nursery,
    engine: DevEngine,
    endpoint: HttpEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = {
        "HTTPFN_PLANTED_TOKEN": "planted-bearer-8c1f",
        "HTTPFN_PLANTED_KEY": "planted-apikey-77d2",
        "HTTPFN_PLANTED_SECRET": "planted-hmac-41aa",
    }
    for name, value in secrets.items():
        # One environment for both: the worker's process could read them too, and must not.
        monkeypatch.setenv(name, value)
    recording: _Recording = await nursery.start(_serve_recording_relay, engine.port)
    url = endpoint.url("/echo")
    async with iii_trio.open_worker(f"ws://127.0.0.1:{recording.port}", name="keeper") as worker:
        worker.register_function(
            "ext::bearer", HttpInvocation(url, auth=HttpAuth.bearer("HTTPFN_PLANTED_TOKEN"))
        )
        worker.register_function(
            "ext::key",
            HttpInvocation(url, auth=HttpAuth.api_key("X-Api-Key", "HTTPFN_PLANTED_KEY")),
        )
        worker.register_function(
            "ext::hmac", HttpInvocation(url, auth=HttpAuth.hmac("HTTPFN_PLANTED_SECRET"))
        )
        for function_id in ("ext::bearer", "ext::key", "ext::hmac"):
            await _trigger(worker, function_id, {"n": 1})
    # The engine did use them, so they were there to leak.
    bearer, key, _ = endpoint.received
    assert bearer.header("authorization") == f"Bearer {secrets['HTTPFN_PLANTED_TOKEN']}"
    assert key.header("x-api-key") == secrets["HTTPFN_PLANTED_KEY"]
    (sent,) = recording.from_worker
    handshake, frames = _worker_frames(bytes(sent))
    registrations = [frame for frame in frames if '"registerfunction"' in frame]
    assert len(registrations) == 3
    everything = "\n".join([handshake, *frames])
    for name, value in secrets.items():
        assert name in everything  # the names travel...
        assert value not in everything  # ...the values never do
        for received in recording.from_engine:  # the engine's frames are not masked
            assert value.encode() not in received
