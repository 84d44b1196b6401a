"""The dev engine's ``iii-http`` core (spec/engine.md section 2, engine-observed.md section 1),
driven by hand: routes registered by raw workers, requests begun as the shell begins them,
handlers answered frame by frame, and the clock moved by hand. No sockets: what h11 and the
channel sockets do is tested end to end in tests/engine/test_dev_engine_http.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from iii_trio._protocol._messages import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
)
from iii_trio.testing._engine import Output
from iii_trio.testing._engine._builtins import BlockError
from iii_trio.testing._engine._http_api import (
    CONDITION_NOT_MET,
    MIDDLEWARE_TIMEOUT,
    NOT_FOUND,
    TIMED_OUT,
    CorsSettings,
    HttpApi,
    HttpApiSettings,
    HttpReply,
    MiddlewareSettings,
    RequestFacts,
    RouteMatch,
    StartedRequest,
    control_frame,
    cors_headers,
    error_id,
    middleware_response,
    parse_json_body,
    read_http_block,
    response_from_result,
)
from iii_trio.testing._engine._model import HttpApiOutcome

from .engine_driver import Engine, messages_to

#: The wall clock of the driver's engine, whose own clock starts at 100 s.
WALL_CLOCK_OFFSET = 1_764_000_000.0
JSON_TYPE = ("content-type", "application/json")


class Api:
    """An engine with the ``iii-http`` core, one worker serving ``api::*`` functions, and
    requests begun the way the shell begins them."""

    def __init__(self, settings: HttpApiSettings | None = None) -> None:
        self.http = HttpApi(settings)
        self.engine = Engine(plugins=[self.http], wall_clock_offset=WALL_CLOCK_OFFSET)
        self.worker = self.engine.worker("api")
        self._requests = 0
        self._bindings = 0

    def function(self, *function_ids: str) -> None:
        for function_id in function_ids:
            self.worker.send(RegisterFunction(id=function_id))

    def route(
        self,
        api_path: str | None,
        method: str | None = "GET",
        *,
        binding_id: str = "",
        **extra: Any,
    ) -> str | None:
        """Bind ``api::handler`` to a route; the refusal's message, if it is refused."""
        config: dict[str, Any] = dict(extra.pop("config", {}))
        if api_path is not None:
            config["api_path"] = api_path
        if method is not None:
            config["http_method"] = method
        outputs = self.worker.send(
            RegisterTrigger(
                id=binding_id or self._next_binding_id(),
                trigger_type="http",
                function_id=extra.pop("function_id", "api::handler"),
                config=config,
                **extra,
            )
        )
        refusals = [
            m
            for m in messages_to(outputs, self.worker.id)
            if isinstance(m, TriggerRegistrationResult)
        ]
        if not refusals:
            return None
        (refusal,) = refusals
        assert refusal.error is not None
        assert refusal.error.code == "trigger_registration_failed"
        return refusal.error.message

    def _next_binding_id(self) -> str:
        self._bindings += 1
        return f"route-{self._bindings}"

    def matched(self, method: str, path: str) -> RouteMatch:
        found = self.http.match(method, path)
        assert isinstance(found, RouteMatch), found
        return found

    def begin(
        self,
        path: str = "/items/1",
        *,
        method: str = "GET",
        query: str = "",
        headers: list[tuple[str, bytes]] | None = None,
        body: Any = None,
    ) -> Request:
        self._requests += 1
        request_id = f"request-{self._requests}"
        facts = RequestFacts(method, path, query, headers or [])
        started, outputs = self.http.begin(
            request_id, self.matched(method, path), facts, body, self.engine.now
        )
        return Request(self, request_id, started, outputs)

    def channel_count(self) -> int:
        return len(self.engine.state.channels)


