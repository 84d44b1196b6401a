"""The ``iii-trio`` command line (also ``python -m iii_trio``).

::

    iii-trio trigger FUNCTION_PATH [key=value ...] [--json JSON] [--address HOST] [--port PORT]
                     [--timeout-ms MS] [-n NAMESPACE]
    iii-trio trigger --function-id ID [--payload JSON] [--address HOST] [--port PORT]
    iii-trio dev [--config FILE] [--host HOST] [--port PORT] [--http-port PORT]

``trigger`` behaves like the engine binary's ``iii trigger`` (payload rules, messages, exit codes:
0 success, 1 error, 2 usage error) and also accepts the documented ``--function-id`` /
``--payload`` spelling. ``dev`` runs the dev engine in the foreground until Ctrl-C, from an iii
engine config file if given one (``--host`` / ``--port`` override its main listener); a config
file it cannot use is a usage error.

This module is the outermost caller, so it is the one place that turns ``--timeout-ms`` into
:func:`trio.fail_after` and that handles Ctrl-C (it receives SIGINT while trio runs and catches
:class:`KeyboardInterrupt` outside that window); the library does neither.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import random
import signal
import socket
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs
import orjson
import trio

from ._exceptions import (
    ConnectionLost,
    EngineUnavailable,
    IIIError,
    InvocationError,
    RegistrationRejected,
)
from ._protocol._backoff import delays
from ._types import Backoff, JSONValue
from ._version import __version__
from ._worker import open_worker

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from .testing import EngineConfig

__all__ = ["main"]

logger = logging.getLogger("iii_trio.cli")

#: The worker name the CLI connects as, like the engine binary's ``iii trigger``.
CLI_WORKER_NAME: Final = "iii-cli:trigger"
DEFAULT_ADDRESS: Final = "localhost"
#: The iii-http worker's port when neither --http-port nor a config file says.
DEFAULT_HTTP_PORT: Final = 3111
DEFAULT_PORT: Final = 49134
DEFAULT_TIMEOUT_MS: Final = 30000
DEFAULT_DEV_HOST: Final = "127.0.0.1"

TIMEOUT_MESSAGE: Final = (
    "Timed out waiting for the engine (no response within the timeout). "
    "Is the engine running at the given address and port?"
)

# One connection attempt per open_worker(): the retry loop lives here, so the CLI can report
# the last failure when the deadline passes. Quick retries: an engine starting next to us (a CI
# script) is usually up within a second.
_ONE_ATTEMPT: Final = Backoff(max_attempts=1)
_RETRY: Final = Backoff(initial=0.05, maximum=1.0, multiplier=2.0, jitter=0.2)
_WORKER_CONFLICT: Final = "WORKER_NAMESPACE_CONFLICT"
# Stripped from a function description before it reaches the terminal (newlines are kept).
_BIDI_AND_SEPARATORS: Final = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)
_NOT_FOUND_MARKERS: Final = ("not_found", "not found", "not registered")
_FUNCTIONS_INFO: Final = "engine::functions::info"


class CommandError(Exception):
    """A failure the CLI reports as ``Error: <message>`` with exit status 1."""


# -- payloads and output ---------------------------------------------------------------------


def _parse_json(raw: str, flag: str) -> JSONValue:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"{flag}: invalid JSON `{raw}`\n\nCaused by:\n    {exc}") from None


def build_payload(
    raw_json: str | None, tokens: Sequence[str], *, flag: str = "--json"
) -> JSONValue:
    """The invocation payload from ``--json`` (or ``--payload``, named by ``flag``) and
    ``key=value`` tokens, following the engine CLI's rules.

    No input gives ``{}``; JSON alone is used as is; tokens alone build an object whose values
    are JSON-decoded when they parse (``n=10`` → 10) and kept as strings otherwise; both together
    need a JSON object, which the tokens then update.

    Raises:
        CommandError: invalid JSON, a token without ``=`` or with an empty key, or a non-object
            JSON combined with tokens.
    """
    base = None if raw_json is None else _parse_json(raw_json, flag)
    pairs: dict[str, JSONValue] = {}
    for token in tokens:
        key, equals, value = token.partition("=")
        if not equals:
            raise CommandError(f"expected key=value, got `{token}`")
        if not key:
            raise CommandError(f"payload key must not be empty (got `{token}`)")
        try:
            pairs[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            pairs[key] = value
    if raw_json is None:
        return pairs
    if not tokens:
        return base
    if not isinstance(base, dict):
        raise CommandError(f"{flag} must be an object when combined with kv pairs")
    return {**base, **pairs}


def render_json(value: JSONValue) -> str:
    """Pretty JSON as the engine CLI prints it: 2-space indent, object keys sorted."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def render_error_body(code: str, message: str, stacktrace: str | None) -> str:
    """An engine error body as the engine CLI prints it after ``Error: ``."""
    return render_json({"code": code, "message": message, "stacktrace": stacktrace})


