"""The public surface of ``iii_trio`` (spec/api.md) and the layering rules of STYLE.md 2.3.

The import rules are checked by parsing source with ``ast``: importing ``iii_trio._protocol``
runs ``iii_trio/__init__.py`` first, which imports trio, so ``sys.modules`` proves nothing.
"""

from __future__ import annotations

import ast
import inspect
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import iii_trio

PACKAGE_DIR = Path(iii_trio.__file__).parent
PROTOCOL_DIR = PACKAGE_DIR / "_protocol"
ENGINE_CORE_DIR = PACKAGE_DIR / "testing" / "_engine"
ENGINE_CONFIG = PACKAGE_DIR / "testing" / "_config.py"

# Names spec/api.md fixes, limited to those the package implements today.
REQUIRED_NAMES = {
    "open_worker",
    "Worker",
    "FunctionRef",
    "TriggerRef",
    "Backoff",
    "ConnectionState",
    "FunctionInfo",
    "WorkerInfo",
    "TriggerTypeInfo",
    "TriggerInfo",
    "HttpInvocation",
    "HttpAuth",
    "Context",
    "get_context",
    "use_context",
    "IIIError",
    "EngineUnavailable",
    "ConnectionLost",
    "ProtocolError",
    "RegistrationRejected",
    "TriggerRegistrationError",
    "InvocationError",
    "FunctionNotFound",
    "ApiRequest",
    "ApiResponse",
    "ChannelClosed",
    "Channel",
    "ChannelReader",
    "ChannelWriter",
    "ChannelRef",
}

# Libraries that do I/O or need an event loop: the sans-io layer must not touch them.
IO_MODULES = {
    "trio",
    "trio_websocket",
    "websockets",
    "httpx",
    "h11",
    "outcome",
    "socket",
    "selectors",
    "asyncio",
}
# Where a sans-io module may reach inside the package.
SANS_IO_TARGETS = (
    "iii_trio._protocol",
    "iii_trio._types",
    "iii_trio._exceptions",
    "iii_trio.testing._engine",
)


# --- the public names -------------------------------------------------------------------------


