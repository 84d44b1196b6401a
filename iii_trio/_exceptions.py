"""The iii_trio exception tree.

::

    IIIError
    ├── EngineUnavailable         cannot connect within the backoff budget (__cause__: last failure)
    ├── ConnectionLost            a trigger() was waiting when the connection dropped
    ├── ProtocolError             the engine sent something undecodable / out of order
    ├── RegistrationRejected      the engine refused this worker or one registration (.code)
    ├── ChannelClosed             the other end of a channel went away mid-stream (.channel_id)
    ├── UnexpectedFrame           a channel's next frame is text where bytes were asked, or back
    ├── TriggerRegistrationError  the engine refused a trigger binding (.code, .message)
    └── InvocationError           the remote function failed (.code, .message, .stacktrace, ...)
        ├── FunctionNotFound      code == "function_not_found"
        └── Forbidden             code == "FORBIDDEN" (the engine's access control said no)

Misuse after a worker's block has exited raises :class:`trio.ClosedResourceError`; cancellation
and :class:`trio.TooSlowError` pass through untouched. This module imports nothing but the stdlib,
so the sans-io layer can raise these types too.
"""

from __future__ import annotations

__all__ = [
    "ChannelClosed",
    "ConnectionLost",
    "EngineUnavailable",
    "Forbidden",
    "FunctionNotFound",
    "IIIError",
    "InvocationError",
    "ProtocolError",
    "RegistrationRejected",
    "TriggerRegistrationError",
    "UnexpectedFrame",
]


class IIIError(Exception):
    """Base class of every error iii_trio raises on its own account."""


class EngineUnavailable(IIIError):
    """The engine could not be reached within the :class:`~iii_trio.Backoff` budget, or cannot
    be reached at all (its TLS certificate was rejected: retrying would not help).

    ``__cause__`` is the failure of the last attempt.

    Attributes:
        url: the engine URL that was tried, without user info or query values.
        attempts: how many connection attempts were made in a row.
    """

    def __init__(self, message: str, *, url: str, attempts: int) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts


class ConnectionLost(IIIError):
    """The connection dropped while a call was waiting, so its result can never arrive."""


class ProtocolError(IIIError):
    """A frame could not be decoded, or arrived where the protocol does not allow it.

    Attributes:
        frame: the start of the offending frame (at most 200 characters), for diagnosis.
    """

    def __init__(
        self, message: str, *, frame: str | bytes | bytearray | memoryview | None = None
    ) -> None:
        super().__init__(message)
        if isinstance(frame, bytes | bytearray | memoryview):
            frame = bytes(frame[:200]).decode("utf-8", errors="replace")
        self.frame = frame[:200] if frame is not None else None


class RegistrationRejected(IIIError):
    """The engine refused this worker (fatal) or one of its registrations.

    Attributes:
        code: ``WORKER_NAMESPACE_CONFLICT``, ``FUNCTION_NAMESPACE_CONFLICT``, ``AUTH_ERROR``,
            ``FORBIDDEN`` or another code.
        message: the engine's explanation, when it gave one.
        namespace: the namespace the conflict happened in.
        worker_name: the contested worker name (worker conflicts).
        function_id: the contested function id (function conflicts).
        owner_worker_id: the worker that holds the lease.
    """

    def __init__(
        self,
        code: str,
        *,
        message: str | None = None,
        namespace: str = "",
        worker_name: str | None = None,
        function_id: str | None = None,
        owner_worker_id: str = "",
    ) -> None:
        subject = worker_name if worker_name is not None else function_id
        if message is None and subject is not None:
            holder = owner_worker_id or "the engine"
            message = f"{subject!r} in namespace {namespace!r} is held by {holder}"
        super().__init__(code if message is None else f"{code}: {message}")
        self.code = code
        self.message = message
        self.namespace = namespace
        self.worker_name = worker_name
        self.function_id = function_id
        self.owner_worker_id = owner_worker_id


