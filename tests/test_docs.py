"""The API reference covers the whole public API: every public name and every public member of
an exported class has a docstring, and every public name has an entry in docs/.

Docstrings are read with griffe, the library mkdocstrings renders the reference with, so "has a
docstring" means what the reference shows. The rule for a member of an exported class:

- a method or property needs a docstring of its own;
- a data attribute (an attrs field, an instance attribute an exception sets, an enum member)
  needs a docstring of its own or an entry in the Attributes section of its class's docstring,
  where the reference lists it.

``.ci/run`` builds the reference with ``mkdocs build --strict``, which checks the rest: that each
entry renders, and that every cross-reference in a docstring leads somewhere.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import attrs
import griffe
import pytest

import iii_trio
import iii_trio.testing
from iii_trio.testing import _pytest_plugin

PACKAGE_DIR = Path(iii_trio.__file__).parent
DOCS_DIR = PACKAGE_DIR.parent / "docs"
PACKAGES = {"iii_trio": iii_trio, "iii_trio.testing": iii_trio.testing}
# The pytest fixtures are public through the plugin's entry point, not through an __all__.
FIXTURES_MODULE = "iii_trio.testing._pytest_plugin"
FIXTURES = ("iii_engine", "iii_worker")

_DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)


@functools.cache
def _package() -> griffe.Module:
    loaded = griffe.load(
        "iii_trio",
        search_paths=[str(PACKAGE_DIR.parent)],
        docstring_parser=griffe.Parser.google,
        resolve_aliases=True,
    )
    assert isinstance(loaded, griffe.Module)
    return loaded


def _griffe_object(path: str) -> griffe.Object:
    """The object at ``path``: for a name the package re-exports, the one it names."""
    found = _package().modules_collection[path]
    return found.final_target if isinstance(found, griffe.Alias) else found


def _public_paths() -> list[str]:
    paths = [f"{package}.{name}" for package, module in PACKAGES.items() for name in module.__all__]
    return [*paths, *(f"{FIXTURES_MODULE}.{name}" for name in FIXTURES)]


def _exported_classes() -> list[tuple[str, type]]:
    return [
        (f"{package}.{name}", value)
        for package, module in PACKAGES.items()
        for name in module.__all__
        if inspect.isclass(value := getattr(module, name))
    ]


def _has_docstring(obj: griffe.Object) -> bool:
    return obj.docstring is not None and bool(obj.docstring.value.strip())


def _attributes_section(cls: griffe.Object) -> dict[str, str]:
    """The names the Attributes section of ``cls``'s docstring describes, with their text."""
    if cls.docstring is None:
        return {}
    described: dict[str, str] = {}
    for section in cls.docstring.parse(griffe.Parser.google):
        if section.kind is griffe.DocstringSectionKind.attributes:
            for entry in section.value:
                described[entry.name] = entry.description
    return described


def _public_members(cls: type, documented: griffe.Object) -> set[str]:
    """What a user of ``cls`` sees that ``cls`` itself adds: what it defines (methods,
    properties, enum members, slots), its attrs fields, and the instance attributes its
    ``__init__`` sets (an exception's ``code``, say), which only the source shows."""
    names = set(vars(cls))
    if attrs.has(cls):
        names.update(field.name for field in attrs.fields(cls))
    names.update(name for name, member in documented.members.items() if not member.is_alias)
    return {name for name in names if not name.startswith("_")}


def _undocumented_members(path: str, cls: type) -> list[str]:
    documented = _griffe_object(path)
    in_section = _attributes_section(documented)
    missing = []
    for name in sorted(_public_members(cls, documented)):
        member = documented.members.get(name)
        if member is None:
            missing.append(f"{name} (not visible in the source)")
            continue
        if _has_docstring(member):
            continue
        is_data = member.is_attribute and "property" not in member.labels
        if not (is_data and in_section.get(name, "").strip()):
            missing.append(name)
    return missing


# --- the rule's checker finds what it should ----------------------------------------------------


def test_public_members_include_methods_fields_and_instance_attributes() -> None:
    worker = _public_members(iii_trio.Worker, _griffe_object("iii_trio.Worker"))
    assert {"trigger", "register_function", "worker_id", "connection_state"} <= worker
    assert not any(name.startswith("_") for name in worker)
    ref = _public_members(iii_trio.TriggerRef, _griffe_object("iii_trio.TriggerRef"))
    assert ref == {"id", "trigger_type", "function_id", "rejection", "unregister"}
    error = _public_members(iii_trio.InvocationError, _griffe_object("iii_trio.InvocationError"))
    assert {"code", "message", "stacktrace", "function_id", "invocation_id"} <= error
    states = _public_members(iii_trio.ConnectionState, _griffe_object("iii_trio.ConnectionState"))
    assert {"CONNECTED", "CLOSED"} <= states
    engine = iii_trio.testing.DevEngine
    assert {"url", "urls", "statistics"} <= _public_members(
        engine, _griffe_object("iii_trio.testing.DevEngine")
    )


def test_the_attributes_section_is_read_with_its_descriptions() -> None:
    described = _attributes_section(_griffe_object("iii_trio.Context"))
    assert set(described) >= {"function_id", "invocation_id", "worker"}
    assert all(text.strip() for text in described.values())


def test_the_fixtures_listed_here_are_the_plugins() -> None:
    assert set(FIXTURES) == _pytest_plugin._FIXTURES


# --- docstrings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _public_paths())
def test_every_public_name_has_a_docstring(path: str) -> None:
    assert _has_docstring(_griffe_object(path)), f"{path} has no docstring"


@pytest.mark.parametrize(("path", "cls"), _exported_classes(), ids=lambda value: str(value))
def test_every_public_member_of_an_exported_class_is_documented(path: str, cls: type) -> None:
    assert _undocumented_members(path, cls) == []


# --- the reference's pages ----------------------------------------------------------------------


def _directives() -> set[str]:
    return {
        identifier
        for page in sorted(DOCS_DIR.rglob("*.md"))
        for identifier in _DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    }


def test_every_public_name_has_an_entry_in_the_reference() -> None:
    assert set(_public_paths()) - _directives() == set()


def test_the_reference_documents_nothing_that_is_not_public() -> None:
    assert _directives() - set(_public_paths()) == set()
