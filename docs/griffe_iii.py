"""What the API reference needs from griffe beyond its defaults (loaded through mkdocs.yml).

The docstrings serve ``help()`` and editors as much as this site, so they keep the habits of
reStructuredText: roles such as :class:`Worker`, and ``::`` before a code block. Here those
become Markdown: a role becomes a link when the reference shows its target (mkdocs --strict then
fails on a link that leads nowhere), else code. attrs classes get the ``__init__`` attrs makes
at run time, which reading the source cannot see; a function decorated with
``contextlib.(async)contextmanager`` is shown returning the context manager it returns, a
generator fixture as returning what it yields; and underscored parameters, which are for the
package's own tests, are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

# The packages whose ``__all__`` names have reference pages.
DOCUMENTED_PACKAGES = ("iii_trio", "iii_trio.testing")

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj):`(~?)\.?([^`]+)`")
_LITERAL_BLOCK = re.compile(r"(?m)^([ \t]*)(.*?)[ \t]*::$")
_ATTRS_DECORATORS = frozenset(
    {"attrs.frozen", "attrs.define", "attrs.mutable", "attr.s", "attr.frozen", "attr.define"}
)
_ATTRS_FIELDS = frozenset({"attrs.field", "attr.ib", "attr.field"})
_FACTORY_DEFAULTS = {"dict": "{}", "list": "[]", "tuple": "()", "set": "set()"}
_CONTEXT_MANAGERS = {
    "contextlib.asynccontextmanager": "contextlib.AbstractAsyncContextManager",
    "contextlib.contextmanager": "contextlib.AbstractContextManager",
}


class IIIDocs(griffe.Extension):
    """Adapts the loaded ``iii_trio`` package for mkdocstrings; other packages are left as is."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "iii_trio":
            return
        public = _public_paths(pkg)
        for obj in _objects(pkg):
            if isinstance(obj, griffe.Class):
                _add_attrs_init(obj)
                _label_enum_members(obj)
            elif isinstance(obj, griffe.Function):
                _show_context_manager(obj)
                _hide_private_parameters(obj)
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value, obj, pkg, public)


def _objects(module: griffe.Module) -> Iterator[griffe.Object]:
    """Every object defined in ``module`` and its submodules (imports left out)."""
    stack: list[griffe.Object] = [module]
    while stack:
        obj = stack.pop()
        yield obj
        stack.extend(member for member in obj.members.values() if not member.is_alias)


def _public_paths(pkg: griffe.Module) -> dict[str, str]:
    """The path each exported object is defined at, mapped to the path its page shows."""
    paths: dict[str, str] = {}
    for package_path in DOCUMENTED_PACKAGES:
        package = pkg.modules_collection[package_path]
        for name in package.exports or ():
            member = package.members.get(str(name))
            if member is None:
                continue
            shown = f"{package_path}.{name}"
            paths[shown] = shown
            if member.is_alias:
                paths[member.target_path] = shown
    return paths


# --- roles and literal blocks ---------------------------------------------------------------------


def _markdown(text: str, obj: griffe.Object, pkg: griffe.Module, public: dict[str, str]) -> str:
    def role(match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2)
        label = target.rpartition(".")[2] if short else target
        link = _link_target(target, obj, pkg, public)
        return f"`{label}`" if link is None else f"[`{label}`][{link}]"

    text = _ROLE.sub(role, text)
    # reStructuredText's "text::" ends a paragraph introducing an indented block, which
    # Markdown shows as code already: only the colon stays ("::" alone on its line goes).
    return _LITERAL_BLOCK.sub(lambda m: f"{m.group(1)}{m.group(2)}:" if m.group(2) else "", text)


def _link_target(
    target: str, obj: griffe.Object, pkg: griffe.Module, public: dict[str, str]
) -> str | None:
    """The reference's anchor for ``target`` as written in ``obj``'s docstring, or None when the
    reference does not show it (a private name, another project's)."""
    head, _, rest = target.partition(".")
    if head == "iii_trio":
        path = target
    else:
        try:
            path = obj.resolve(head) + (f".{rest}" if rest else "")
        except griffe.NameResolutionError:
            return None
    owner = max(
        (known for known in public if path == known or path.startswith(known + ".")),
        key=len,
        default=None,
    )
    if owner is None:
        return None
    shown = public[owner] + path[len(owner) :]
    if shown == public[owner]:
        return shown
    # A member gets an anchor of its own only when it has a docstring (the reference leaves out
    # the others); an attribute documented in its class's Attributes section links to the class.
    try:
        member = pkg.modules_collection[owner + path[len(owner) :]]
    except KeyError:
        return None
    return shown if member.has_docstring else public[owner]


