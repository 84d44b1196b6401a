"""The iii engine's ``config.yaml``, read for the dev engine: text in, values out, no I/O.

The format is the engine's own (spec/engine.md, section 1.1), so one file serves both::

    workers:
      - name: iii-worker-manager          # the first one is the main port
        config:
          port: ${III_PORT:49134}
      - name: iii-worker-manager          # a second listener: instance "iii-worker-manager#1"
        config: {port: 49135, handshake_timeout_ms: 2000}
      - name: iii-http                    # the REST API (http triggers)
        config: {port: 3111}

How it is read, as the engine reads it:

- The whole text is substituted before YAML parsing: ``${VAR}`` is VAR's value, ``${VAR:x}``
  VAR's value or ``x`` when VAR is unset (``${VAR:}`` gives the empty string), and the default
  ``__III_ENGINE_VERSION__`` stands for the engine's version. Comments are substituted too, so
  a ``${VAR}`` in a comment must be set as well. An unset VAR without a default is an error.
- The top level takes ``workers``, ``modules`` (an older name, appended after ``workers``) and
  ``registration_namespace_grace_ms``; anything else is an error, and so is ``workers: null``
  (``workers: []`` means none). An empty file counts as ``{}``.
- An entry is ``{name, config?, image?}``; other keys are ignored, as by the engine. A name
  that occurs again becomes the instance ``name#1``, then ``name#2`` and so on. A built-in
  worker cannot have an ``image``, and a file cannot list both names of a renamed worker
  (``iii-http`` and ``http``, for instance).
- An ``iii-worker-manager`` block takes ``port`` (default 49134, 0 picks a free port),
  ``host``, ``handshake_timeout_ms`` (default 10000), ``middleware_function_id`` and ``rbac``;
  other keys are an error, as in the engine.
- An ``iii-http-functions`` block takes ``security``, a mapping of ``url_allowlist`` (a list of
  host globs; empty or absent means ``["*"]``), ``block_private_ips`` and ``require_https``
  (booleans, both true by default); other keys are an error, as in the engine.
- An ``iii-queue`` block takes ``queue_configs`` (queue name to ``max_retries``,
  ``concurrency``, ``type``, ``message_group_field``, ``backoff_ms``, ``poll_interval_ms``,
  ``max_priority``, ``priority_field``; a ``default`` queue is added unless listed) and
  ``adapter`` (``name``: ``builtin``, ``redis`` or ``rabbitmq``; the ``builtin`` adapter's
  ``config`` gives the topic queues' ``max_attempts``, ``backoff_ms``, ``concurrency``,
  ``poll_interval_ms`` and ``mode``). An ``iii-pubsub`` block takes ``adapter`` (``name``:
  ``local``, ``memory`` or ``redis``). Other keys are an error, as in the engine; the dev engine
  keeps queues and subscriptions in memory whatever the adapter.
- An ``iii-cron`` block takes ``adapter: {name, config?}``, the name ``kv`` (the default) or
  ``redis``; both mean the same in one process. Other keys are an error, as in the engine.
- An ``iii-observability`` block takes the engine's keys; the dev engine applies ``enabled``,
  ``logs_enabled``, ``logs_max_count``, ``service_name``, ``service_version``,
  ``service_namespace`` and ``exporter`` and notes the others as not applied. Unknown keys are
  an error, as in the engine.
- An ``iii-http`` block takes ``port`` (default 3111; 0 picks a free one), ``host``
  (127.0.0.1 when absent, where the engine binds 0.0.0.0), ``default_timeout`` (ms, default
  30000), ``concurrency_request_limit`` (default 1024), ``cors`` (``allowed_origins``,
  ``allowed_methods``: lists, empty or ``"*"`` meaning any) and ``middleware`` (a list of
  ``{function_id, phase, priority}``). Other keys are an error, as in the engine.
- An ``iii-state`` block takes ``adapter`` (``{name: kv | redis | bridge, config?}``),
  ``triggers_enabled`` (default true), ``max_value_bytes`` (0 or absent: no limit) and
  ``save_interval_ms``; an ``iii-stream`` block takes ``port`` (default 3112), ``host``,
  ``auth_function`` and ``adapter``. Other keys are an error, as in the engine. Both keep
  their data in memory whatever the adapter, and the dev engine opens no stream port.

What the dev engine does with it (:class:`EngineConfig`): each ``iii-worker-manager`` entry
becomes a :class:`Listener`; the first ``iii-http-functions`` entry's security settings apply to
HTTP-invoked functions (:attr:`EngineConfig.http_security`; without such an entry the dev engine
allows plain http and private addresses, where the engine would not offer HTTP-invoked functions
at all); the built-in workers it runs (``iii-http``, ``iii-state``, ``iii-stream``,
``iii-queue``, ``iii-pubsub``, ``iii-cron``) are those the file lists, each with its first
entry's block (:attr:`EngineConfig.builtin_settings`). ``iii-observability`` always runs, as
in the engine, with the first entry's block if the file has one
(:attr:`EngineConfig.observability`).
``middleware_function_id`` and ``rbac`` are not applied yet, and every other worker is not
emulated yet; the dev engine says so once at INFO for each (see :attr:`EngineConfig.notes`)
and carries on, since a file written for the real engine should start the dev engine too. The
blocks of those workers are kept
(:meth:`EngineConfig.entries`) for the dev engine to apply as it learns to emulate them.

One deliberate deviation: a listener without a ``host`` binds 127.0.0.1, not the engine's
0.0.0.0. The dev engine has no authentication, so it is reachable from other machines only when
the file says so in as many words (and then it logs a warning).

Errors are :class:`ConfigError`, whose message names the file and the key at fault, in the form
``workers[2].config.port``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike, fspath
from pathlib import Path
from typing import Final

import attrs
import yaml

from ._engine._builtins import BUILTIN_WORKERS as PLUGIN_WORKERS
from ._engine._builtins import BlockError
from ._engine._builtins import describe_setting as _kind
from ._engine._http_functions import HTTP_FUNCTIONS, HttpSecurity
from ._engine._observability import (
    OBSERVABILITY,
    ObservabilitySettings,
    read_observability_block,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT_MS",
    "DEFAULT_LISTENER_HOST",
    "DEFAULT_LISTENER_PORT",
    "VERSION_PLACEHOLDER",
    "WORKER_MANAGER",
    "ConfigError",
    "EngineConfig",
    "Listener",
    "WorkerEntry",
    "parse_config",
    "read_config",
    "resolve_listeners",
    "substitute",
]

#: The worker that accepts worker connections: one listener per entry.
WORKER_MANAGER: Final = "iii-worker-manager"
#: The engine's port for a listener whose block names none.
DEFAULT_LISTENER_PORT: Final = 49134
#: Where a listener whose block names no host binds (the engine: 0.0.0.0; see the module notes).
DEFAULT_LISTENER_HOST: Final = "127.0.0.1"
DEFAULT_HANDSHAKE_TIMEOUT_MS: Final = 10_000
#: The default that stands for the engine's version, as in ``${SERVICE_VERSION:__III_...__}``.
VERSION_PLACEHOLDER: Final = "__III_ENGINE_VERSION__"

_PLACEHOLDER: Final = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")
_TOP_LEVEL_KEYS: Final = ("workers", "modules", "registration_namespace_grace_ms")
_WORKER_MANAGER_KEYS: Final = (
    "host",
    "port",
    "handshake_timeout_ms",
    "middleware_function_id",
    "rbac",
)
_SECURITY_KEYS: Final = ("url_allowlist", "block_private_ips", "require_https")

#: The engine's in-process workers (spec/engine.md, section 1.2): none may have an ``image``.
BUILTIN_WORKERS: Final = frozenset(
    {
        WORKER_MANAGER,
        "configuration",
        "iii-engine-functions",
        "iii-observability",
        "iii-telemetry",
        "iii-http",
        "iii-stream",
        "iii-state",
        "iii-pubsub",
        "iii-cron",
        "iii-queue",
        "iii-http-functions",
        "iii-exec",
        "iii-bridge",
    }
)
#: Workers whose blocks the dev engine applies.
EMULATED_WORKERS: Final = frozenset({WORKER_MANAGER, HTTP_FUNCTIONS, OBSERVABILITY})
#: Workers the dev engine always provides in its own way, whatever their block says.
_ALWAYS_PROVIDED: Final = frozenset({"iii-engine-functions"})
#: Built-in names and the registry workers that replaced them: a file may name one of each pair.
_RENAMED: Final = (
    ("iii-http", "http"),
    ("iii-cron", "cron"),
    ("iii-queue", "queue"),
    ("iii-state", "state"),
    ("iii-pubsub", "pubsub"),
)


class ConfigError(ValueError):
    """An engine config file the dev engine cannot use.

    The message is ``"<source>: <problem>"`` on one line, the problem naming the key at fault
    (``workers[2].config.port: ...``) where there is one.

    Attributes:
        source: the file's path, or the name given to :func:`parse_config`.
        problem: what is wrong, without the source.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@attrs.frozen