class Request:
    """One begun request: what it sent to the worker and what became of it."""

    def __init__(
        self, api: Api, request_id: str, started: StartedRequest, outputs: list[Output]
    ) -> None:
        self.api = api
        self.id = request_id
        self.started = started
        self.outputs = list(outputs)

    def calls(self) -> list[InvokeFunction]:
        """The calls sent to the worker, in order (middleware, condition, handler)."""
        return [
            m
            for m in messages_to(self.outputs, self.api.worker.id)
            if isinstance(m, InvokeFunction)
        ]

    def last_call(self, function_id: str = "api::handler") -> InvokeFunction:
        call = self.calls()[-1]
        assert call.function_id == function_id, call
        return call

    def answer(self, function_id: str = "api::handler", **outcome: Any) -> None:
        """Answer the last call (which must be to ``function_id``)."""
        call = self.last_call(function_id)
        assert call.invocation_id is not None
        self.outputs += self.api.worker.send(
            InvocationResult(call.invocation_id, call.function_id, **outcome)
        )

    def advance(self, seconds: float) -> None:
        self.outputs += self.api.engine.advance(seconds)

    def replies(self) -> list[HttpReply]:
        return [
            o.reply
            for o in self.outputs
            if isinstance(o, HttpApiOutcome) and o.request_id == self.id
        ]

    def reply(self) -> HttpReply:
        (reply,) = self.replies()
        return reply

    def channels_registered(self) -> list[bool]:
        registry = self.api.engine.state.channels
        return [
            registry.lookup(channel.id, channel.access_key) is not None
            for channel in (self.started.request_body, self.started.response)
        ]


@pytest.fixture
def api() -> Api:
    api = Api()
    api.function("api::handler")
    return api


def body_of(reply: HttpReply) -> Any:
    return orjson.loads(reply.body)


# -- routing ---------------------------------------------------------------------------------------


def test_path_parameters_are_raw_segments_and_the_payload_path_is_the_template(api: Api) -> None:
    api.route("obs/items/:id/sub/:name")
    found = api.matched("GET", "/obs/items/abc%20x/sub/n1")
    assert found.path_params == {"id": "abc%20x", "name": "n1"}
    assert found.route.template == "obs/items/:id/sub/:name"
    assert api.http.match("GET", "/obs/items//sub/n1") == NOT_FOUND  # a parameter is never empty


@pytest.mark.parametrize("literal_first", [True, False])
def test_a_literal_segment_beats_a_parameter(api: Api, literal_first: bool) -> None:
    api.function("api::literal")
    routes = [("/p/fixed", "api::literal"), ("/p/:a", "api::handler")]
    for path, function_id in routes if literal_first else routes[::-1]:
        api.route(path, function_id=function_id)
    fixed = api.matched("GET", "/p/fixed")
    other = api.matched("GET", "/p/zzz")
    assert (fixed.route.binding.function_id, fixed.path_params) == ("api::literal", {})
    assert (other.route.binding.function_id, other.path_params) == ("api::handler", {"a": "zzz"})


def test_the_first_differing_segment_decides_between_templates(api: Api) -> None:
    api.function("api::other")
    api.route("a/:x/c")
    api.route(":y/b/c", function_id="api::other")
    assert api.matched("GET", "/a/b/c").route.template == "a/:x/c"
    assert api.matched("GET", "/z/b/c").route.template == ":y/b/c"


def test_the_path_is_chosen_before_the_method(api: Api) -> None:
    # The router matches the most specific template, then looks for the method there: a
    # less specific route with the method does not take the request.
    api.route("/p/:a", "GET")
    api.route("/p/fixed", "POST")
    assert api.http.match("GET", "/p/fixed") == HttpReply(405, (("allow", "POST"),))
    assert api.matched("GET", "/p/other").path_params == {"a": "other"}


def test_slashes_are_significant_except_the_leading_one(api: Api) -> None:
    api.function("api::trail", "api::root")
    api.route("bg/ok")
    api.route("/bg/trail/", function_id="api::trail")
    api.route("", function_id="api::root")
    assert api.matched("GET", "/bg/ok").route.template == "bg/ok"
    assert api.http.match("GET", "/bg/ok/") == NOT_FOUND
    assert api.http.match("GET", "//bg/ok") == NOT_FOUND
    assert api.matched("GET", "/bg/trail/").route.template == "/bg/trail/"
    assert api.http.match("GET", "/bg/trail") == NOT_FOUND
    assert api.matched("GET", "/").route.binding.function_id == "api::root"


def test_the_method_is_case_insensitive_and_defaults_to_get(api: Api) -> None:
    api.route("lower", "post")
    api.route("default", None)
    assert api.matched("POST", "/lower").route.method == "POST"
    assert api.matched("GET", "/default").route.method == "GET"


