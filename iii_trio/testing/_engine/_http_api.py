"""``iii-http``: the ``http`` trigger type and the decisions of the REST API
(spec/engine.md section 2, corrected by spec/engine-observed.md section 1).

The shell serves HTTP; this module decides everything that does not need a socket:

- the route table: :meth:`HttpApi.check_binding` refuses a bad ``api_path`` or a conflicting
  route, bindings replace each other per ``METHOD:path`` key, and :meth:`HttpApi.match` finds
  the route of a request (or says 404 / 405);
- the request pipeline: :meth:`HttpApi.begin` creates the ``request_body`` and ``response``
  channels, builds the handler's payload, runs the global middleware, asks the condition
  function, runs the route's middleware and calls the handler;
- the request's end: a reply that replaces the ``response`` channel (the handler's return
  value or error, a middleware's or the condition's answer, or the 504 once
  ``default_timeout`` has passed on the shell's clock) comes back as an
  :class:`HttpApiOutcome`; when the channel decides instead (its first binary frame, or its
  writer closing), the shell says so with :meth:`HttpApi.end`. Either way the request's two
  channels leave the registry then, as the engine removes them once the response is decided,
  streamed or not: a handler can still use an end it attached, but a late attach finds no
  channel;
- the response mapping: :func:`response_from_result` turns a handler's return value into
  status, headers and body bytes, and :func:`error_response` builds the error envelopes.

Where the dev engine differs from the engine
--------------------------------------------

- A ``*`` segment in ``api_path``, and the same path shape with other parameter names on
  another method, make the engine's router panic and stop serving the registering worker
  (engine-observed.md section 0.1). The dev engine refuses such a registration with
  ``trigger_registration_failed`` and the panic's text instead.
- The engine's timeout drops a request without its cleanup, so a request that ends in 504
  (or whose client leaves) keeps its channels in the engine's registry: until the sweep if an
  end was never attached, for good otherwise. The dev engine removes them as for any other
  request.
- The engine runs the global middleware before it creates the channels and reads a JSON
  body; the dev engine reads the body first, and its channels exist (unused) while the global
  middleware runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

import attrs
import orjson

from ..._protocol._messages import JSON, ErrorBody
from ._channels import StreamChannel
from ._conditions import run_if_condition_allows
from ._model import Binding, HttpApiOutcome, Output
from ._plugin import BuiltinFailure, EnginePlugin
from ._timers import Timer

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = [
    "HTTP_API",
    "HttpApi",
    "HttpApiSettings",
    "HttpReply",
    "RequestFacts",
    "error_response",
    "read_http_block",
    "response_from_result",
]

logger = logging.getLogger("iii_trio.dev_engine")

#: The worker's name, in the config file and in ``engine::workers::list``.
HTTP_API: Final = "iii-http"
HTTP_TRIGGER: Final = "http"
#: Methods a route can be registered for; others are accepted and never routed.
ROUTABLE_METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
#: The order in which the router lists a path's methods in ``allow``.
_ALLOW_ORDER: Final = ("GET", "HEAD", "POST", "PUT", "OPTIONS", "PATCH", "DELETE")
_JSON_CONTENT_TYPE: Final = ("content-type", "application/json")


@attrs.frozen
class MiddlewareSettings:
    """One global middleware of the ``iii-http`` block.

    Attributes:
        function_id: the middleware function.
        phase: only ``preHandler`` runs.
        priority: lower runs first.
    """

    function_id: str
    phase: str = "preHandler"
    priority: int = 0


@attrs.frozen
class CorsSettings:
    """The ``cors`` block: ``None`` in a list means any.

    Attributes:
        allowed_origins: the origins allowed, or ``None`` for any.
        allowed_methods: the methods allowed, or ``None`` for any.
    """

    allowed_origins: tuple[str, ...] | None = None
    allowed_methods: tuple[str, ...] | None = None


@attrs.frozen
class HttpApiSettings:
    """The ``iii-http`` block, read.

    Attributes:
        port: the REST API's port (0: any free one).
        host: the address it listens on; ``None`` (not given) is 127.0.0.1 in the dev engine,
            which, having no authentication, binds 0.0.0.0 only when told to.
        default_timeout_ms: how long a request may take until its response headers (504).
        concurrency_request_limit: requests handled at once; more wait.
        cors: the CORS settings; ``None`` is fully permissive.
        middleware: global middleware, by ascending priority.
    """

    port: int = 3111
    host: str | None = None
    default_timeout_ms: int = 30000
    concurrency_request_limit: int = 1024
    cors: CorsSettings | None = None
    middleware: tuple[MiddlewareSettings, ...] = ()


def _read_int(block: Mapping[object, object], key: str, default: int) -> int:
    from ._builtins import BlockError, describe_setting  # here: _builtins imports this module

    value = block.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BlockError(key, f"expected a non-negative integer, got {describe_setting(value)}")
    return value


def _read_origin_list(block: Mapping[object, object], key: str) -> tuple[str, ...] | None:
    from ._builtins import BlockError, describe_setting

    value = block.get(key)
    if value is None or value == "*":
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BlockError(
            f"cors.{key}", f"expected a list of strings, got {describe_setting(value)}"
        )
    if not value or "*" in value:
        return None
    return tuple(value)


def read_http_block(block: object) -> HttpApiSettings:
    """Read an ``iii-http`` config block (``None``: absent); unknown keys are refused."""
    from ._builtins import BlockError, describe_setting

    if block is None:
        return HttpApiSettings()
    if not isinstance(block, dict):
        raise BlockError("", f"expected a mapping, got {describe_setting(block)}")
    known = ("port", "host", "default_timeout", "concurrency_request_limit", "cors", "middleware")
    for key in block:
        if key not in known:
            raise BlockError(str(key), f"unknown field (expected one of {', '.join(known)})")
    port = _read_int(block, "port", 3111)
    if port > 65535:
        raise BlockError("port", f"expected a port number, got {port}")
    host = block.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        raise BlockError("host", f"expected an address, got {describe_setting(host)}")
    cors_block = block.get("cors")
    cors = None
    if cors_block is not None:
        if not isinstance(cors_block, dict):
            raise BlockError("cors", f"expected a mapping, got {describe_setting(cors_block)}")
        cors = CorsSettings(
            _read_origin_list(cors_block, "allowed_origins"),
            _read_origin_list(cors_block, "allowed_methods"),
        )
    middleware = []
    entries = block.get("middleware") or []
    if not isinstance(entries, list):
        raise BlockError("middleware", f"expected a list, got {describe_setting(entries)}")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("function_id"), str):
            raise BlockError(f"middleware.{index}", "expected a mapping with a `function_id`")
        phase = entry.get("phase", "preHandler")
        priority = entry.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise BlockError(f"middleware.{index}.priority", "expected an integer")
        middleware.append(MiddlewareSettings(entry["function_id"], str(phase), priority))
    middleware.sort(key=lambda item: item.priority)
    return HttpApiSettings(
        port=port,
        host=host,
        default_timeout_ms=_read_int(block, "default_timeout", 30000),
        concurrency_request_limit=max(1, _read_int(block, "concurrency_request_limit", 1024)),
        cors=cors,
        middleware=tuple(middleware),
    )


@attrs.frozen
class Route:
    """One live ``http`` binding, as the router holds it."""

    binding: Binding
    method: str
    #: ``api_path`` exactly as registered (the payload's ``path``).
    template: str
    #: The path's segments without the leading slash; ``:name`` segments are parameters.
    segments: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.method}:{'/'.join(self.segments)}"

    @property
    def shape(self) -> tuple[str | None, ...]:
        """The segments with every parameter as ``None``: routes of one shape match alike."""
        return tuple(None if segment.startswith(":") else segment for segment in self.segments)

    def describe(self) -> str:
        return f"{self.method} /{'/'.join(self.segments)}"


def _route_of(binding: Binding) -> Route:
    config = binding.config if isinstance(binding.config, dict) else {}
    api_path = config.get("api_path")
    if not isinstance(api_path, str):
        raise BuiltinFailure(
            "trigger_registration_failed", "api_path is required for http triggers"
        )
    method = config.get("http_method")
    method = method.upper() if isinstance(method, str) else "GET"
    stripped = api_path[1:] if api_path.startswith("/") else api_path
    return Route(binding, method, api_path, tuple(stripped.split("/")))


@attrs.frozen
class RequestFacts:
    """What the shell read of one request before its body.

    Attributes:
        method: as received, upper-case.
        path: the request target's path, percent-encoded as received.
        query: the raw query string (without ``?``).
        headers: ``(lower-case name, value bytes)`` in the order received.
    """

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, bytes]]

    def header_map(self) -> dict[str, JSON]:
        """Headers as the payload has them: the last of a repeated name wins, a value that
        is not UTF-8 is empty."""
        mapping: dict[str, JSON] = {}
        for name, value in self.headers:
            try:
                mapping[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                mapping[name] = ""
        return mapping

    def content_type(self) -> str:
        for name, value in reversed(self.headers):
            if name == "content-type":
                return value.decode("latin-1")
        return ""

    def has_json_body(self) -> bool:
        """The engine reads the whole body and parses it (a case-sensitive match)."""
        return "application/json" in self.content_type()


@attrs.frozen
class RouteMatch:
    """A request's route and its path parameters (raw, not percent-decoded)."""

    route: Route
    path_params: dict[str, JSON]


