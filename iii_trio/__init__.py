"""iii_trio: a trio-native, structured-concurrency SDK for the iii engine.

::

    async with iii_trio.open_worker("ws://127.0.0.1:49134") as worker:
        worker.register_function("math::add", add)
        total = await worker.trigger("math::add", {"a": 1, "b": 2})
"""

import contextlib as _contextlib

from ._channels import Channel as Channel
from ._channels import ChannelReader as ChannelReader
from ._channels import ChannelWriter as ChannelWriter
from ._context import Context as Context
from ._context import get_context as get_context
from ._context import use_context as use_context
from ._exceptions import ChannelClosed as ChannelClosed
from ._exceptions import ConnectionLost as ConnectionLost
from ._exceptions import EngineUnavailable as EngineUnavailable
from ._exceptions import Forbidden as Forbidden
from ._exceptions import FunctionNotFound as FunctionNotFound
from ._exceptions import IIIError as IIIError
from ._exceptions import InvocationError as InvocationError
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import RegistrationRejected as RegistrationRejected
from ._exceptions import TriggerRegistrationError as TriggerRegistrationError
from ._exceptions import UnexpectedFrame as UnexpectedFrame
from ._http_invocation import HttpAuth as HttpAuth
from ._http_invocation import HttpInvocation as HttpInvocation
from ._http_types import ApiRequest as ApiRequest
from ._http_types import ApiResponse as ApiResponse
from ._http_types import ApiTrigger as ApiTrigger
from ._providers import TriggerProvider as TriggerProvider
from ._state_client import SetResult as SetResult
from ._state_client import State as State
from ._state_client import StateEvent as StateEvent
from ._state_client import UpdateOp as UpdateOp
from ._state_client import UpdateOpError as UpdateOpError
from ._state_client import UpdateResult as UpdateResult
from ._stream_client import StreamBackend as StreamBackend
from ._stream_client import Streams as Streams
from ._stream_event import StreamEvent as StreamEvent
from ._types import Backoff as Backoff
from ._types import ChannelRef as ChannelRef
from ._types import ConnectionState as ConnectionState
from ._types import FunctionInfo as FunctionInfo
from ._types import JSONValue as JSONValue
from ._types import TriggerConfig as TriggerConfig
from ._types import TriggerInfo as TriggerInfo
from ._types import TriggerTypeInfo as TriggerTypeInfo
from ._types import WorkerInfo as WorkerInfo
from ._version import __version__ as __version__
from ._worker import FunctionRef as FunctionRef
from ._worker import TriggerRef as TriggerRef
from ._worker import TriggerTypeRef as TriggerTypeRef
from ._worker import Worker as Worker
from ._worker import open_worker as open_worker

__all__ = [
    "ApiRequest",
    "ApiResponse",
    "ApiTrigger",
    "Backoff",
    "Channel",
    "ChannelClosed",
    "ChannelReader",
    "ChannelRef",
    "ChannelWriter",
    "ConnectionLost",
    "ConnectionState",
    "Context",
    "EngineUnavailable",
    "Forbidden",
    "FunctionInfo",
    "FunctionNotFound",
    "FunctionRef",
    "HttpAuth",
    "HttpInvocation",
    "IIIError",
    "InvocationError",
    "JSONValue",
    "ProtocolError",
    "RegistrationRejected",
    "SetResult",
    "State",
    "StateEvent",
    "StreamBackend",
    "StreamEvent",
    "Streams",
    "TriggerConfig",
    "TriggerInfo",
    "TriggerProvider",
    "TriggerRef",
    "TriggerRegistrationError",
    "TriggerTypeInfo",
    "TriggerTypeRef",
    "UnexpectedFrame",
    "UpdateOp",
    "UpdateOpError",
    "UpdateResult",
    "Worker",
    "WorkerInfo",
    "__version__",
    "get_context",
    "open_worker",
    "use_context",
]


def _fix_module_names() -> None:
    # Tracebacks and reprs say iii_trio.X, not iii_trio._module.X.
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith("iii_trio._"):
            with _contextlib.suppress(AttributeError, TypeError):  # read-only attributes
                value.__module__ = __name__


_fix_module_names()