class WorkerEntry:
    """One entry of ``workers`` (or ``modules``), in file order.

    Attributes:
        name: the name as written.
        instance: the name, or ``name#N`` for its (N+1)-th occurrence.
        config: the ``config`` block as parsed (``None`` when absent).
        image: the ``image`` field, if any.
        key: where the entry is in the file, as ``workers[2]``.
    """

    name: str
    instance: str
    config: object = None
    image: str | None = None
    key: str = ""

    @property
    def kind(self) -> str:
        """The worker the entry runs: the name up to any ``#``, as the engine looks it up."""
        return self.name.partition("#")[0]


@attrs.frozen
class Listener:
    """Where one ``iii-worker-manager`` accepts worker connections.

    Attributes:
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
        handshake_timeout: seconds a client has to finish its upgrade request.
    """

    host: str
    port: int
    handshake_timeout: float


@attrs.frozen
class EngineConfig:
    """An engine config file, read: what :func:`iii_trio.testing.open_dev_engine` takes as
    ``config=``. :func:`iii_trio.testing.load_config` reads one from a file.

    Attributes:
        source: the file it was read from (or the name given to :func:`parse_config`).
        workers: every entry, ``workers`` then ``modules``.
        listeners: one per ``iii-worker-manager`` entry, the main one first; empty when the file
            lists none (the dev engine then listens where it is told).
        namespace_grace_ms: ``registration_namespace_grace_ms``, if the file sets it.
        notes: what the dev engine ignores in the file, one line each, to log at INFO.
        http_security: the security settings of the first ``iii-http-functions`` entry, the
            engine's defaults filling in what it leaves out; ``None`` when the file lists no
            such entry.
        builtin_settings: for each built-in worker the dev engine runs as a plugin (``iii-state``,
            ``iii-queue``...) that the file lists, the settings read from its first entry.
        observability: the settings of the first ``iii-observability`` entry; ``None`` when
            the file lists none (the worker then runs with the engine's defaults).
    """

    source: str
    workers: tuple[WorkerEntry, ...] = ()
    listeners: tuple[Listener, ...] = ()
    namespace_grace_ms: int | None = None
    notes: tuple[str, ...] = ()
    http_security: HttpSecurity | None = None
    builtin_settings: Mapping[str, object] = attrs.field(factory=dict)
    observability: ObservabilitySettings | None = None

    def entries(self, name: str) -> tuple[WorkerEntry, ...]:
        """The entries of worker ``name`` (every instance, in file order)."""
        return tuple(entry for entry in self.workers if entry.kind == name)


