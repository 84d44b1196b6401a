"""The dev engine's REST API (``iii-http``) through real sockets: httpx against its port,
handlers in iii_trio workers on the engine's WebSocket port. The tests that need no settings of
their own run against a real engine too when ``III_ENGINE_URL`` and ``III_ENGINE_HTTP_URL`` name
one (default ``iii-http`` settings)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio

import iii_trio
from iii_trio.testing import DevEngine, open_dev_engine
from iii_trio.testing._config import parse_config
from iii_trio.testing._dev_engine import DEV_ENGINE_VERSION
from iii_trio.testing._http_api_server import MAX_HEAD_SIZE, MAX_HEADERS

DEADLINE = 10.0
PERMISSIVE = {
    "vary": "origin, access-control-request-method, access-control-request-headers",
    "access-control-allow-origin": "*",
    "access-control-expose-headers": "*",
}


@attrs.frozen
class RealEngine:
    """A real iii engine: ``III_ENGINE_URL``, and its REST API at ``III_ENGINE_HTTP_URL``."""

    url: str
    http_url: str


Engine = DevEngine | RealEngine
_REAL_URLS = (
    os.environ.get("III_ENGINE_URL", "").strip(),
    os.environ.get("III_ENGINE_HTTP_URL", "").strip(),
)
_real = pytest.param(
    "real",
    marks=[
        pytest.mark.engine,
        pytest.mark.skipif(
            not all(_REAL_URLS), reason="III_ENGINE_URL and III_ENGINE_HTTP_URL are not both set"
        ),
    ],
)


@pytest.fixture(params=["dev", _real])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    """The dev engine, and a real one with its default ``iii-http`` settings when named."""
    if request.param == "real":
        yield RealEngine(*_REAL_URLS)
        return
    async with open_dev_engine() as running:
        yield running


@pytest.fixture
async def dev_engine() -> AsyncIterator[DevEngine]:
    async with open_dev_engine() as running:
        yield running


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    assert engine.http_url is not None
    async with httpx.AsyncClient(base_url=engine.http_url, timeout=DEADLINE) as http:
        yield http


async def echo(request: dict[str, Any]) -> dict[str, Any]:
    seen = {key: value for key, value in request.items() if key not in ("request_body", "response")}
    return {"status_code": 201, "headers": {"X-Seen": "yes"}, "body": seen}


async def get_once(
    engine: Engine, client: httpx.AsyncClient, function_id: str, handler: Any, api_path: str
) -> httpx.Response:
    """GET ``api_path`` once, served by ``handler`` bound to it in a worker of its own."""
    async with iii_trio.open_worker(engine.url) as worker:
        worker.register_function(function_id, handler)
        await worker.register_trigger("http", function_id, {"api_path": api_path})
        return await client.get("/" + api_path.lstrip("/"))


async def test_a_route_gets_the_request_payload_and_answers_with_its_return_value(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::echo", echo)
            await worker.register_trigger(
                "http",
                "http::echo",
                {"api_path": "items/:id/sub/:name", "http_method": "get"},
                metadata={"m": 1},
            )
            response = await client.get(
                "/items/abc%20x/sub/n1?q=hello&q=second&plus=a+b&empty=",
                headers={"X-Repeat": "1"},
            )
    assert response.status_code == 201
    assert response.headers["x-seen"] == "yes"
    assert response.headers["content-type"] == "application/json"
    for name, value in PERMISSIVE.items():
        assert response.headers[name] == value
    seen = response.json()
    assert seen["path_params"] == {"id": "abc%20x", "name": "n1"}
    assert seen["query_params"] == {"q": "second", "plus": "a b", "empty": ""}
    assert seen["path"] == "items/:id/sub/:name"
    assert seen["method"] == "GET"
    assert seen["body"] is None
    assert seen["trigger"] == {"type": "http", "path": "items/:id/sub/:name", "method": "GET"}
    assert seen["headers"]["x-repeat"] == "1"
    assert "_caller_worker_id" not in seen


async def test_unknown_paths_get_404_and_other_methods_405(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::echo", echo)
            await worker.register_trigger("http", "http::echo", {"api_path": "/only/get"})
            missing = await client.post("/no/such/route")
            other_method = await client.post("/only/get")
            trailing = await client.get("/only/get/")
            preflight = await client.options("/only/get")
    assert missing.status_code == 404
    assert missing.content == b'{"error":{"code":"NOT_FOUND","message":"Not Found"}}'
    assert missing.headers["access-control-allow-origin"] == "*"
    assert other_method.status_code == 405
    assert other_method.headers["allow"] == "GET,HEAD"
    assert other_method.content == b""
    assert trailing.status_code == 404
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-methods"] == "*"
    assert preflight.headers["allow"] == "GET,HEAD"


@pytest.mark.parametrize(
    ("result", "status", "content_type", "body"),
    [
        ({"status_code": 201, "headers": {"Content-Type": "text/plain"}, "body": "hi"}, 201,
         "text/plain", b"hi"),
        ({"status_code": 201, "body": "hi"}, 201, "application/json", b'"hi"'),
        ({"headers": ["X-B: 2", "bad"], "body": {"k": 1}}, 200, "application/json", b'{"k":1}'),
        ("plain string", 200, "application/json", b"{}"),
        ({"statusCode": 201, "body": "x"}, 200, "application/json", b'"x"'),
        ({"status_code": 99, "body": "x"}, 200, "application/json", b'"x"'),
    ],
)  # fmt: skip
async def test_return_values_map_to_responses(
    engine: Engine,
    client: httpx.AsyncClient,
    result: Any,
    status: int,
    content_type: str,
    body: bytes,
) -> None:
    with trio.fail_after(DEADLINE):
        response = await get_once(engine, client, "http::fixed", lambda request: result, "fixed")
    assert response.status_code == status
    assert response.headers["content-type"] == content_type
    assert response.content == body


async def test_a_failing_handler_gets_the_500_envelope(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    async def broken(request: Any) -> None:
        raise RuntimeError("boom")

    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::broken", broken)
            await worker.register_trigger("http", "http::broken", {"api_path": "broken"})
            failed = await client.get("/broken")
            function = worker.register_function("http::gone", echo)
            await worker.register_trigger("http", "http::gone", {"api_path": "gone"})
            function.unregister()
            await trio.sleep(0.1)
            gone = await client.get("/gone")
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["code"] == "invocation_failed"
    assert "boom" in error["message"]
    assert int(error["error_id"], 16) >= 0
    assert gone.status_code == 500
    assert gone.json()["error"]["code"] == "function_not_found"


async def test_conflicting_and_missing_paths_are_refused(engine: Engine) -> None:
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::echo", echo)
            await worker.register_trigger("http", "http::echo", {"api_path": "/c/:a/:b"})
            with pytest.raises(iii_trio.TriggerRegistrationError) as conflict:
                await worker.register_trigger("http", "http::echo", {"api_path": "/c/:b/:a"})
            with pytest.raises(iii_trio.TriggerRegistrationError) as missing:
                await worker.register_trigger("http", "http::echo", {"http_method": "GET"})
    assert conflict.value.code == "trigger_registration_failed"
    assert conflict.value.message == (
        "Route 'GET /c/:b/:a' conflicts with already-registered route 'GET /c/:a/:b': routes "
        "with identical structure but different path-parameter names are not supported"
    )
    assert missing.value.message == "api_path is required for http triggers"


async def test_the_last_registration_of_a_route_wins(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::a", lambda request: {"body": "a"})
            worker.register_function("http::b", lambda request: {"body": "b"})
            first = await worker.register_trigger("http", "http::a", {"api_path": "same"})
            await worker.register_trigger("http", "http::b", {"api_path": "/same"})
            first.unregister()
            await trio.sleep(0.1)
            response = await client.get("/same")
    assert response.json() == "b"


async def test_a_handler_that_never_answers_gets_504_after_default_timeout() -> None:
    text = "workers:\n  - name: iii-http\n    config: {port: 0, default_timeout: 200}\n"
    config = parse_config(text, source="config.yaml", environ={}, engine_version=DEV_ENGINE_VERSION)

    async def stuck(request: Any) -> None:
        await trio.sleep_forever()

    with trio.fail_after(DEADLINE):
        async with open_dev_engine(config=config) as engine:
            assert engine.http_url is not None
            async with (
                iii_trio.open_worker(engine.url) as worker,
                httpx.AsyncClient(base_url=engine.http_url) as client,
            ):
                worker.register_function("http::stuck", stuck)
                await worker.register_trigger("http", "http::stuck", {"api_path": "stuck"})
                response = await client.get("/stuck")
    assert response.status_code == 504
    assert response.content == b""
    assert "access-control-allow-origin" not in response.headers


async def test_a_json_body_must_arrive_within_default_timeout() -> None:
    # The engine's timeout covers the whole request, and it reads a JSON body itself.
    called = False

    def handler(request: Any) -> dict[str, Any]:
        nonlocal called
        called = True
        return {"status_code": 201}

    with trio.fail_after(DEADLINE):
        async with open_dev_engine(config=http_config("{port: 0, default_timeout: 200}")) as engine:
            assert engine.http_url is not None
            async with iii_trio.open_worker(engine.url) as worker:
                worker.register_function("http::slow-body", handler)
                await worker.register_trigger(
                    "http", "http::slow-body", {"api_path": "slow", "http_method": "POST"}
                )
                started = trio.current_time()
                answer = await raw_exchange(
                    engine.http_url,
                    b"POST /slow HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n"
                    b"content-length: 10\r\n\r\n[1,",
                    keep_open=True,
                )
                elapsed = trio.current_time() - started
    assert answer.startswith(b"HTTP/1.1 504 ")
    assert 0.2 <= elapsed < DEADLINE
    assert not called


async def test_a_handler_streams_its_response_through_the_channel(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    async def streamer(request: iii_trio.ApiRequest) -> None:
        writer = request.response
        assert isinstance(writer, iii_trio.ChannelWriter)
        async with writer:
            await writer.send_message('{"type":"set_status","status_code":207}')
            await writer.send_message('{"type":"set_headers","headers":{"x-stream":"yes"}}')
            await writer.send_all(b"part1-")
            await writer.send_message('{"type":"set_status","status_code":500}')
            await writer.send_all(b"part2")

    with trio.fail_after(DEADLINE):
        response = await get_once(engine, client, "http::stream", streamer, "stream")
    assert response.status_code == 207
    assert response.headers["x-stream"] == "yes"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"part1-part2"


async def test_a_head_route_streaming_a_body_answers_with_its_head_alone(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    async def streamer(request: iii_trio.ApiRequest) -> None:
        assert isinstance(request.response, iii_trio.ChannelWriter)
        async with request.response as writer:
            await writer.send_message('{"type":"set_headers","headers":{"x-stream":"yes"}}')
            for _ in range(64):  # more than the channel holds: the engine must keep reading
                await writer.send_all(b"x" * 65536)

    async with iii_trio.open_worker(engine.url, name="head-streamer") as worker:
        worker.register_function("http::head", streamer)
        config = {"api_path": "head", "http_method": "HEAD"}
        await worker.register_trigger("http", "http::head", config)
        with trio.fail_after(DEADLINE):
            first = await client.head("/head")
            second = await client.head("/head")  # on the same connection: it was not cut
    for response in (first, second):
        assert response.status_code == 200
        assert response.headers["x-stream"] == "yes"
        assert response.content == b""


async def test_a_writer_closed_without_data_gives_an_empty_response(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    async def teapot(request: iii_trio.ApiRequest) -> dict[str, Any]:
        writer = request.response
        assert isinstance(writer, iii_trio.ChannelWriter)
        async with writer:
            await writer.send_message('{"type":"set_status","status_code":418}')
            await writer.send_message('{"type":"set_headers","headers":{"x-t":"1"}}')
        return {"status_code": 200, "body": "ignored"}

    with trio.fail_after(DEADLINE):
        response = await get_once(engine, client, "http::teapot", teapot, "teapot")
    assert response.status_code == 418
    assert response.headers["x-t"] == "1"
    assert response.content == b""


async def test_request_bodies_reach_the_handler(engine: Engine, client: httpx.AsyncClient) -> None:
    async def body_echo(request: iii_trio.ApiRequest) -> dict[str, Any]:
        reader = request.request_body
        assert isinstance(reader, iii_trio.ChannelReader)
        raw = b""
        async with reader:
            while chunk := await reader.receive_some():
                raw += chunk
        return {"body": {"parsed": request.body, "raw": raw.decode()}}

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"x=1&", b"y=two+words"):
            yield part

    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::body", body_echo)
            await worker.register_trigger(
                "http", "http::body", {"api_path": "body", "http_method": "POST"}
            )
            as_json = await client.post("/body", json={"a": [1, 2]})
            bad_json = await client.post(
                "/body", content=b"{bad", headers={"content-type": "application/json"}
            )
            form = await client.post("/body", data={"x": "1", "y": "two words"})
            streamed = await client.post("/body", content=chunks())
    assert as_json.json() == {"parsed": {"a": [1, 2]}, "raw": '{"a":[1,2]}'}
    assert bad_json.json() == {"parsed": None, "raw": "{bad"}
    assert form.json() == {"parsed": None, "raw": "x=1&y=two+words"}
    assert streamed.json() == {"parsed": None, "raw": "x=1&y=two+words"}


async def test_a_condition_that_says_no_gets_422(engine: Engine, client: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::echo", echo)
            worker.register_function(
                "http::only-admin", lambda request: request["query_params"].get("who") == "admin"
            )
            await worker.register_trigger(
                "http",
                "http::echo",
                {"api_path": "guarded", "condition_function_id": "http::only-admin"},
            )
            refused = await client.get("/guarded?who=guest")
            allowed = await client.get("/guarded?who=admin")
    assert refused.status_code == 422
    assert refused.json() == {
        "error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"},
        "skipped": True,
    }
    assert allowed.status_code == 201


async def test_http_port_and_http_url() -> None:
    with trio.fail_after(DEADLINE):
        async with open_dev_engine(http_port=0) as engine:
            assert engine.http_url is not None
            assert engine.http_url.startswith("http://127.0.0.1:")
        async with open_dev_engine(without=["iii-http"]) as engine:
            assert engine.http_url is None
    with pytest.raises(TypeError, match="http_port"):
        async with open_dev_engine(http_port="3111"):  # type: ignore[arg-type]
            pass


def http_config(block: str) -> Any:
    text = f"workers:\n  - name: iii-http\n    config: {block}\n"
    return parse_config(text, source="config.yaml", environ={}, engine_version=DEV_ENGINE_VERSION)


async def test_global_and_route_middleware_run_in_order_and_may_answer() -> None:
    calls: list[str] = []

    def middleware(name: str, result: Any) -> Any:
        def run(request: dict[str, Any]) -> Any:
            calls.append(name)
            assert request["phase"] == "preHandler"
            assert request["context"] == {}
            assert set(request["request"]) == {"path_params", "query_params", "headers", "method"}
            if isinstance(result, Exception):
                raise result
            return result

        return run

    config = http_config(
        "{port: 0, middleware: [{function_id: mw::second, priority: 2},"
        " {function_id: mw::first, priority: 1}]}"
    )
    with trio.fail_after(DEADLINE):
        async with open_dev_engine(config=config) as engine:
            assert engine.http_url is not None
            async with (
                iii_trio.open_worker(engine.url) as worker,
                httpx.AsyncClient(base_url=engine.http_url) as client,
            ):
                worker.register_function("http::echo", echo)
                worker.register_function("mw::first", middleware("first", {"action": "continue"}))
                worker.register_function("mw::second", middleware("second", None))
                worker.register_function("mw::pass", middleware("pass", {"action": "continue"}))
                worker.register_function(
                    "mw::deny",
                    middleware(
                        "deny",
                        {
                            "action": "respond",
                            "response": {
                                "status_code": 403,
                                "body": {"denied": True},
                                "headers": {"x-mw": "1"},
                            },
                        },
                    ),
                )
                worker.register_function("mw::broken", middleware("broken", ValueError("mw")))
                for path, ids in (
                    ("open", ["mw::pass"]),
                    ("denied", ["mw::pass", "mw::deny"]),
                    ("broken", ["mw::broken"]),
                ):
                    await worker.register_trigger(
                        "http", "http::echo", {"api_path": path, "middleware_function_ids": ids}
                    )
                opened = await client.get("/open")
                order = list(calls)
                denied = await client.get("/denied")
                broken = await client.get("/broken")
    assert opened.status_code == 201
    assert order == ["first", "second", "pass"]
    assert denied.status_code == 403
    assert denied.headers["x-mw"] == "1"
    assert denied.headers["content-type"] == "application/json"
    assert denied.json() == {"denied": True}
    assert broken.status_code == 500
    assert broken.json()["error"]["code"] == "invocation_failed"


async def test_a_cors_block_restricts_origins_and_methods() -> None:
    config = http_config(
        "{port: 0, cors: {allowed_origins: ['http://ok.example'], allowed_methods: [GET, POST]}}"
    )
    with trio.fail_after(DEADLINE):
        async with open_dev_engine(config=config) as engine:
            assert engine.http_url is not None
            async with httpx.AsyncClient(base_url=engine.http_url) as client:
                allowed = await client.get("/x", headers={"Origin": "http://ok.example"})
                other = await client.get("/x", headers={"Origin": "http://evil.example"})
                preflight = await client.options(
                    "/x",
                    headers={
                        "Origin": "http://ok.example",
                        "Access-Control-Request-Method": "POST",
                    },
                )
    assert allowed.headers["access-control-allow-origin"] == "http://ok.example"
    assert "access-control-expose-headers" not in allowed.headers
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-methods"] == "GET,POST"
    assert preflight.headers["access-control-allow-origin"] == "http://ok.example"


def test_a_bad_iii_http_block_is_refused() -> None:
    with pytest.raises(ValueError, match=r"config\.colour: unknown field"):
        http_config("{port: 0, colour: blue}")


async def test_routes_of_an_official_sdk_worker(engine: Engine, client: httpx.AsyncClient) -> None:
    pytest.importorskip("iii", reason="the official iii-sdk package is not installed")
    from peer_process import read_line, start_peer

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            peer = await start_peer(nursery, "official_http_peer.py", engine.url)
            assert peer.stdin is not None
            assert (await read_line(peer)).strip() == "ready"
            # The official SDK registers its triggers without waiting for the engine's answer.
            with trio.fail_after(10):
                while (await client.get("/official/fail")).status_code == 404:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            hello = await client.post("/official/hello/ann", json={"k": [1, 2]})
            failed = await client.get("/official/fail")
            await peer.stdin.aclose()
    assert hello.status_code == 201
    assert hello.headers["x-sdk"] == "1"
    assert hello.json() == {"name": "ann", "got": {"k": [1, 2]}}
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["code"] == "invocation_failed"
    assert error["message"] == "boom from the official handler"


async def raw_exchange(http_url: str, data: bytes, *, keep_open: bool = False) -> bytes:
    """Send ``data`` as it is over a fresh connection; everything the server answers (with
    ``keep_open``, only its first response head, the connection left open until then)."""
    host, port = http_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(data)
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
            if keep_open and b"\r\n\r\n" in answer:
                break
    return answer


async def test_a_malformed_request_gets_400_and_the_engine_keeps_serving(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    assert engine.http_url is not None
    with trio.fail_after(DEADLINE):
        garbage = await raw_exchange(engine.http_url, b"NOT HTTP AT ALL\r\n\r\n")
        bad_length = await raw_exchange(
            engine.http_url, b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: zz\r\n\r\n"
        )
        after = await client.get("/still/here")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert bad_length.startswith(b"HTTP/1.1 400 ")
    assert after.status_code == 404


async def test_request_heads_are_limited_as_by_hyper_and_bodies_not_at_all(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    assert engine.http_url is not None

    def sizes(request: dict[str, Any]) -> dict[str, Any]:
        return {"body": [len(request["headers"]["x-big"]), len(request["body"]["data"])]}

    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::sizes", sizes)
            await worker.register_trigger(
                "http", "http::sizes", {"api_path": "sizes", "http_method": "POST"}
            )
            # Past h11's default 16 KiB head and axum's default 2 MiB body limit: the engine
            # (hyper, and a handler that reads the body itself) has neither.
            served = await client.post(
                "/sizes", headers={"x-big": "h" * 100_000}, json={"data": "b" * 2_500_000}
            )
            # One byte over, and no more: the engine reads it all, so its close is clean.
            request_line = b"GET /sizes HTTP/1.1\r\nhost: a\r\n"
            head = request_line + b"x-big: "
            too_large = await raw_exchange(
                engine.http_url, head + b"h" * (MAX_HEAD_SIZE + 1 - len(head))
            )
            # hyper takes 100 header fields, host included, and answers 431 to one more.
            fields = b"".join(b"x-h%d: v\r\n" % number for number in range(MAX_HEADERS - 1))
            most = await raw_exchange(
                engine.http_url, request_line + fields + b"\r\n", keep_open=True
            )
            one_more = await raw_exchange(
                engine.http_url, request_line + fields + b"x-last: v\r\n\r\n"
            )
    assert served.json() == [100_000, 2_500_000]
    assert too_large.startswith(b"HTTP/1.1 431 ")
    assert most.startswith(b"HTTP/1.1 405 ")  # routed: POST /sizes only
    assert one_more.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in one_more.lower()


async def test_a_body_that_breaks_off_reaches_the_handler_as_far_as_it_went(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    # The engine reads a body until its first error (a malformed chunk here) and goes on
    # with what it has: the handler still runs.
    assert engine.http_url is not None
    seen: list[Any] = []

    async def body_echo(request: iii_trio.ApiRequest) -> dict[str, Any]:
        assert isinstance(request.request_body, iii_trio.ChannelReader)
        raw = b""
        async with request.request_body as reader:
            while chunk := await reader.receive_some():
                raw += chunk
        seen.append((request.body, raw))
        return {"status_code": 201}

    head = b"POST /cut HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n"
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::cut", body_echo)
            await worker.register_trigger(
                "http", "http::cut", {"api_path": "cut", "http_method": "POST"}
            )
            for content_type in (b"application/json", b"text/plain"):
                await raw_exchange(
                    engine.http_url,
                    head + b"content-type: " + content_type + b"\r\n\r\n5\r\n[1,2]\r\nzz\r\n",
                )
            after = await client.get("/still/here")
    assert seen == [([1, 2], b"[1,2]"), (None, b"[1,2]")]
    assert after.status_code == 404


async def test_a_slow_client_holds_only_its_own_connection(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    assert engine.http_url is not None
    host, port = engine.http_url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::echo", echo)
            await worker.register_trigger(
                "http", "http::echo", {"api_path": "slow", "http_method": "POST"}
            )
            async with await trio.open_tcp_stream(host, int(port)) as slow:
                # Half a head, then half a body: the engine waits on this connection only.
                await slow.send_all(b"POST /slow HTTP/1.1\r\nhost: a\r\n")
                fast = await client.post("/slow", content=b"quick")
                await slow.send_all(b"content-length: 10\r\n\r\n01234")
                also_fast = await client.get("/nothing")
                await slow.send_all(b"56789")
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += await slow.receive_some()
    assert fast.status_code == 201
    assert also_fast.status_code == 404
    assert answer.startswith(b"HTTP/1.1 201 ")


async def test_server_sent_events_arrive_as_they_are_written(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    next_event = trio.Event()

    async def events(request: iii_trio.ApiRequest) -> None:
        nonlocal next_event
        writer = request.response
        assert isinstance(writer, iii_trio.ChannelWriter)
        async with writer:
            await writer.send_message(
                '{"type":"set_headers","headers":{"content-type":"text/event-stream",'
                '"cache-control":"no-cache"}}'
            )
            for number in range(3):
                await writer.send_all(f"id: {number}\ndata: tick {number}\n\n".encode())
                await next_event.wait()  # the next one only once the client saw this one
                next_event = trio.Event()

    received: list[str] = []
    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::events", events)
            await worker.register_trigger("http", "http::events", {"api_path": "events"})
            async with client.stream("GET", "/events") as response:
                assert response.headers["content-type"] == "text/event-stream"
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        received.append(line.removeprefix("data: "))
                        next_event.set()
    assert received == ["tick 0", "tick 1", "tick 2"]


async def test_clients_that_leave_mid_request_cost_only_their_connection(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    assert engine.http_url is not None
    host, port = engine.http_url.removeprefix("http://").rsplit(":", 1)

    async def slow(request: Any) -> dict[str, Any]:
        await trio.sleep(0.05)
        return {"body": "x" * 100_000}

    with trio.fail_after(DEADLINE):
        async with iii_trio.open_worker(engine.url) as worker:
            worker.register_function("http::slow", slow)
            await worker.register_trigger("http", "http::slow", {"api_path": "slow"})
            for _ in range(5):
                stream = await trio.open_tcp_stream(host, int(port))
                await stream.send_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
                await stream.aclose()
            await trio.sleep(0.3)
            after = await client.get("/slow")
    assert after.status_code == 200
    assert len(after.json()) == 100_000


async def test_answered_requests_leave_no_channels_behind(dev_engine: DevEngine) -> None:
    # The engine removes a request's two channels once its response is decided, streamed or
    # not: the registry must not grow with the requests served.
    async def streamer(request: iii_trio.ApiRequest) -> None:
        assert isinstance(request.response, iii_trio.ChannelWriter)
        async with request.response as writer:
            await writer.send_all(b"streamed")

    assert dev_engine.http_url is not None
    with trio.fail_after(DEADLINE * 3):
        async with (
            httpx.AsyncClient(base_url=dev_engine.http_url, timeout=DEADLINE) as client,
            iii_trio.open_worker(dev_engine.url) as worker,
        ):
            worker.register_function("http::echo", echo)
            worker.register_function("http::stream", streamer)
            await worker.register_trigger("http", "http::echo", {"api_path": "a"})
            await worker.register_trigger("http", "http::stream", {"api_path": "b"})
            for number in range(200):
                if number % 10 == 0:
                    assert (await client.get("/a")).status_code == 201
                assert (await client.get("/b")).content == b"streamed"
                assert len(dev_engine._state.channels) == 0
