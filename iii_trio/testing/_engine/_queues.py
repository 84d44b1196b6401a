"""``iii-queue``: durable queues with retries and dead letters (spec/engine.md section 3).

One in-process worker provides the whole queue surface of section 3.6, which in the engine is
the standalone ``queue`` worker's: ``engine::queue::enqueue`` (the provider the enqueue action
routes to, :mod:`._enqueue`), ``queue::define``, ``iii::durable::publish`` and the
``durable:subscriber`` trigger type, the dead-letter functions ``iii::queue::redrive``,
``iii::queue::redrive_message`` and ``iii::queue::discard_message``, and the inspection
functions ``engine::queue::list_topics``, ``topic_stats``, ``dlq_topics`` and ``dlq_messages``.

Theory of operation
-------------------

There are two kinds of queue, with one machinery (:class:`_Queue`):

- **Named queues** (``queue_configs`` in the config block, plus ``queue::define``; ``default``
  always exists). Each enqueued message names its own target function and namespace, and the
  queue's settings (:class:`NamedQueueConfig`) stamp its retry budget when it arrives.
- **Topic queues**: ``iii::durable::publish`` copies each message into one queue per distinct
  ``(topic, namespace, function)`` that a live ``durable:subscriber`` binding targets. Bindings
  of the same function share its queue (competing consumers, one delivery per message). A
  queue outlives its bindings: messages wait, and its dead letters stay, until the function
  subscribes again. A topic nobody subscribes to parks its messages in a queue nobody consumes.

A message waits, is delivered (its target is called with exactly the message's data, metadata
``null``), and is acknowledged by any result or failed by any error, ``function_not_found`` and
a departed worker included. A failure counts one attempt; after ``max attempts`` it becomes a
dead letter (``engine::queue::dlq_messages``), else it is retried ``backoff_ms * 2^(attempts -
1)`` later. A standard queue puts the retry aside and goes on with other messages, then puts it
first in line again; a FIFO queue retries it in place, holding up the messages behind it (a
named FIFO queue holds up only its message group, the value of ``message_group_field``). A
redrive resets the attempts and queues the dead letters again. Nothing is ever dropped: a
message is waiting, in flight, set aside for a retry, or dead.

Each queue has a consumer that polls: a message that arrives is picked up at the next poll,
``poll_interval_ms`` later (100 ms by default), and a poll starts as many deliveries as the
queue's concurrency leaves room for. A consumer with nothing to do does not poll, so idle queues
cost nothing; retries set aside are due at their own times. All delays come from the config, so
tests can make them small.

Where the dev engine differs from the engine
--------------------------------------------

- The engine's ``iii-queue`` block is read (``queue_configs``, and ``adapter``: the ``builtin``
  adapter's ``config`` gives the topic queues' defaults ``max_attempts``, ``backoff_ms``,
  ``concurrency``, ``poll_interval_ms`` and ``mode``), but this worker behaves as the
  standalone ``queue`` worker, which the engine needs for ``engine::queue::enqueue``: with
  only ``iii-queue``, the engine would still answer an enqueue with ``enqueue_error``. Storage is
  always in memory; other adapters and ``store_method`` are accepted and ignored.
- A named FIFO queue is ordered per message group, its groups in flight up to ``concurrency``
  (the standalone worker); the engine's ``iii-queue`` delivered a FIFO queue strictly one at a
  time.
- Topic queues poll every ``poll_interval_ms`` of the adapter config; the engine hard-codes
  100 ms for standard topic queues.
- Bindings sharing one topic queue share one set of settings: the retry budget, backoff, mode
  and condition are the last started binding's, the concurrency the sum of theirs (a FIFO
  binding counts one).
- Errors of ``engine::queue::enqueue`` and ``queue::define``, which only the standalone worker
  has, are what a worker built on the Rust SDK sends: ``invocation_failed`` with
  ``handler error: <text>``, the text being the standalone worker's (an unknown queue: ``queue
  'q' is not defined; call queue::define before enqueueing``) or, for FIFO and definition checks,
  the engine's. Malformed inputs get the engine's ``deserialization_error``.
- A dead letter's ``size_bytes`` is the size of its payload as compact JSON; the engine counts
  its stored record. ``engine::queue::dlq_topics`` lists a named queue once, as
  ``function_queue``, where the engine also lists its internal name. Lists are sorted by name.
- The engine delivers a queued message with a new span of the trace it was enqueued in; the dev
  engine passes the enqueuer's ``traceparent`` and ``baggage`` through unchanged.
- Calls the dev engine starts itself reach workers' functions only, so a message queued for
  one of the engine's own functions (``publish``, say) fails as ``function_not_found`` and ends
  as a dead letter; the engine would call it.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import attrs

from ..._protocol._messages import JSON, ErrorBody
from ._conditions import condition_of
from ._enqueue import ENQUEUE_PROVIDER
from ._model import DEFAULT_NAMESPACE, Binding, Output, describe_value
from ._plugin import BuiltinFailure, BuiltinFunction, Call, EnginePlugin, Input

if TYPE_CHECKING:
    from ._state import EngineState
    from ._timers import Timer

__all__ = [
    "DEFAULT_QUEUE",
    "DURABLE_SUBSCRIBER",
    "QUEUE",
    "NamedQueueConfig",
    "QueueSettings",
    "Queues",
    "TopicDefaults",
    "read_queue_block",
]

logger = logging.getLogger("iii_trio.dev_engine")

#: The worker's name, in the config file and in ``engine::workers::list``.
QUEUE: Final = "iii-queue"
#: The named queue that always exists.
DEFAULT_QUEUE: Final = "default"
DURABLE_SUBSCRIBER: Final = "durable:subscriber"

DEFINE: Final = "queue::define"
DURABLE_PUBLISH: Final = "iii::durable::publish"
REDRIVE: Final = "iii::queue::redrive"
REDRIVE_MESSAGE: Final = "iii::queue::redrive_message"
DISCARD_MESSAGE: Final = "iii::queue::discard_message"
LIST_TOPICS: Final = "engine::queue::list_topics"
TOPIC_STATS: Final = "engine::queue::topic_stats"
DLQ_TOPICS: Final = "engine::queue::dlq_topics"
DLQ_MESSAGES: Final = "engine::queue::dlq_messages"

#: The dead-letter error of a named queue's failed message (the engine's text).
NAMED_QUEUE_FAILURE: Final = "function call failed"
_DLQ_PAGE: Final = 50
_U8_MAX: Final = 2**8 - 1
_U32_MAX: Final = 2**32 - 1
_U64_MAX: Final = 2**64 - 1
_ADAPTERS: Final = ("builtin", "redis", "rabbitmq")
_NAMED_KEYS: Final = (
    "max_retries",
    "concurrency",
    "type",
    "message_group_field",
    "max_priority",
    "priority_field",
    "backoff_ms",
    "poll_interval_ms",
)


# -- settings -------------------------------------------------------------------------------------


@attrs.frozen
class NamedQueueConfig:
    """One named queue's settings (the engine's ``FunctionQueueConfig``; defaults are its).

    Attributes:
        max_retries: delivery attempts, in all, before a message becomes a dead letter.
        concurrency: deliveries in flight at once (for ``fifo``: message groups in flight).
        type: ``standard`` (unordered) or ``fifo`` (ordered per message group).
        message_group_field: for ``fifo``, the data field whose value is a message's group.
        max_priority: accepted and ignored (RabbitMQ only).
        priority_field: accepted and ignored (RabbitMQ only).
        backoff_ms: the first retry's delay; each further retry waits twice as long.
        poll_interval_ms: how long a message that arrives waits for the consumer's next poll.
    """

    max_retries: int = 3
    concurrency: int = 10
    type: str = "standard"
    message_group_field: str | None = None
    max_priority: int | None = None
    priority_field: str | None = None
    backoff_ms: int = 1000
    poll_interval_ms: int = 100

    @property
    def fifo(self) -> bool:
        return self.type == "fifo"

    def problem(self, queue: str) -> str | None:
        """Why the engine refuses this configuration for ``queue``, if it does."""
        if self.type not in ("standard", "fifo"):
            return f"Queue '{queue}' has invalid type '{self.type}'. Must be 'standard' or 'fifo'"
        if self.fifo and self.message_group_field is None:
            return f"Queue '{queue}' is of type 'fifo' but 'message_group_field' is not set"
        if self.concurrency == 0:
            return f"Queue '{queue}' has 'concurrency' 0; it must be at least 1"
        if self.max_priority == 0:
            return f"Queue '{queue}' has 'max_priority' 0; it must be between 1 and 255"
        return None


@attrs.frozen
class TopicDefaults:
    """The settings of topic queues whose bindings set none (the ``builtin`` adapter's
    ``config``; defaults are the engine's).

    Attributes:
        max_attempts: delivery attempts, in all, before a message becomes a dead letter.
        backoff_ms: the first retry's delay; each further retry waits twice as long.
        concurrency: deliveries in flight at once, per binding.
        poll_interval_ms: how long a message that arrives waits for the consumer's next poll.
        fifo: deliver one message at a time, retrying a failed one before the next.
    """

    max_attempts: int = 3
    backoff_ms: int = 1000
    concurrency: int = 10
    poll_interval_ms: int = 100
    fifo: bool = False


@attrs.frozen
class QueueSettings:
    """The ``iii-queue`` block, read.

    Attributes:
        queues: the named queues, ``default`` always among them.
        topics: the topic queues' defaults.
        adapter: the adapter the block names (the dev engine always keeps queues in memory).
    """

    queues: Mapping[str, NamedQueueConfig] = attrs.field(
        factory=lambda: {DEFAULT_QUEUE: NamedQueueConfig()}
    )
    topics: TopicDefaults = TopicDefaults()
    adapter: str = "builtin"


def read_queue_block(block: object) -> QueueSettings:
    """Read an ``iii-queue`` config block (``None``: absent) as the engine does: ``adapter``
    and ``queue_configs``, nothing else; a ``default`` queue is added unless the block has one.
    """
    from ._builtins import BlockError, read_adapter  # here: _builtins imports this module

    if block is None:
        return QueueSettings()
    if not isinstance(block, dict):
        raise BlockError("", "expected a mapping (with `queue_configs` and/or `adapter`)")
    for key in block:
        if key not in ("adapter", "queue_configs"):
            raise BlockError(str(key), "unknown field (expected `adapter` or `queue_configs`)")
    adapter, topics = "builtin", TopicDefaults()
    entry = read_adapter(block.get("adapter"))
    if entry is not None:
        adapter, config = entry
        if adapter not in _ADAPTERS:
            choices = ", ".join(_ADAPTERS)
            raise BlockError("adapter.name", f"expected one of {choices}, got {adapter!r}")
        if adapter == "builtin" and isinstance(config, dict):
            topics = _topic_defaults(config)
    queues: dict[str, NamedQueueConfig] = {}
    configs = block.get("queue_configs")
    if configs is not None:
        if not isinstance(configs, dict):
            raise BlockError("queue_configs", "expected a mapping of queue names to settings")
        for name, value in configs.items():
            where = f"queue_configs.{name}"
            if not isinstance(value, dict):
                raise BlockError(where, f"invalid type: {_yaml_kind(value)}, expected a mapping")
            try:
                queue_config = _named_config(value)
            except _BadField as bad:
                key = f"{where}.{bad.field}" if bad.field else where
                raise BlockError(key, bad.problem) from None
            problem = queue_config.problem(str(name))
            if problem is not None:
                raise BlockError(where, problem)
            queues[str(name)] = queue_config
    queues.setdefault(DEFAULT_QUEUE, NamedQueueConfig())
    return QueueSettings(queues=queues, topics=topics, adapter=adapter)


def _topic_defaults(config: dict[object, object]) -> TopicDefaults:
    """The builtin adapter's ``config``, read leniently as the engine does: values of the
    wrong type are ignored."""

    def number(key: str, default: int, maximum: int) -> int:
        value = _unsigned(config.get(key))
        return default if value is None else min(value, maximum)

    defaults = TopicDefaults()
    return TopicDefaults(
        max_attempts=number("max_attempts", defaults.max_attempts, _U32_MAX),
        backoff_ms=number("backoff_ms", defaults.backoff_ms, _U64_MAX),
        concurrency=number("concurrency", defaults.concurrency, _U32_MAX),
        poll_interval_ms=number("poll_interval_ms", defaults.poll_interval_ms, _U64_MAX),
        fifo=config.get("mode") == "fifo",
    )


class _BadField(Exception):
    """A named queue's settings do not deserialize: ``problem`` in serde's words."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _named_config(value: Mapping[object, object]) -> NamedQueueConfig:
    """A ``FunctionQueueConfig`` from a JSON or YAML mapping, strictly (unknown fields refused).

    Raises:
        _BadField: naming the field and the problem.
    """
    for key in value:
        if key not in _NAMED_KEYS:
            expected = ", ".join(f"`{name}`" for name in _NAMED_KEYS)
            raise _BadField("", f"unknown field `{key}`, expected one of {expected}")
    defaults = NamedQueueConfig()

    def integer(key: str, default: int, maximum: int, name: str) -> int:
        if key not in value:
            return default
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, int):
            raise _BadField(key, f"invalid type: {_yaml_kind(number)}, expected {name}")
        if not 0 <= number <= maximum:
            raise _BadField(key, f"invalid value: integer `{number}`, expected {name}")
        return number

    def text(key: str) -> str | None:
        string = value.get(key)
        if string is not None and not isinstance(string, str):
            raise _BadField(key, f"invalid type: {_yaml_kind(string)}, expected a string")
        return string

    kind = value.get("type", defaults.type)
    if not isinstance(kind, str):
        raise _BadField("type", f"invalid type: {_yaml_kind(kind)}, expected a string")
    max_priority = None
    if value.get("max_priority") is not None:
        max_priority = integer("max_priority", 0, _U8_MAX, "u8")
    return NamedQueueConfig(
        max_retries=integer("max_retries", defaults.max_retries, _U32_MAX, "u32"),
        concurrency=integer("concurrency", defaults.concurrency, _U32_MAX, "u32"),
        type=kind,
        message_group_field=text("message_group_field"),
        max_priority=max_priority,
        priority_field=text("priority_field"),
        backoff_ms=integer("backoff_ms", defaults.backoff_ms, _U64_MAX, "u64"),
        poll_interval_ms=integer("poll_interval_ms", defaults.poll_interval_ms, _U64_MAX, "u64"),
    )