def test_unknown_paths_get_404_and_other_methods_405_with_allow(api: Api) -> None:
    api.route("/get", "GET")
    api.route("/post", "POST")
    for method in ("DELETE", "PATCH", "OPTIONS"):
        api.route("/three", method)
    assert api.http.match("GET", "/nothing") == NOT_FOUND
    assert NOT_FOUND.body == b'{"error":{"code":"NOT_FOUND","message":"Not Found"}}'
    assert (NOT_FOUND.status, NOT_FOUND.headers) == (404, (JSON_TYPE,))
    # A GET route also takes HEAD, and says so; the list is in the router's order.
    assert api.http.match("POST", "/get") == HttpReply(405, (("allow", "GET,HEAD"),))
    assert api.http.match("GET", "/post") == HttpReply(405, (("allow", "POST"),))
    assert api.http.match("GET", "/three") == HttpReply(405, (("allow", "OPTIONS,PATCH,DELETE"),))


def test_head_on_a_get_route_finds_no_handler_unless_a_head_route_exists(api: Api) -> None:
    api.function("api::head")
    api.route("/only-get", "GET")
    api.route("/both", "GET")
    api.route("/both", "HEAD", function_id="api::head")
    api.route("/only-head", "HEAD", function_id="api::head")
    assert api.http.match("HEAD", "/only-get") == NOT_FOUND
    assert api.matched("HEAD", "/both").route.binding.function_id == "api::head"
    assert api.matched("GET", "/both").route.binding.function_id == "api::handler"
    assert api.http.match("GET", "/only-head") == HttpReply(405, (("allow", "HEAD"),))


def test_an_unsupported_method_registers_but_never_routes(api: Api) -> None:
    assert api.route("/foo", "FOO") is None
    assert api.http.match("FOO", "/foo") == NOT_FOUND
    assert api.http.match("GET", "/foo") == NOT_FOUND


def test_every_options_request_gets_the_preflight_answer(api: Api) -> None:
    api.route("/get", "GET")
    api.route("/opt", "OPTIONS")
    api.route("/opt", "DELETE")
    assert api.http.preflight("/get") == HttpReply(200, (("allow", "GET,HEAD"),))
    # A path with an OPTIONS route, or none at all: no allow (the route is never called).
    assert api.http.preflight("/opt") == HttpReply(200)
    assert api.http.preflight("/nothing") == HttpReply(200)


def test_the_last_registration_of_a_route_wins_and_a_stale_unregister_is_ignored(
    api: Api,
) -> None:
    api.function("api::b")
    api.route("conf/y", binding_id="a")
    api.route("/conf/y", binding_id="b", function_id="api::b")  # the same key: replaced
    assert api.matched("GET", "/conf/y").route.binding.function_id == "api::b"
    api.worker.send(UnregisterTrigger(id="a"))
    assert api.matched("GET", "/conf/y").route.binding.function_id == "api::b"
    api.worker.send(UnregisterTrigger(id="b"))
    assert api.http.match("GET", "/conf/y") == NOT_FOUND


@pytest.mark.parametrize("config", [{"http_method": "GET"}, {}, None, {"api_path": 5}])
def test_a_route_without_a_string_api_path_is_refused(api: Api, config: Any) -> None:
    outputs = api.worker.send(
        RegisterTrigger(id="t", trigger_type="http", function_id="api::handler", config=config)
    )
    (result,) = [
        m for m in messages_to(outputs, api.worker.id) if isinstance(m, TriggerRegistrationResult)
    ]
    assert result.error == ErrorBody(
        "trigger_registration_failed", "api_path is required for http triggers"
    )


def test_conflicting_routes_are_refused_with_the_engines_texts(api: Api) -> None:
    assert api.route("/conf/p/:a/:b") is None
    assert api.route("/conf/p/:b/:a") == (
        "Route 'GET /conf/p/:b/:a' conflicts with already-registered route 'GET /conf/p/:a/:b': "
        "routes with identical structure but different path-parameter names are not supported"
    )
    # On another method the engine's router panics; the dev engine refuses with its text.
    assert api.route("/conf/p/:x/:y", "POST") == (
        'Invalid route "/conf/p/{x}/{y}": Insertion failed due to conflict with previously '
        "registered route: /conf/p/{a}/{b}"
    )
    assert api.route("/bg/star/*rest") == (
        "Path segments must not start with `*`. For wildcard capture, use `{*wildcard}`."
    )
    # The first route keeps serving; the same names on another method are fine.
    assert api.route("/conf/p/:a/:b", "POST") is None
    assert api.matched("GET", "/conf/p/1/2").path_params == {"a": "1", "b": "2"}


# -- the request payload ---------------------------------------------------------------------------