def engine_url(address: str, port: int) -> str:
    """The engine's WebSocket URL for ``--address`` / ``--port`` (IPv6 literals bracketed)."""
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"ws://{address}:{port}"


# -- help from the engine's function metadata ------------------------------------------------


def clean_text(text: str) -> str:
    """``text`` without control characters (newlines kept) or bidi overrides."""
    return "".join(
        char
        for char in text
        if char == "\n" or (unicodedata.category(char) != "Cc" and char not in _BIDI_AND_SEPARATORS)
    )


def _type_name(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list) and kind and all(isinstance(item, str) for item in kind):
        return "|".join(kind)
    return "any"


def parameter_rows(schema: object) -> list[tuple[str, str, str, str]] | None:
    """``(name, type, required, description)`` for each property of a request schema; None
    when the schema names no properties."""
    if not isinstance(schema, Mapping):
        return None
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return None
    required = schema.get("required")
    required_names = set(required) if isinstance(required, list) else set()
    rows = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        description = spec.get("description")
        text = " ".join(clean_text(description).split()) if isinstance(description, str) else ""
        rows.append(
            (
                clean_text(str(name)),
                _type_name(spec),
                "yes" if name in required_names else "no",
                text,
            )
        )
    return rows


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def render_function_help(
    function_path: str, detail: Mapping[str, Any], *, prog: str, options: str
) -> str:
    """The help page of one function, from its ``engine::functions::info`` detail."""
    namespace = detail.get("namespace")
    title = function_path if not isinstance(namespace, str) else f"{function_path} ({namespace})"
    lines = [title]
    description = detail.get("description")
    if isinstance(description, str) and description.strip():
        lines += ["", clean_text(description).strip("\n")]
    lines += [
        "",
        f"Usage: {prog} trigger {function_path} [key=value ...] [--json '<obj>']",
        "",
        "Parameters:",
    ]
    schema = detail.get("request_schema")
    if schema is None:
        schema = detail.get("request_format")
    rows = parameter_rows(schema)
    if rows is not None:
        lines += _table(("name", "type", "required", "description"), rows)
    elif isinstance(schema, Mapping) and schema:
        lines.append(f"  *(no named parameters: the payload is of type {_type_name(schema)})*")
    else:
        lines.append("  *(no request schema published)*")
    return "\n".join([*lines, "", options.rstrip("\n")]) + "\n"


# -- argument parsing ------------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def _positive_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid milliseconds {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, got {value}")
    return value


def _namespace(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank (omit it to use `default`)")
    return text


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)


