"""The dev engine's I/O shell: loopback WebSockets around the sans-io :mod:`._engine` core.

Transport decision: connections are served by :func:`iii_trio._transport.serve_websockets`
(websockets' sans-I/O protocol driven straight from trio streams), not trio-websocket's
``serve_websocket``. Measured on the routed echo path: a raw-frame caller keeps 256 calls of
~100-byte payloads in flight to a raw-frame echo worker, both in a second process on loopback;
0.5 s warm-up, then 3 s per run, three interleaved rounds, the same engine core and shell behind
each server (trio-websocket through a small adapter, message_queue_size 1; 64 changed nothing),
on a shared 2-CPU machine:

    server                  calls/s           p50 / p99 latency        engine CPU per call
    serve_websockets        22,400 - 31,800   7.9-12.1 / 10.9-30.4 ms  ~19 us
    trio-websocket          3,900 - 5,300     48-67 / 89-92 ms         ~106-118 us

trio-websocket spends its time in a task hand-off and a memory channel per message and one
``send_all`` per frame; the sans-I/O driver parses every frame of a read at once and the writer
below frames a whole batch into one ``send_all``.

Routing cost (issue #3, part 3). ``python -m benchmarks.run --quick --kinds
iii-trio,bare-sansio --sections e2e`` (256 calls of 100 B in flight), three runs of the code
before (45828f9) and after, interleaved, on the shared 2-CPU machine; median [range]:

    pairing                                  before                  after
    iii-trio caller → engine → iii-trio echo 22,200 [20,500-22,200]  63,600 [63,400-68,700]
    bare caller → engine → bare echo         37,500 [35,100-38,000]  135,200 [130,900-141,700]
    engine CPU per routed call (bare pair)   ~19.5 us                ~6.9 us

With ``--sections load,e2e`` the ratio line read 5.43 [5.09-5.96] before (direct 108,900/s)
and 2.63 [2.32-2.65] after (direct 161,600/s: the transport's fast path speeds up the workers
too). The engine stopped being the limit (bare routing ratio 4.19 → 1.23); the iii-trio caller,
at ~80% of a core, is. Before, the three processes took turns: the engine wrote a read's
outputs only after routing all of it, so a burst crossed the pipeline as one convoy.

Task tree::

    serve_dev_engine                      (startable; open_dev_engine runs it in its nursery)
    ├── serve_websockets                  accepts upgrades; one handler task per connection
    │   └── _Server.handle                per worker connection:
    │       ├── reader (the handler)      decode → EngineState → queue frames → write them
    │       └── writer                    sends what the readers could not, one flush per batch
    │                                     per channel socket (/ws/channels/{id}, one task each):
    │                                     a writer's frames into the channel's bounded queue,
    │                                     or the queue out to its reader
    └── _Server.run_timers                sleeps until EngineState.next_deadline, then tick()

Channels (protocol.md section 6): the core's registry says which channels exist and attaches
each end once; the shell keeps each channel's queue of frames (``buffer_size`` of them) and
pumps it. A full queue stops the writer's socket being read, so the backpressure reaches the
writer through TCP, and memory per channel stays at ``buffer_size`` frames.

Every call into the core is synchronous and performing its outputs never blocks. Outputs are
encoded at once and queued in the target connection's outbox; the reader that produced them
writes them itself (every :data:`_WRITE_EVERY` frames of a read, and at its end) with one
non-blocking send per connection, as long as that connection's writer is idle. Whatever the
kernel does not take at once, and whatever is queued meanwhile, is the writer's.

Backpressure follows the engine (protocol.md 2.1) where that bounds memory, and bounds it where
the engine would not. The engine reads each connection's frames in order, spawns the handling of
every ``invokefunction`` and finishes handling anything else before the next frame; each
connection's outbound queue holds :data:`OUTBOX_CAPACITY` messages. Here:

- Invocations and results never make a reader wait: what they produce is queued at once, as the
  engine's spawned tasks would hold it. So a worker that stops reading is still read (its
  results keep reaching their callers), and an executor never waits for a slow caller.
- Any other frame (a pong, a registration's fan-out to a trigger provider) that queued output
  for a connection whose outbox is full makes its reader wait until that outbox has room.
- What the engine would hold in spawned tasks is bounded per connection instead: a connection
  is not read while :data:`CALL_LIMIT` of its calls wait for an answer or for their answer to
  be written to it. A client that keeps calling and never reads is held there: the rest of its
  calls stay in the socket buffers, it costs the engine at most CALL_LIMIT answers, and the
  workers it calls have at most CALL_LIMIT of its calls ahead of anyone else's. (Measured in
  tests/engine/test_dev_engine_limits.py: with such a client trying 100,000 calls, another
  caller of the same worker kept a p99 of about 2 ms and the engine grew by under 1 MiB.)

The two messages of every routed call (``invokefunction`` and ``invocationresult``, in their
common form) skip the message objects: the reader checks the decoded JSON the way the codec
would and calls :meth:`EngineState.route_invocation` / :meth:`EngineState.route_result`, which
answer with plain values; everything else goes through ``decode`` and
:meth:`EngineState.receive`. Tests check that both paths send the same frames.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import ipaddress
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, Literal, NoReturn, final

import orjson
import trio
import trio.testing

from .._exceptions import ProtocolError
from .._groups import raise_collapsed
from .._protocol._codec import decode, encode
from .._protocol._fastpath import (
    encode_call,
    encode_result,
    routable_invocation_id,
    successful_result_id,
)
from .._protocol._messages import JSON, InvocationResult, InvokeFunction, Message
from .._transport import (
    CLOSE_TIMEOUT,
    Payload,
    TransportClosed,
    UpgradeRequest,
    WebSocket,
    is_utf8,
    serve_websocket_stream,
    serve_websockets,
)
from .._version import __version__
from ._config import (
    DEFAULT_LISTENER_HOST,
    EngineConfig,
    read_config,
    resolve_listeners,
)
from ._engine import (
    BASELINE_ENGINE_VERSION,
    ChannelDropped,
    CloseConnection,
    EngineState,
    EngineStatistics,
    HttpRequest,
    Output,
    Send,
    TimerArmed,
    WorkerAnnounced,
    WorkerConnected,
    WorkerDisconnected,
)
from ._engine._builtins import builtin_plugins, check_names
from ._engine._http_api import HTTP_API, HttpApi, RequestFacts, RouteMatch
from ._engine._http_functions import PERMISSIVE_SECURITY, HttpFunctions, HttpOutcome
from ._engine._model import HttpApiOutcome
from ._engine._observability import Observability

if TYPE_CHECKING:
    from ._http_api_server import HttpExchange
    from ._http_client import HttpCaller

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "DEV_ENGINE_VERSION",
    "OUTBOX_CAPACITY",
    "DevEngine",
    "engine_url",
    "load_config",
    "open_dev_engine",
    "serve_dev_engine",
]

logger = logging.getLogger("iii_trio.dev_engine")

#: Messages queued for one connection before its own reader waits (the engine's queue size).
OUTBOX_CAPACITY: Final = 64
#: Calls one connection may have waiting for workers' answers before it is no longer read.
CALL_LIMIT: Final = 1024
#: The engine's limit for a client to finish sending its upgrade request.
HANDSHAKE_TIMEOUT: Final = 10.0
DEFAULT_NAMESPACE_GRACE: Final = 5.0
#: The version the dev engine reports, and what ``__III_ENGINE_VERSION__`` stands for in a config.
DEV_ENGINE_VERSION: Final = f"{BASELINE_ENGINE_VERSION}+iii-trio.{__version__}"
_ABORT_GRACE: Final = 1.0
_TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")
_JSON_WHITESPACE: Final = frozenset(b" \t\r\n")
_CHANNEL_PATH: Final = "/ws/channels/"
#: Routed frames between two writes within one read (see _Server._route_frames).
_WRITE_EVERY: Final = 32
#: Channel frames a reader's socket gets in one write, at most (and bytes, roughly).
_CHANNEL_BATCH_FRAMES: Final = 64
_CHANNEL_BATCH_BYTES: Final = 1024 * 1024
#: The codec's logger: at DEBUG it reports unknown fields, which only its decode() does.
_codec_logger: Final = logging.getLogger("iii_trio.protocol")
#: What a reader routes without waiting for the outboxes it filled: invocations (the engine
#: spawns their handling) and results (the caller's limit bounds them; see _over_limits).
_NEVER_WAIT_AFTER: Final = (InvokeFunction, InvocationResult)


@final
class DevEngine:
    """A running dev engine, as yielded by :func:`open_dev_engine`.

    Attributes:
        url: the worker WebSocket URL of the main listener, ``ws://HOST:PORT``.
        host: the address the main listener is bound to.
        port: the main listener's port (the real one when 0 was asked for).
        urls: the URLs of every listener, the main one first: one per ``iii-worker-manager``
            entry of the config file, or just :attr:`url`. All of them serve the same engine.
        http_url: the REST API's URL, ``http://HOST:PORT`` (the ``iii-http`` worker's
            port, which serves ``http`` triggers), or ``None`` when that worker does not run.
    """

    def __init__(
        self,
        *,
        addresses: Sequence[tuple[str, int]],
        state: EngineState,
        serve_stream: Callable[[trio.abc.Stream], Awaitable[None]],
        nursery: trio.Nursery,
        http_address: tuple[str, int] | None = None,
    ) -> None:
        self.host, self.port = addresses[0]
        self.urls = tuple(_websocket_url(host, port) for host, port in addresses)
        self.url = self.urls[0]
        self.http_url: str | None = None
        if http_address is not None:
            http_host, http_port = http_address
            self.http_url = "http://" + _websocket_url(http_host, http_port)[len("ws://") :]
        self._state = state
        self._serve_stream = serve_stream
        self._nursery = nursery

    def statistics(self) -> EngineStatistics:
        """Counts of what the engine holds now, for tests and diagnostics.

        Returns:
            A frozen record of ints: ``connections`` (workers connected), ``functions``,
            ``trigger_types``, ``bindings`` (trigger bindings), ``services`` (declared with
            :meth:`~iii_trio.Worker.register_service`, which no engine function lists) and
            ``pending_invocations`` (calls waiting for their result).
        """
        return self._state.statistics()

    async def _open_memory_stream(self, host: str, port: int) -> trio.abc.Stream:
        """A connection to this engine over an in-memory stream instead of a socket (private:
        for ``open_worker(_open_stream=...)`` in tests that run on trio's mock clock, which
        real sockets would make flaky). ``host`` and ``port`` are ignored."""
        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._serve_stream, server)
        await trio.lowlevel.checkpoint()
        return client

    def __repr__(self) -> str:
        return f"<DevEngine {self.url}>"


def _websocket_url(host: str, port: int) -> str:
    url_host = f"[{host}]" if ":" in host else host
    return f"ws://{url_host}:{port}"


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> EngineConfig:
    """Read an iii engine config file (the engine's ``config.yaml`` format) for
    :func:`open_dev_engine`'s ``config=``.

    ``${VAR}`` placeholders read ``environ``, by default :data:`os.environ`. Reading a file
    once and passing the result to several engines saves reading it again; passing the path
    is the same otherwise.

    Raises:
        ConfigError: the file is not a valid config; the message names the file and the key.
        OSError: the file cannot be read.
    """
    return read_config(
        path,
        environ=os.environ if environ is None else environ,
        engine_version=DEV_ENGINE_VERSION,
    )


@asynccontextmanager
async def engine_url(variable: str = "III_URL") -> AsyncIterator[str]:
    """The URL of an engine for the block: the environment variable ``variable`` when it is set
    (an engine of your own), else a dev engine's, started for the block with
    :func:`open_dev_engine`'s defaults. What the examples use to run anywhere::

        async with engine_url() as url:
            async with iii_trio.open_worker(url) as worker:
                ...
    """
    url = os.environ.get(variable, "").strip()
    if url:
        await trio.lowlevel.checkpoint()
        yield url
        return
    async with open_dev_engine() as engine:
        yield engine.url


@asynccontextmanager
async def open_dev_engine(
    *,
    host: str | None = None,
    port: int | None = None,
    http_port: int | None = None,
    config: str | os.PathLike[str] | EngineConfig | None = None,
    namespace_grace: float | None = None,
    without: Collection[str] = (),
) -> AsyncIterator[DevEngine]:
    """Run an in-process iii engine on a loopback port for the duration of the block.

    It speaks the engine's wire protocol (spec/protocol.md) to any worker, ``iii_trio`` or
    official SDK alike::

        async with open_dev_engine() as engine:
            async with iii_trio.open_worker(engine.url) as worker:
                ...

    Args:
        host: address of the main listener; ``None`` means the config file's, else
            ``"127.0.0.1"``.
        port: port of the main listener; 0 picks a free one (see :attr:`DevEngine.port`).
            ``None`` means the config file's, else 0.
        http_port: port of the REST API (the ``iii-http`` worker, see
            :attr:`DevEngine.http_url`); 0 picks a free one. ``None`` means the config file's
            ``iii-http`` port, else 0.
        config: an iii engine config file (the path of a ``config.yaml``, or what
            :func:`load_config` read from one). Each of its ``iii-worker-manager`` entries is a
            listener, the first one the main one; ``host`` and ``port`` replace the main one's
            address when given. An ``iii-http-functions`` entry's ``security`` settings apply to
            HTTP-invoked functions. The built-in workers the dev engine runs (``iii-http``,
            ``iii-state``, ``iii-stream``, ``iii-queue``, ``iii-pubsub``, ``iii-cron``) run when
            listed, with their blocks; ``iii-observability`` always runs, with its entry's
            settings if there is one. Other workers are not emulated yet: each is logged once at
            INFO and ignored.
        namespace_grace: seconds a new connection's registrations wait for
            ``engine::workers::register`` before they go to namespace ``default``. Defaults to
            ``$III_NAMESPACE_GRACE_MS`` (milliseconds), else the config's
            ``registration_namespace_grace_ms``, else 5 s, as in the engine.
        without: built-in workers not to run (``"iii-queue"``, say). Without a config file the
            dev engine runs all of them with their defaults; with one, those it lists, each
            with its block, as the engine runs exactly what its file lists.

    HTTP-invoked functions (``register_function(id, HttpInvocation(...))``) are performed by
    the engine with the credentials of its own environment (``os.environ``). Without an
    ``iii-http-functions`` entry in ``config``, any ``http://`` or ``https://`` URL is accepted,
    loopback and private addresses included, which is what local development needs; the
    engine itself offers HTTP-invoked functions only when its config lists that worker, and
    then, by default, only over HTTPS to public addresses.

    Entering blocks until every listener is listening. Leaving drops every connection without
    a close frame, as the engine does on shutdown, and cancels all of the engine's tasks; it
    takes well under a second and nothing outlives the block.

    Raises:
        TypeError: ``http_port`` is not an int, or ``config`` is neither a path nor an
            :class:`EngineConfig`.
        ValueError: ``http_port`` is not a port number.
        ValueError: ``without`` names something that is not a built-in worker.
        ConfigError: the config file is not valid; the message names the file and the key.
        OSError: the config file cannot be read, or an address cannot be bound.
    """
    _check_http_port(http_port)
    _check_config_argument(config)
    _check_without(without)
    try:
        async with trio.open_nursery() as nursery:
            engine: DevEngine = await nursery.start(
                functools.partial(
                    serve_dev_engine,
                    host,
                    port,
                    config=config,
                    namespace_grace=namespace_grace,
                    without=without,
                    http_port=http_port,
                )
            )
            try:
                yield engine
            finally:
                nursery.cancel_scope.cancel(reason="open_dev_engine block exited")
    except BaseExceptionGroup as group:
        raise_collapsed(group)


async def serve_dev_engine(
    host: str | None = None,
    port: int | None = None,
    *,
    config: str | os.PathLike[str] | EngineConfig | None = None,
    namespace_grace: float | None = None,
    without: Collection[str] = (),
    http_port: int | None = None,
    task_status: trio.TaskStatus[DevEngine] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the dev engine on ``host:port`` (and the config file's other listeners) until
    cancelled.

    Start it with ``await nursery.start(serve_dev_engine, host, port)``, which returns the
    :class:`DevEngine` once every listener is listening. Each worker connecting, registering
    and leaving is logged at INFO on the ``iii_trio.dev_engine`` logger. The arguments are as
    for :func:`open_dev_engine`.

    Cancellation:
        Every connection is dropped without a close frame and every task ends.
    """
    _check_http_port(http_port)
    _check_config_argument(config)
    _check_without(without)
    if config is None or isinstance(config, EngineConfig):
        engine_config = config
    else:
        engine_config = await trio.to_thread.run_sync(load_config, config)
    listeners = resolve_listeners(
        engine_config,
        host,
        port,
        default_host=DEFAULT_LISTENER_HOST,
        default_port=0,
        handshake_timeout=HANDSHAKE_TIMEOUT,
    )
    grace = _namespace_grace(
        namespace_grace, None if engine_config is None else engine_config.namespace_grace_ms
    )
    if engine_config is not None:
        for note in engine_config.notes:
            logger.info("%s", note)
    http_security = None if engine_config is None else engine_config.http_security
    http_functions = HttpFunctions(
        PERMISSIVE_SECURITY if http_security is None else http_security, environ=os.environ
    )
    builtins = builtin_plugins(
        None if engine_config is None else engine_config.builtin_settings, without
    )
    state = EngineState(
        grace=grace,
        version=DEV_ENGINE_VERSION,
        started_at_ms=_unix_ms(),
        # Measured once: wall-clock values then follow trio's clock (cron under a MockClock).
        wall_clock_offset=time.time() - trio.current_time(),
        plugins=(
            *builtins,
            http_functions,
            Observability(None if engine_config is None else engine_config.observability),
        ),
    )
    server = _Server(state, http_functions)
    http_api = next((plugin for plugin in builtins if isinstance(plugin, HttpApi)), None)
    async with trio.open_nursery() as nursery:
        server.nursery = nursery
        addresses: list[tuple[str, int]] = []
        bound: list[str] = []
        # One server per listener, all feeding the same engine: where a worker connects
        # makes no difference to what it sees (no RBAC or middleware yet).
        for listener in listeners:
            sockets: list[trio.SocketListener] = await nursery.start(
                functools.partial(
                    serve_websockets,
                    server.handle,
                    server.route,
                    host=listener.host,
                    port=listener.port,
                    handshake_timeout=listener.handshake_timeout,
                    check_text=False,  # every frame is parsed by orjson: see _route_frames
                )
            )
            bound_port = sockets[0].socket.getsockname()[1]
            addresses.append((listener.host, bound_port))
            bound.extend(each.socket.getsockname()[0] for each in sockets)
            logger.info("dev engine listening on %s:%s", listener.host, bound_port)
        http_address = None
        if http_api is not None:
            server.http_api = http_api
            http_address = await _start_http_api(
                nursery, server, http_api, http_port, engine_config, bound
            )
        nursery.start_soon(server.run_timers)
        warn_if_exposed(bound)
        task_status.started(
            DevEngine(
                addresses=addresses,
                state=state,
                serve_stream=functools.partial(
                    serve_websocket_stream,
                    handler=server.handle,
                    route=server.route,
                    handshake_timeout=listeners[0].handshake_timeout,
                    check_text=False,
                ),
                nursery=nursery,
                http_address=http_address,
            )
        )
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _start_http_api(
    nursery: trio.Nursery,
    server: _Server,
    http_api: HttpApi,
    http_port: int | None,
    engine_config: EngineConfig | None,
    bound: list[str],
) -> tuple[str, int]:
    """Start the REST API's listener; returns its address."""
    from ._http_api_server import serve_http_api  # h11 is loaded only when this runs

    settings = http_api.settings
    configured = engine_config is not None and HTTP_API in engine_config.builtin_settings
    if http_port is None:
        http_port = settings.port if configured else 0
    http_host = DEFAULT_LISTENER_HOST if settings.host is None else settings.host
    sockets: list[trio.SocketListener] = await nursery.start(
        serve_http_api, http_api, server, http_host, http_port
    )
    bound_port = sockets[0].socket.getsockname()[1]
    bound.extend(each.socket.getsockname()[0] for each in sockets)
    logger.info("REST API listening on %s:%s", http_host, bound_port)
    return http_host, bound_port


def _check_http_port(http_port: object) -> None:
    if http_port is None:
        return
    if isinstance(http_port, bool) or not isinstance(http_port, int):
        raise TypeError(f"http_port must be an int or None, got {http_port!r}")
    if not 0 <= http_port <= 65535:
        raise ValueError(f"http_port must be between 0 and 65535, got {http_port}")


def _check_without(without: object) -> None:
    if isinstance(without, str) or not isinstance(without, Collection):
        raise TypeError(f"without must be a collection of worker names, got {without!r}")
    check_names(without, "without")


def _check_config_argument(config: object) -> None:
    if config is not None and not isinstance(config, str | os.PathLike | EngineConfig):
        raise TypeError(
            "config must be the path of an engine config file or an EngineConfig, "
            f"got {type(config).__name__}"
        )


def warn_if_exposed(addresses: list[str]) -> None:
    """Log a WARNING if any of the bound ``addresses`` is reachable from other machines: the dev
    engine has no authentication, so whoever reaches it can register and call functions."""
    exposed = [address for address in addresses if not _is_loopback(address)]
    if exposed:
        logger.warning(
            "the dev engine is listening on %s, which other machines may reach, and it has no "
            "authentication: anyone who can connect can register and call functions. Bind it to "
            "127.0.0.1 unless that is what you want.",
            ", ".join(exposed),
        )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:  # a name: only "localhost" is known to stay on this machine
        return address == "localhost"


def _namespace_grace(explicit: float | None, configured_ms: int | None = None) -> float:
    """The namespace grace in seconds: ``explicit``, else ``$III_NAMESPACE_GRACE_MS``, else the
    config file's ``configured_ms``, else the engine's 5 s (the engine's order, protocol.md
    2.5)."""
    if explicit is not None:
        if explicit < 0:
            raise ValueError(f"namespace_grace must be >= 0, got {explicit!r}")
        return explicit
    configured = os.environ.get("III_NAMESPACE_GRACE_MS")
    if configured is not None:
        try:
            milliseconds = int(configured)
        except ValueError:
            logger.warning("ignoring III_NAMESPACE_GRACE_MS=%r: not an integer", configured)
        else:
            if milliseconds >= 0:
                return milliseconds / 1000
            logger.warning("ignoring negative III_NAMESPACE_GRACE_MS=%r", configured)
    if configured_ms is not None:
        return configured_ms / 1000
    return DEFAULT_NAMESPACE_GRACE


def _unix_ms() -> int:
    # Wall-clock timestamps for connected_at_ms; trio's clock has no epoch.
    return int(time.time() * 1000)


class _Outbox:
    """One connection's output and the state of its closing.

    Frames are framed into the connection's WebSocket as they are produced, and written by the
    reader that produced them (:meth:`write_out`, once per chunk of routed frames: one
    non-blocking send while the writer task is idle) or else by the writer task; the
    WebSocket's :class:`~iii_trio._transport.FrameWriter` makes that choice. Frames framed but
    not yet taken by a write are what the backpressure rule counts: the outbox is full at
    :data:`OUTBOX_CAPACITY` of them. Answers to the connection's own calls are also counted
    until written, against its :data:`CALL_LIMIT`.
    """

    def __init__(self, websocket: WebSocket, dirty: list[_Outbox]) -> None:
        self.websocket = websocket
        self.writer = websocket.writer
        self.writer.max_frames = OUTBOX_CAPACITY
        self._dirty = dirty
        self._dirty_listed = False
        self._closing = False
        #: Drop the socket without a close frame when the connection ends.
        self.abort = False
        self.cancel_scope = trio.CancelScope()
        #: The frame numbers (FrameWriter.frames_framed) of the answers to this connection's
        #: own calls that are queued and not yet written, oldest first.
        self._answers: collections.deque[int] = collections.deque()

    def is_closing(self) -> bool:
        """No more frames are accepted; what was queued is still written before the close."""
        return self._closing

    def push(self, frame: bytes) -> None:
        """Queue ``frame``; it is written at the next :meth:`_Server._write_dirty`."""
        if self._closing:
            return
        try:
            self.websocket.send_text(frame)
        except (TransportClosed, trio.ClosedResourceError):
            self.finish()
            self.cancel_scope.cancel()
            return
        if not self._dirty_listed:
            self._dirty_listed = True
            self._dirty.append(self)

    def push_answer(self, frame: bytes) -> None:
        """Queue the answer to one of this connection's calls: it counts against the
        connection's :data:`CALL_LIMIT` until it is written."""
        self.push(frame)
        if not self._closing:
            self._answers.append(self.writer.frames_framed)
            self.answers_unsent()  # keeps the queue short for a connection that reads

    def answers_unsent(self) -> int:
        """How many answers to this connection's calls are queued and not yet written."""
        answers = self._answers
        sent = self.writer.frames_sent
        while answers and answers[0] <= sent:
            answers.popleft()
        return len(answers)

    def write_out(self) -> None:
        """Send what was queued: now if the kernel takes it, else by the writer task."""
        self._dirty_listed = False
        if not self.writer.write_soon():
            # No socket to try at once (an in-memory stream) and the writer task has not
            # started yet: it writes this on its first turn.
            self.writer.wake()

    def write_later(self) -> None:
        """Leave what was queued to the writer task, which writes it, and whatever else is
        queued until then, on its next turn (every :data:`_WRITE_EVERY` frames meanwhile)."""
        self._dirty_listed = False
        self.writer.write_burst(_WRITE_EVERY)

    def finish(self) -> None:
        self._closing = True

    @property
    def is_full(self) -> bool:
        return self.writer.over_high_water

    async def wait_for_room(self) -> None:
        """Wait until this outbox is no longer full, or is closing."""
        while self.is_full and not self._closing and self.writer.usable:
            await self.writer.wait_for_room()
        await trio.lowlevel.checkpoint()  # the loop may not have run


class _ChannelPipe:
    """A channel's bounded queue of frames, ``(is_text, payload)``, between its two sockets:
    ``buffer_size`` frames, as the engine's queue holds (protocol.md 6.5). Made when the first
    end attaches; either end may come first."""

    def __init__(self, buffer_size: int) -> None:
        # Typed by annotation: subscripting open_memory_channel costs a typing lookup per
        # call, and the REST API makes two of these per request.
        self.send: trio.MemorySendChannel[tuple[bool, Payload]]
        self.receive: trio.MemoryReceiveChannel[tuple[bool, Payload]]
        self.send, self.receive = trio.open_memory_channel(buffer_size)
        self.writer_attached = False
        self.reader_attached = False
        self.writer_done = False
        self.reader_done = False


class _Server:
    """Connects WebSocket connections, the timer and the :class:`EngineState` together."""

    def __init__(self, state: EngineState, http_functions: HttpFunctions | None = None) -> None:
        self._state = state
        #: The core's iii-http-functions plugin, which HTTP outcomes go back to.
        self._http_functions = http_functions
        #: Sends the HTTP-invoked functions' requests; made on the first one.
        self._http_caller: HttpCaller | None = None
        #: The engine's nursery, where the HTTP requests run.
        self.nursery: trio.Nursery | None = None
        self._outboxes: dict[str, _Outbox] = {}
        #: Outboxes that got frames since the last :meth:`_write_dirty`.
        self._dirty: list[_Outbox] = []
        self._timer_deadline = math.inf
        self._timer_wakeup = trio.Event()
        #: Set, when readers wait for their connection to go under its limits, as soon as
        #: calls finished or answers were written.
        self._progress = trio.Event()
        self._readers_waiting = 0
        #: The queues of channels with an end attached, by channel id (see _ChannelPipe).
        self._pipes: dict[str, _ChannelPipe] = {}
        #: The core's iii-http plugin, when it runs.
        self.http_api: HttpApi | None = None
        #: REST API requests whose response is not decided yet, by request id.
        self._http_exchanges: dict[str, HttpExchange] = {}
        self._http_request_ids = itertools.count()

    # -- routing -------------------------------------------------------------------------------

    def route(self, request: UpgradeRequest) -> tuple[int, str] | None:
        """Accept ``/`` and ``/otel``; answer channel and unknown paths like the engine."""
        if request.path in ("/", "/otel"):
            return None
        if request.path.startswith(_CHANNEL_PATH):
            channel_id = request.path[len(_CHANNEL_PATH) :]
            if not channel_id or "/" in channel_id:
                return 404, ""
            problem = _channel_query_problem(request.query)
            if problem is not None:
                return 400, f"Failed to deserialize query string: {problem}"
            if self._state.channels.lookup(channel_id, request.query["key"][0]) is None:
                return 404, "Channel not found"
            return None
        return 404, ""

    async def handle(self, websocket: WebSocket, request: UpgradeRequest) -> None:
        """Serve one accepted connection. Whatever happens on it ends it alone: a failure the
        client caused is handled where it arises; anything else is a bug of the dev engine,
        logged with its traceback, and still not allowed to take the other connections down."""
        try:
            if request.path == "/otel":
                await _discard_telemetry(websocket)
            elif request.path.startswith(_CHANNEL_PATH):
                await self._serve_channel(websocket, request)
            else:
                await self._serve_worker(websocket, request)
        except Exception:
            logger.exception("a connection from %s failed inside the dev engine", request.peer_host)
        await trio.lowlevel.checkpoint()  # the failure path may not have reached one

    # -- one worker connection ---------------------------------------------------------------------

    async def _serve_worker(self, websocket: WebSocket, request: UpgradeRequest) -> None:
        outbox = _Outbox(websocket, self._dirty)
        connection_id, outputs = self._state.connect(
            peer_host=request.peer_host, now=trio.current_time(), connected_at_ms=_unix_ms()
        )
        self._outboxes[connection_id] = outbox
        try:
            async with trio.open_nursery() as nursery:
                outbox.cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._write, outbox)
                self._perform(outputs)
                self._write_dirty()
                await self._read(connection_id, outbox)
                # The connection is over: clean up now (protocol.md 2.8), while what is queued
                # for it (a refusal, the close frame of a failure) goes out, before the writer
                # task is cancelled: cancelled in the middle of a write, it would cut a frame
                # and no close frame could follow. Bounded: the client may not read.
                self._disconnect(connection_id, outbox)
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await outbox.writer.flush_quietly()
                nursery.cancel_scope.cancel()
        finally:
            self._disconnect(connection_id, outbox)
            # Eviction and engine shutdown drop the socket without a close frame, as the engine
            # does; a cancelled scope around us means the engine is shutting down. Otherwise
            # the transport runs the closing handshake when this returns.
            if outbox.abort or trio.current_effective_deadline() == -math.inf:
                with trio.move_on_after(_ABORT_GRACE, shield=True):  # abort() never blocks
                    await websocket.abort()

    def _disconnect(self, connection_id: str, outbox: _Outbox) -> None:
        """The engine's disconnect cleanup for one connection (once; later calls do nothing)."""
        if self._outboxes.get(connection_id) is not outbox:
            return
        outbox.finish()
        del self._outboxes[connection_id]
        self._perform(self._state.disconnect(connection_id, trio.current_time()))
        self._write_dirty()
        self._report_progress()

    async def _read(self, connection_id: str, outbox: _Outbox) -> None:
        """Feed the connection's messages to the core until it closes or must stop."""
        websocket = outbox.websocket
        while not outbox.is_closing():
            if self._over_limits(connection_id, outbox):
                await self._wait_within_limits(connection_id, outbox)
                continue
            try:
                frames = await websocket.receive_messages()
            except (TransportClosed, trio.ClosedResourceError):
                break
            position = 0
            while position < len(frames) and not outbox.is_closing():
                position, full = self._route_frames(connection_id, outbox, frames, position)
                self._report_progress()
                if full is not None:
                    await full.wait_for_room()
                elif position < len(frames):
                    await self._wait_within_limits(connection_id, outbox)
        await trio.lowlevel.checkpoint()

    def _over_limits(self, connection_id: str, outbox: _Outbox) -> bool:
        """Whether the connection must not be read for now: too many of its calls wait for
        an answer or for their answer to be written (see the module's notes on backpressure)."""
        owed = self._state.calls_started(connection_id) + outbox.answers_unsent()
        return owed >= CALL_LIMIT

    async def _wait_within_limits(self, connection_id: str, outbox: _Outbox) -> None:
        while self._over_limits(connection_id, outbox) and not outbox.is_closing():
            self._readers_waiting += 1
            try:
                await self._progress.wait()
            finally:
                self._readers_waiting -= 1
        await trio.lowlevel.checkpoint()  # the loop may not have run

    def _report_progress(self) -> None:
        # Calls finish when results are routed or executors leave, and answers leave when a
        # writer finishes a write; every waiting reader then checks its own limits again
        # (waiting readers are rare, so there is no event per connection).
        if self._readers_waiting:
            self._progress.set()
            self._progress = trio.Event()

    def _route_frames(
        self,
        connection_id: str,
        outbox: _Outbox,
        frames: list[tuple[bool, Payload]],
        start: int,
    ) -> tuple[int, _Outbox | None]:
        """Handle the frames of one read from ``frames[start]`` on, in order, writing what they
        produce as it goes.

        Stops after a frame other than an invocation or a result that left a full outbox
        behind, returning where to go on from and that outbox, which the reader waits on first;
        stops with ``None`` instead of an outbox when the connection went over its limits; else
        returns ``(len(frames), None)``. See the module's notes on backpressure.

        Writing every :data:`_WRITE_EVERY` frames, rather than once at the end, lets the
        workers start on the first calls of a large read while the engine routes the rest.
        """
        # The two messages of every routed call are decoded and routed without building
        # message objects; anything unusual takes the general path, which decodes the frame
        # again. At DEBUG the codec reports unknown fields, so then everything takes it.
        fast = not _codec_logger.isEnabledFor(logging.DEBUG)
        now = trio.current_time()
        unwritten = 0
        for position in range(start, len(frames)):
            is_text, payload = frames[position]
            unwritten += 1
            if unwritten == _WRITE_EVERY:
                self._write_dirty()
                unwritten = 0
                if self._over_limits(connection_id, outbox):
                    return position, None
            if fast:
                try:
                    raw = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raw = None
                if type(raw) is dict:
                    tag = raw.get("type")
                    if tag == "invocationresult":
                        if self._route_result(connection_id, raw):
                            continue
                    elif tag == "invokefunction" and self._route_invocation(connection_id, raw):
                        continue
            try:
                message = _decode_frame(is_text, payload)
            except _NotUtf8:
                # The transport leaves this check to the parser (check_text=False), as every
                # frame is parsed here anyway: the connection fails with 1007 all the same.
                outbox.websocket.fail_invalid_text()
                break
            if message is not None:
                full = self._perform(self._state.receive(connection_id, message, now))
                if outbox.is_closing():
                    break
                if full is not None and not isinstance(message, _NEVER_WAIT_AFTER):
                    self._write_dirty()
                    return position + 1, full
        self._write_dirty()
        return len(frames), None

    def _route_result(self, connection_id: str, raw: dict[str, JSON]) -> bool:
        """:meth:`EngineState.route_result` for a decoded ``invocationresult`` frame the codec
        would decode without error; False when the general path must take it."""
        invocation_id = successful_result_id(raw)
        if invocation_id is None:
            return False
        result = raw.get("result")
        caller = self._state.route_result(connection_id, invocation_id, result)
        if type(caller) is bool:
            return caller
        target = self._outboxes.get(caller.connection.id)
        if target is None:
            return True
        target.push_answer(
            encode_result(
                caller.invocation_id,
                caller.function_id,
                result,
                traceparent=caller.traceparent,
                baggage=caller.baggage,
                from_wire=True,
            )
        )
        return True

    def _route_invocation(self, connection_id: str, raw: dict[str, JSON]) -> bool:
        """:meth:`EngineState.route_invocation` for a decoded ``invokefunction`` frame the codec
        would decode without error; False when the general path must take it."""
        invocation_id = routable_invocation_id(raw)
        if invocation_id is None:
            return False
        # The check proved these fields to be of the types the codec accepts.
        function_id: str = raw["function_id"]
        data = raw["data"]
        traceparent: str | None = raw.get("traceparent")
        baggage: str | None = raw.get("baggage")
        metadata = raw.get("metadata")
        namespace: str | None = raw.get("namespace")
        routed = self._state.route_invocation(
            connection_id,
            function_id,
            data,
            invocation_id,
            traceparent,
            baggage,
            metadata,
            namespace,
        )
        if routed is None:
            return False
        target = self._outboxes.get(routed[0])
        if target is not None:
            target.push(
                encode_call(
                    function_id,
                    data,
                    invocation_id,
                    metadata=metadata,
                    traceparent=routed[1],
                    baggage=routed[2],
                    from_wire=True,
                )
            )
        return True

    def _write_dirty(self) -> None:
        """Write out every outbox that got frames since the last call."""
        dirty = self._dirty
        if dirty:
            for outbox in dirty:
                outbox.write_out()
            dirty.clear()

    def _write_dirty_later(self) -> None:
        """Like :meth:`_write_dirty`, but through the writer tasks: for producers that run as
        many tasks at once, such as the REST API's requests, which then share one write per
        worker connection and scheduling round instead of making one each."""
        dirty = self._dirty
        if dirty:
            for outbox in dirty:
                outbox.write_later()
            dirty.clear()

    async def _write(self, outbox: _Outbox) -> None:
        """The connection's writer task: writes what the readers leave to it."""
        try:
            await outbox.writer.run(after_flush=self._report_progress)
        except TransportClosed:
            outbox.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()  # the failure path may not have reached one

    # -- channel data sockets (protocol.md 6.3-6.6) ------------------------------------------------

    async def _serve_channel(self, websocket: WebSocket, request: UpgradeRequest) -> None:
        """One end of a channel: a writer's frames go into the channel's queue, a reader gets
        them; the registry has checked the key in :meth:`route` and attaches each end once."""
        channel_id = request.path[len(_CHANNEL_PATH) :]
        direction: Literal["read", "write"] = (
            "read" if request.query["dir"][0] == "read" else "write"
        )
        try:
            channel = self._state.channels.attach(channel_id, request.query["key"][0], direction)
            if channel is None:
                # Attached already (or swept since the upgrade): the engine accepts the upgrade
                # and closes at once, with no status code.
                logger.debug("channel %s: its %s end is attached already", channel_id, direction)
                await websocket.aclose(code=None)
                return
            pipe = self._pipes.get(channel_id)
            if pipe is None:
                pipe = self._pipes[channel_id] = _ChannelPipe(channel.buffer_size)
            if direction == "write":
                pipe.writer_attached = True
                await self._take_from_writer(websocket, pipe)
            else:
                pipe.reader_attached = True
                await self._give_to_reader(websocket, pipe)
            self._release_pipe(channel_id, pipe, direction)
        finally:
            if trio.current_effective_deadline() == -math.inf:
                # The engine is shutting down: every socket is dropped without a close frame.
                with trio.move_on_after(_ABORT_GRACE, shield=True):
                    await websocket.abort()

    async def _take_from_writer(self, websocket: WebSocket, pipe: _ChannelPipe) -> None:
        """Queue every frame the writer sends, in order, text as text and binary as binary.

        While the queue is full this task waits instead of reading, so TCP carries the
        backpressure to the writer. The writer's close frame, or its socket failing or
        ending, releases the channel's sender: the reader sees the end of the stream once the
        queue is empty. If the reader has gone, the socket is dropped without a close frame.
        """
        queue = pipe.send
        reader_gone = False
        try:
            while not reader_gone:
                try:
                    frames = await websocket.receive_messages()
                except (TransportClosed, trio.ClosedResourceError):
                    break
                for is_text, payload in frames:
                    if is_text and not is_utf8(payload):  # check_text=False: ours to check
                        websocket.fail_invalid_text()
                        break  # the next receive reports the failed connection
                    try:
                        try:
                            queue.send_nowait((is_text, payload))
                        except trio.WouldBlock:
                            await queue.send((is_text, payload))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        reader_gone = True
                        break
        finally:
            queue.close()
        if reader_gone:
            await websocket.abort()
        else:
            await trio.lowlevel.checkpoint()  # the loop may have ended without one

    async def _give_to_reader(self, websocket: WebSocket, pipe: _ChannelPipe) -> None:
        """Send the reader every queued frame, in order, several per write; once the writer has
        finished and the queue is empty, a close frame without a status code.

        The engine never reads a reader's socket (so it never answers a ping there). A reader
        that went away is noticed when a write to it fails: the queue is closed then, which
        makes the writer's next frame drop the writer's socket.
        """
        queue = pipe.receive
        try:
            async for first in queue:
                batch = [first]
                size = len(first[1])
                while len(batch) < _CHANNEL_BATCH_FRAMES and size < _CHANNEL_BATCH_BYTES:
                    try:
                        item = queue.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(item)
                    size += len(item[1])
                for is_text, payload in batch:
                    if is_text:
                        websocket.send_text(bytes(payload))
                    else:
                        websocket.send_binary(payload)
                del batch
                await websocket.writer.flush()
        except (TransportClosed, trio.ClosedResourceError):
            queue.close()
            await websocket.abort()
            return
        finally:
            queue.close()
        await websocket.aclose(code=None)

    def _release_pipe(
        self, channel_id: str, pipe: _ChannelPipe, direction: Literal["read", "write"]
    ) -> None:
        if direction == "write":
            pipe.writer_done = True
        else:
            pipe.reader_done = True
        if pipe.writer_done and pipe.reader_done and self._pipes.get(channel_id) is pipe:
            del self._pipes[channel_id]

    def begin_http(
        self, matched: RouteMatch, facts: RequestFacts, body: JSON, started_at: float
    ) -> HttpExchange:
        """Start a routed REST API request (see :class:`._http_api_server.HttpApiBridge`)."""
        from ._http_api_server import HttpExchange

        assert self.http_api is not None
        request_id = str(next(self._http_request_ids))
        started, outputs = self.http_api.begin(
            request_id, matched, facts, body, trio.current_time(), started_at=started_at
        )
        # The engine is the writer of request_body and the reader of response (the core has
        # attached those ends); its frames use the same bounded queues a worker's socket
        # would. Made before the handler is called, so that its own attach finds them.
        body_pipe = self._pipes[started.request_body.id] = _ChannelPipe(
            started.request_body.buffer_size
        )
        body_pipe.writer_attached = True
        response_pipe = self._pipes[started.response.id] = _ChannelPipe(
            started.response.buffer_size
        )
        response_pipe.reader_attached = True
        exchange = HttpExchange(
            request_id,
            body_pipe.send,
            response_pipe.receive,
            started.request_body.id,
            started.response.id,
        )
        # Registered first: the outputs may answer it already (a handler that is gone).
        self._http_exchanges[request_id] = exchange
        self._perform(outputs)
        self._write_dirty_later()
        self._report_progress()
        return exchange

    def end_http(self, exchange: HttpExchange) -> None:
        """The ``response`` channel decided a REST API request's response, or the request was
        given up (see :class:`._http_api_server.HttpApiBridge`)."""
        if self._http_exchanges.pop(exchange.request_id, None) is None:
            return
        assert self.http_api is not None
        self.http_api.end(exchange.request_id)
        self._release_http_channels(exchange)

    def _answer_http(self, outcome: HttpApiOutcome) -> None:
        exchange = self._http_exchanges.pop(outcome.request_id, None)
        if exchange is None:
            return
        exchange.reply = outcome.reply
        exchange.response.close()  # wakes the request's task: see HttpExchange
        self._release_http_channels(exchange)

    def _release_http_channels(self, exchange: HttpExchange) -> None:
        """The core removed a request's two channels from the registry: forget their queues.
        The ends a handler attached keep theirs; a request body that nobody can read any more
        stops being fed."""
        body_pipe = self._pipes.pop(exchange.request_body_id, None)
        if body_pipe is not None and not body_pipe.reader_attached:
            body_pipe.receive.close()
        self._pipes.pop(exchange.response_id, None)

    def _drop_channel(self, channel_id: str) -> None:
        """The sweep removed the channel: release the ends nobody attached, so that an attached
        reader gets the end of the stream and an attached writer's next frame drops it."""
        pipe = self._pipes.pop(channel_id, None)
        if pipe is None:
            return
        if not pipe.writer_attached:
            pipe.send.close()
        if not pipe.reader_attached:
            pipe.receive.close()

    # -- outputs and timers ------------------------------------------------------------------------

    def _perform(self, outputs: list[Output]) -> _Outbox | None:
        """Do what the core asks; frames are queued and written by :meth:`_write_dirty`.

        Returns an outbox the frames filled, if any.
        """
        full: _Outbox | None = None
        for output in outputs:
            if type(output) is Send:
                outbox = self._outboxes.get(output.connection_id)
                if outbox is not None:
                    if type(output.message) is InvocationResult:
                        outbox.push_answer(encode(output.message))
                    else:
                        outbox.push(encode(output.message))
                    if full is None and outbox.is_full:
                        full = outbox
            elif isinstance(output, CloseConnection):
                self._close(output)
            elif isinstance(output, ChannelDropped):
                self._drop_channel(output.channel_id)
            elif isinstance(output, TimerArmed):
                if output.deadline < self._timer_deadline:
                    self._timer_wakeup.set()
            elif isinstance(output, HttpRequest):
                self._send_http(output)
            elif isinstance(output, HttpApiOutcome):
                self._answer_http(output)
            elif isinstance(output, WorkerConnected):
                logger.info(
                    "worker connected: id=%s peer=%s", output.connection_id, output.peer_host
                )
            elif isinstance(output, WorkerAnnounced):
                logger.info(
                    "worker registered: id=%s name=%s namespace=%s",
                    output.connection_id,
                    output.name,
                    output.namespace,
                )
            elif isinstance(output, WorkerDisconnected):
                logger.info(
                    "worker left: id=%s name=%s namespace=%s",
                    output.connection_id,
                    output.name,
                    output.namespace,
                )
        return full

    def _send_http(self, request: HttpRequest) -> None:
        if self._http_caller is None:
            assert self.nursery is not None
            # httpx is loaded by the first engine that needs it, not by every engine started.
            from ._http_client import HttpCaller

            self._http_caller = HttpCaller(self.nursery, self._finish_http)
        self._http_caller.start(request)

    def _finish_http(self, request_id: str, outcome: HttpOutcome) -> None:
        assert self._http_functions is not None  # the only plugin that asks for requests
        self._perform(self._http_functions.finish(request_id, outcome))
        self._write_dirty()
        self._report_progress()

    def _close(self, request: CloseConnection) -> None:
        outbox = self._outboxes.get(request.connection_id)
        if outbox is None:
            return
        outbox.finish()
        if not request.drain:
            outbox.abort = True
            outbox.cancel_scope.cancel()

    async def run_timers(self) -> NoReturn:
        """Call :meth:`EngineState.tick` whenever its next deadline passes."""
        while True:
            deadline = self._state.next_deadline()
            self._timer_deadline = math.inf if deadline is None else deadline
            self._timer_wakeup = trio.Event()
            with trio.move_on_at(self._timer_deadline):
                await self._timer_wakeup.wait()
            self._perform(self._state.tick(trio.current_time()))
            self._write_dirty()