def test_the_handler_gets_the_request_payload_with_the_bindings_metadata(api: Api) -> None:
    api.route("obs/items/:id", metadata={"m": "GET"})
    request = api.begin(
        "/obs/items/7",
        query="q=hello&limit=10&q=second&empty=&plus=a+b&enc=%2F%26&x=%ZZ&a[]=1&a[]=2&k",
        headers=[
            ("host", b"127.0.0.1:3299"),
            ("x-r", b"1"),
            ("x-r", b"2"),
            ("x-latin", "caf\xe9".encode("latin-1")),
        ],
    )
    call = request.last_call()
    assert call.metadata == {"m": "GET"}
    payload = dict(call.data)
    request_body = payload.pop("request_body")
    response = payload.pop("response")
    assert payload == {
        "query_params": {
            "q": "second",
            "limit": "10",
            "empty": "",
            "plus": "a b",
            "enc": "/&",
            "x": "%ZZ",
            "a[]": "2",
            "k": "",
        },
        "path_params": {"id": "7"},
        "headers": {"host": "127.0.0.1:3299", "x-r": "2", "x-latin": ""},
        "path": "obs/items/:id",
        "method": "GET",
        "body": None,
        "trigger": {"type": "http", "path": "obs/items/:id", "method": "GET"},
    }
    assert request_body == request.started.request_body.ref("read")
    assert response == request.started.response.ref("write")


def test_the_parsed_json_body_is_passed_as_it_is(api: Api) -> None:
    api.route("/items/:id", "POST")
    request = api.begin("/items/1", method="POST", body={"a": [1, 2]})
    assert request.last_call().data["body"] == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        (b"application/json", True),
        (b"application/json; charset=utf-8", True),
        (b"Application/JSON", False),  # the engine's match is case-sensitive
        (b"application/x-www-form-urlencoded", False),
        (b"text/plain", False),
        (None, False),
    ],
)
def test_only_a_json_content_type_has_its_body_parsed(
    content_type: bytes | None, is_json: bool
) -> None:
    headers = [] if content_type is None else [("content-type", content_type)]
    assert RequestFacts("POST", "/x", "", headers).has_json_body() is is_json


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b'{"a":1,"b":[1,2]}', {"a": 1, "b": [1, 2]}),
        (b"{bad", None),
        (b"", None),
        (b'"text"', "text"),
        (b"\xff\xfe", None),
    ],
)
def test_a_json_body_that_does_not_parse_is_null(raw: bytes, parsed: Any) -> None:
    assert parse_json_body(raw) == parsed


def test_a_large_json_body_is_parsed_whole() -> None:
    # The engine reads a JSON body with no size limit (there is no body setting in iii-http).
    big = {"items": ["x" * 100] * 50_000}
    assert parse_json_body(orjson.dumps(big)) == big


# -- the response ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"status_code": 201, "headers": {"X-A": "1", "Content-Type": "text/plain"}, "body": "hi"},
         HttpReply(201, (("X-A", "1"), ("Content-Type", "text/plain")), b"hi")),
        ({"status_code": 201, "headers": {"X-A": "1"}, "body": "hi"},
         HttpReply(201, (("X-A", "1"), JSON_TYPE), b'"hi"')),
        ({"headers": ["X-B: 2", "bad", "X-C:  3 "], "body": {"k": 1}},
         HttpReply(200, (("X-B", "2"), ("X-C", "3"), JSON_TYPE), b'{"k":1}')),
        ({"status_code": 204}, HttpReply(204, (JSON_TYPE,), b"{}")),
        ({"headers": {"content-type": "application/json"}, "body": None},
         HttpReply(200, (("content-type", "application/json"),), b"")),
        ({"headers": {"content-type": "application/json"}, "body": {"z": 1}},
         HttpReply(200, (("content-type", "application/json"),), b'{"z":1}')),
        ({"body": None}, HttpReply(200, (JSON_TYPE,), b"null")),
        ({"headers": {"X-N": 5, "X-S": "s"}, "body": 1},
         HttpReply(200, (("X-S", "s"), JSON_TYPE), b"1")),
        ({"headers": {"Bad Name": "v", "x-nl": "a\r\nb"}, "body": 1},
         HttpReply(200, (JSON_TYPE,), b"1")),
        ("plain string", HttpReply(200, (JSON_TYPE,), b"{}")),
        ([1, 2], HttpReply(200, (JSON_TYPE,), b"{}")),
        ({"a": 1}, HttpReply(200, (JSON_TYPE,), b"{}")),
        ({"statusCode": 201, "body": "x"}, HttpReply(200, (JSON_TYPE,), b'"x"')),
        ({"status_code": "201", "body": "x"}, HttpReply(200, (JSON_TYPE,), b'"x"')),
        ({"status_code": 201.0, "body": "x"}, HttpReply(200, (JSON_TYPE,), b'"x"')),
        ({"status_code": True, "body": "x"}, HttpReply(200, (JSON_TYPE,), b'"x"')),
        ({"status_code": 999, "body": "x"}, HttpReply(999, (JSON_TYPE,), b'"x"')),
        ({"status_code": 600, "body": "x"}, HttpReply(600, (JSON_TYPE,), b'"x"')),
        ({"status_code": 99, "body": "x"}, HttpReply(200, (JSON_TYPE,), b'"x"')),
        ({"status_code": 1000, "body": "x"}, HttpReply(200, (JSON_TYPE,), b'"x"')),
        ({"status_code": 100, "body": "x"}, HttpReply(500, cors=False)),
    ],
)  # fmt: skip
def test_a_return_value_maps_to_a_response(result: Any, expected: HttpReply) -> None:
    assert response_from_result(result) == expected