@attrs.frozen
class HttpReply:
    """A whole response: status, headers and body.

    Attributes:
        status: the status code.
        headers: ``(name, value)`` pairs, names as given.
        body: the body bytes.
        cors: whether the CORS headers are added (not to a 504 or a failed build).
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    cors: bool = True


NOT_FOUND: Final = HttpReply(
    404, (_JSON_CONTENT_TYPE,), b'{"error":{"code":"NOT_FOUND","message":"Not Found"}}'
)
CONDITION_NOT_MET: Final = HttpReply(
    422,
    (_JSON_CONTENT_TYPE,),
    b'{"error":{"code":"CONDITION_NOT_MET","message":"Request condition not met"},"skipped":true}',
)
#: The whole request took longer than ``default_timeout``.
TIMED_OUT: Final = HttpReply(504, cors=False)


_VARY: Final = ("vary", "origin, access-control-request-method, access-control-request-headers")


def cors_headers(
    cors: CorsSettings | None, origin: str | None, *, preflight: bool
) -> tuple[tuple[str, str], ...]:
    """The CORS layer's headers for one response (``origin``: the request's ``Origin``).

    Without a ``cors`` block every origin, method and header is allowed and every header
    exposed; with one, a listed origin is echoed (others get no ``allow-origin``), the listed
    methods are named, and nothing is exposed."""
    if cors is None:
        if preflight:
            return (
                _VARY,
                ("access-control-allow-methods", "*"),
                ("access-control-allow-headers", "*"),
                ("access-control-allow-origin", "*"),
            )
        return (
            _VARY,
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", "*"),
        )
    headers = [_VARY]
    if cors.allowed_origins is None:
        headers.append(("access-control-allow-origin", "*"))
    elif origin is not None and origin in cors.allowed_origins:
        headers.append(("access-control-allow-origin", origin))
    if preflight:
        methods = (
            "*"
            if cors.allowed_methods is None
            else ",".join(method.upper() for method in cors.allowed_methods)
        )
        headers.append(("access-control-allow-methods", methods))
        headers.append(("access-control-allow-headers", "*"))
    return tuple(headers)


def error_id(unix_nanos: int) -> str:
    """The engine's ``error_id``: the low 48 bits of the time in nanoseconds, in hex."""
    return format(unix_nanos & 0xFFFFFFFFFFFF, "x")


