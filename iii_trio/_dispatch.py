"""Serving incoming invocations: how a handler is called and how its outcome goes on the wire.

Everything about a handler that can be worked out once (is it async, does it take the payload,
does it want ``metadata``, which type its payload is structured into, its JSON Schemas) is worked
out by :func:`prepare_handler` at registration, so serving a call inspects nothing.

A handler's failure never escapes: a bad payload becomes ``invalid_payload``, an exception becomes
``invocation_failed`` with its traceback, a result that is not JSON becomes ``invocation_failed``
too. Cancellation (``trio.Cancelled``, a ``BaseException``) passes through untouched.

Channel refs anywhere in a payload reach the handler as live ends (:mod:`._channels`), which
belong to that invocation: they are closed before its result is sent, when the handler returns
or raises (a writer it used ends its stream after all it queued), or dropped when it is
cancelled. A payload holding a ref is never served inline, since the handler is to use its ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import dis
import functools
import inspect
import logging
import traceback
import types
import typing
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import cattrs
import trio

from ._channels import ChannelReader, ChannelWriter, close_ends
from ._context import enter_handler_context
from ._http_types import register_hooks as register_http_hooks
from ._protocol._channels import (
    has_channel_refs,
    is_channel_ref,
    ref_from_json,
    ref_to_json,
    replace_channel_refs,
)
from ._protocol._codec import encode, encode_result, strict_primitive
from ._protocol._messages import ErrorBody, InvocationResult, InvokeFunction
from ._schema import schema_for
from ._stream_event import register_hooks as register_stream_hooks
from ._transport import CLOSE_TIMEOUT, MAX_MESSAGE_SIZE
from ._types import ChannelRef

if typing.TYPE_CHECKING:
    from ._worker import Worker

__all__ = [
    "FailureListener",
    "PreparedHandler",
    "prepare_handler",
    "serve_inline",
    "serve_invocation",
    "to_json_value",
]

logger = logging.getLogger("iii_trio.dispatch")

#: Types that need no conversion to be sent as JSON.
_PLAIN_JSON: Final = frozenset({dict, list, str, int, float, bool, type(None)})
#: Payload annotations that mean "give me the raw JSON value".
_RAW_PAYLOAD: Final = frozenset({inspect.Parameter.empty, Any, object, dict, list})

_SENTINEL: Final = object()
#: Seconds a handler's channel ends get to close after it returned (each socket's own close is
#: bounded by the transport's close timeout; this bounds them all).
_ENDS_CLOSE_BOUND: Final = 2 * CLOSE_TIMEOUT


def _make_payload_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True)
    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, strict_primitive(kind))
    converter.register_structure_hook_factory(attrs.has, _objects_only(converter))
    register_http_hooks(converter)
    register_stream_hooks(converter)
    # A payload's refs are live ends by the time it is structured; an end given back is its ref.
    converter.register_structure_hook(ChannelReader, _live_end(ChannelReader, "read"))
    converter.register_structure_hook(ChannelWriter, _live_end(ChannelWriter, "write"))
    converter.register_structure_hook(ChannelRef, _structure_ref)
    for end in (ChannelReader, ChannelWriter):
        converter.register_unstructure_hook(end, lambda end: ref_to_json(end.ref))
    return converter


def _objects_only(converter: cattrs.Converter) -> Callable[[Any], Any]:
    """Structure attrs classes from JSON objects only.

    cattrs looks fields up with ``in`` and ``[]``, so a string or a list would otherwise pass for
    an object whose fields all have defaults.
    """

    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        from_dict = converter.gen_structure_attrs_fromdict(cls)

        def structure(value: Any, annotation: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected an object, got {_json_kind(value)}")
            return from_dict(value, annotation)

        return structure

    return factory


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _live_end(kind: type[Any], direction: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, kind):
            return value
        raise TypeError(f"expected a channel ref with direction {direction!r}, got {value!r}")

    return structure


def _structure_ref(value: Any, _: Any) -> ChannelRef:
    if isinstance(value, ChannelRef):
        return value
    if isinstance(value, ChannelReader | ChannelWriter):
        return value.ref
    if is_channel_ref(value):
        return ref_from_json(value)
    raise TypeError(f"expected a channel ref, got {value!r}")


#: Converts between JSON values and users' payload types (attrs classes and friends).
payload_converter: Final = _make_payload_converter()


class InvalidPayload(Exception):
    """The payload does not fit the handler's annotation; the message says where."""