class ChannelClosed(IIIError):
    """A channel cannot carry on: its end could not be opened, or the engine closed or dropped
    it while it was in use.

    Raised by a :class:`~iii_trio.ChannelWriter` whose reader went away (the engine then drops
    the writer's socket), whose end was attached already or whose channel does not exist (any
    more); by a :class:`~iii_trio.ChannelReader` whose connection to the engine was lost
    mid-stream or whose channel does not exist. A writer that ends its stream, even abruptly,
    is not an error for the reader: the reader sees the end of the stream (``b""``), as the
    engine cannot tell the two apart.

    Attributes:
        channel_id: the channel's id.
    """

    def __init__(self, message: str, *, channel_id: str) -> None:
        super().__init__(message)
        self.channel_id = channel_id


class UnexpectedFrame(IIIError):
    """A channel's next frame is not of the kind asked for: a text message where
    :meth:`~iii_trio.ChannelReader.receive_some` wants bytes, or binary data where
    :meth:`~iii_trio.ChannelReader.receive_message` wants text.

    Nothing was consumed: read the frame with the other method and carry on.

    Attributes:
        channel_id: the channel's id.
        is_text: the waiting frame is a text message (else binary data).
    """

    def __init__(self, message: str, *, channel_id: str, is_text: bool) -> None:
        super().__init__(message)
        self.channel_id = channel_id
        self.is_text = is_text


class TriggerRegistrationError(IIIError):
    """The engine, or the trigger type's provider, refused a trigger binding.

    Raised by :meth:`~iii_trio.Worker.register_trigger` when the engine refuses the binding at
    once; a refusal that comes later (a worker provider's) is kept on
    :attr:`~iii_trio.TriggerRef.rejection` instead, since nobody is waiting to be told.

    Attributes:
        code: ``INVALID_NAMESPACE``, ``FORBIDDEN``, ``trigger_registration_failed`` (a provider
            rejected the config) or another code.
        message: the engine's or the provider's explanation.
        trigger_id: the binding's id.
        trigger_type: the trigger type it was bound to.
        function_id: the function it was to call.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        trigger_id: str | None = None,
        trigger_type: str | None = None,
        function_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.trigger_id = trigger_id
        self.trigger_type = trigger_type
        self.function_id = function_id


class InvocationError(IIIError):
    """The invoked function failed, or the engine could not route the call.

    ``str(error)`` is ``"<code>: <message>"``; the remote traceback is kept in
    :attr:`stacktrace` and never printed as part of the message.

    Attributes:
        code: the error code: the failed function's own, ``invocation_failed`` (an iii-trio
            handler raised), ``invalid_payload`` (the payload did not fit its annotation),
            ``function_not_found``, ``invocation_stopped`` (its worker left first)...
        message: the explanation that came with the code.
        stacktrace: the remote traceback, when the failed handler's worker sent one.
        function_id: the function that was called.
        invocation_id: the call's invocation id, when it had one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        stacktrace: str | None = None,
        function_id: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stacktrace = stacktrace
        self.function_id = function_id
        self.invocation_id = invocation_id

    @staticmethod
    def from_error_body(
        code: str,
        message: str,
        stacktrace: str | None,
        *,
        function_id: str | None = None,
        invocation_id: str | None = None,
    ) -> InvocationError:
        """Build the most specific error class for a wire error body:
        :class:`FunctionNotFound` for ``function_not_found``, :class:`Forbidden` for
        ``FORBIDDEN``, else :class:`InvocationError`."""
        cls = _BY_CODE.get(code, InvocationError)
        return cls(
            code,
            message,
            stacktrace=stacktrace,
            function_id=function_id,
            invocation_id=invocation_id,
        )


class FunctionNotFound(InvocationError):
    """No function with that id is registered in the namespace the call resolved in."""


class Forbidden(InvocationError):
    """The engine's access control (RBAC) refused the call: the function is not exposed to this
    worker's session."""


_BY_CODE: dict[str, type[InvocationError]] = {
    "function_not_found": FunctionNotFound,
    "FORBIDDEN": Forbidden,
}
