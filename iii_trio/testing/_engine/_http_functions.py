"""``iii-http-functions``: HTTP-invoked functions (spec/protocol.md section 9), minus the HTTP.

A worker may register a function with an ``invocation`` (a URL, a method, headers, a timeout and
an authentication that names environment variables of the engine). The engine then performs its
calls itself, as HTTP requests, and the worker runs nothing. This plugin decides everything about
that except the I/O:

- at registration, whether the endpoint is acceptable: the URL against the security settings
  (:class:`HttpSecurity`, the engine's ``security`` block: ``require_https``,
  ``url_allowlist`` globs over the host, ``block_private_ips``) and the authentication's
  environment variables, read once from the engine's environment. A refusal drops the
  registration silently, as in the engine, and is logged at WARNING;
- per call, the request (:class:`._model.HttpRequest`: method, URL, body, headers, timeout),
  which the shell sends;
- from the outcome the shell reports back through :meth:`HttpFunctions.finish` (a status and a
  body, or a failure), the answer to the caller (section 9.3's table).

Where the dev engine differs from the engine
--------------------------------------------

- ``block_private_ips`` is checked here for addresses written in the URL and for ``localhost``
  (which resolves to loopback without asking DNS); any other host name is resolved by the shell
  before each request, so a name that points at a private address fails its calls with
  ``url_validation_failed`` / ``Private IP blocked`` instead of being dropped at registration.
- Hosts are compared as Python's URL parser writes them (lowercase; IPv6 in brackets, as the
  engine writes them); the engine also normalizes internationalized names and odd IPv4 forms.
- ``invalid_response`` carries orjson's message, not serde's, and ``http_error`` the standard
  reason phrase of the status as Python knows it.
"""

from __future__ import annotations

import fnmatch
import functools
import http
import ipaddress
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Final, TypeAlias
from urllib.parse import urlsplit

import attrs
import orjson

from ..._protocol._messages import (
    JSON,
    ApiKeyAuth,
    BearerAuth,
    ErrorBody,
    HmacAuth,
    HttpInvocationRef,
    RegisterFunction,
)
from ._model import Connection, HttpRequest, Output, RunInEngine
from ._plugin import Continuation, EnginePlugin

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "DNS_LOOKUP_FAILED",
    "ENGINE_SECURITY",
    "HTTP_FUNCTIONS",
    "HTTP_REQUEST_FAILED",
    "HTTP_RESPONSE_FAILED",
    "PERMISSIVE_SECURITY",
    "PRIVATE_IP_BLOCKED",
    "URL_VALIDATION_FAILED",
    "HttpFailure",
    "HttpFunctions",
    "HttpOutcome",
    "HttpResponse",
    "HttpSecurity",
    "answer_for",
    "is_private_address",
    "url_problem",
]

logger = logging.getLogger("iii_trio.dev_engine")

#: The worker's name, in the config file and in ``engine::workers::list``.
HTTP_FUNCTIONS: Final = "iii-http-functions"
#: The engine's time limit for a request whose registration names none.
DEFAULT_TIMEOUT_MS: Final = 30_000

URL_VALIDATION_FAILED: Final = "url_validation_failed"
HTTP_REQUEST_FAILED: Final = "http_request_failed"
HTTP_RESPONSE_FAILED: Final = "http_response_failed"

_INVALID_URL: Final = "Invalid URL"
_HTTPS_REQUIRED: Final = "HTTPS is required"
_NOT_ALLOWED: Final = "URL not in allowlist"
PRIVATE_IP_BLOCKED: Final = "Private IP blocked"
DNS_LOOKUP_FAILED: Final = "DNS lookup failed"

_U64_MAX: Final = 2**64 - 1

# The address ranges the engine refuses under block_private_ips.
_PRIVATE_V4: Final = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/32",  # unspecified
        "127.0.0.0/8",  # loopback
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",  # link-local
        "255.255.255.255/32",  # broadcast
        "192.0.2.0/24",  # documentation
        "198.51.100.0/24",
        "203.0.113.0/24",
    )
)
_PRIVATE_V6: Final = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)