@attrs.frozen
class PreparedHandler:
    """A user's handler with everything about how to call it decided in advance.

    ``call_inline`` is set for ``async def`` handlers that cannot suspend (no ``await``,
    ``async with`` or ``async for`` in their code): they run to completion wherever they are
    called, so the reader runs them itself instead of handing them to a task.
    """

    function_id: str
    call: Callable[[Any, Any], Awaitable[Any]]
    structure: Callable[[Any], Any] | None
    request_format: Any
    response_format: Any
    call_inline: Callable[[Any, Any], Any] | None = None


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data: attrs instances (and anything cattrs knows) unstructured."""
    if type(value) in _PLAIN_JSON:
        return value
    return payload_converter.unstructure(value)


def prepare_handler(function_id: str, handler: Callable[..., Any]) -> PreparedHandler:
    """Decide once how to call ``handler``.

    The first positional parameter (if any) receives the payload; a parameter named ``metadata``
    (positional or keyword-only) receives the invocation's metadata. If the payload parameter is
    annotated with a type cattrs can structure (an attrs class, ``int``, ``list[Item]``, ...),
    payloads are structured into it and a mismatch fails the call with ``invalid_payload``.

    Raises:
        TypeError: ``handler`` is not callable, or needs more arguments than a handler gets.
    """
    if not callable(handler):
        raise TypeError(f"handler for {function_id!r} must be callable, got {handler!r}")
    try:
        shape = _shape_of(handler)
    except _UnsuitableSignature as exc:
        raise TypeError(f"handler for {function_id!r} {exc}") from None
    structure: Callable[[Any], Any] | None = None
    if shape.payload_type is not _SENTINEL and not _is_raw(shape.payload_type):
        structure = _structurer(function_id, shape.payload_type)
    call = _caller(handler, takes_payload=shape.takes_payload, wants_metadata=shape.wants_metadata)
    return PreparedHandler(
        function_id=function_id,
        call=call,
        structure=structure,
        request_format=shape.request_format,
        response_format=shape.response_format,
        call_inline=_run_to_completion(call) if shape.never_suspends else None,
    )


class _UnsuitableSignature(Exception):
    """The handler cannot be called the way handlers are (the message says why)."""


@attrs.frozen
class _Shape:
    """What the inspection of a handler found; holds no reference to the handler itself."""

    takes_payload: bool
    wants_metadata: bool
    payload_type: Any
    request_format: Any
    response_format: Any
    never_suspends: bool


# One handler is often registered under many ids (a generic proxy, generated functions);
# inspecting signatures and evaluating annotations is the costly part of registering.
_shapes: weakref.WeakKeyDictionary[Callable[..., Any], _Shape] = weakref.WeakKeyDictionary()


def _shape_of(handler: Callable[..., Any]) -> _Shape:
    try:
        return _shapes[handler]
    except (KeyError, TypeError):  # TypeError: not weakly referenceable
        pass
    try:
        signature: inspect.Signature | None = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins have no signature: pass the payload
        signature = None
    takes_payload, payload_name, wants_metadata = _parameters(signature)
    hints = _type_hints(handler)
    payload_type = hints.get(payload_name, inspect.Parameter.empty) if payload_name else _SENTINEL
    shape = _Shape(
        takes_payload=takes_payload,
        wants_metadata=wants_metadata,
        payload_type=payload_type,
        request_format=_schema_or_none(payload_type),
        response_format=_schema_or_none(hints.get("return", inspect.Parameter.empty)),
        never_suspends=_never_suspends(handler),
    )
    with contextlib.suppress(TypeError):
        _shapes[handler] = shape
    return shape


# Every way an async function can suspend compiles to one of these in its own code object
# (the names differ between Python versions; those a version lacks are simply absent).
_SUSPENDING_OPCODES: Final = frozenset(
    dis.opmap[name]
    for name in (
        "YIELD_VALUE",
        "YIELD_FROM",
        "SEND",
        "GET_AWAITABLE",
        "BEFORE_ASYNC_WITH",
        "GET_AITER",
        "GET_ANEXT",
        "END_ASYNC_FOR",
    )
    if name in dis.opmap
)


def _never_suspends(handler: Callable[..., Any]) -> bool:
    """True for a plain ``async def`` whose body has no await point at all."""
    target = getattr(handler, "__func__", handler)  # bound methods
    code = getattr(target, "__code__", None)
    if not inspect.iscoroutinefunction(target) or not isinstance(code, types.CodeType):
        return False
    return _code_never_suspends(code)


@functools.lru_cache(maxsize=4096)
def _code_never_suspends(code: types.CodeType) -> bool:
    # Wordcode: every instruction is two bytes with the opcode first, so the even bytes are
    # exactly the opcodes (argument bytes, at odd offsets, are never mistaken for one).
    return _SUSPENDING_OPCODES.isdisjoint(code.co_code[::2])


def _run_to_completion(call: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Any]:
    def run(payload: Any, metadata: Any) -> Any:
        coroutine = call(payload, metadata)
        try:
            coroutine.send(None)  # type: ignore[attr-defined]
        except StopIteration as finished:
            return finished.value
        coroutine.close()  # type: ignore[attr-defined]
        raise RuntimeError("a handler judged unable to suspend suspended (please report this)")

    return run


def _parameters(signature: inspect.Signature | None) -> tuple[bool, str | None, bool]:
    if signature is None:
        return True, None, False
    kinds = inspect.Parameter
    positional: list[inspect.Parameter] = []
    wants_metadata = False
    var_positional = False
    for parameter in signature.parameters.values():
        if parameter.name == "metadata" and parameter.kind in (
            kinds.POSITIONAL_OR_KEYWORD,
            kinds.KEYWORD_ONLY,
        ):
            wants_metadata = True
        elif parameter.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD):
            positional.append(parameter)
        elif parameter.kind is kinds.VAR_POSITIONAL:
            var_positional = True
        elif parameter.kind is kinds.KEYWORD_ONLY and parameter.default is kinds.empty:
            raise _UnsuitableSignature(
                f"has a required keyword-only parameter {parameter.name!r}; "
                "a handler receives only the payload and metadata"
            )
    required_extra = [p for p in positional[1:] if p.default is kinds.empty]
    if required_extra:
        raise _UnsuitableSignature(
            f"needs {len(positional)} positional arguments; "
            "a handler receives only the payload (and a parameter named 'metadata')"
        )
    if positional:
        return True, positional[0].name, wants_metadata
    return var_positional, None, wants_metadata


def _type_hints(handler: Callable[..., Any]) -> dict[str, Any]:
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(target, "__call__", target)  # noqa: B004 - callable objects
    try:
        return typing.get_type_hints(target)
    except Exception:
        # Unresolvable annotations (forward references to missing names) mean: untyped.
        return {}


def _is_raw(annotation: Any) -> bool:
    if annotation in _RAW_PAYLOAD:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    return (origin is dict and args[1:] == (Any,)) or (origin is list and args == (Any,))


def _structurer(function_id: str, annotation: Any) -> Callable[[Any], Any]:
    try:
        hook = payload_converter.get_structure_hook(annotation)
    except Exception as exc:
        raise TypeError(
            f"handler for {function_id!r}: cannot structure payloads into {annotation!r}: {exc}"
        ) from None

    def structure(payload: Any) -> Any:
        try:
            return hook(payload, annotation)
        except Exception as exc:
            details = "; ".join(cattrs.transform_error(exc, path="payload")) or str(exc)
            raise InvalidPayload(f"invalid payload for {function_id}: {details}") from None

    return structure


def _schema_or_none(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty or annotation is _SENTINEL:
        return None
    return schema_for(annotation)


def _is_async(handler: Callable[..., Any]) -> bool:
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - callable objects
    return call is not None and inspect.iscoroutinefunction(call)


def _caller(
    handler: Callable[..., Any], *, takes_payload: bool, wants_metadata: bool
) -> Callable[[Any, Any], Awaitable[Any]]:
    if _is_async(handler):
        if takes_payload and wants_metadata:
            return lambda payload, metadata: handler(payload, metadata=metadata)
        if takes_payload:
            return lambda payload, _: handler(payload)
        if wants_metadata:
            return lambda _, metadata: handler(metadata=metadata)
        return lambda _, __: handler()

    # Sync handlers run in a worker thread so they cannot block the event loop. A thread cannot
    # be interrupted: leaving the worker's block waits for running sync handlers to return.
    async def call_sync(payload: Any, metadata: Any) -> Any:
        args = (payload,) if takes_payload else ()
        kwargs = {"metadata": metadata} if wants_metadata else {}
        return await trio.to_thread.run_sync(functools.partial(handler, *args, **kwargs))

    return call_sync


class FailureListener(typing.Protocol):
    """Told when an invocation's answer is an error (its span, when the worker traces)."""

    def failed(self, code: str, message: str) -> None: ...