def read_config(
    path: str | PathLike[str], *, environ: Mapping[str, str], engine_version: str
) -> EngineConfig:
    """Read the config file at ``path``; see :func:`parse_config`.

    Raises:
        ConfigError: the file is not UTF-8 or not a valid config.
        OSError: the file cannot be read.
    """
    source = fspath(path)
    data = Path(source).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, f"not UTF-8 text (byte {exc.start})") from exc
    return parse_config(text, source=source, environ=environ, engine_version=engine_version)


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    environ: Mapping[str, str],
    engine_version: str,
) -> EngineConfig:
    """Read an engine config from its text, as the engine reads its ``config.yaml``.

    Args:
        text: the file's content.
        source: names the file in error messages.
        environ: the environment that ``${VAR}`` placeholders read.
        engine_version: what the default ``__III_ENGINE_VERSION__`` stands for.

    Raises:
        ConfigError: an unset variable, invalid YAML, or a value of the wrong shape.
    """
    substituted = substitute(text, environ, engine_version=engine_version, source=source)
    try:
        document = yaml.safe_load(substituted)
    except yaml.YAMLError as exc:
        raise ConfigError(source, _yaml_problem(exc)) from exc
    return _Reader(source).read(document)


def substitute(
    text: str, environ: Mapping[str, str], *, engine_version: str, source: str = "<config>"
) -> str:
    """``text`` with its ``${VAR}`` / ``${VAR:default}`` placeholders replaced.

    Raises:
        ConfigError: naming every variable that is unset and has no default.
    """
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is not None:
            return value
        if default is None:
            if name not in missing:
                missing.append(name)
            return match.group(0)
        return engine_version if default == VERSION_PLACEHOLDER else default

    substituted = _PLACEHOLDER.sub(replace, text)
    if missing:
        names = ", ".join(f"'{name}'" for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise ConfigError(
            source,
            f"environment variable{plural} {names} not set and no default provided "
            f"(write ${{{missing[0]}:default}} to give one)",
        )
    return substituted


def resolve_listeners(
    config: EngineConfig | None,
    host: str | None,
    port: int | None,
    *,
    default_host: str,
    default_port: int,
    handshake_timeout: float,
) -> tuple[Listener, ...]:
    """Where to listen: the file's listeners with ``host`` / ``port`` (when given) replacing
    the main one's, or one listener from ``host`` / ``port`` and the defaults when the file
    lists none."""
    listeners = config.listeners if config is not None else ()
    if not listeners:
        return (
            Listener(
                host=default_host if host is None else host,
                port=default_port if port is None else port,
                handshake_timeout=handshake_timeout,
            ),
        )
    main = listeners[0]
    main = attrs.evolve(
        main,
        host=main.host if host is None else host,
        port=main.port if port is None else port,
    )
    return (main, *listeners[1:])


# -- reading the parsed document -------------------------------------------------------------


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    text = f"invalid YAML{where}: {problem}"
    if context:
        text += f" ({context})"
    return " ".join(text.split())


@attrs.define
class _Reader:
    """Reads one parsed document, collecting the notes for the dev engine's log."""

    source: str
    notes: list[str] = attrs.field(factory=list)

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, f"{key}: {problem}" if key else problem)

    def note(self, text: str) -> None:
        line = f"config: {text}"
        if line not in self.notes:
            self.notes.append(line)

    def read(self, document: object) -> EngineConfig:
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise self.fail(
                "", f"expected a mapping at the top level (with `workers:`), got {_kind(document)}"
            )
        for key in document:
            if key not in _TOP_LEVEL_KEYS:
                raise self.fail(
                    "",
                    f"unknown top-level key {key!r} (expected workers, modules or "
                    "registration_namespace_grace_ms)",
                )
        workers = self.entries(document, "workers") + self.entries(document, "modules")
        workers = _name_instances(workers)
        self.check_renamed(workers)
        listeners = []
        http_security = None
        builtin_settings: dict[str, object] = {}
        observability = None
        plugins = {worker.name: worker for worker in PLUGIN_WORKERS}
        for entry in workers:
            if entry.image is not None and entry.kind in BUILTIN_WORKERS:
                raise self.fail(
                    f"{entry.key}.image",
                    f"'{entry.name}' is a built-in worker and cannot have an 'image' field",
                )
            if entry.kind == WORKER_MANAGER:
                listeners.append(self.listener(entry.config, f"{entry.key}.config"))
            elif entry.kind == HTTP_FUNCTIONS:
                security = self.http_security(entry.config, f"{entry.key}.config")
                if http_security is None:
                    http_security = security
                else:
                    self.note(
                        f"only the first '{HTTP_FUNCTIONS}' entry applies; '{entry.instance}' "
                        "is ignored"
                    )
            elif entry.kind == OBSERVABILITY:
                where = f"{entry.key}.config"
                try:
                    settings = read_observability_block(entry.config)
                except BlockError as exc:
                    raise self.fail(
                        f"{where}.{exc.key}" if exc.key else where, exc.problem
                    ) from None
                if observability is not None:
                    self.note(
                        f"only the first '{OBSERVABILITY}' entry applies; '{entry.instance}' "
                        "is ignored"
                    )
                    continue
                observability = settings
                if settings.not_applied:
                    self.note(
                        f"{OBSERVABILITY} keys not applied by the dev engine: "
                        f"{', '.join(settings.not_applied)}; ignored"
                    )
            elif entry.kind in plugins:
                where = f"{entry.key}.config"
                try:
                    settings = plugins[entry.kind].read_block(entry.config)
                except BlockError as exc:
                    raise self.fail(
                        f"{where}.{exc.key}" if exc.key else where, exc.problem
                    ) from None
                if entry.kind in builtin_settings:
                    self.note(
                        f"only the first '{entry.kind}' entry applies; '{entry.instance}' "
                        "is ignored"
                    )
                else:
                    builtin_settings[entry.kind] = settings
            elif entry.kind in _ALWAYS_PROVIDED and entry.image is None:
                if entry.config is not None:
                    self.note(
                        f"the block of worker '{entry.name}' is not applied: the dev engine "
                        "always provides that worker, with its defaults; ignored"
                    )
            else:
                self.note(f"worker '{entry.name}' is not emulated by the dev engine; ignored")
        grace = None
        if document.get("registration_namespace_grace_ms") is not None:
            grace = self.integer(
                document["registration_namespace_grace_ms"], "registration_namespace_grace_ms"
            )
        return EngineConfig(
            source=self.source,
            workers=tuple(workers),
            listeners=tuple(listeners),
            namespace_grace_ms=grace,
            notes=tuple(self.notes),
            http_security=http_security,
            builtin_settings=builtin_settings,
            observability=observability,
        )

    def entries(self, document: dict[object, object], key: str) -> list[WorkerEntry]:
        if key not in document:
            return []
        items = document[key]
        if items is None:
            raise self.fail(key, f"null is not a list of workers (write `{key}: []` for none)")
        if not isinstance(items, list):
            raise self.fail(key, f"expected a list of workers, got {_kind(items)}")
        return [self.entry(item, f"{key}[{index}]") for index, item in enumerate(items)]

    def entry(self, item: object, key: str) -> WorkerEntry:
        if not isinstance(item, dict):
            raise self.fail(key, f"expected a mapping with a `name`, got {_kind(item)}")
        if "name" not in item:
            raise self.fail(f"{key}.name", "missing: every worker needs a name")
        name = item["name"]
        if not isinstance(name, str):
            raise self.fail(f"{key}.name", f"expected a string, got {_kind(name)}")
        if not name.strip():
            raise self.fail(f"{key}.name", "must not be blank")
        image = item.get("image")
        if image is not None and not isinstance(image, str):
            raise self.fail(f"{key}.image", f"expected a string, got {_kind(image)}")
        return WorkerEntry(
            name=name, instance=name, config=item.get("config"), image=image, key=key
        )

    def check_renamed(self, workers: list[WorkerEntry]) -> None:
        names = {entry.kind for entry in workers}
        clashes = [
            f"'{old}' is the deprecated name for '{new}'"
            for old, new in _RENAMED
            if old in names and new in names
        ]
        if clashes:
            raise self.fail(
                "", f"duplicate worker configurations: {'; '.join(clashes)} (keep one of each)"
            )

    def listener(self, block: object, key: str) -> Listener:
        if block is None:
            block = {}
        if not isinstance(block, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(block)}")
        for name in block:
            if name not in _WORKER_MANAGER_KEYS:
                raise self.fail(
                    f"{key}.{name}",
                    f"unknown key (an {WORKER_MANAGER} block takes "
                    f"{', '.join(_WORKER_MANAGER_KEYS)})",
                )
        host = block.get("host", DEFAULT_LISTENER_HOST)
        if not isinstance(host, str):
            raise self.fail(f"{key}.host", f"expected a string, got {_kind(host)}")
        if not host.strip():
            raise self.fail(f"{key}.host", "must not be blank")
        port = self.integer(block.get("port", DEFAULT_LISTENER_PORT), f"{key}.port", maximum=65535)
        timeout_ms = self.integer(
            block.get("handshake_timeout_ms", DEFAULT_HANDSHAKE_TIMEOUT_MS),
            f"{key}.handshake_timeout_ms",
        )
        middleware = block.get("middleware_function_id")
        if middleware is not None:
            if not isinstance(middleware, str):
                raise self.fail(
                    f"{key}.middleware_function_id", f"expected a string, got {_kind(middleware)}"
                )
            self.note(
                f"{WORKER_MANAGER} key 'middleware_function_id' is not applied by the dev "
                "engine; ignored"
            )
        rbac = block.get("rbac")
        if rbac is not None:
            if not isinstance(rbac, dict):
                raise self.fail(f"{key}.rbac", f"expected a mapping, got {_kind(rbac)}")
            self.note(f"{WORKER_MANAGER} key 'rbac' is not applied by the dev engine; ignored")
        return Listener(host=host, port=port, handshake_timeout=timeout_ms / 1000)

    def http_security(self, block: object, key: str) -> HttpSecurity:
        if block is None:
            return HttpSecurity()
        if not isinstance(block, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(block)}")
        for name in block:
            if name != "security":
                raise self.fail(
                    f"{key}.{name}", f"unknown key (an {HTTP_FUNCTIONS} block takes security)"
                )
        if "security" not in block:
            return HttpSecurity()
        key = f"{key}.security"
        security = block["security"]
        if not isinstance(security, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(security)}")
        for name in security:
            if name not in _SECURITY_KEYS:
                raise self.fail(
                    f"{key}.{name}", f"unknown key (security takes {', '.join(_SECURITY_KEYS)})"
                )
        allowlist = security.get("url_allowlist", [])
        if not isinstance(allowlist, list):
            raise self.fail(f"{key}.url_allowlist", f"expected a list, got {_kind(allowlist)}")
        for index, pattern in enumerate(allowlist):
            if not isinstance(pattern, str):
                raise self.fail(
                    f"{key}.url_allowlist[{index}]", f"expected a string, got {_kind(pattern)}"
                )
        flags = {}
        for name in ("block_private_ips", "require_https"):
            value = security.get(name, True)
            if not isinstance(value, bool):
                raise self.fail(f"{key}.{name}", f"expected a boolean, got {_kind(value)}")
            flags[name] = value
        return HttpSecurity(
            # An empty list means "any host" to the engine.
            url_allowlist=tuple(allowlist) or ("*",),
            block_private_ips=flags["block_private_ips"],
            require_https=flags["require_https"],
        )

    def integer(self, value: object, key: str, *, maximum: int | None = None) -> int:
        # bool is an int to Python, not to the engine's YAML reader.
        if type(value) is int and value >= 0 and (maximum is None or value <= maximum):
            return value
        wanted = "a non-negative integer" if maximum is None else f"an integer from 0 to {maximum}"
        raise self.fail(key, f"expected {wanted}, got {_kind(value)}")


def _name_instances(workers: list[WorkerEntry]) -> list[WorkerEntry]:
    """Name the second and later occurrences of a name ``name#1``, ``name#2``..."""
    seen: dict[str, int] = {}
    named = []
    for entry in workers:
        count = seen.get(entry.name, 0)
        seen[entry.name] = count + 1
        named.append(attrs.evolve(entry, instance=f"{entry.name}#{count}") if count else entry)
    return named