@attrs.frozen
class HttpSecurity:
    """The ``security`` block of the ``iii-http-functions`` worker's config.

    The defaults are the engine's. The dev engine uses :data:`PERMISSIVE_SECURITY` unless its
    config file lists the worker.

    Attributes:
        url_allowlist: globs (``*``, ``?``, ``[...]``) one of which the URL's host must match.
        block_private_ips: refuse loopback, private, link-local and other local addresses.
        require_https: refuse URLs that are not ``https://``.
    """

    url_allowlist: tuple[str, ...] = ("*",)
    block_private_ips: bool = True
    require_https: bool = True


#: What the engine applies when its config lists the worker with no ``security`` block.
ENGINE_SECURITY: Final = HttpSecurity()
#: The dev engine's default: plain http and loopback allowed (protocol.md 9.1).
PERMISSIVE_SECURITY: Final = HttpSecurity(("*",), block_private_ips=False, require_https=False)


@attrs.frozen
class HttpResponse:
    """What an endpoint answered: its status and the whole body."""

    status: int
    body: bytes


@attrs.frozen
class HttpFailure:
    """A request that got no answer: ``code`` is :data:`URL_VALIDATION_FAILED` (the shell's
    DNS check refused it), :data:`HTTP_REQUEST_FAILED` (sending failed or timed out) or
    :data:`HTTP_RESPONSE_FAILED` (reading the body failed)."""

    code: str
    message: str


HttpOutcome: TypeAlias = HttpResponse | HttpFailure