def _unsigned(value: object) -> int | None:
    """``value`` if it is a JSON unsigned integer (serde's ``as_u64``), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        return None
    return value


def _yaml_kind(value: object) -> str:
    """serde's name for an unexpected value (as :func:`._model.describe_value`, for YAML too)."""
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return describe_value(value)
    return type(value).__name__


# -- the queues -----------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Message:
    """One queued message and its delivery state."""

    id: str
    data: JSON
    function_id: str
    namespace: str
    #: The retry budget stamped when it arrived (named queues).
    max_attempts: int
    backoff_ms: int
    traceparent: str | None = None
    baggage: str | None = None
    #: Its message group in a named FIFO queue.
    group: str | None = None
    #: Failed deliveries so far.
    attempts: int = 0
    #: When a retry set aside may go back in line (the shell's clock).
    due: float = 0.0


@attrs.frozen
class _DeadLetter:
    message: _Message
    error: str
    #: Unix seconds.
    failed_at: int

    def record(self) -> dict[str, JSON]:
        """As ``engine::queue::dlq_messages`` lists it."""
        payload = self.message.data
        size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
        return {
            "id": self.message.id,
            "payload": payload,
            "error": self.error,
            "failed_at": self.failed_at,
            "retries": self.message.attempts,
            "size_bytes": size,
        }


