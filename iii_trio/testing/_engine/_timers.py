"""Deadlines for the dev engine core and its plugins: one heap, no clock.

The core never reads a clock; its shell sleeps until :meth:`Timers.next_deadline` and then calls
:meth:`Timers.fire_due` with the current time. Anything that must happen later (a namespace's
grace period, an unanswered trigger registration, a periodic poll; cron ticks and queue retries
later) schedules a callback here and keeps the :class:`Timer` to cancel it.

Cancelling only marks the entry: it leaves the heap when it reaches the top, or when cancelled
entries outnumber live ones, so cancelling is O(1) and memory stays proportional to the live
timers.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Final

import attrs

from ._model import Output

__all__ = ["Timer", "Timers"]

#: Below this many cancelled entries the heap is never rebuilt (rebuilding is O(n)).
_COMPACT_AFTER: Final = 64


@attrs.define(eq=False)
class Timer:
    """One scheduled callback; see :meth:`Timers.schedule`."""

    deadline: float
    callback: Callable[[float, list[Output]], None]
    _owner: Timers = attrs.field(repr=False)
    cancelled: bool = False
    fired: bool = False

    def cancel(self) -> None:
        """Make sure the callback does not run (no effect once it ran or was cancelled)."""
        if not self.cancelled and not self.fired:
            self.cancelled = True
            self._owner._cancelled_one()


class Timers:
    """A deadline heap. Callbacks due at the same time run in the order they were scheduled."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._cancelled = 0

    def __len__(self) -> int:
        """The number of timers still to fire."""
        return len(self._heap) - self._cancelled

    def schedule(self, deadline: float, callback: Callable[[float, list[Output]], None]) -> Timer:
        """Run ``callback(now, out)`` from the first :meth:`fire_due` at or after ``deadline``."""
        timer = Timer(deadline, callback, self)
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        return timer

    def next_deadline(self) -> float | None:
        """The earliest deadline of a timer still to fire, or ``None``."""
        self._drop_cancelled_head()
        return self._heap[0][0] if self._heap else None

    def fire_due(self, now: float, out: list[Output]) -> None:
        """Run every callback due at or before ``now``, including those the callbacks schedule
        for no later than ``now``."""
        while True:
            self._drop_cancelled_head()
            if not self._heap or self._heap[0][0] > now:
                return
            _, _, timer = heapq.heappop(self._heap)
            timer.fired = True
            timer.callback(now, out)

    def _drop_cancelled_head(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
            self._cancelled -= 1

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > _COMPACT_AFTER and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0