def test_the_handlers_value_answers_and_frees_the_channels(api: Api) -> None:
    api.route("/items/:id")
    request = api.begin()
    assert request.channels_registered() == [True, True]
    assert request.replies() == []
    request.answer(result={"status_code": 201, "body": {"ok": True}})
    assert request.reply() == HttpReply(201, (JSON_TYPE,), b'{"ok":true}')
    # The engine removes both channels once the response is decided: an end the handler has
    # attached goes on, a late attach finds nothing.
    assert request.channels_registered() == [False, False]
    assert api.channel_count() == 0


def test_a_null_value_leaves_the_answer_to_the_response_channel(api: Api) -> None:
    api.route("/items/:id")
    request = api.begin()
    request.answer(result=None)
    assert request.replies() == []
    assert request.channels_registered() == [True, True]
    # The shell saw the first binary frame (or the writer closing): the request is over.
    api.http.end(request.id)
    assert request.channels_registered() == [False, False]
    request.advance(60)
    assert request.replies() == []  # no 504 after the channel decided
    api.http.end(request.id)  # idempotent


def test_the_engines_ends_of_the_channels_are_attached_already(api: Api) -> None:
    api.route("/items/:id")
    request = api.begin()
    registry = api.engine.state.channels
    body, response = request.started.request_body, request.started.response
    # The handler's ends attach once each; the engine holds the other two.
    assert registry.attach(body.id, body.access_key, "write") is None
    assert registry.attach(response.id, response.access_key, "read") is None
    assert registry.attach(body.id, body.access_key, "read") is body
    assert registry.attach(response.id, response.access_key, "write") is response


def test_a_value_after_the_channel_decided_is_dropped(api: Api) -> None:
    api.route("/items/:id")
    request = api.begin()
    api.http.end(request.id)
    request.answer(result={"status_code": 202, "body": "late"})
    assert request.replies() == []


def test_requests_leave_no_channels_behind(api: Api) -> None:
    api.route("/items/:id")
    for number in range(200):
        request = api.begin()
        if number % 2:
            request.answer(result=None)  # streamed: the channel decides
            api.http.end(request.id)
        else:
            request.answer(result={"body": number})
    assert api.channel_count() == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"type":"set_status","status_code":207}', (207, [])),
        (b'{"type":"set_status","status_code":100}', (100, [])),
        (b'{"type":"set_status","status_code":600}', (None, [])),
        (b'{"type":"set_status","status_code":"201"}', (None, [])),
        (b'{"type":"set_headers","headers":{"x-a":"1","x-n":5}}', (None, [("x-a", "1")])),
        (b'{"type":"set_headers","headers":["x-a: 1"]}', (None, [])),
        (b'{"type":"other"}', (None, [])),
        (b"not json", (None, [])),
        (b"[1]", (None, [])),
    ],
)
def test_response_channel_control_frames(text: bytes, expected: Any) -> None:
    assert control_frame(text) == expected


# -- failures and timeouts -------------------------------------------------------------------------


def test_a_failing_handler_gets_the_500_envelope_without_its_stacktrace(api: Api) -> None:
    api.route("/items/:id")
    request = api.begin()
    request.answer(error=ErrorBody("invocation_failed", "boom", stacktrace="Traceback ..."))
    reply = request.reply()
    expected_id = error_id(int((api.engine.now + WALL_CLOCK_OFFSET) * 1e9))
    assert (reply.status, reply.headers, reply.cors) == (500, (JSON_TYPE,), True)
    assert body_of(reply) == {
        "error": {"code": "invocation_failed", "message": "boom", "error_id": expected_id}
    }
    assert request.channels_registered() == [False, False]