# --- signatures -----------------------------------------------------------------------------------


def _label_enum_members(cls: griffe.Class) -> None:
    # griffe labels an enum member a class and an instance attribute: true, and only noise.
    if not any(str(base) in ("Enum", "enum.Enum") for base in cls.bases):
        return
    for member in cls.members.values():
        if isinstance(member, griffe.Attribute):
            member.labels.clear()


def _add_attrs_init(cls: griffe.Class) -> None:
    decorators = [d for d in cls.decorators if d.callable_path in _ATTRS_DECORATORS]
    if not decorators or "__init__" in cls.members:
        return
    kw_only = _arguments(decorators[0].value).get("kw_only") == "True"
    positional: list[griffe.Parameter] = []
    keyword: list[griffe.Parameter] = []
    for member in list(cls.members.values()):
        if not isinstance(member, griffe.Attribute) or member.annotation is None:
            continue
        if "property" in member.labels or "instance-attribute" not in member.labels:
            continue
        value = member.value
        field = (
            _arguments(value)
            if isinstance(value, griffe.ExprCall) and value.canonical_path in _ATTRS_FIELDS
            else None
        )
        if field is not None and field.get("init") == "False":
            continue
        default: str | griffe.Expr | None
        if field is None:
            default = value
        elif "factory" in field:
            factory = str(field["factory"])
            default = _FACTORY_DEFAULTS.get(factory, f"{factory}()")
        else:
            default = field.get("default")
        parameter = griffe.Parameter(
            # attrs drops the leading underscore of a private field's name.
            str(field.get("alias", member.name.lstrip("_")) if field else member.name.lstrip("_")),
            annotation=member.annotation,
            kind=griffe.ParameterKind.keyword_only
            if kw_only or (field is not None and field.get("kw_only") == "True")
            else griffe.ParameterKind.positional_or_keyword,
            default=default,
        )
        (keyword if parameter.kind is griffe.ParameterKind.keyword_only else positional).append(
            parameter
        )
    init = griffe.Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=griffe.Parameters(
            griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
            *positional,
            *keyword,
        ),
        returns="None",
    )
    cls.set_member("__init__", init)


def _arguments(expr: str | griffe.Expr) -> dict[str, str | griffe.Expr]:
    if not isinstance(expr, griffe.ExprCall):
        return {}
    return {
        argument.name: argument.value
        for argument in expr.arguments
        if isinstance(argument, griffe.ExprKeyword)
    }


def _hide_private_parameters(function: griffe.Function) -> None:
    # Underscored parameters (``open_worker(_open_stream=...)``) are for the package's tests.
    private = [p.name for p in function.parameters if p.name.startswith("_")]
    for name in private:
        del function.parameters[name]


def _show_context_manager(function: griffe.Function) -> None:
    if any(d.callable_path == "pytest.fixture" for d in function.decorators):
        # A generator fixture: what a test that asks for it gets is what it yields.
        if isinstance(function.returns, griffe.ExprSubscript):
            function.returns = _yielded(function.returns)
        return
    wrappers = [
        _CONTEXT_MANAGERS[d.callable_path]
        for d in function.decorators
        if d.callable_path in _CONTEXT_MANAGERS
    ]
    returns = function.returns
    if not wrappers or not isinstance(returns, griffe.ExprSubscript):
        return
    module, _, name = wrappers[0].rpartition(".")
    function.returns = griffe.ExprSubscript(griffe.ExprName(name, parent=module), _yielded(returns))


def _yielded(returns: griffe.ExprSubscript) -> str | griffe.Expr:
    """T, from Iterator[T], AsyncIterator[T] or (Async)Generator[T, ...]."""
    given = returns.slice
    if isinstance(given, griffe.ExprTuple):
        return given.elements[0]
    return given