def _decode_frame(is_text: bool, payload: Payload) -> Message | None:
    if not payload:
        return None
    if not is_text and bytes(payload[:4]) in _TELEMETRY_PREFIXES:
        return None  # OTLP/metrics/logs telemetry: accepted and ignored
    if payload[0] in _JSON_WHITESPACE and not bytes(payload).strip():
        return None
    try:
        return decode(payload)
    except ProtocolError as exc:
        if is_text and not is_utf8(payload):
            raise _NotUtf8 from exc
        logger.debug("dropping malformed frame: %s", exc)
        return None


class _NotUtf8(Exception):
    """A text frame that is not UTF-8: the connection must fail (1007)."""


async def _discard_telemetry(websocket: WebSocket) -> None:
    # /otel never registers a worker and never answers anything but WebSocket pings.
    with contextlib.suppress(TransportClosed, trio.ClosedResourceError):
        while True:
            for is_text, payload in await websocket.receive_messages():
                if is_text and not is_utf8(payload):  # check_text=False: ours to check
                    websocket.fail_invalid_text()
    await trio.lowlevel.checkpoint()


def _channel_query_problem(query: Mapping[str, list[str]]) -> str | None:
    """What the engine's query-string parser would reject in a channel URL, if anything."""
    if not query.get("key"):
        return "missing field `key`"
    directions = query.get("dir")
    if not directions:
        return "missing field `dir`"
    for field in ("key", "dir"):
        if len(query[field]) > 1:
            return f"duplicate field `{field}`"
    if directions[0] not in ("read", "write"):
        return f"unknown variant `{directions[0]}`, expected `read` or `write`"
    return None