def is_private_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``block_private_ips`` refuses ``address`` (IPv4-mapped IPv6 as its IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            return any(address in network for network in _PRIVATE_V6)
        address = mapped
    return any(address in network for network in _PRIVATE_V4)


def _is_localhost(host: str) -> bool:
    # RFC 6761: these names are loopback, whatever DNS would say.
    return host == "localhost" or host.endswith(".localhost")


def url_problem(url: str, security: HttpSecurity) -> tuple[str | None, str | None]:
    """Check ``url`` against ``security`` as the engine does, in its order.

    Returns:
        ``(problem, host_to_resolve)``: the engine's message for the first rule broken (else
        ``None``), and, when ``block_private_ips`` applies to a host name, that name, which
        must be resolved before each request and refused if any address is private.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number or is out of range
    except ValueError:
        return _INVALID_URL, None
    if not parts.scheme or any(char.isspace() for char in url):
        return _INVALID_URL, None
    if security.require_https and parts.scheme.lower() != "https":
        return _HTTPS_REQUIRED, None
    host = parts.hostname
    if not host:
        return _INVALID_URL, None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    glob_host = f"[{host}]" if isinstance(address, ipaddress.IPv6Address) else host
    if not any(fnmatch.fnmatchcase(glob_host, pattern) for pattern in security.url_allowlist):
        return _NOT_ALLOWED, None
    if not security.block_private_ips:
        return None, None
    if address is not None:
        return (PRIVATE_IP_BLOCKED if is_private_address(address) else None), None
    if _is_localhost(host):
        return PRIVATE_IP_BLOCKED, None
    return None, host


def answer_for(outcome: HttpOutcome) -> tuple[JSON, ErrorBody | None]:
    """The invocation's ``(result, error)`` for what the endpoint did (section 9.3)."""
    if isinstance(outcome, HttpFailure):
        return None, ErrorBody(outcome.code, outcome.message)
    status, body = outcome.status, outcome.body
    if 200 <= status < 300:
        if not body:
            return None, None
        try:
            return orjson.loads(body), None
        except orjson.JSONDecodeError as exc:
            return None, ErrorBody("invalid_response", str(exc))
    if status < 400:
        try:
            return orjson.loads(body), None
        except orjson.JSONDecodeError:
            return None, None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:
        details = parsed["error"]
        if not isinstance(details, dict):
            details = {}
        code = details.get("code")
        message = details.get("message")
        return None, ErrorBody(
            code if isinstance(code, str) else "http_error",
            message if isinstance(message, str) else "HTTP request failed",
        )
    return None, ErrorBody("http_error", f"HTTP {_status_line(status)}")


def _status_line(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "<unknown status code>"
    return f"{status} {phrase}"


@attrs.frozen
class _Endpoint:
    """An accepted registration: everything its calls need, credentials resolved."""

    function_id: str
    method: str
    url: str
    timeout: float
    #: The registered headers, then the bearer or API key header.
    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    hmac_secret: str | None = attrs.field(repr=False)
    check_host: str | None


class HttpFunctions(EnginePlugin):
    """The ``iii-http-functions`` worker: see the module docstring.

    Args:
        security: the URL rules registrations and calls must pass.
        environ: the engine's environment, where authentication reads its secrets.
    """

    name: ClassVar[str] = HTTP_FUNCTIONS

    def __init__(
        self,
        security: HttpSecurity = PERMISSIVE_SECURITY,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.security = security
        self._environ: Mapping[str, str] = {} if environ is None else environ
        #: Requests the shell is performing, by request id: who waits for each.
        self._waiting: dict[str, Continuation | None] = {}

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    @property
    def requests_in_flight(self) -> int:
        """Requests handed to the shell whose outcome has not come back yet."""
        return len(self._waiting)

    def http_function(
        self, connection: Connection, message: RegisterFunction
    ) -> RunInEngine | None:
        invocation = message.invocation
        assert invocation is not None
        try:
            endpoint = self._endpoint(message.id, invocation)
        except _Refused as refused:
            logger.warning(
                "%s: not registering HTTP-invoked function %s of worker %s: %s",
                HTTP_FUNCTIONS,
                message.id,
                connection.id,
                refused,
            )
            return None
        return functools.partial(self._call, endpoint)

    def _endpoint(self, function_id: str, invocation: HttpInvocationRef) -> _Endpoint:
        timeout_ms = invocation.timeout_ms
        if timeout_ms is None:
            timeout_ms = DEFAULT_TIMEOUT_MS
        elif not 0 <= timeout_ms <= _U64_MAX:
            # The engine reads an unsigned 64-bit number: the whole frame is invalid to it.
            raise _Refused(f"timeout_ms must be an unsigned integer, got {timeout_ms}")
        problem, check_host = url_problem(invocation.url, self.security)
        if problem is not None:
            raise _Refused(f"{URL_VALIDATION_FAILED}: {problem} ({invocation.url})")
        headers = [(name.lower(), value) for name, value in invocation.headers.items()]
        hmac_secret = None
        auth = invocation.auth
        if isinstance(auth, BearerAuth):
            headers.append(("authorization", f"Bearer {self._secret(auth.token_key, 'Token')}"))
        elif isinstance(auth, ApiKeyAuth):
            headers.append((auth.header.lower(), self._secret(auth.value_key, "API key")))
        elif isinstance(auth, HmacAuth):
            hmac_secret = self._secret(auth.secret_key, "Secret")
        return _Endpoint(
            function_id=function_id,
            method=invocation.method,
            url=invocation.url,
            timeout=timeout_ms / 1000,
            headers=tuple(headers),
            hmac_secret=hmac_secret,
            check_host=check_host,
        )

    def _secret(self, variable: str, what: str) -> str:
        value = self._environ.get(variable)
        if value is None:
            # The engine's messages; the variable's name only, never a value.
            raise _Refused(f"{what} not found: {variable} (set it in the engine's environment)")
        return value

    def _call(
        self, endpoint: _Endpoint, data: JSON, reply: Continuation | None, out: list[Output]
    ) -> None:
        # The engine gives each request an id of its own, not the invocation's.
        request_id = self._engine.new_id()
        self._waiting[request_id] = reply
        out.append(
            HttpRequest(
                request_id=request_id,
                method=endpoint.method,
                url=endpoint.url,
                # The engine's maps are ordered by key, so its compact JSON has sorted keys.
                body=orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
                timeout=endpoint.timeout,
                head=(
                    ("content-type", "application/json"),
                    ("x-iii-function-path", endpoint.function_id),
                    ("x-iii-invocation-id", request_id),
                ),
                tail=endpoint.headers,
                hmac_secret=endpoint.hmac_secret,
                check_host=endpoint.check_host,
            )
        )

    def finish(self, request_id: str, outcome: HttpOutcome) -> list[Output]:
        """The shell's report of what became of request ``request_id``; returns the outputs
        that answer its caller (none for an unknown id, or when nobody waits)."""
        out: list[Output] = []
        if request_id not in self._waiting:
            return out
        reply = self._waiting.pop(request_id)
        if reply is not None:
            result, error = answer_for(outcome)
            reply(result, error, out)
        return out


class _Refused(Exception):
    """A registration the engine would drop; the message says why (without secrets)."""