def _trigger_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{prog} trigger",
        usage=(
            f"{prog} trigger [OPTIONS] [FUNCTION_PATH] [KEY=VALUE]...\n"
            f"       {prog} trigger --function-id ID [--payload JSON] [OPTIONS]"
        ),
        description="Invoke a function on an iii engine and print its result as JSON.",
        epilog=(
            f"Tip: `{prog} trigger <fn-path> --help` queries a running engine for the\n"
            "  function's description and request schema."
        ),
        formatter_class=_Formatter,
        add_help=False,
    )
    arguments = parser.add_argument_group("Arguments")
    arguments.add_argument(
        "function_path",
        nargs="?",
        metavar="FUNCTION_PATH",
        help="the function id, e.g. orders::process (required unless --help)",
    )
    arguments.add_argument(
        "kv",
        nargs="*",
        metavar="KEY=VALUE",
        help="payload fields; values are JSON when they parse (n=10, ok=true), else strings",
    )
    options = parser.add_argument_group("Options")
    payloads = options.add_mutually_exclusive_group()
    payloads.add_argument("--json", metavar="JSON", help="the payload: any JSON value")
    payloads.add_argument("--payload", metavar="JSON", help="same as --json")
    options.add_argument(
        "--function-id", metavar="ID", help="the function id (instead of FUNCTION_PATH)"
    )
    options.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        metavar="ADDRESS",
        help="engine host [default: %(default)s]",
    )
    options.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        metavar="PORT",
        help="engine WebSocket port [default: %(default)s]",
    )
    options.add_argument(
        "--timeout-ms",
        type=_positive_ms,
        default=DEFAULT_TIMEOUT_MS,
        metavar="TIMEOUT_MS",
        help="max wait for the result, connecting included [default: %(default)s]",
    )
    options.add_argument(
        "-n",
        "--namespace",
        type=_namespace,
        metavar="NS",
        help="namespace to resolve the function in [default: default]",
    )
    options.add_argument(
        "-h", "--help", action="store_true", help="print help (with FUNCTION_PATH: the function's)"
    )
    return parser


def _http_port(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def _dev_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{prog} dev",
        description=(
            "Run the iii_trio dev engine in the foreground until Ctrl-C (or SIGTERM): workers\n"
            f"and `{prog} trigger` can use it on a machine without the iii binary. Workers\n"
            "connecting and leaving are logged on stderr."
        ),
        formatter_class=_Formatter,
    )
    # None tells "not given" apart, so that only flags given override the config file.
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=(
            "an iii engine config.yaml to start from: each iii-worker-manager entry is a "
            "listener, the first one the main one (--host and --port override its address); "
            "the log notes what the dev engine does not emulate"
        ),
    )
    parser.add_argument(
        "--host",
        help=f"interface to listen on [default: the config's, else {DEFAULT_DEV_HOST}]",
    )
    parser.add_argument(
        "--port",
        type=_port,
        help=f"WebSocket port [default: the config's, else {DEFAULT_PORT}]",
    )
    parser.add_argument(
        "--http-port",
        type=_http_port,
        metavar="PORT",
        help=(
            "REST API port of the iii-http worker, 0 for any free one "
            f"[default: the config's, else {DEFAULT_HTTP_PORT}]"
        ),
    )
    parser.add_argument(
        "--without",
        metavar="WORKER",
        action="append",
        default=[],
        help=(
            "a built-in worker not to run, such as iii-queue (repeatable); without --config "
            "every built-in worker runs, with one only those the file lists"
        ),
    )
    return parser


def _main_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Command line for the iii engine, from iii_trio.",
        formatter_class=_Formatter,
        epilog=(
            "commands:\n"
            "  trigger   invoke a function and print its result (alias: t)\n"
            "  dev       run the dev engine in the foreground\n\n"
            f"Run `{prog} COMMAND --help` for a command's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "command", choices=["trigger", "t", "dev"], metavar="COMMAND", help="trigger (t) or dev"
    )
    return parser


# -- running trigger -------------------------------------------------------------------------


@attrs.frozen
class TriggerRequest:
    """One ``trigger`` invocation, fully parsed and validated."""

    function_id: str
    payload: JSONValue
    address: str
    port: int
    timeout_ms: int
    namespace: str | None

    @property
    def url(self) -> str:
        return engine_url(self.address, self.port)


@attrs.define
class _Progress:
    """What the retry loop learned; reported when the deadline passes."""

    connected: bool = False
    attempts: int = 0
    last_failure: str | None = None


class _Timeout(Exception):
    def __init__(self, progress: _Progress) -> None:
        super().__init__(TIMEOUT_MESSAGE)
        self.progress = progress


def _failure_reason(error: EngineUnavailable) -> str:
    # What went wrong on the last attempt, without the "cannot reach ..." framing.
    return str(error.__cause__ or error)


def _fallback_worker_names() -> Iterator[str]:
    yield CLI_WORKER_NAME
    # Another invocation is live under the shared name (runs in parallel): take a unique one.
    yield f"{CLI_WORKER_NAME}:{socket.gethostname()}:{os.getpid()}"


