"""The request and response of a function bound to an ``http`` trigger (engine.md 2.3-2.4).

The engine's HTTP worker invokes such a function with an object payload describing the request
and turns the function's return value into the HTTP response. :class:`ApiRequest` is that payload
as a value type (annotate the handler's payload parameter with it) and :class:`ApiResponse` is a
return value the engine reads the way it expects. Their conversions to and from JSON live here,
next to the types, and are installed on the handlers' converter by :func:`register_hooks`.

No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from ._types import JSONValue

__all__ = ["ApiRequest", "ApiResponse", "ApiTrigger", "register_hooks"]

#: Values that are JSON as they are; anything else goes through the converter.
_PLAIN_JSON: Final = frozenset({dict, list, str, int, float, bool, type(None)})


@attrs.frozen
class ApiTrigger:
    """The binding that routed an HTTP request, as the engine names it in the payload.

    Attributes:
        type: the trigger type (``"http"``).
        path: the route template exactly as registered (``"items/:id"``), not the request URL.
        method: the route's method as registered.
    """

    type: str
    path: str | None = None
    method: str | None = None


@attrs.frozen
class ApiRequest:
    """An HTTP request as the engine hands it to a function bound to an ``http`` trigger.

    Annotate a handler's payload parameter with it; the payload is structured into it, and a
    payload that does not fit (``headers`` that is not an object, a header value that is not a
    string...) fails the call with ``invalid_payload`` naming the field. Keys the engine may add
    later are ignored; keys it leaves out take the fields' defaults (empty maps, ``None``,
    ``method="GET"``, ``path=""``), so the ``request`` a middleware receives fits too.

    Attributes:
        path_params: the route's ``:name`` segments, taken from the raw path (not
            percent-decoded).
        query_params: the decoded query string; for a repeated key, the last value.
        body: the parsed JSON body when the request's ``content-type`` is JSON (``None`` when it
            is empty or not valid JSON); ``None`` for any other content type, whose raw bytes
            come only through ``request_body``.
        headers: request headers with lower-case names; for a repeated header, the last value.
        method: the request's method, upper-case.
        path: the route template exactly as registered (``"items/:id"``), not the request URL.
        trigger: the binding that routed the request, when the engine says.
        request_body: the channel carrying the raw request body: a live
            :class:`ChannelReader` when the engine sent one (the worker replaces a channel ref
            anywhere in a payload with a live end), else ``None``.
        response: the channel for a streamed response: a live :class:`ChannelWriter` (write
            ``{"type": "set_status", ...}`` / ``set_headers`` messages, then the body), else
            ``None``.
    """

    path_params: dict[str, str] = attrs.field(factory=dict)
    query_params: dict[str, str] = attrs.field(factory=dict)
    body: JSONValue = None
    headers: dict[str, str] = attrs.field(factory=dict)
    method: str = "GET"
    path: str = ""
    trigger: ApiTrigger | None = None
    request_body: JSONValue = None
    response: JSONValue = None


def _status_code(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ApiResponse.status_code must be an int, got {value!r}")
    if not 100 <= value <= 599:
        raise ValueError(f"ApiResponse.status_code must be from 100 to 599, got {value!r}")
    return int(value)  # http.HTTPStatus members are welcome; the wire gets a plain number


def _headers(value: Mapping[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            "ApiResponse.headers must be a mapping of header names to values, "
            f"got {type(value).__name__}"
        )
    entries: Mapping[Any, Any] = value  # what callers pass, whatever the annotation says
    for name, text in entries.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise TypeError(
                f"ApiResponse.headers must map strings to strings, got {name!r}: {text!r}"
            )
    return dict(value)  # a copy: the caller's dict may change after the response is built


@attrs.frozen
class ApiResponse:
    """What a function bound to an ``http`` trigger returns to shape its HTTP response.

    Returned from a handler (annotated or not), it goes to the engine as
    ``{"status_code": ..., "body": ..., "headers": {...}}``, the keys its HTTP worker reads;
    ``headers`` is left out when it is ``None``. ``body`` is sent as it is, ``None`` as JSON
    ``null``, and an attrs instance unstructured.

    How the engine turns ``body`` into bytes depends on the ``content-type`` header:

    - with a ``content-type`` given here (any case), a string body goes out as its UTF-8 text,
      ``None`` as an empty body, anything else as its JSON text;
    - without one, the body goes out as JSON (a string becomes a quoted JSON string, ``None``
      becomes ``null``) and the engine adds ``content-type: application/json``.

    So ``ApiResponse(204)`` answers with no body (HTTP allows none after 204 or 304, and the
    engine's server sends none), while an empty body with another status needs a
    ``content-type``: ``ApiResponse(404, headers={"content-type": "text/plain"})``.

    Attributes:
        status_code: the HTTP status, 100 to 599 (an ``http.HTTPStatus`` is taken as its
            number).
        body: the response body (see above for how it becomes bytes).
        headers: response headers to send, copied when the response is built; ``None``: none
            but the engine's own.

    Raises:
        TypeError: ``status_code`` is not an int, or ``headers`` is not a mapping of strings to
            strings.
        ValueError: ``status_code`` is outside 100-599.
    """

    status_code: int = attrs.field(converter=_status_code)
    body: JSONValue = None
    headers: dict[str, str] | None = attrs.field(default=None, converter=_headers)


def register_hooks(converter: cattrs.Converter) -> None:
    """Teach ``converter`` the engine's JSON shape of these types."""
    converter.register_unstructure_hook(ApiResponse, _response_unstructurer(converter))
    # ApiTrigger first: ApiRequest's generated hook takes the one registered for it by then.
    converter.register_unstructure_hook(
        ApiTrigger,
        make_dict_unstructure_fn(
            ApiTrigger,
            converter,
            path=override(omit_if_default=True),
            method=override(omit_if_default=True),
        ),
    )

    # The engine sends `trigger` only when it has one, and always sends the channel refs, so an
    # ApiRequest built by hand (in a test, say) becomes a payload without nulls it never sends.
    converter.register_unstructure_hook(
        ApiRequest,
        make_dict_unstructure_fn(
            ApiRequest,
            converter,
            trigger=override(omit_if_default=True),
            request_body=override(omit_if_default=True),
            response=override(omit_if_default=True),
        ),
    )


def _response_unstructurer(converter: cattrs.Converter) -> Callable[[ApiResponse], Any]:
    def unstructure(response: ApiResponse) -> dict[str, Any]:
        body = response.body
        shaped: dict[str, Any] = {
            "status_code": response.status_code,
            "body": body if type(body) in _PLAIN_JSON else converter.unstructure(body),
        }
        if response.headers is not None:
            shaped["headers"] = response.headers
        return shaped

    return unstructure