class _Queue:
    """One queue: messages waiting, in flight, set aside for a retry, and dead; and the
    consumer that delivers them. See the module's theory of operation."""

    def __init__(self, engine: EngineState, name: str, *, named: bool) -> None:
        self._engine = engine
        self.name = name
        #: A named queue delivers each message to its own target; a topic queue to the
        #: function its bindings target.
        self.named = named
        self.waiting: collections.deque[_Message] = collections.deque()
        #: Retries set aside, by due time.
        self.delayed: list[_Message] = []
        self.active: dict[str, _Message] = {}
        self._active_groups: set[str | None] = set()
        #: Dead letters, newest first.
        self.dead: collections.deque[_DeadLetter] = collections.deque()
        self._poll: Timer | None = None
        # Settings: set by configure_named / configure_topic.
        self.capacity = 0
        self.fifo = False
        self.poll_interval = 0.1
        #: For topic queues: the retry settings that override the messages' own.
        self._max_attempts: int | None = None
        self._backoff_ms: int | None = None
        self.named_config: NamedQueueConfig | None = None
        #: For topic queues: the live bindings, in the order they started.
        self.bindings: dict[str, Binding] = {}

    # -- settings ----------------------------------------------------------------------------

    def configure_named(self, config: NamedQueueConfig, out: list[Output]) -> None:
        self.named_config = config
        self.capacity = config.concurrency
        self.fifo = config.fifo
        self.poll_interval = config.poll_interval_ms / 1000
        self.schedule(out)

    def configure_topic(self, defaults: TopicDefaults, out: list[Output]) -> None:
        """Take the settings of the bindings (see the module's notes on shared queues)."""
        self.capacity = 0
        self.fifo = defaults.fifo
        self._max_attempts = defaults.max_attempts
        self._backoff_ms = defaults.backoff_ms
        self.poll_interval = defaults.poll_interval_ms / 1000
        for binding in self.bindings.values():
            subscriber = _SubscriberConfig.of(binding)
            fifo = subscriber.fifo if subscriber.fifo is not None else defaults.fifo
            concurrency = subscriber.concurrency
            self.capacity += (
                1 if fifo else (defaults.concurrency if concurrency is None else concurrency)
            )
            # The last binding's settings win, as the engine's last subscriber's do.
            self.fifo = fifo
            self._max_attempts = (
                defaults.max_attempts
                if subscriber.max_retries is None
                else min(subscriber.max_retries + 1, _U32_MAX)
            )
            self._backoff_ms = (
                defaults.backoff_ms if subscriber.backoff_ms is None else subscriber.backoff_ms
            )
        self.schedule(out)

    @property
    def consuming(self) -> bool:
        return self.named or bool(self.bindings)

    @property
    def depth(self) -> int:
        """Messages waiting or in flight (retries set aside are not counted, as in the
        engine)."""
        return len(self.waiting) + len(self.active)

    # -- arrivals ----------------------------------------------------------------------------

    def push(self, message: _Message, out: list[Output]) -> None:
        self.waiting.append(message)
        self.schedule(out)

    def redrive(self, out: list[Output]) -> int:
        """Queue every dead letter again, oldest first, behind what waits."""
        count = len(self.dead)
        while self.dead:
            self._requeue(self.dead.pop().message)
        if count:
            self.schedule(out)
        return count

    def redrive_one(self, message_id: str, out: list[Output]) -> bool:
        letter = self._take_dead(message_id)
        if letter is None:
            return False
        self._requeue(letter.message)
        self.schedule(out)
        return True

    def discard_one(self, message_id: str) -> bool:
        return self._take_dead(message_id) is not None

    def _take_dead(self, message_id: str) -> _DeadLetter | None:
        for letter in self.dead:
            if letter.message.id == message_id:
                self.dead.remove(letter)
                return letter
        return None

    def _requeue(self, message: _Message) -> None:
        message.attempts = 0
        self.waiting.append(message)

    # -- the consumer ------------------------------------------------------------------------

    def schedule(self, out: list[Output]) -> None:
        """Make sure the consumer polls when it has something to do: at its next poll for
        messages it has room for, and when the first retry set aside is due."""
        if not self.consuming:
            return
        now = self._engine.now
        wanted: float | None = None
        if self._room() and self._startable() is not None:
            wanted = now + self.poll_interval
        if self.delayed:
            # A retry already due waits for the next poll, like a message that arrives.
            first_due = self.delayed[0].due
            due = first_due if first_due > now else now + self.poll_interval
            wanted = due if wanted is None else min(wanted, due)
        if wanted is None:
            return
        if self._poll is not None:
            if self._poll.deadline <= wanted:
                return
            self._poll.cancel()
        self._poll = self._engine.arm(wanted, self._polled, out)

    def _room(self) -> bool:
        return len(self.active) < self.capacity

    def _polled(self, now: float, out: list[Output]) -> None:
        self._poll = None
        ready = 0
        while ready < len(self.delayed) and self.delayed[ready].due <= now:
            ready += 1
        if ready:
            # Retries go back first in line, as the engine puts them in the oldest position.
            self.waiting.extendleft(reversed(self.delayed[:ready]))
            del self.delayed[:ready]
        if self.consuming:
            while self._room():
                message = self._startable()
                if message is None:
                    break
                self.waiting.remove(message)
                self._start(message, out)
        self.schedule(out)

    def _startable(self) -> _Message | None:
        """The first message that may go now: the oldest, or in a FIFO queue the oldest of a
        group with nothing in flight."""
        if not self.fifo:
            return self.waiting[0] if self.waiting else None
        for message in self.waiting:
            if message.group not in self._active_groups:
                return message
        return None

    def _start(self, message: _Message, out: list[Output]) -> None:
        self.active[message.id] = message
        if self.fifo:
            self._active_groups.add(message.group)
        self._deliver(message, out)

    def _deliver(self, message: _Message, out: list[Output]) -> None:
        condition = None
        binding = None
        if not self.named and self.bindings:
            binding = next(reversed(self.bindings.values()))
            condition = condition_of(binding)
        if binding is None or condition is None:
            self._call_target(message, out)
            return

        def decided(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
            if message.id not in self.active:
                return
            if error is not None:
                self._failed(message, f"Condition function error: {rust_debug(error)}", out)
            elif result is False:
                self._succeeded(message, out)  # skipped: acknowledged, as by the engine
            else:
                self._call_target(message, out)

        self._engine.call_function(binding.namespace, condition, message.data, out, then=decided)

    def _call_target(self, message: _Message, out: list[Output]) -> None:
        self._engine.call_function(
            message.namespace,
            message.function_id,
            message.data,
            out,
            then=functools.partial(self._outcome, message),
            traceparent=message.traceparent,
            baggage=message.baggage,
        )

    def _outcome(
        self, message: _Message, result: JSON, error: ErrorBody | None, out: list[Output]
    ) -> None:
        if message.id not in self.active:
            return
        if error is None:
            self._succeeded(message, out)
        else:
            self._failed(message, NAMED_QUEUE_FAILURE if self.named else rust_debug(error), out)

    def _succeeded(self, message: _Message, out: list[Output]) -> None:
        self._finish(message)
        self.schedule(out)

    def _failed(self, message: _Message, error: str, out: list[Output]) -> None:
        message.attempts += 1
        max_attempts = message.max_attempts if self._max_attempts is None else self._max_attempts
        backoff_ms = message.backoff_ms if self._backoff_ms is None else self._backoff_ms
        if message.attempts >= max_attempts:
            self._finish(message)
            failed_at = int(self._engine.unix_time())
            self.dead.appendleft(_DeadLetter(message, error, failed_at))
            logger.warning(
                "queue %s: message %s failed %d times, moved to the dead-letter queue: %s",
                self.name,
                message.id,
                message.attempts,
                error,
            )
        else:
            due = self._engine.now + backoff(backoff_ms, message.attempts)
            if self.fifo:
                # Retried in place: it keeps its slot and holds up its group meanwhile.
                self._engine.arm(due, functools.partial(self._retry_in_place, message), out)
            else:
                self._finish(message)
                message.due = due
                position = len(self.delayed)
                while position and self.delayed[position - 1].due > due:
                    position -= 1
                self.delayed.insert(position, message)
        self.schedule(out)

    def _retry_in_place(self, message: _Message, now: float, out: list[Output]) -> None:
        if message.id in self.active:
            self._deliver(message, out)

    def _finish(self, message: _Message) -> None:
        del self.active[message.id]
        self._active_groups.discard(message.group)


@attrs.frozen
class _SubscriberConfig:
    """A ``durable:subscriber`` binding's ``queue_config``, read as leniently as the engine
    reads it (values of the wrong type are ignored)."""

    fifo: bool | None = None
    max_retries: int | None = None
    concurrency: int | None = None
    backoff_ms: int | None = None

    @classmethod
    def of(cls, binding: Binding) -> _SubscriberConfig:
        config = binding.config
        queue_config = config.get("queue_config") if isinstance(config, dict) else None
        if not isinstance(queue_config, dict):
            return cls()
        kind = queue_config.get("type")
        max_retries = _unsigned(queue_config.get("maxRetries"))
        concurrency = _unsigned(queue_config.get("concurrency"))
        return cls(
            fifo=kind == "fifo" if isinstance(kind, str) else None,
            max_retries=None if max_retries is None else min(max_retries, _U32_MAX),
            concurrency=None if concurrency is None else min(concurrency, _U32_MAX),
            backoff_ms=_unsigned(queue_config.get("backoffDelayMs")),
        )


def backoff(backoff_ms: int, attempts: int) -> float:
    """Seconds before the retry that follows failed attempt number ``attempts`` (1, 2, ...):
    ``backoff_ms * 2^(attempts - 1)``, saturating as the engine's u64 arithmetic does."""
    return min(backoff_ms << min(max(attempts - 1, 0), 64), _U64_MAX) / 1000


def rust_debug(error: ErrorBody) -> str:
    """An error as the engine's dead letters of topic queues show it (Rust's ``{:?}``)."""
    stacktrace = "None" if error.stacktrace is None else f"Some({_debug_str(error.stacktrace)})"
    return (
        f"ErrorBody {{ code: {_debug_str(error.code)}, message: {_debug_str(error.message)}, "
        f"stacktrace: {stacktrace} }}"
    )


_DEBUG_ESCAPES: Final = {"\t": "\\t", "\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}


def _debug_str(text: str) -> str:
    escaped = []
    for char in text:
        if char in _DEBUG_ESCAPES:
            escaped.append(_DEBUG_ESCAPES[char])
        elif char == "\0":
            escaped.append("\\0")
        elif not char.isprintable() and char != " ":
            escaped.append(f"\\u{{{ord(char):x}}}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


# -- the worker -----------------------------------------------------------------------------------


class Queues(EnginePlugin):
    """The ``iii-queue`` worker; see the module docstring."""

    name = QUEUE

    def __init__(self, settings: QueueSettings | None = None) -> None:
        self.settings = settings if settings is not None else QueueSettings()
        self._engine: EngineState
        self._named: dict[str, _Queue] = {}
        #: Every topic queue by ``(topic, namespace, function_id)``, bound or not.
        self._topic_queues: dict[tuple[str, str, str], _Queue] = {}
        #: The bound ones by topic: where a publish goes.
        self._topics: dict[str, dict[tuple[str, str], _Queue]] = {}
        #: Where nobody's messages go: by topic, never consumed.
        self._unbound: dict[str, _Queue] = {}
        #: The topic queue of each live binding.
        self._subscriptions: dict[str, tuple[str, str, str]] = {}

    def attach(self, engine: EngineState) -> None:
        self._engine = engine
        for name, config in self.settings.queues.items():
            self._define(name, config, [])

    def functions(self) -> Mapping[str, BuiltinFunction]:
        table: dict[str, tuple[Callable[[Call, Input, list[Output]], JSON], str, str]] = {
            ENQUEUE_PROVIDER: (
                self._enqueue,
                "Internal provider for TriggerAction::Enqueue",
                "EnqueueInput",
            ),
            DEFINE: (
                self._define_queue,
                "Define and start a durable named function queue",
                "DefineQueueInput",
            ),
            DURABLE_PUBLISH: (self._durable_publish, "Enqueue a message", "QueueInput"),
            REDRIVE: (
                self._redrive,
                "Redrive all DLQ messages back to the main queue",
                "RedriveInput",
            ),
            REDRIVE_MESSAGE: (
                self._redrive_message,
                "Redrive a single DLQ message by ID back to the main queue",
                "RedriveSingleInput",
            ),
            DISCARD_MESSAGE: (
                self._discard_message,
                "Discard (purge) a single DLQ message by ID",
                "RedriveSingleInput",
            ),
            LIST_TOPICS: (self._list_topics, "List all queue topics", "ListTopicsInput"),
            TOPIC_STATS: (self._topic_stats, "Get stats for a queue topic", "TopicStatsInput"),
            DLQ_TOPICS: (self._dlq_topics, "List DLQ topics with counts", "DlqTopicsInput"),
            DLQ_MESSAGES: (self._dlq_messages, "Browse DLQ messages", "DlqMessagesInput"),
        }
        return {
            function_id: BuiltinFunction(handler, description, struct)
            for function_id, (handler, description, struct) in table.items()
        }

    def trigger_types(self) -> Mapping[str, str]:
        return {DURABLE_SUBSCRIBER: "Queue core module"}

    # -- durable:subscriber ------------------------------------------------------------------

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        topic = _subscribed_topic(binding)
        if not topic:
            # The engine accepts the binding and subscribes it to nothing.
            logger.warning("trigger %s: Topic is not set for trigger", binding.id)
            return
        key = (topic, binding.namespace, binding.function_id)
        queue = self._topic_queues.get(key)
        if queue is None:
            queue = _Queue(self._engine, topic, named=False)
            self._topic_queues[key] = queue
        queue.bindings.pop(binding.id, None)
        queue.bindings[binding.id] = binding
        self._topics.setdefault(topic, {})[key[1:]] = queue
        self._subscriptions[binding.id] = key
        queue.configure_topic(self.settings.topics, out)

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        key = self._subscriptions.pop(binding.id, None)
        if key is None:
            return
        queue = self._topic_queues[key]
        del queue.bindings[binding.id]
        if not queue.bindings:
            # Unbound: later publishes skip it; what it holds waits for a new binding.
            destinations = self._topics[key[0]]
            del destinations[key[1:]]
            if not destinations:
                del self._topics[key[0]]
        queue.configure_topic(self.settings.topics, out)

    # -- named queues ------------------------------------------------------------------------

    def _define(self, name: str, config: NamedQueueConfig, out: list[Output]) -> bool:
        """Create or reconfigure a named queue; whether its settings changed."""
        queue = self._named.get(name)
        if queue is None:
            queue = _Queue(self._engine, name, named=True)
            self._named[name] = queue
        elif queue.named_config == config:
            return False
        queue.configure_named(config, out)
        return True

    def _enqueue(self, call: Call, data: Input, out: list[Output]) -> JSON:
        queue_name = data.required_str("queue")
        function_id = data.required_str("function_id")
        payload = data.required("data")
        receipt = data.required_str("messageReceiptId")
        namespace = data.optional_str("namespace")
        traceparent = data.optional_str("traceparent")
        baggage = data.optional_str("baggage")
        name = queue_name.strip()
        if not name:
            raise _handler_error("queue is required")
        if not function_id.strip():
            raise _handler_error("function_id is required")
        if not receipt.strip():
            raise _handler_error("messageReceiptId is required")
        queue = self._named.get(name)
        if queue is None or queue.named_config is None:
            raise _handler_error(
                f"queue '{name}' is not defined; call queue::define before enqueueing"
            )
        config = queue.named_config
        group = None
        if config.fifo:
            group = _message_group(name, config, payload)
        queue.push(
            _Message(
                id=self._engine.new_id(),
                data=payload,
                function_id=function_id,
                namespace=DEFAULT_NAMESPACE if namespace is None else namespace,
                max_attempts=config.max_retries,
                backoff_ms=config.backoff_ms,
                traceparent=traceparent,
                baggage=baggage,
                group=group,
            ),
            out,
        )
        return {"messageReceiptId": receipt}

    def _define_queue(self, call: Call, data: Input, out: list[Output]) -> JSON:
        fields = data.keys()
        for key in fields:
            if key not in ("queue", "config", "_caller_worker_id"):
                raise data.fail(
                    f"unknown field `{key}`, expected one of `queue`, `config`, `_caller_worker_id`"
                )
        queue = data.required_str("queue").strip()
        value = data.any("config")
        if value is None:
            config = NamedQueueConfig()
        elif not isinstance(value, dict):
            raise data.fail(
                f"invalid type: {describe_value(value)}, expected struct FunctionQueueConfig"
            )
        else:
            try:
                config = _named_config(value)
            except _BadField as bad:
                raise data.fail(bad.problem) from None
        if not queue:
            raise _handler_error("queue is required")
        problem = config.problem(queue)
        if problem is not None:
            raise _handler_error(problem)
        changed = self._define(queue, config, out)
        return {"queue": queue, "changed": changed}

    # -- topics ------------------------------------------------------------------------------

    def _durable_publish(self, call: Call, data: Input, out: list[Output]) -> JSON:
        topic = _aliased(data, "topic", "queue")
        payload = data.required("data")
        if not topic:
            raise BuiltinFailure("topic_not_set", "Topic is not set")
        destinations = self._topics.get(topic)
        if destinations:
            for (namespace, function_id), queue in destinations.items():
                queue.push(self._message(payload, function_id, namespace), out)
        else:
            unbound = self._unbound.get(topic)
            if unbound is None:
                unbound = self._unbound[topic] = _Queue(self._engine, topic, named=False)
            unbound.push(self._message(payload, "", DEFAULT_NAMESPACE), out)
        return None

    def _message(self, payload: JSON, function_id: str, namespace: str) -> _Message:
        defaults = self.settings.topics
        return _Message(
            id=self._engine.new_id(),
            data=payload,
            function_id=function_id,
            namespace=namespace,
            max_attempts=defaults.max_attempts,
            backoff_ms=defaults.backoff_ms,
        )

    def _queues_named(self, name: str) -> list[_Queue]:
        """The queues a name addresses: a named queue, else the bound queues of a topic, else
        the queue of a topic nobody subscribes to (the engine's lookup order)."""
        named = self._named.get(name)
        if named is not None:
            return [named]
        destinations = self._topics.get(name)
        if destinations:
            return list(destinations.values())
        unbound = self._unbound.get(name)
        return [] if unbound is None else [unbound]

    # -- dead letters ------------------------------------------------------------------------

    def _redrive(self, call: Call, data: Input, out: list[Output]) -> JSON:
        name = _aliased(data, "queue", "topic")
        if not name:
            raise BuiltinFailure("queue_not_set", "Queue name is required")
        redriven = sum(queue.redrive(out) for queue in self._queues_named(name))
        if redriven:
            logger.info("queue %s: %d dead letters redriven", name, redriven)
        return {"queue": name, "redriven": redriven}

    def _single(self, data: Input) -> tuple[str, str]:
        name = _aliased(data, "queue", "topic")
        message_id = data.required_str("message_id")
        if not name:
            raise BuiltinFailure("queue_not_set", "Queue name is required")
        if not message_id:
            raise BuiltinFailure("message_id_not_set", "Message ID is required")
        return name, message_id

    def _redrive_message(self, call: Call, data: Input, out: list[Output]) -> JSON:
        name, message_id = self._single(data)
        found = any(queue.redrive_one(message_id, out) for queue in self._queues_named(name))
        return {"queue": name, "message_id": message_id, "redriven": int(found)}

    def _discard_message(self, call: Call, data: Input, out: list[Output]) -> JSON:
        name, message_id = self._single(data)
        found = any(queue.discard_one(message_id) for queue in self._queues_named(name))
        # The engine's key for "discarded" really is ``redriven``.
        return {"queue": name, "message_id": message_id, "redriven": int(found)}

    # -- inspection --------------------------------------------------------------------------

    def _list_topics(self, call: Call, data: Input, out: list[Output]) -> JSON:
        entries: list[dict[str, JSON]] = [
            {
                "name": topic,
                "broker_type": "builtin",
                "subscriber_count": sum(len(q.bindings) for q in destinations.values()),
            }
            for topic, destinations in self._topics.items()
        ]
        entries.extend(
            {"name": name, "broker_type": "builtin", "subscriber_count": queue.capacity}
            for name, queue in self._named.items()
        )
        return sorted(entries, key=lambda entry: str(entry["name"]))

    def _topic_stats(self, call: Call, data: Input, out: list[Output]) -> JSON:
        name = _aliased(data, "topic", "queue")
        if not name:
            raise BuiltinFailure("topic_required", "topic is required")
        queues = self._queues_named(name)
        named = self._named.get(name)
        if named is not None:
            consumers = named.capacity
        else:
            consumers = sum(len(queue.bindings) for queue in queues)
        return {
            "depth": sum(queue.depth for queue in queues),
            "consumer_count": consumers,
            "dlq_depth": sum(len(queue.dead) for queue in queues),
            "config": None,
        }

    def _dlq_topics(self, call: Call, data: Input, out: list[Output]) -> JSON:
        entries: list[dict[str, JSON]] = [
            {
                "topic": topic,
                "broker_type": "builtin",
                "message_count": sum(len(queue.dead) for queue in destinations.values()),
            }
            for topic, destinations in self._topics.items()
        ]
        entries.extend(
            {"topic": name, "broker_type": "function_queue", "message_count": len(queue.dead)}
            for name, queue in self._named.items()
        )
        return sorted(entries, key=lambda entry: str(entry["topic"]))

    def _dlq_messages(self, call: Call, data: Input, out: list[Output]) -> JSON:
        name = _aliased(data, "topic", "queue")
        offset = _optional_u64(data, "offset", 0)
        limit = _optional_u64(data, "limit", _DLQ_PAGE)
        if not name:
            raise BuiltinFailure("topic_required", "topic is required")
        letters = [letter for queue in self._queues_named(name) for letter in queue.dead]
        # Newest first across the topic's queues (a stable sort keeps each queue's order).
        letters.sort(key=lambda letter: letter.failed_at, reverse=True)
        return [letter.record() for letter in letters[offset : offset + limit]]


def _subscribed_topic(binding: Binding) -> str:
    """A ``durable:subscriber`` binding's topic: ``topic``, else ``queue`` (the standalone
    worker's name), a string, else empty."""
    config = binding.config
    if not isinstance(config, dict):
        return ""
    topic = config.get("topic")
    if topic is None:
        topic = config.get("queue")
    return topic if isinstance(topic, str) else ""


def _message_group(queue: str, config: NamedQueueConfig, payload: JSON) -> str:
    field = config.message_group_field
    assert field is not None  # checked when the queue was defined
    if not isinstance(payload, dict) or field not in payload:
        raise _handler_error(
            f"FIFO queue '{queue}' requires field '{field}' in data, but it was not found"
        )
    value = payload[field]
    if value is None:
        raise _handler_error(f"FIFO queue '{queue}': field '{field}' must not be null")
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _handler_error(text: str) -> BuiltinFailure:
    """A failure as the standalone queue worker's SDK reports a handler's error."""
    return BuiltinFailure("invocation_failed", f"handler error: {text}")


def _aliased(data: Input, key: str, alias: str) -> str:
    """A required string field that serde also accepts under ``alias``."""
    fields = data.keys()
    present = [name for name in (key, alias) if name in fields]
    if len(present) == 2:
        raise data.fail(f"duplicate field `{key}`")
    return data.required_str(present[0] if present else key)


def _optional_u64(data: Input, key: str, default: int) -> int:
    """A ``#[serde(default)]`` u64: absent gives the default, ``null`` is refused."""
    fields = data.keys()
    if key not in fields:
        return default
    value = data.any(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise data.fail(f"invalid type: {describe_value(value)}, expected u64")
    if not 0 <= value <= _U64_MAX:
        raise data.fail(f"invalid value: integer `{value}`, expected u64")
    return value