def error_response(error: ErrorBody, unix_nanos: int) -> HttpReply:
    """The 500 envelope of a failed handler, condition or middleware."""
    body = {
        "error": {"code": error.code, "message": error.message, "error_id": error_id(unix_nanos)}
    }
    return HttpReply(500, (_JSON_CONTENT_TYPE,), orjson.dumps(body))


def _valid_header(name: str, value: str) -> bool:
    if not name or any(c in name for c in ' \t\r\n:()<>@,;\\"/[]?={}') or not name.isascii():
        return False
    return "\r" not in value and "\n" not in value and "\0" not in value


def _headers_of(value: JSON) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        pairs = [(name, item) for name, item in value.items() if isinstance(item, str)]
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str) and ":" in item:
                name, _, text = item.partition(":")
                pairs.append((name.strip(), text.strip()))
    return [(name, text) for name, text in pairs if _valid_header(name, text)]


def response_from_result(result: JSON) -> HttpReply:
    """The response a handler's non-null return value makes (engine-observed.md 1.3)."""
    if not isinstance(result, dict):
        return HttpReply(200, (_JSON_CONTENT_TYPE,), b"{}")
    status = result.get("status_code")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
        status = 200
    if status == 100:
        # The engine fails to build such a response: a bare 500.
        return HttpReply(500, cors=False)
    headers = _headers_of(result.get("headers"))
    body = result.get("body", {})
    if any(name.lower() == "content-type" for name, _ in headers):
        if isinstance(body, str):
            data = body.encode("utf-8")
        elif body is None:
            data = b""
        else:
            data = orjson.dumps(body)
    else:
        data = orjson.dumps(body)
        headers.append(_JSON_CONTENT_TYPE)
    return HttpReply(status, tuple(headers), data)


