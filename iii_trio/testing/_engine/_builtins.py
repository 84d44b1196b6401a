"""The engine's own workers that the dev engine runs as plugins, by their config block names
(spec/engine.md section 1.2: ``iii-http``, ``iii-state``, ``iii-stream``, ``iii-pubsub``,
``iii-queue``, ``iii-cron``).

Each :class:`BuiltinWorker` reads its block of the engine's ``config.yaml`` into settings (the
engine's defaults for what the block leaves out) and builds its plugin from them. Which run:

- without a config file, every one of :data:`BUILTIN_WORKERS`, with its defaults;
- with a config file, the ones it lists, as the engine runs exactly what its file lists;

minus those the caller turns off (``open_dev_engine(without=...)``, ``iii-trio dev
--without``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, Generic, TypeVar

import attrs

from ._cron import Cron, read_cron_block
from ._http_api import HTTP_API, HttpApi, read_http_block
from ._plugin import EnginePlugin
from ._pubsub import PUBSUB, PubSub, read_pubsub_block
from ._queues import QUEUE, Queues, read_queue_block
from ._state_worker import STATE, StateWorker, read_state_block
from ._stream_worker import STREAM, StreamWorker, read_stream_block

__all__ = [
    "BUILTIN_WORKERS",
    "BlockError",
    "BuiltinWorker",
    "builtin_plugins",
    "check_names",
    "describe_setting",
    "read_adapter",
]

_Settings = TypeVar("_Settings")


class BlockError(ValueError):
    """A worker's config block the dev engine cannot use.

    Attributes:
        key: where in the block, as ``queue_configs.payment.max_retries`` (empty: the block).
        problem: what is wrong.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def read_adapter(value: object) -> tuple[str, object] | None:
    """An ``adapter: {name, config?}`` entry as every engine worker reads it (one shared entry
    type, unknown keys refused): its name and config, or None when the block has none. Which
    names a worker knows is for that worker to check."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BlockError(
            "adapter", f"expected a mapping with a `name`, got {describe_setting(value)}"
        )
    for key in value:
        if key not in ("name", "config"):
            raise BlockError(f"adapter.{key}", "unknown key (an adapter takes name and config)")
    name = value.get("name")
    if not isinstance(name, str):
        raise BlockError("adapter.name", f"expected a string, got {describe_setting(name)}")
    return name, value.get("config")


def describe_setting(value: object) -> str:
    """How a :class:`BlockError` names a value it did not expect (as the config file reader
    names values)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, int):
        return f"an integer ({value!r})"
    if isinstance(value, float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value!r})"


@attrs.frozen
class BuiltinWorker(Generic[_Settings]):
    """One of the engine's own workers, as the dev engine runs it."""

    #: The block's name in ``config.yaml`` (``iii-state``).
    name: str
    #: Reads the block's ``config`` (``None`` when absent) into settings; raises BlockError.
    read_block: Callable[[object], _Settings]
    #: Builds the plugin from settings (one plugin per engine: plugins keep state).
    build: Callable[[_Settings], EnginePlugin]


#: Every built-in worker the dev engine can run, in the order they are installed.
BUILTIN_WORKERS: Final[tuple[BuiltinWorker[Any], ...]] = (
    BuiltinWorker(HTTP_API, read_http_block, HttpApi),
    BuiltinWorker(PUBSUB, read_pubsub_block, PubSub),
    BuiltinWorker(QUEUE, read_queue_block, Queues),
    BuiltinWorker("iii-cron", read_cron_block, Cron),
    BuiltinWorker(STATE, read_state_block, StateWorker),
    BuiltinWorker(STREAM, read_stream_block, StreamWorker),
)

_BY_NAME: Final = {worker.name: worker for worker in BUILTIN_WORKERS}


def check_names(names: Collection[str], argument: str) -> None:
    """Raise ValueError unless every name is a built-in worker's."""
    for name in names:
        if name not in _BY_NAME:
            known = ", ".join(sorted(_BY_NAME)) or "none yet"
            raise ValueError(f"{argument}: {name!r} is not a built-in worker (known: {known})")


def builtin_plugins(
    configured: Mapping[str, object] | None, without: Collection[str] = ()
) -> list[EnginePlugin]:
    """The plugins to install: those of ``configured`` (settings by worker name, from a config
    file) or, with no config file (None), every built-in with its defaults; minus ``without``.
    """
    plugins = []
    for worker in BUILTIN_WORKERS:
        if worker.name in without:
            continue
        if configured is None:
            settings = worker.read_block(None)
        elif worker.name in configured:
            settings = configured[worker.name]
        else:
            continue
        plugins.append(worker.build(settings))
    return plugins