def _exported_names() -> set[str]:
    """Public attributes of the package, leaving out submodules (``iii_trio.testing``) and
    modules imported for internal use."""
    return {
        name
        for name, value in vars(iii_trio).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_is_sorted() -> None:
    assert iii_trio.__all__ == sorted(iii_trio.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(iii_trio.__all__) == len(set(iii_trio.__all__))


def test_all_lists_exactly_the_public_names() -> None:
    assert set(iii_trio.__all__) - {"__version__"} == _exported_names()


def test_every_name_in_all_exists() -> None:
    missing = [name for name in iii_trio.__all__ if not hasattr(iii_trio, name)]
    assert missing == []


def test_version_is_exported_as_a_string() -> None:
    assert "__version__" in iii_trio.__all__
    assert isinstance(iii_trio.__version__, str)
    assert iii_trio.__version__


def test_all_contains_every_name_the_api_contract_requires() -> None:
    assert REQUIRED_NAMES - set(iii_trio.__all__) == set()


def _public_classes() -> list[tuple[str, type]]:
    # A class exported under its own name; aliases such as JSONValue = Any are skipped.
    return [
        (name, value)
        for name in iii_trio.__all__
        if inspect.isclass(value := getattr(iii_trio, name)) and value.__name__ == name
    ]


def test_public_classes_are_found() -> None:
    names = {name for name, _ in _public_classes()}
    assert {"Worker", "Backoff", "ConnectionState", "IIIError", "FunctionNotFound"} <= names


@pytest.mark.parametrize(("name", "cls"), _public_classes(), ids=lambda v: str(v))
def test_public_class_reports_the_package_as_its_module(name: str, cls: type) -> None:
    assert cls.__module__ == "iii_trio"


# --- the exception tree -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parent"),
    [
        ("IIIError", Exception),
        ("EngineUnavailable", iii_trio.IIIError),
        ("ConnectionLost", iii_trio.IIIError),
        ("ProtocolError", iii_trio.IIIError),
        ("RegistrationRejected", iii_trio.IIIError),
        ("ChannelClosed", iii_trio.IIIError),
        ("UnexpectedFrame", iii_trio.IIIError),
        ("TriggerRegistrationError", iii_trio.IIIError),
        ("InvocationError", iii_trio.IIIError),
        ("FunctionNotFound", iii_trio.InvocationError),
        ("Forbidden", iii_trio.InvocationError),
    ],
)
def test_exception_has_the_parent_the_api_contract_draws(name: str, parent: type) -> None:
    cls = getattr(iii_trio, name)
    assert cls.__bases__ == (parent,)


def test_every_exported_exception_is_an_iii_error() -> None:
    exceptions = [cls for _, cls in _public_classes() if issubclass(cls, BaseException)]
    assert len(exceptions) == 11
    for cls in exceptions:
        assert issubclass(cls, iii_trio.IIIError), cls


def test_function_not_found_is_caught_as_an_invocation_error() -> None:
    with pytest.raises(iii_trio.InvocationError) as caught:
        raise iii_trio.FunctionNotFound("function_not_found", "Function a::b not found")
    assert caught.value.code == "function_not_found"
    assert isinstance(caught.value, iii_trio.IIIError)


# --- layering: the sans-io modules ------------------------------------------------------------


def _module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _imported_modules(path: Path, root: Path = PACKAGE_DIR.parent) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, as absolute dotted names, with its line number.
    ``root`` is the directory holding the ``iii_trio`` package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                yield node.lineno, node.module
                continue
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            if node.module is not None:
                yield node.lineno, ".".join([*base, node.module])
            else:
                for alias in node.names:  # ``from .. import _types``
                    yield node.lineno, ".".join([*base, alias.name])


def _sans_io_violations(path: Path, root: Path = PACKAGE_DIR.parent) -> list[str]:
    problems = []
    for line, name in _imported_modules(path, root):
        top = name.partition(".")[0]
        if top in IO_MODULES:
            problems.append(f"{path.name}:{line} imports {name}")
        elif top == "iii_trio" and not any(
            name == target or name.startswith(target + ".") for target in SANS_IO_TARGETS
        ):
            problems.append(f"{path.name}:{line} imports {name}, outside the sans-io layer")
    return problems


def _sans_io_modules() -> list[Path]:
    return [
        *sorted(PROTOCOL_DIR.glob("*.py")),
        *sorted(ENGINE_CORE_DIR.glob("*.py")),
        ENGINE_CONFIG,
    ]


def test_sans_io_packages_have_modules_to_check() -> None:
    names = {path.relative_to(PACKAGE_DIR).as_posix() for path in _sans_io_modules()}
    assert {
        "_protocol/__init__.py",
        "_protocol/_messages.py",
        "_protocol/_codec.py",
        "testing/_engine/__init__.py",
        "testing/_engine/_state.py",
        "testing/_engine/_timers.py",
        "testing/_config.py",
    } <= names


@pytest.mark.parametrize("path", _sans_io_modules(), ids=lambda path: path.name)
def test_sans_io_module_imports_no_io_library_and_stays_in_its_layer(path: Path) -> None:
    assert _sans_io_violations(path) == []


def _write_module(root: Path, relative: str, source: str) -> Path:
    # A module in a throwaway iii_trio tree under root, so the checker itself can be tested.
    path = root / "iii_trio" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "source",
    [
        "import trio\n",
        "import trio.lowlevel\n",
        "from trio_websocket import open_websocket_url\n",
        "from websockets.frames import Frame\n",
        "import httpx as http\n",
        "import outcome\n",
        "import socket\n",
        "import selectors\n",
        "import asyncio\n",
        "def later():\n    import trio\n",
        "from .. import _worker\n",
        "from .._connection import EngineSession\n",
        "from .._transport import connect_websocket\n",
        "import iii_trio\n",
        "from iii_trio import Worker\n",
        "from iii_trio._dispatch import serve_invocation\n",
    ],
)
def test_import_checker_catches_a_forbidden_import(tmp_path: Path, source: str) -> None:
    path = _write_module(tmp_path, "_protocol/_sample.py", source)
    assert len(_sans_io_violations(path, tmp_path)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "import json\nimport random\nimport attrs\nimport cattrs\nimport orjson\n",
        "from ._messages import Ping\n",
        "from . import _messages\n",
        "from .._types import Backoff\n",
        "from .. import _exceptions\n",
        "from iii_trio._protocol._codec import decode\n",
    ],
)
def test_import_checker_accepts_an_allowed_import(tmp_path: Path, source: str) -> None:
    path = _write_module(tmp_path, "_protocol/_sample.py", source)
    assert _sans_io_violations(path, tmp_path) == []


def test_import_checker_resolves_imports_from_the_testing_package(tmp_path: Path) -> None:
    allowed = _write_module(tmp_path, "testing/_a.py", "from .._protocol._messages import Ping\n")
    forbidden = _write_module(tmp_path, "testing/_b.py", "from ._dev_engine import DevEngine\n")
    assert _sans_io_violations(allowed, tmp_path) == []
    assert len(_sans_io_violations(forbidden, tmp_path)) == 1


# --- layering: one importer per third-party I/O library -----------------------------------------


def _importers_of(library: str) -> set[str]:
    importers = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for _, name in _imported_modules(path):
            if name == library or name.startswith(library + "."):
                importers.add(path.relative_to(PACKAGE_DIR).as_posix())
    return importers


def test_websockets_is_imported_only_by_the_transport() -> None:
    assert _importers_of("websockets") == {"_transport.py"}


@pytest.mark.parametrize("library", ["httpx", "h11", "trio_websocket"])
def test_library_is_imported_by_at_most_one_module(library: str) -> None:
    assert len(_importers_of(library)) <= 1, _importers_of(library)