async def _invoke(
    url: str,
    function_id: str,
    payload: JSONValue,
    namespace: str | None,
    progress: _Progress,
) -> JSONValue:
    """Connect (retrying until cancelled), call once, disconnect."""
    names = _fallback_worker_names()
    name = next(names)
    retry_delays = delays(_RETRY, random.Random())
    while True:
        progress.attempts += 1
        try:
            async with open_worker(url, name=name, backoff=_ONE_ATTEMPT) as worker:
                progress.connected = True
                return await worker.trigger(function_id, payload, namespace=namespace)
        except EngineUnavailable as exc:
            if progress.connected:
                # The session that carried our call ended; the reconnect failing is a symptom.
                raise ConnectionLost(str(exc)) from exc
            progress.last_failure = _failure_reason(exc)
        except RegistrationRejected as exc:
            if exc.code != _WORKER_CONFLICT:
                raise
            fallback = next(names, None)
            if fallback is None:
                raise
            name = fallback
            continue
        await trio.sleep(next(retry_delays))


async def _invoke_with_deadline(
    url: str, function_id: str, payload: JSONValue, namespace: str | None, timeout_ms: int
) -> JSONValue:
    progress = _Progress()
    try:
        with trio.fail_after(timeout_ms / 1000):
            return await _invoke(url, function_id, payload, namespace, progress)
    except trio.TooSlowError:
        raise _Timeout(progress) from None


def _timeout_text(error: _Timeout, url: str) -> str:
    progress = error.progress
    if progress.connected:
        return TIMEOUT_MESSAGE
    cause = f"no connection to the engine at {url} ({progress.attempts} attempt(s))"
    if progress.last_failure:
        cause += f"; last error: {progress.last_failure}"
    return f"{TIMEOUT_MESSAGE}\n\nCaused by:\n    {cause}"


def _connection_lost_text(url: str) -> str:
    return f"the connection to the engine at {url} closed unexpectedly before the result arrived"


@attrs.frozen
class _Outcome:
    """How one call ended: a result, or the failure text printed after ``Error: ``."""

    result: JSONValue = None
    failure: str | None = None
    #: The same failure on one line (for warnings), when it differs.
    summary: str | None = None


async def _call(
    url: str, function_id: str, payload: JSONValue, namespace: str | None, timeout_ms: int
) -> _Outcome:
    try:
        result = await _invoke_with_deadline(url, function_id, payload, namespace, timeout_ms)
    except InvocationError as exc:
        failure = render_error_body(exc.code, exc.message, exc.stacktrace)
        outcome = _Outcome(failure=failure, summary=str(exc))
    except _Timeout as exc:
        failure = _timeout_text(exc, url)
        outcome = _Outcome(failure=failure, summary=" ".join(failure.split()))
    except ConnectionLost:
        outcome = _Outcome(failure=_connection_lost_text(url))
    except IIIError as exc:
        outcome = _Outcome(failure=str(exc))
    else:
        return _Outcome(result=result)
    await trio.lowlevel.checkpoint()  # (the failure paths did too, but not provably)
    return outcome


async def run_trigger(request: TriggerRequest, stdout: TextIO, stderr: TextIO) -> int:
    """Call the function and print the outcome; returns the exit status."""
    outcome = await _call(
        request.url, request.function_id, request.payload, request.namespace, request.timeout_ms
    )
    if outcome.failure is not None:
        _error(stderr, outcome.failure)
        return 1
    if outcome.result is not None:
        print(render_json(outcome.result), file=stdout)
    return 0