def test_error_ids_are_the_low_48_bits_of_the_nanoseconds_in_hex() -> None:
    assert error_id(0x1234_9235548FB0CC) == "9235548fb0cc"
    assert error_id(0xFF) == "ff"


def test_a_function_gone_from_its_route_gets_function_not_found(api: Api) -> None:
    api.route("/items/:id")
    api.worker.send(UnregisterFunction(id="api::handler"))
    request = api.begin()
    error = body_of(request.reply())["error"]
    assert error["code"] == "function_not_found"
    assert error["message"] == "Function api::handler not found in namespace default"


def test_a_request_not_answered_within_default_timeout_gets_an_empty_504(api: Api) -> None:
    api.route("/items/:id")
    request = api.begin()
    request.advance(29.9)
    assert request.replies() == []
    request.advance(0.1)
    assert request.reply() == TIMED_OUT
    assert (TIMED_OUT.status, TIMED_OUT.headers, TIMED_OUT.body) == (504, (), b"")
    assert not TIMED_OUT.cors
    assert request.channels_registered() == [False, False]
    request.answer(result={"body": "too late"})
    assert request.replies() == [TIMED_OUT]


def test_default_timeout_is_the_blocks_setting() -> None:
    api = Api(HttpApiSettings(default_timeout_ms=200))
    api.function("api::handler")
    api.route("/items/:id")
    request = api.begin()
    request.answer(result=None)  # and the writer never closes
    request.advance(0.2)
    assert request.reply() == TIMED_OUT


def test_default_timeout_counts_from_when_the_shell_started_serving(api: Api) -> None:
    # The shell reads a JSON body before it begins the request in the core.
    api.route("/items/:id")
    facts = RequestFacts("GET", "/items/1", "", [])
    started_at = api.engine.now
    api.engine.now += 20
    started, outputs = api.http.begin(
        "late", api.matched("GET", "/items/1"), facts, None, api.engine.now, started_at=started_at
    )
    request = Request(api, "late", started, outputs)
    request.advance(9.9)
    assert request.replies() == []
    request.advance(0.1)
    assert request.reply() == TIMED_OUT


def test_an_answered_request_gets_no_504(api: Api) -> None:
    api.route("/items/:id")
    request = api.begin()
    request.answer(result={"body": 1})
    request.advance(60)
    assert len(request.replies()) == 1


# -- conditions ------------------------------------------------------------------------------------


@pytest.fixture
def guarded(api: Api) -> Api:
    api.function("api::cond")
    api.route("/items/:id", config={"condition_function_id": "api::cond"}, metadata={"m": 1})
    return api


def test_a_condition_sees_the_payload_without_channels_and_false_gets_422(guarded: Api) -> None:
    request = guarded.begin("/items/7", query="who=guest")
    condition = request.last_call("api::cond")
    assert condition.metadata is None
    assert set(condition.data) == {
        "query_params", "path_params", "headers", "path", "method", "body", "trigger",
    }  # fmt: skip
    request.answer("api::cond", result=False)
    assert request.reply() == CONDITION_NOT_MET
    assert body_of(CONDITION_NOT_MET) == {
        "error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"},
        "skipped": True,
    }
    assert [call.function_id for call in request.calls()] == ["api::cond"]
    assert request.channels_registered() == [False, False]


@pytest.mark.parametrize("result", [None, 0, True, "no", {"allow": False}])
def test_anything_but_false_from_the_condition_runs_the_handler(guarded: Api, result: Any) -> None:
    request = guarded.begin()
    request.answer("api::cond", result=result)
    assert request.last_call().metadata == {"m": 1}
    request.answer(result={"body": "ran"})
    assert request.reply().body == b'"ran"'


def test_a_failing_condition_gets_the_500_envelope_with_its_error(guarded: Api) -> None:
    request = guarded.begin()
    request.answer("api::cond", error=ErrorBody("COND_BAD", "cond failed"))
    error = body_of(request.reply())["error"]
    assert (error["code"], error["message"]) == ("COND_BAD", "cond failed")
    assert [call.function_id for call in request.calls()] == ["api::cond"]


def test_a_missing_condition_function_gets_function_not_found(api: Api) -> None:
    # Worded as for any call the engine makes itself: no period, no namespace hint (a
    # worker's own call gets both).
    api.route("/items/:id", config={"condition_function_id": "api::no_such_cond"})
    error = body_of(api.begin().reply())["error"]
    assert error["code"] == "function_not_found"
    assert error["message"] == "Function api::no_such_cond not found in namespace default"