def _error_frame(
    message: InvokeFunction,
    code: str,
    text: str,
    stacktrace: str | None,
    listener: FailureListener | None,
) -> bytes:
    if listener is not None:
        listener.failed(code, text)
    return encode(
        InvocationResult(
            invocation_id=message.invocation_id or "",
            function_id=message.function_id,
            error=ErrorBody(code=code, message=text, stacktrace=stacktrace),
        )
    )


class ResultSink(typing.Protocol):
    """Where an invocation's result frame goes (the session it came in on)."""

    async def send_result(self, frame: bytes) -> None: ...

    def result_dropped(self) -> None: ...


async def serve_invocation(
    handler: PreparedHandler | None,
    message: InvokeFunction,
    worker: Worker,
    sink: ResultSink,
    *,
    refusal: ErrorBody | None = None,
    listener: FailureListener | None = None,
) -> None:
    """Run one invocation to completion and send its result frame to ``sink``.

    Without a ``handler`` the answer is ``refusal``, by default ``function_not_found``.
    ``listener`` hears of an answer that is an error.
    """
    payload = _enter_invocation(message, worker)
    ends: list[ChannelReader | ChannelWriter] = []
    kind = type(payload)
    if kind is dict or kind is list:
        payload = replace_channel_refs(payload, functools.partial(_live, worker, ends))
    finished = False  # returned or raised; not cancelled
    try:
        if handler is None:
            if refusal is None:
                refusal = ErrorBody(
                    "function_not_found", f"Function '{message.function_id}' not found"
                )
            frame = _error_frame(message, refusal.code, refusal.message, None, listener)
        else:
            if handler.structure is not None:
                payload = handler.structure(payload)
            result = await handler.call(payload, message.metadata)
            finished = True
            frame = _result_frame(message, result, listener)
    except Exception as exc:
        finished = True
        frame = _failure_frame(message, exc, listener)
    finally:
        if ends:
            # Before the result goes out, so that its caller finds the streams complete. Each
            # socket's close is bounded by the transport's close timeout.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _ENDS_CLOSE_BOUND):
                await close_ends(ends, gracefully=finished)
    if message.invocation_id is None:
        # The engine always sends one (protocol.md 3.7); without it nobody could read a reply.
        logger.warning("invocation of %s came without an invocation_id", message.function_id)
        sink.result_dropped()
        await trio.lowlevel.checkpoint()
        return
    await sink.send_result(frame)