async def run_function_help(
    request: TriggerRequest, *, prog: str, static_help: str, stdout: TextIO, stderr: TextIO
) -> int:
    """Print the help page of ``request.function_id``, asking the engine for its metadata."""
    query: dict[str, JSONValue] = {"function_id": request.function_id}
    if request.namespace is not None:
        query["namespace"] = request.namespace
    outcome = await _call(request.url, _FUNCTIONS_INFO, query, None, request.timeout_ms)
    detail = outcome.result
    if outcome.failure is None and isinstance(detail, Mapping):
        options = static_help[static_help.find("Options:") :].split("\nTip:")[0]
        stdout.write(render_function_help(request.function_id, detail, prog=prog, options=options))
        return 0
    if outcome.failure is None:
        problem = f"unexpected answer from {_FUNCTIONS_INFO}: {detail!r}"
    else:
        problem = outcome.summary or outcome.failure
    lowered = problem.lower()
    if any(marker in lowered for marker in _NOT_FOUND_MARKERS) and _FUNCTIONS_INFO not in lowered:
        path = request.function_id
        print(
            f"{_label('error', stderr)} function `{path}` not found in engine registry.",
            file=stderr,
        )
        print(
            f"  {_label('hint', stderr)} run `{prog} trigger engine::functions::list` "
            "to see registered functions.",
            file=stderr,
        )
        return 1
    print(
        f"{_label('warning', stderr)} could not query engine for `{request.function_id}`: "
        f"{problem}",
        file=stderr,
    )
    print("Showing static CLI help only.", file=stderr)
    print(file=stderr)
    stdout.write(static_help)
    return 0


_COLORS: Final = {"error": "1;31", "warning": "1;33", "hint": "1;36"}


def _label(kind: str, stream: TextIO) -> str:
    text = f"{kind}:"
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty() and not os.environ.get("NO_COLOR"):
        return f"\x1b[{_COLORS[kind]}m{text}\x1b[0m"
    return text


def _error(stderr: TextIO, message: str) -> None:
    print(f"Error: {message}", file=stderr)


async def _until_interrupted(run: Callable[[], Awaitable[int]]) -> int:
    """``await run()``, or 130 (a shell's status for Ctrl-C) if SIGINT arrives first.

    Receiving the signal instead of letting trio raise KeyboardInterrupt wherever the program
    happens to be makes Ctrl-C a plain cancellation: the connection closes in order and no
    library task ever sees the interrupt.
    """
    status = 130
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def body() -> None:
                nonlocal status
                status = await run()
                nursery.cancel_scope.cancel(reason="finished")

            nursery.start_soon(body)
            await anext(signals)
            nursery.cancel_scope.cancel(reason="interrupted")
    return status


# -- running dev -----------------------------------------------------------------------------


async def serve_dev(
    host: str | None,
    port: int | None,
    config: EngineConfig | None = None,
    without: Sequence[str] = (),
    http_port: int | None = None,
) -> None:
    """Run the dev engine until SIGINT or SIGTERM, then shut it down cleanly."""
    from .testing import serve_dev_engine  # the dev engine is only loaded for this command

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            engine = await nursery.start(
                functools.partial(
                    serve_dev_engine,
                    host,
                    port,
                    config=config,
                    without=without,
                    http_port=http_port,
                )
            )
            logger.info("workers connect to %s; press Ctrl-C to stop", " or ".join(engine.urls))
            if engine.http_url is not None:
                logger.info("REST API (http triggers) at %s", engine.http_url)
            received = await anext(signals)
            logger.info("%s received: stopping", signal.Signals(received).name)
            nursery.cancel_scope.cancel(reason="signal received")


def _run_dev(args: argparse.Namespace, stderr: TextIO) -> int:
    from .testing import ConfigError, load_config  # the dev engine is only loaded for this command
    from .testing._config import resolve_listeners
    from .testing._engine._builtins import check_names

    try:
        check_names(args.without, "--without")
    except ValueError as exc:
        _error(stderr, str(exc))
        return 2
    config = None
    if args.config is not None:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            _error(stderr, str(exc))
            return 2
        except OSError as exc:
            _error(stderr, f"cannot read the config file {args.config}: {exc.strerror or exc}")
            return 2
    host: str | None = args.host
    port: int | None = args.port
    http_port: int | None = args.http_port
    if config is None and http_port is None:
        http_port = DEFAULT_HTTP_PORT  # the engine's, where `open_dev_engine` picks any
    if config is None or not config.listeners:
        # The CLI's own defaults, where the engine would listen without a file.
        host = DEFAULT_DEV_HOST if host is None else host
        port = DEFAULT_PORT if port is None else port
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        trio.run(serve_dev, host, port, config, args.without, http_port)
    except (OSError, BaseExceptionGroup) as exc:
        failure = _only_leaf(exc, OSError)
        if failure is None:
            raise
        listeners = resolve_listeners(
            config,
            host,
            port,
            default_host=DEFAULT_DEV_HOST,
            default_port=DEFAULT_PORT,
            handshake_timeout=0,  # (not part of the message)
        )
        where = ", ".join(f"{listener.host}:{listener.port}" for listener in listeners)
        _error(stderr, f"cannot serve the dev engine on {where}: {failure}")
        return 1
    finally:
        root.removeHandler(handler)
    return 0