# -- middleware ------------------------------------------------------------------------------------


def with_middleware(*middleware: MiddlewareSettings) -> Api:
    api = Api(HttpApiSettings(middleware=middleware))
    api.function("api::handler", "mw::first", "mw::second", "mw::route", "api::cond")
    return api


def test_global_then_condition_then_route_middleware_then_the_handler() -> None:
    api = with_middleware(MiddlewareSettings("mw::first"), MiddlewareSettings("mw::second"))
    api.route(
        "/items/:id",
        "POST",
        config={"middleware_function_ids": ["mw::route"], "condition_function_id": "api::cond"},
    )
    request = api.begin(
        "/items/7", method="POST", query="q=1", headers=[("x-a", b"1")], body={"b": 1}
    )
    expected_input = {
        "phase": "preHandler",
        "request": {
            "path_params": {"id": "7"},
            "query_params": {"q": "1"},
            "headers": {"x-a": "1"},
            "method": "POST",
        },
        "context": {},
    }
    for function_id, result in (
        ("mw::first", {"action": "continue"}),
        ("mw::second", None),  # no valid action: go on
        ("api::cond", True),
        ("mw::route", {"action": "bogus"}),
    ):
        call = request.last_call(function_id)
        if function_id != "api::cond":
            assert (call.data, call.metadata) == (expected_input, None)
        request.answer(function_id, result=result)
    request.answer(result={"body": "done"})
    assert [call.function_id for call in request.calls()] == [
        "mw::first", "mw::second", "api::cond", "mw::route", "api::handler",
    ]  # fmt: skip
    assert request.reply().body == b'"done"'


def test_a_middleware_that_responds_answers_instead_of_the_handler() -> None:
    api = with_middleware()
    api.route("/items/:id", config={"middleware_function_ids": ["mw::first", "mw::route"]})
    request = api.begin()
    request.answer("mw::first", result={"action": "continue"})
    request.answer(
        "mw::route",
        result={
            "action": "respond",
            "response": {"status_code": 403, "body": {"denied": True}, "headers": {"x-mw": "1"}},
        },
    )
    assert request.reply() == HttpReply(403, (JSON_TYPE, ("x-mw", "1")), b'{"denied":true}')
    assert request.calls()[-1].function_id == "mw::route"
    assert request.channels_registered() == [False, False]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({}, HttpReply(200, (JSON_TYPE,), b"null")),
        (None, HttpReply(200, (JSON_TYPE,), b"null")),
        ({"body": "text"}, HttpReply(200, (JSON_TYPE,), b'"text"')),
        ({"status_code": 401, "headers": {"Content-Type": "text/plain"}, "body": "no"},
         HttpReply(401, (("Content-Type", "text/plain"),), b'"no"')),
        ({"headers": ["x-a: 1"]}, HttpReply(200, (JSON_TYPE,), b"null")),
        ({"headers": {"x-a": "1", "x-n": 2}}, HttpReply(200, (JSON_TYPE,), b"null")),
    ],
)  # fmt: skip
def test_a_middleware_response_is_always_json_with_headers_only_from_an_object_of_strings(
    response: Any, expected: HttpReply
) -> None:
    assert middleware_response(response) == expected


def test_a_failing_middleware_gets_the_500_envelope() -> None:
    api = with_middleware(MiddlewareSettings("mw::first"))
    api.route("/items/:id")
    request = api.begin()
    request.answer("mw::first", error=ErrorBody("MW_BAD", "mw failed"))
    error = body_of(request.reply())["error"]
    assert (error["code"], error["message"]) == ("MW_BAD", "mw failed")
    assert len(request.calls()) == 1


def test_a_middleware_that_does_not_answer_in_time_gets_middleware_timeout() -> None:
    api = with_middleware(MiddlewareSettings("mw::first"))
    api.route("/items/:id")
    request = api.begin()
    request.advance(30)
    assert request.reply() == MIDDLEWARE_TIMEOUT
    assert body_of(MIDDLEWARE_TIMEOUT) == {
        "error": {"code": "MIDDLEWARE_TIMEOUT", "message": "Middleware timeout"}
    }
    request.answer("mw::first", result={"action": "continue"})
    assert len(request.calls()) == 1  # nothing runs after the request is answered


