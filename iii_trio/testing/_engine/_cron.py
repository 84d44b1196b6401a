"""``iii-cron``: the ``cron`` trigger type (spec/engine.md section 4, engine-observed.md 6).

A binding's ``config`` names an ``expression`` (see :mod:`._cron_schedule`; UTC, no time zone
option) and may name a ``condition_function_id``; everything else is ignored. Each live binding
is a job that runs the engine's loop:

1. take the first fire time strictly after the wall-clock time, and sleep until then;
2. build the payload ``{"actual_time", "job_id", "scheduled_time", "trigger": "cron"}``;
3. ask the condition function, if any (``false`` or a failure skips the handler);
4. call the function with the payload and the binding's metadata, and wait for its answer
   (a failure is only logged);
5. go back to 1.

So runs of one job never overlap, and the ticks that pass while a run is in progress are
skipped, not caught up: the next fire time is computed after the run, from the time it ended.
A timer that fires late (a busy shell) also fires once, for the tick it was armed for.
Unregistering stops the loop; a run in progress is not waited for.

Registration errors are the engine's texts: ``Cron expression is required`` (missing, empty or
not a string), ``Cron job '<id>' is already registered`` (a live binding has that id), and
``Invalid cron expression '<expr>': <the parser's message>``.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import attrs

from ..._protocol._messages import JSON, ErrorBody
from ._conditions import run_if_condition_allows
from ._cron_schedule import CronSchedule, CronSyntaxError, parse_cron
from ._model import Binding, Output
from ._plugin import BuiltinFailure, EnginePlugin

if TYPE_CHECKING:
    from ._state import EngineState
    from ._timers import Timer

__all__ = ["CRON", "Cron", "CronSettings", "format_rfc3339", "read_cron_block", "unix_nanos"]

logger = logging.getLogger("iii_trio.dev_engine")

#: The trigger type.
CRON: Final = "cron"
#: The lock backends the engine's ``iii-cron`` knows.
_ADAPTERS: Final = ("kv", "redis")
_NANOS: Final = 1_000_000_000
_UTC: Final = datetime.timezone.utc


@attrs.frozen
class CronSettings:
    """An ``iii-cron`` block, read.

    Attributes:
        adapter: the lock backend it names (``kv``, the default, or ``redis``). Locks only
            matter between engine instances, so both behave alike in the one-process dev
            engine.
    """

    adapter: str = "kv"


def read_cron_block(block: object) -> CronSettings:
    """Read an ``iii-cron`` config block (``None``: the defaults).

    The engine's block takes only ``adapter: {name, config?}``.

    Raises:
        BlockError: naming the key at fault.
    """
    # Imported here: the registry of built-in workers imports this module.
    from ._builtins import BlockError, describe_setting, read_adapter

    if block is None:
        return CronSettings()
    if not isinstance(block, dict):
        raise BlockError("", f"expected a mapping, got {describe_setting(block)}")
    for key in block:
        if key != "adapter":
            raise BlockError(str(key), "unknown key (an iii-cron block takes adapter)")
    adapter = read_adapter(block.get("adapter"))
    if adapter is None:
        return CronSettings()
    name = adapter[0]
    if name not in _ADAPTERS:
        raise BlockError(
            "adapter.name", f"cron adapter '{name}' is not registered (the engine has kv, redis)"
        )
    return CronSettings(adapter=name)


def unix_nanos(unix_time: float) -> int:
    """``unix_time`` in whole nanoseconds, the fraction taken apart so that it stays exact
    (multiplying the whole time by 1e9 would round it to a few hundred nanoseconds)."""
    seconds = math.floor(unix_time)
    return seconds * _NANOS + round((unix_time - seconds) * _NANOS)


def format_rfc3339(nanoseconds: int) -> str:
    """A UTC time (Unix nanoseconds) as the engine writes it (chrono's ``to_rfc3339``):
    ``+00:00``, and a fraction of 3, 6 or 9 digits only when it is not zero."""
    seconds, nanos = divmod(nanoseconds, _NANOS)
    text = datetime.datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}" if nanos else ""
    elif nanos % 1000 == 0:
        fraction = f".{nanos // 1000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return f"{text}{fraction}+00:00"


@attrs.define(eq=False)
class _Job:
    """One live binding's loop."""

    binding: Binding
    schedule: CronSchedule
    #: The fire time (Unix seconds) armed or being run.
    scheduled: int = 0
    timer: Timer | None = None
    stopped: bool = False


class Cron(EnginePlugin):
    """The ``iii-cron`` worker; see the module docstring."""

    name = "iii-cron"

    def __init__(self, settings: CronSettings | None = None) -> None:
        self.settings = settings if settings is not None else CronSettings()
        self._jobs: dict[str, _Job] = {}
        self._engine: EngineState

    def attach(self, engine: EngineState) -> None:
        self._engine = engine

    def trigger_types(self) -> Mapping[str, str]:
        return {CRON: "Calls a function on a cron schedule (seconds first, UTC)"}

    def check_binding(self, binding: Binding) -> None:
        self._schedule_of(binding)

    def _schedule_of(self, binding: Binding) -> CronSchedule:
        config = binding.config
        expression = config.get("expression") if isinstance(config, dict) else None
        if not isinstance(expression, str) or not expression:
            raise BuiltinFailure("trigger_registration_failed", "Cron expression is required")
        if binding.id in self._jobs:
            raise BuiltinFailure(
                "trigger_registration_failed", f"Cron job '{binding.id}' is already registered"
            )
        try:
            return parse_cron(expression)
        except CronSyntaxError as error:
            raise BuiltinFailure(
                "trigger_registration_failed", f"Invalid cron expression '{expression}': {error}"
            ) from None

    def start_binding(self, binding: Binding, out: list[Output]) -> None:
        job = _Job(binding, self._schedule_of(binding))
        self._jobs[binding.id] = job
        self._arm(job, self._engine.unix_time(), out)

    def stop_binding(self, binding: Binding, out: list[Output]) -> None:
        job = self._jobs.get(binding.id)
        if job is None or job.binding is not binding:
            return
        del self._jobs[binding.id]
        job.stopped = True
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None

    def _arm(self, job: _Job, after: float, out: list[Output]) -> None:
        scheduled = job.schedule.next_after(after)
        if scheduled is None:
            logger.warning(
                "cron job %s (%s): no upcoming fire time; it stays registered and never fires",
                job.binding.id,
                job.schedule.expression,
            )
            return
        job.scheduled = scheduled
        # The timer runs on the shell's clock; the schedule is on the wall clock.
        deadline = self._engine.now + (scheduled - self._engine.unix_time())
        job.timer = self._engine.arm(deadline, functools.partial(self._fire, job), out)

    def _fire(self, job: _Job, now: float, out: list[Output]) -> None:
        job.timer = None
        payload: dict[str, JSON] = {
            "actual_time": format_rfc3339(unix_nanos(self._engine.unix_time(now))),
            "job_id": job.binding.id,
            "scheduled_time": format_rfc3339(job.scheduled * _NANOS),
            "trigger": CRON,
        }

        def run_handler(out: list[Output]) -> None:
            self._engine.fire_binding(
                job.binding, dict(payload), out, then=functools.partial(self._ran, job)
            )

        def condition_failed(error: ErrorBody, out: list[Output]) -> None:
            logger.warning(
                "cron job %s: condition failed (%s: %s); %s not called",
                job.binding.id,
                error.code,
                error.message,
                job.binding.function_id,
            )
            self._next(job, out)

        run_if_condition_allows(
            self._engine,
            job.binding,
            dict(payload),
            out,
            run_handler,
            failed=condition_failed,
            skipped=functools.partial(self._next, job),
        )

    def _ran(self, job: _Job, result: JSON, error: ErrorBody | None, out: list[Output]) -> None:
        if error is not None:
            logger.warning(
                "cron job %s: %s failed (%s: %s)",
                job.binding.id,
                job.binding.function_id,
                error.code,
                error.message,
            )
        self._next(job, out)

    def _next(self, job: _Job, out: list[Output]) -> None:
        if job.stopped:
            return
        # Never before the tick just run, even if the clocks' arithmetic rounds below it.
        self._arm(job, max(self._engine.unix_time(), job.scheduled), out)