def control_frame(text: bytes) -> tuple[int | None, list[tuple[str, str]]]:
    """A ``response`` channel text frame: the status it sets (100-599) and the headers it
    merges; anything else sets nothing."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, []
    if not isinstance(message, dict):
        return None, []
    kind = message.get("type")
    if kind == "set_status":
        status = message.get("status_code")
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
            return status, []
    elif kind == "set_headers":
        headers = message.get("headers")
        if isinstance(headers, dict):
            return None, _headers_of(headers)
    return None, []


@attrs.frozen
class StartedRequest:
    """A routed request's two channels; the engine's ends are attached already, and the shell
    holds them in process."""

    #: The engine writes the request's body here; the handler reads it.
    request_body: StreamChannel
    #: The handler writes its streamed response here; the engine reads it.
    response: StreamChannel


@attrs.define(eq=False)
class _LiveRequest:
    """A request whose response is not decided yet."""

    channels: StartedRequest
    #: The 504 after ``default_timeout``.
    timer: Timer | None = None


class HttpApi(EnginePlugin):
    """The ``iii-http`` worker's core: see the module docstring."""

    name = HTTP_API

    def __init__(self, settings: HttpApiSettings | None = None) -> None:
        self.settings = settings if settings is not None else HttpApiSettings()
        #: Live routes by key (``GET:a/:id``).
        self._routes: dict[str, Route] = {}
        #: Requests whose response is not decided yet, by request id.
        self._live: dict[str, _LiveRequest] = {}
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    @property
    def timeout(self) -> float:
        """``default_timeout`` in seconds: for a whole request, and for each middleware."""
        return self.settings.default_timeout_ms / 1000

    def trigger_types(self) -> Mapping[str, str]:
        return {HTTP_TRIGGER: "HTTP API trigger"}

    def check_binding(self, binding: Binding) -> None:
        route = _route_of(binding)
        if any(segment.startswith("*") for segment in route.segments):
            raise BuiltinFailure(
                "trigger_registration_failed",
                "Path segments must not start with `*`. For wildcard capture, use `{*wildcard}`.",
            )
        for other in self._routes.values():
            if other.key == route.key or other.shape != route.shape:
                continue
            if other.segments == route.segments:
                continue
            if other.method == route.method:
                raise BuiltinFailure(
                    "trigger_registration_failed",
                    f"Route '{route.describe()}' conflicts with already-registered route "
                    f"'{other.describe()}': routes with identical structure but different "
                    "path-parameter names are not supported",
                )
            raise BuiltinFailure(
                "trigger_registration_failed",
                f'Invalid route "{_axum_path(route)}": Insertion failed due to conflict with '
                f"previously registered route: {_axum_path(other)}",
            )

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        route = _route_of(binding)
        if route.method not in ROUTABLE_METHODS:
            logger.warning("trigger %s: Unsupported HTTP method: %s", binding.id, route.method)
        self._routes[route.key] = route

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        key = _route_of(binding).key
        route = self._routes.get(key)
        if route is not None and route.binding is binding:
            del self._routes[key]

    def _run_middleware(
        self,
        request_id: str,
        namespace: str,
        function_ids: Sequence[str],
        request: dict[str, JSON],
        answer: Callable[[HttpReply, list[Output]], None],
        proceed: Callable[[list[Output]], None],
        out: list[Output],
        index: int = 0,
    ) -> None:
        """Run ``function_ids`` in order, each bounded by ``default_timeout``, then
        ``proceed``; a ``respond``, an error or a timeout answers instead. Nothing more runs
        once the request is decided (a middleware that answers after the 504, say)."""
        if request_id not in self._live:
            return
        if index == len(function_ids):
            proceed(out)
            return
        engine = self._engine
        function_id = function_ids[index]
        done = False

        def timed_out(now: float, out: list[Output]) -> None:
            nonlocal done
            if not done:
                done = True
                logger.warning("middleware %s timed out", function_id)
                answer(MIDDLEWARE_TIMEOUT, out)

        timer = engine.arm(engine.now + self.timeout, timed_out, out)

        def decided(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            nonlocal done
            if done:
                return
            done = True
            timer.cancel()
            if error is not None:
                answer(error_response(error, self._unix_nanos()), out)
                return
            action = result.get("action") if isinstance(result, dict) else None
            if isinstance(result, dict) and action == "respond":
                answer(middleware_response(result.get("response")), out)
                return
            if action != "continue":
                logger.warning("middleware %s: no valid action; continuing", function_id)
            self._run_middleware(
                request_id, namespace, function_ids, request, answer, proceed, out, index + 1
            )

        engine.call_function(namespace, function_id, request, out, then=decided)

    def _unix_nanos(self) -> int:
        return int(self._engine.unix_time() * 1e9)

    # -- the shell's entry points ---------------------------------------------------------------

    def match(self, method: str, path: str) -> RouteMatch | HttpReply:
        """The route for ``method`` and ``path``, or the 404 / 405 answer.

        As the engine's router: the path is matched first, against every route whatever its
        method, and where several templates match, a literal segment beats a parameter at the
        first segment where they differ (``/p/fixed`` over ``/p/:a``); then the method, among
        that template's routes. A GET route also takes HEAD (its ``allow`` says so), but the
        engine's handler then finds no HEAD route and answers 404."""
        parts = tuple(path[1:].split("/")) if path.startswith("/") else (path,)
        best: tuple[int, ...] | None = None
        on_path: dict[str, Route] = {}
        params: dict[str, JSON] = {}
        for route in self._routes.values():
            if route.method not in ROUTABLE_METHODS or len(route.segments) != len(parts):
                continue
            matched = _path_params(route.segments, parts)
            if matched is None:
                continue
            priority = tuple(0 if segment.startswith(":") else 1 for segment in route.segments)
            if best is None or priority > best:
                best, on_path, params = priority, {}, matched
            if priority == best:
                # Same priority and both matching: the same template (registration refuses
                # one shape with other parameter names).
                on_path[route.method] = route
        if best is None:
            return NOT_FOUND
        route_for_method = on_path.get(method)
        if route_for_method is not None:
            return RouteMatch(route_for_method, params)
        if method == "HEAD" and "GET" in on_path:
            return NOT_FOUND
        allowed = set(on_path)
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ",".join(method for method in _ALLOW_ORDER if method in allowed)
        return HttpReply(405, (("allow", allow),))

    def preflight(self, path: str) -> HttpReply:
        """The CORS layer's answer to any ``OPTIONS`` request (no handler ever runs for one):
        200, empty, with ``allow`` when the path has routes and none of them is OPTIONS."""
        headers: list[tuple[str, str]] = []
        routed = self.match("OPTIONS", path)
        if isinstance(routed, HttpReply) and routed.status == 405:
            headers.extend(routed.headers)
        return HttpReply(200, tuple(headers))

    def begin(
        self,
        request_id: str,
        matched: RouteMatch,
        facts: RequestFacts,
        body: JSON,
        now: float,
        *,
        started_at: float | None = None,
    ) -> tuple[StartedRequest, list[Output]]:
        """Start a routed request: create its channels, run the middleware, ask the route's
        condition and call its handler. ``default_timeout`` counts from ``started_at``, when
        the shell started serving the request (it reads a JSON body first), else from ``now``.

        ``body`` is the parsed JSON body (``None`` when there is none or it is not JSON).
        A reply that replaces the ``response`` channel comes as an :class:`HttpApiOutcome`
        for ``request_id``; a handler that returns ``null`` leaves the answer to the channel
        (see :meth:`end`)."""
        engine = self._engine
        engine.now = now
        out: list[Output] = []
        channels = engine.channels
        started = StartedRequest(channels.create(None, now, out), channels.create(None, now, out))
        # The engine holds these two ends itself (the shell attaches them in process).
        channels.attach(started.request_body.id, started.request_body.access_key, "write")
        channels.attach(started.response.id, started.response.access_key, "read")
        live = self._live[request_id] = _LiveRequest(started)
        route = matched.route
        query: dict[str, JSON] = dict(parse_qsl(facts.query, keep_blank_values=True))
        payload: dict[str, JSON] = {
            "query_params": query,
            "path_params": matched.path_params,
            "headers": facts.header_map(),
            "path": route.template,
            "method": facts.method,
            "body": body,
            "trigger": {"type": HTTP_TRIGGER, "path": route.template, "method": route.method},
        }
        binding = route.binding
        middleware_input: dict[str, JSON] = {
            "phase": "preHandler",
            "request": {
                "path_params": matched.path_params,
                "query_params": query,
                "headers": payload["headers"],
                "method": facts.method,
            },
            "context": {},
        }

        def answer(reply: HttpReply, out: list[Output]) -> None:
            self._decide(request_id, reply, out)

        def failed(error: ErrorBody, out: list[Output]) -> None:
            answer(error_response(error, self._unix_nanos()), out)

        def finished(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            if error is not None:
                failed(error, out)
            elif result is not None:
                answer(response_from_result(result), out)

        def call_handler(out: list[Output]) -> None:
            full = dict(payload)
            full["request_body"] = started.request_body.ref("read")
            full["response"] = started.response.ref("write")
            engine.fire_binding(binding, full, out, then=finished)

        def route_middleware(out: list[Output]) -> None:
            self._run_middleware(
                request_id, binding.namespace, _route_middleware(binding), middleware_input,
                answer, call_handler, out,
            )  # fmt: skip

        def condition(out: list[Output]) -> None:
            run_if_condition_allows(
                engine,
                binding,
                payload,
                out,
                route_middleware,
                failed=failed,
                skipped=lambda out: answer(CONDITION_NOT_MET, out),
            )

        global_ids = [
            item.function_id for item in self.settings.middleware if item.phase == "preHandler"
        ]
        self._run_middleware(
            request_id, binding.namespace, global_ids, middleware_input, answer, condition, out
        )
        if request_id in self._live:
            # Armed after the first middleware's own timer: with the same deadline, that one
            # fires first and answers MIDDLEWARE_TIMEOUT, as the engine's does.
            live.timer = engine.arm(
                (now if started_at is None else started_at) + self.timeout,
                lambda now, out: self._decide(request_id, TIMED_OUT, out),
                out,
            )
        return started, out

    def end(self, request_id: str) -> None:
        """The ``response`` channel decided the response (its first binary frame, or its
        writer closing), or the shell gave the request up (its client left): forget the
        request, stop its timer and remove its channels from the registry. Outcomes that come
        later (the handler's return value, say) are dropped. Idempotent."""
        self._forget(request_id)

    def _decide(self, request_id: str, reply: HttpReply, out: list[Output]) -> None:
        if self._forget(request_id):
            out.append(HttpApiOutcome(request_id, reply))

    def _forget(self, request_id: str) -> bool:
        live = self._live.pop(request_id, None)
        if live is None:
            return False
        if live.timer is not None:
            live.timer.cancel()
        channels = self._engine.channels
        channels.discard(live.channels.request_body.id)
        channels.discard(live.channels.response.id)
        return True


def _path_params(segments: Sequence[str], parts: Sequence[str]) -> dict[str, JSON] | None:
    """The path parameters if ``parts`` match the template ``segments`` (a parameter takes
    one non-empty segment, raw), else ``None``."""
    params: dict[str, JSON] = {}
    for pattern, part in zip(segments, parts, strict=True):
        if pattern.startswith(":") and part:
            params[pattern[1:]] = part
        elif pattern != part:
            return None
    return params


def _route_middleware(binding: Binding) -> list[str]:
    config = binding.config if isinstance(binding.config, dict) else {}
    ids = config.get("middleware_function_ids")
    if not isinstance(ids, list):
        return []
    return [item for item in ids if isinstance(item, str)]


def middleware_response(response: JSON) -> HttpReply:
    """A middleware's ``respond``: its body always as JSON, its headers only from an object
    of strings (anything else: none), overriding the engine's."""
    if not isinstance(response, dict):
        response = {}
    status = response.get("status_code")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
        status = 200
    headers = response.get("headers")
    extra: list[tuple[str, str]] = []
    if isinstance(headers, dict) and all(isinstance(value, str) for value in headers.values()):
        extra = _headers_of(headers)
    names = {name.lower() for name, _ in extra}
    base = [pair for pair in (_JSON_CONTENT_TYPE,) if pair[0] not in names]
    return HttpReply(status, (*base, *extra), orjson.dumps(response.get("body")))


MIDDLEWARE_TIMEOUT: Final = HttpReply(
    504,
    (_JSON_CONTENT_TYPE,),
    b'{"error":{"code":"MIDDLEWARE_TIMEOUT","message":"Middleware timeout"}}',
)


def _axum_path(route: Route) -> str:
    segments = (
        "{" + segment[1:] + "}" if segment.startswith(":") else segment
        for segment in route.segments
    )
    return "/" + "/".join(segments)


def parse_json_body(data: bytes) -> JSON:
    """The payload's ``body`` for a JSON request: the parsed value, ``None`` if empty or bad."""
    if not data:
        return None
    try:
        value: JSON = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value
