"""The value types of HTTP-invoked functions: :class:`HttpInvocation` and :class:`HttpAuth`.

An HTTP-invoked function has no handler in the worker: the engine calls an HTTP endpoint
whenever the function is invoked (spec/protocol.md section 9). The worker only registers where
that endpoint is and how to authenticate to it. Authentication names environment variables of
the *engine's* process; the engine reads the secrets there, so they never cross the worker's
socket. No I/O, no trio: plain frozen values, checked when they are built.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias
from urllib.parse import urlsplit

import attrs

from ._protocol._messages import ApiKeyAuth, BearerAuth, HmacAuth, HttpInvocationRef
from ._protocol._messages import HttpAuth as AuthRef

__all__ = ["HttpAuth", "HttpInvocation", "HttpMethod", "invocation_ref"]

HttpMethod: TypeAlias = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
_AUTH_KINDS: Final = ("bearer", "hmac", "api_key")
# RFC 9110 token: what a header name may be made of.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# The engine's timeout is an unsigned 64-bit number of milliseconds.
_MAX_TIMEOUT_MS: Final = 2**64 - 1


def _check_header_name(argument: str, name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a string, got {type(name).__name__}")
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{argument}: {name!r} is not a valid HTTP header name")


def _check_env_var_name(argument: str, name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(
            f"{argument} must be the name of an environment variable (a string), "
            f"got {type(name).__name__}"
        )
    if not name.strip() or "=" in name or "\0" in name:
        raise ValueError(
            f"{argument} must be the name of an environment variable on the engine host, "
            f"got {name!r}"
        )


@attrs.frozen
class HttpAuth:
    """How the engine authenticates its HTTP calls to an HTTP-invoked function.

    Build one with :meth:`bearer`, :meth:`hmac` or :meth:`api_key`. Each names an environment
    variable of the engine's process that holds the secret; the engine reads it when the
    function is registered, and only the name travels to the engine.

    Attributes:
        kind: ``"bearer"``, ``"hmac"`` or ``"api_key"``.
        env_var: the name of the environment variable holding the token, secret or key.
        header: the header that carries an API key (``api_key`` only, else ``None``).
    """

    kind: Literal["bearer", "hmac", "api_key"]
    env_var: str
    header: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in _AUTH_KINDS:
            raise ValueError(
                f"HttpAuth kind must be one of {', '.join(_AUTH_KINDS)}, got {self.kind!r} "
                "(use HttpAuth.bearer(), HttpAuth.hmac() or HttpAuth.api_key())"
            )
        _check_env_var_name("env_var", self.env_var)
        if self.kind == "api_key":
            _check_header_name("header", self.header)
        elif self.header is not None:
            raise ValueError(f"only api_key authentication takes a header, not {self.kind}")

    @classmethod
    def bearer(cls, token_key: str) -> HttpAuth:
        """``Authorization: Bearer <token>``, the token read from the engine's environment
        variable ``token_key``.

        Raises:
            TypeError: ``token_key`` is not a string.
            ValueError: ``token_key`` is blank or cannot be a variable name.
        """
        _check_env_var_name("token_key", token_key)
        return cls("bearer", token_key)

    @classmethod
    def hmac(cls, secret_key: str) -> HttpAuth:
        """An ``x-iii-Signature: sha256=<hex>`` header: HMAC-SHA256 of the timestamp and the
        body, keyed with the secret in the engine's environment variable ``secret_key``.

        The endpoint checks it by computing ``HMAC-SHA256(secret, f"{timestamp}:{b64}")``,
        where ``timestamp`` is the request's ``x-iii-Timestamp`` header and ``b64`` the
        standard base64 (with padding) of the exact body bytes.

        Raises:
            TypeError: ``secret_key`` is not a string.
            ValueError: ``secret_key`` is blank or cannot be a variable name.
        """
        _check_env_var_name("secret_key", secret_key)
        return cls("hmac", secret_key)

    @classmethod
    def api_key(cls, header: str, value_key: str) -> HttpAuth:
        """``<header>: <key>``, the key read from the engine's environment variable
        ``value_key``.

        Raises:
            TypeError: an argument is not a string.
            ValueError: ``header`` is not a valid header name, or ``value_key`` is blank or
                cannot be a variable name.
        """
        _check_header_name("header", header)
        _check_env_var_name("value_key", value_key)
        return cls("api_key", value_key, header)


def _check_url(_: object, __: attrs.Attribute[str], url: object) -> None:
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url is not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must be an absolute http:// or https:// URL, got {url!r}")
    if port == 0:
        raise ValueError(f"url has port 0, which no endpoint can listen on: {url!r}")
    if any(char.isspace() for char in url):
        raise ValueError(f"url must not contain whitespace: {url!r}")


def _upper_method(method: object) -> object:
    return method.upper() if isinstance(method, str) else method


def _check_method(_: object, __: attrs.Attribute[str], method: object) -> None:
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")


def _check_timeout(_: object, __: attrs.Attribute[int], timeout_ms: object) -> None:
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise TypeError(
            f"timeout_ms must be an int (milliseconds), got {type(timeout_ms).__name__}"
        )
    if not 0 < timeout_ms <= _MAX_TIMEOUT_MS:
        raise ValueError(f"timeout_ms must be a positive number of milliseconds, got {timeout_ms}")


def _frozen_headers(headers: object) -> object:
    if not isinstance(headers, Mapping):
        return headers  # the validator names it
    return types.MappingProxyType(dict(headers))


def _check_headers(_: object, __: attrs.Attribute[Mapping[str, str]], headers: object) -> None:
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, got {type(headers).__name__}")
    for name, value in headers.items():
        _check_header_name("headers", name)
        if not isinstance(value, str):
            raise TypeError(f"headers[{name!r}] must be a string, got {type(value).__name__}")
        if any(char in value for char in "\r\n\0"):
            raise ValueError(f"headers[{name!r}] must not contain CR, LF or NUL")


def _check_auth(_: object, __: attrs.Attribute[HttpAuth | None], auth: object) -> None:
    if auth is not None and not isinstance(auth, HttpAuth):
        raise TypeError(
            "auth must be HttpAuth.bearer(...), HttpAuth.hmac(...), HttpAuth.api_key(...) or "
            f"None, got {type(auth).__name__}"
        )


@attrs.frozen
class HttpInvocation:
    """An HTTP endpoint the engine calls each time the function is invoked.

    Pass it to :meth:`~iii_trio.Worker.register_function` in place of a handler::

        charge = HttpInvocation(
            "https://billing.internal/charge", auth=HttpAuth.bearer("BILLING_TOKEN")
        )
        worker.register_function("billing::charge", charge)

    The engine sends the invocation's payload as the JSON body, with ``Content-Type:
    application/json``, ``x-iii-Function-Path``, ``x-iii-Invocation-ID`` and
    ``x-iii-Timestamp`` headers, then ``headers``, then the authentication header. A 2xx JSON
    answer is the result (an empty one is no result); any other answer or a network error fails
    the invocation (codes ``http_error`` or the endpoint's own ``{"error": {"code", "message"}}``,
    ``invalid_response``, ``http_request_failed``, ``url_validation_failed``).

    Attributes:
        url: an absolute ``http://`` or ``https://`` URL. The engine checks it against its
            ``iii-http-functions`` security settings (HTTPS only, no private addresses, an
            allow-list of hosts, by default) and silently drops a registration it refuses.
        method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE`` (any case; kept uppercase).
        timeout_ms: the whole request's time limit in milliseconds, connecting included.
        headers: added to every request (read-only once built).
        auth: how the engine authenticates, or ``None``.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: the URL is not an absolute http(s) URL, the method is not one of the five,
            ``timeout_ms`` is not positive, or a header is not a valid name or value.
    """

    url: str = attrs.field(validator=_check_url)
    method: HttpMethod = attrs.field(
        default="POST", converter=_upper_method, validator=_check_method
    )
    timeout_ms: int = attrs.field(default=30_000, validator=_check_timeout)
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_headers, validator=_check_headers, hash=False
    )
    auth: HttpAuth | None = attrs.field(default=None, validator=_check_auth)


def invocation_ref(http: HttpInvocation) -> HttpInvocationRef:
    """``http`` as the ``invocation`` field of a ``registerfunction`` frame."""
    return HttpInvocationRef(
        url=http.url,
        method=http.method,
        timeout_ms=http.timeout_ms,
        headers=dict(http.headers),
        auth=None if http.auth is None else _auth_ref(http.auth),
    )


def _auth_ref(auth: HttpAuth) -> AuthRef:
    # Names of environment variables only: the secrets stay on the engine host.
    if auth.kind == "bearer":
        return BearerAuth(token_key=auth.env_var)
    if auth.kind == "hmac":
        return HmacAuth(secret_key=auth.env_var)
    assert auth.header is not None
    return ApiKeyAuth(header=auth.header, value_key=auth.env_var)
