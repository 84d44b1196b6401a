"""The dev engine's protocol core: everything the iii engine decides, and no I/O.

This package owns the engine side of the worker protocol (spec/protocol.md). None of its modules
imports trio, websockets or httpx (a test parses their imports): the trio shell in
:mod:`.._dev_engine` feeds it decoded messages and performs what it returns.

Where things are
----------------

- :mod:`._state`: :class:`EngineState`, the core: connections and their namespace state, the
  function table and its leases, worker-name leases, pending invocations, trigger types and
  bindings, reattach and cleanup.
- :mod:`._plugin`: the interface of the in-process (built-in) workers, which the core calls
  plugins: the functions and trigger types they provide, the worker events they follow, and the
  calls they start themselves, each continued by a callback when its result arrives.
- :mod:`._timers`: one deadline heap for the core and every plugin.
- :mod:`._introspection`: ``iii-engine-functions``, the ``engine::*`` functions and the
  discovery trigger types.
- :mod:`._channels`: the channel registry (section 6): ids, access keys, buffer sizes, which
  ends are attached, and the sweep of abandoned channels.
- :mod:`._enqueue`: how an enqueue action reaches the queue provider.
- :mod:`._pubsub`: ``iii-pubsub``, ``publish`` and the ``subscribe`` trigger type.
- :mod:`._queues`: ``iii-queue``, named and topic queues with retries and dead letters, and
  the provider of ``engine::queue::enqueue``.
- :mod:`._http_functions`: ``iii-http-functions``, HTTP-invoked functions: which endpoints are
  accepted, the requests the shell sends for their calls, and the answers made of the outcomes.
- :mod:`._cron` and :mod:`._cron_schedule`: ``iii-cron``, the ``cron`` trigger type, and the
  engine's cron grammar and fire times.
- :mod:`._observability`: ``iii-observability``, thinly: ``engine::log::*``, the ``log``
  trigger type, ``engine::health::check``, ``engine::baggage::*``.
- :mod:`._state_worker`, :mod:`._stream_worker`: ``iii-state`` and ``iii-stream``, the
  engine's key-value state and streams in memory, their ``state`` / ``stream`` trigger types
  and custom stream delegation; :mod:`._update_ops`, the update operations they share.
- :mod:`._http_api`: ``iii-http``, the ``http`` trigger type and the REST API's decisions:
  routes, the handler's payload, and responses made of return values.
- :mod:`._model`: the tables' records, the outputs, and the engine's text rules.

Theory of operation
-------------------

:class:`EngineState` is a synchronous state machine. The shell calls

- :meth:`EngineState.connect` when a worker's WebSocket opens,
- :meth:`EngineState.receive` for every message that worker sends, in arrival order,
- :meth:`EngineState.disconnect` once its socket is gone, and
- :meth:`EngineState.tick` whenever :meth:`EngineState.next_deadline` has passed,

passing the current time each time (the core never reads a clock). Every call returns a list of
outputs for the shell to perform in order: :class:`Send` a message to a connection,
:class:`CloseConnection`, :class:`TimerArmed` (wake the timer earlier), :class:`HttpRequest`
(perform an HTTP-invoked function's call, then report the outcome to the plugin that asked),
:class:`ChannelDropped` (release a swept channel's queue and sockets), or one of the
informational worker events the shell logs. Wall-clock values (cron's schedule, log timestamps)
are that time plus an offset the shell measures once (:meth:`EngineState.unix_time`).

Two shortcuts serve the messages every routed call consists of: :meth:`EngineState.route_invocation`
and :meth:`EngineState.route_result` take plain field values and return plain values, building
no message or output objects. They handle only the common case and decline anything else,
having changed nothing, for the shell to pass to :meth:`EngineState.receive`; tests drive twin
engines through both and compare every output.

Because every call runs to completion, the engine's spawned invocation tasks reduce to entries in
one global map of pending invocations keyed by invocation id, plus a per-connection in-flight set;
a result completes an entry (answering its caller, or running the continuation of a call the
engine started), a disconnect halts every entry in the connection's set. Namespace buffering
(section 2.5) drains in one step, which is one of the schedules the real engine allows (the
register call's reply then always follows the drain). A reattach evicts the old connection
synchronously, so the "wait for the old cleanup" of section 2.6 costs nothing here.

Where the spec is silent
------------------------

- Only ``engine::workers::register``'s input type name is known; the other built-ins' names in
  ``expected struct ...`` serde messages are plausible stand-ins.
- A worker cannot take over a built-in's id or one of the engine's own trigger types: the
  function is refused like any leased id (the owner being the in-process worker that provides
  it), the trigger type is ignored with a warning.
- A durable binding (``engine::register_trigger``) that its worker provider refuses is dropped,
  since its caller never learns its id.
- A registered trigger's ``worker_name`` is its registering worker's name, else the first
  ``::`` segment of its function id.
- Not provided yet, answered as an engine without the worker that provides them would:
  channels (``function_not_found``). Without the ``iii-queue`` plugin, enqueue fails with
  ``enqueue_error`` unless a worker registers ``engine::queue::enqueue``, as in an engine
  without a queue worker. HTTP-invoked functions are provided only when
  the shell installs the :class:`._http_functions.HttpFunctions` plugin (it always does); a
  core without it drops them as an engine without ``iii-http-functions`` does.
"""

from ._channels import ChannelRegistry as ChannelRegistry
from ._channels import StreamChannel as StreamChannel
from ._model import BASELINE_ENGINE_VERSION as BASELINE_ENGINE_VERSION
from ._model import ChannelDropped as ChannelDropped
from ._model import CloseConnection as CloseConnection
from ._model import EngineStatistics as EngineStatistics
from ._model import HttpRequest as HttpRequest
from ._model import NamespaceState as NamespaceState
from ._model import Output as Output
from ._model import Send as Send
from ._model import TimerArmed as TimerArmed
from ._model import WorkerAnnounced as WorkerAnnounced
from ._model import WorkerConnected as WorkerConnected
from ._model import WorkerDisconnected as WorkerDisconnected
from ._model import baggage_with_function_id as baggage_with_function_id
from ._model import canonical_uuid as canonical_uuid
from ._model import engine_traceparent as engine_traceparent
from ._model import sanitize_label as sanitize_label
from ._plugin import EnginePlugin as EnginePlugin
from ._state import EngineState as EngineState

__all__ = [
    "BASELINE_ENGINE_VERSION",
    "ChannelDropped",
    "ChannelRegistry",
    "CloseConnection",
    "EngineStatistics",
    "EnginePlugin",
    "EngineState",
    "HttpRequest",
    "NamespaceState",
    "Output",
    "Send",
    "StreamChannel",
    "TimerArmed",
    "WorkerAnnounced",
    "WorkerConnected",
    "WorkerDisconnected",
    "baggage_with_function_id",
    "engine_traceparent",
    "canonical_uuid",
    "sanitize_label",
]
