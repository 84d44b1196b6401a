"""Collapsing the exception group a public context manager's nursery raises.

Internal nurseries keep trio's strict exception groups; only the public context managers
(``open_worker``, ``open_dev_engine``) hide their nursery, following trio's "hide the nursery"
strategy: what escapes is what the caller would expect from a plain ``async with``.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["is_cancellation", "raise_collapsed"]


def raise_collapsed(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise what ``group`` means for the caller.

    - a ``KeyboardInterrupt`` anywhere wins, then a ``SystemExit``, then any other exception
      that is not an ``Exception`` (a handler's, say): they must end the program as if no
      nursery stood in between;
    - one real error (from the body or an internal task) is raised as itself, traceback and
      context intact;
    - only ``trio.Cancelled`` leaves: the first of them, for the enclosing cancel scope to catch;
    - several real errors: the group unchanged, since picking one would hide the others.
    """
    leaves = _leaves(group)
    for kind in (KeyboardInterrupt, SystemExit):
        for leaf in leaves:
            if isinstance(leaf, kind):
                _reraise_keeping_context(leaf)
    for leaf in leaves:
        if not isinstance(leaf, Exception | trio.Cancelled):
            _reraise_keeping_context(leaf)
    errors = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(errors) > 1:
        raise group
    _reraise_keeping_context(errors[0] if errors else leaves[0])


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


def _reraise_keeping_context(exc: BaseException) -> NoReturn:
    # Raising a leaf inside ``except`` would make the group its __context__; keep the original.
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is ``trio.Cancelled``, or a group holding nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(isinstance(leaf, trio.Cancelled) for leaf in _leaves(exc))
    return isinstance(exc, trio.Cancelled)