def serve_inline(
    handler: PreparedHandler,
    message: InvokeFunction,
    worker: Worker,
    span: Callable[[InvokeFunction], contextlib.AbstractContextManager[FailureListener]]
    | None = None,
) -> bytes | None:
    """Serve an invocation of a handler that cannot suspend, right here; return its result frame
    (None, having done nothing, when the payload holds a channel ref: its ends are the
    handler's to use, which takes a task).

    Runs in a fresh copy of the context, as a handler task would; inside ``span(message)`` when
    the worker traces, which hears of a failure.
    """
    if has_channel_refs(message.data):
        return None
    if span is None:
        return contextvars.copy_context().run(_serve_inline, handler, message, worker, None)
    with span(message) as listener:
        return contextvars.copy_context().run(_serve_inline, handler, message, worker, listener)


def _live(
    worker: Worker, ends: list[ChannelReader | ChannelWriter], ref: ChannelRef
) -> ChannelReader | ChannelWriter:
    end = worker._channels.end(ref)
    ends.append(end)
    return end


def _serve_inline(
    handler: PreparedHandler,
    message: InvokeFunction,
    worker: Worker,
    listener: FailureListener | None,
) -> bytes:
    payload = _enter_invocation(message, worker)
    call_inline = handler.call_inline
    assert call_inline is not None
    try:
        if handler.structure is not None:
            payload = handler.structure(payload)
        return _result_frame(message, call_inline(payload, message.metadata), listener)
    except Exception as exc:
        return _failure_frame(message, exc, listener)


def _enter_invocation(message: InvokeFunction, worker: Worker) -> Any:
    """Make ``message`` the current handler context; return the payload the handler sees."""
    payload = message.data
    caller_worker_id = None
    if type(payload) is dict:
        # The engine adds this key to object payloads; it belongs to the context, not the payload.
        caller_worker_id = payload.pop("_caller_worker_id", None)
    enter_handler_context(
        message, worker, caller_worker_id if type(caller_worker_id) is str else None
    )
    return payload


def _failure_frame(
    message: InvokeFunction, exc: Exception, listener: FailureListener | None
) -> bytes:
    if isinstance(exc, InvalidPayload):
        return _error_frame(message, "invalid_payload", str(exc), None, listener)
    logger.debug("handler of %s raised", message.function_id, exc_info=True)
    return _error_frame(message, "invocation_failed", str(exc) or repr(exc), _trace(exc), listener)


def _result_frame(message: InvokeFunction, result: Any, listener: FailureListener | None) -> bytes:
    if type(result) not in _PLAIN_JSON:
        result = payload_converter.unstructure(result)
    try:
        frame = encode_result(message.invocation_id or "", message.function_id, result)
    except TypeError as exc:
        return _error_frame(
            message,
            "invocation_failed",
            f"the result of {message.function_id} is not JSON-serializable: {exc}",
            None,
            listener,
        )
    if len(frame) > MAX_MESSAGE_SIZE:
        return _error_frame(
            message,
            "payload_too_large",
            f"the result of {message.function_id} is {len(frame)} bytes; the limit is "
            f"{MAX_MESSAGE_SIZE} (stream large data through a channel)",
            None,
            listener,
        )
    return frame


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