def _only_leaf(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``error`` itself or the single exception inside its groups, when it is a ``kind``."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error if isinstance(error, kind) else None


# -- entry point -----------------------------------------------------------------------------


def _is_interrupt(error: BaseException) -> bool:
    if isinstance(error, KeyboardInterrupt):
        return True
    if isinstance(error, BaseExceptionGroup):
        matched, rest = error.split((KeyboardInterrupt, trio.Cancelled))
        return rest is None and matched is not None
    return False


def _trigger_main(argv: Sequence[str], prog: str, stdout: TextIO, stderr: TextIO) -> int:
    parser = _trigger_parser(prog)
    args = parser.parse_intermixed_args(argv)
    tokens = list(args.kv)
    if args.function_id is not None:
        # With --function-id every positional is a payload token.
        if args.function_path is not None:
            tokens.insert(0, args.function_path)
        function_id: str | None = args.function_id
    else:
        function_id = args.function_path
    static_help = parser.format_help()
    if args.help and function_id is None:
        stdout.write(static_help)
        return 0
    if function_id is None:
        _error(
            stderr,
            f"{prog} trigger: missing FUNCTION_PATH. Try: `{prog} trigger <fn-path> [args]`",
        )
        return 1
    if args.help:
        payload: JSONValue = None
    else:
        raw, flag = (
            (args.payload, "--payload") if args.payload is not None else (args.json, "--json")
        )
        try:
            payload = build_payload(raw, tokens, flag=flag)
        except CommandError as exc:
            _error(stderr, str(exc))
            return 1
    request = TriggerRequest(
        function_id=function_id,
        payload=payload,
        address=args.address,
        port=args.port,
        timeout_ms=args.timeout_ms,
        namespace=args.namespace,
    )
    with _library_logs_unprinted():
        if args.help:
            return trio.run(
                _until_interrupted,
                lambda: run_function_help(
                    request, prog=prog, static_help=static_help, stdout=stdout, stderr=stderr
                ),
            )
        return trio.run(_until_interrupted, lambda: run_trigger(request, stdout, stderr))


@contextlib.contextmanager
def _library_logs_unprinted() -> Iterator[None]:
    """``trigger`` reports every failure itself, in the engine CLI's words; without this,
    Python would print the library's warnings (a lost connection, a retry) to stderr too,
    since nothing configured logging."""
    library = logging.getLogger("iii_trio")
    silencer = logging.NullHandler()
    library.addHandler(silencer)
    try:
        yield
    finally:
        library.removeHandler(silencer)


def main(argv: Sequence[str] | None = None, *, prog: str = "iii-trio") -> int:
    """Run the command line; returns the exit status (usage errors exit 2 from argparse)."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdout, stderr = sys.stdout, sys.stderr
    parser = _main_parser(prog)
    # argparse cannot mix sub-commands with intermixed positionals (KEY=VALUE after options),
    # so the command word is dispatched by hand and each command has its own parser.
    if not args or args[0].startswith("-"):
        parser.parse_args(args)  # --help / --version exit here; anything else is an error
        parser.error("a COMMAND is required")
    command, rest = args[0], args[1:]
    try:
        if command in ("trigger", "t"):
            return _trigger_main(rest, prog, stdout, stderr)
        if command == "dev":
            return _run_dev(_dev_parser(prog).parse_args(rest), stderr)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter's final
        # flush from failing again.
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        return 0 if command == "dev" else 130
    except BaseExceptionGroup as group:
        if not _is_interrupt(group):
            raise
        return 0 if command == "dev" else 130
    parser.parse_args(args[:1])  # reports the invalid choice
    parser.error(f"unknown command {command!r}")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (captured output): nothing to protect
        pass
