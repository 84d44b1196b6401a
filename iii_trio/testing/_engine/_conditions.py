"""Condition functions (spec/engine.md section 0): a binding's ``config`` may name a
``condition_function_id`` that decides, per event, whether its function runs.

The engine calls the condition with the payload the handler would get, metadata ``null``, in
the binding's namespace. Exactly ``false`` skips the event; any other value (``null`` and no
result included) lets the handler run. A failing condition skips the handler too, and the event
counts as failed, which each trigger type reports in its own way (the HTTP trigger answers 500,
a queue nacks, the others log it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..._protocol._messages import JSON, ErrorBody
from ._model import Binding, Output

if TYPE_CHECKING:
    from ._state import EngineState

__all__ = ["CONDITION_KEY", "condition_of", "run_if_condition_allows"]

logger = logging.getLogger("iii_trio.dev_engine")

#: The config key naming a binding's condition function.
CONDITION_KEY = "condition_function_id"


def condition_of(binding: Binding) -> str | None:
    """The binding's condition function id, if its config names one (a string)."""
    config = binding.config
    if not isinstance(config, dict):
        return None
    condition = config.get(CONDITION_KEY)
    return condition if isinstance(condition, str) else None


def run_if_condition_allows(
    engine: EngineState,
    binding: Binding,
    payload: JSON,
    out: list[Output],
    proceed: Callable[[list[Output]], None],
    *,
    failed: Callable[[ErrorBody, list[Output]], None] | None = None,
    skipped: Callable[[list[Output]], None] | None = None,
) -> None:
    """Call ``proceed(out)`` unless the binding's condition says no.

    Without a condition ``proceed`` runs at once; with one, once the condition has answered
    (``out`` is then the outputs of that moment). A skipped event calls ``skipped(out)`` when
    given; a failed condition calls ``failed(error, out)`` when given, else is logged.
    """
    condition = condition_of(binding)
    if condition is None:
        proceed(out)
        return

    def decided(result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
        if error is not None:
            if failed is not None:
                failed(error, out)
            else:
                logger.warning(
                    "trigger %s: condition %s failed (%s: %s); %s not called",
                    binding.id,
                    condition,
                    error.code,
                    error.message,
                    binding.function_id,
                )
        elif result is False:
            logger.debug("trigger %s: condition %s said no", binding.id, condition)
            if skipped is not None:
                skipped(out)
        else:
            proceed(out)

    engine.call_function(binding.namespace, condition, payload, out, then=decided)
