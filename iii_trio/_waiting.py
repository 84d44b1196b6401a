"""Tasks parked until the answer for their key arrives: the worker's one waiting primitive.

A call waits for its result under its invocation id, a round trip for the pong that matches its
ping; later, trigger registrations wait for their acknowledgement the same way. Each key has at
most one waiter. :meth:`Waiters.resolve` and :meth:`Waiters.fail` wake it with a value or an
error, :meth:`Waiters.fail_all` wakes every waiter (the connection is gone), a waiter that is
cancelled removes itself, and an answer nobody waits for any more is counted and dropped.

The waiter is the waiting task itself, parked with ``trio.lowlevel.wait_task_rescheduled`` and
rescheduled by whoever has the answer: no event, channel or extra task per wait, which matters
on the per-call path.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import attrs
import outcome
import trio

__all__ = ["AbortFunction", "Waiters", "WaitersStatistics"]

#: What ``trio.lowlevel.wait_task_rescheduled`` calls when the waiting task is cancelled.
AbortFunction = Callable[[trio.lowlevel.RaiseCancelT], trio.lowlevel.Abort]

_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")


@attrs.frozen
class WaitersStatistics:
    """Counts of one :class:`Waiters` table.

    Attributes:
        waiting: tasks parked now.
        resolved: waits ended with a value.
        failed: waits ended with an error.
        dropped: answers that found nobody waiting (cancelled, or never asked for).
    """

    waiting: int
    resolved: int
    failed: int
    dropped: int


class Waiters(Generic[_Key, _Value]):
    """Parked tasks, one per key, each waiting for a value or an error."""

    def __init__(self) -> None:
        self._tasks: dict[_Key, trio.lowlevel.Task] = {}
        self._resolved = 0
        self._failed = 0
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def park(self, key: _Key) -> AbortFunction:
        """Make the current task the waiter for ``key``; return its abort function.

        ``await trio.lowlevel.wait_task_rescheduled(abort)`` must follow, with no checkpoint in
        between. This two-step form lets the per-call path wait without a coroutine of its
        own; elsewhere use :meth:`wait`.

        Raises:
            RuntimeError: a task already waits for ``key``.
        """
        tasks = self._tasks
        if key in tasks:
            raise RuntimeError(f"a task already waits for {key!r}")
        tasks[key] = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            tasks.pop(key, None)
            return trio.lowlevel.Abort.SUCCEEDED

        return abort

    async def wait(self, key: _Key) -> _Value:
        """Wait for the value (or error) for ``key``.

        Cancellation: the wait is forgotten; an answer arriving later is dropped.
        """
        value: _Value = await trio.lowlevel.wait_task_rescheduled(self.park(key))
        return value

    def resolve(self, key: _Key, value: _Value) -> bool:
        """Wake the waiter for ``key`` with ``value``; False (and counted as dropped) if none."""
        return self._settle(key, outcome.Value(value))

    def fail(self, key: _Key, error: BaseException) -> bool:
        """Wake the waiter for ``key`` with ``error`` raised; False if nobody waits for it."""
        return self._settle(key, outcome.Error(error))

    def _settle(self, key: _Key, answer: outcome.Outcome[_Value]) -> bool:
        task = self._tasks.pop(key, None)
        if task is None:
            self._dropped += 1
            return False
        if type(answer) is outcome.Value:
            self._resolved += 1
        else:
            self._failed += 1
        trio.lowlevel.reschedule(task, answer)
        return True

    def fail_all(self, make_error: Callable[[], BaseException]) -> int:
        """Wake every waiter with an error of its own (one exception object per task, so that
        their tracebacks do not pile up on one another); return how many there were."""
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            trio.lowlevel.reschedule(task, outcome.Error(make_error()))
        self._failed += len(tasks)
        return len(tasks)

    def statistics(self) -> WaitersStatistics:
        return WaitersStatistics(
            waiting=len(self._tasks),
            resolved=self._resolved,
            failed=self._failed,
            dropped=self._dropped,
        )