def test_a_later_middleware_is_cut_by_the_request_timeout() -> None:
    # Each middleware has default_timeout of its own, but the whole request has it too.
    api = with_middleware(MiddlewareSettings("mw::first"))
    api.route("/items/:id", config={"middleware_function_ids": ["mw::route"]})
    request = api.begin()
    request.advance(10)
    request.answer("mw::first", result={"action": "continue"})
    request.advance(20)
    assert request.reply() == TIMED_OUT
    request.answer("mw::route", result={"action": "continue"})
    assert request.calls()[-1].function_id == "mw::route"


def test_global_middleware_comes_sorted_by_priority_and_only_pre_handler_runs() -> None:
    settings = read_http_block(
        {
            "middleware": [
                {"function_id": "mw::second", "priority": 2},
                {"function_id": "mw::never", "phase": "onResponse"},
                {"function_id": "mw::first", "priority": 1},
            ]
        }
    )
    assert [(m.function_id, m.phase) for m in settings.middleware] == [
        ("mw::never", "onResponse"), ("mw::first", "preHandler"), ("mw::second", "preHandler"),
    ]  # fmt: skip
    api = Api(settings)
    api.function("api::handler", "mw::first", "mw::second", "mw::never")
    api.route("/items/:id")
    request = api.begin()
    request.answer("mw::first", result={"action": "continue"})
    request.answer("mw::second", result={"action": "continue"})
    assert [call.function_id for call in request.calls()] == [
        "mw::first", "mw::second", "api::handler",
    ]  # fmt: skip


# -- CORS ------------------------------------------------------------------------------------------

VARY = ("vary", "origin, access-control-request-method, access-control-request-headers")


@pytest.mark.parametrize("origin", [None, "http://example.com"])
def test_without_a_cors_block_everything_is_allowed_and_the_origin_never_echoed(
    origin: str | None,
) -> None:
    assert cors_headers(None, origin, preflight=False) == (
        VARY,
        ("access-control-allow-origin", "*"),
        ("access-control-expose-headers", "*"),
    )
    assert cors_headers(None, origin, preflight=True) == (
        VARY,
        ("access-control-allow-methods", "*"),
        ("access-control-allow-headers", "*"),
        ("access-control-allow-origin", "*"),
    )


def test_a_cors_block_echoes_listed_origins_and_names_the_methods() -> None:
    cors = read_http_block(
        {"cors": {"allowed_origins": ["http://ok.example"], "allowed_methods": ["get", "POST"]}}
    ).cors
    assert cors == CorsSettings(("http://ok.example",), ("get", "POST"))
    assert cors_headers(cors, "http://ok.example", preflight=False) == (
        VARY,
        ("access-control-allow-origin", "http://ok.example"),
    )
    assert cors_headers(cors, "http://evil.example", preflight=False) == (VARY,)
    assert cors_headers(cors, None, preflight=True) == (
        VARY,
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "*"),
    )


@pytest.mark.parametrize("origins", ["*", [], ["http://a", "*"], None])
def test_an_empty_or_star_origin_list_allows_any_origin(origins: Any) -> None:
    cors = read_http_block({"cors": {"allowed_origins": origins}}).cors
    assert cors == CorsSettings(None, None)
    assert ("access-control-allow-origin", "*") in cors_headers(cors, "http://x", preflight=False)


# -- the iii-http block ----------------------------------------------------------------------------


def test_the_block_defaults_are_the_engines() -> None:
    assert read_http_block(None) == HttpApiSettings()
    settings = read_http_block({})
    assert (settings.port, settings.default_timeout_ms, settings.concurrency_request_limit) == (
        3111, 30000, 1024,
    )  # fmt: skip
    assert (settings.cors, settings.middleware) == (None, ())
    assert read_http_block({"concurrency_request_limit": 0}).concurrency_request_limit == 1


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"colour": "blue"}, "colour"),
        ({"max_body_size": 10}, "max_body_size"),  # the engine has no body limit to set
        ({"port": 70000}, "port"),
        ({"default_timeout": -1}, "default_timeout"),
        ({"host": ""}, "host"),
        ({"cors": {"allowed_origins": "http://a"}}, "cors.allowed_origins"),
        ({"middleware": [{"phase": "preHandler"}]}, "middleware.0"),
        ({"middleware": [{"function_id": "m", "priority": "1"}]}, "middleware.0.priority"),
    ],
)
def test_a_bad_block_is_refused_naming_the_key(block: Any, key: str) -> None:
    with pytest.raises(BlockError) as refused:
        read_http_block(block)
    assert refused.value.key == key
