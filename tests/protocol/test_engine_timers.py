"""The dev engine core's deadline heap, with no clock: each test says what time it is."""

from __future__ import annotations

from typing import Any

from iii_trio.testing._engine._timers import Timers


def recorder(log: list[Any], label: str) -> Any:
    def fire(now: float, out: list[Any]) -> None:
        log.append((label, now))
        out.append(label)

    return fire


def test_callbacks_run_in_deadline_order_then_in_the_order_scheduled() -> None:
    timers = Timers()
    log: list[Any] = []
    timers.schedule(3.0, recorder(log, "late"))
    timers.schedule(1.0, recorder(log, "first"))
    timers.schedule(1.0, recorder(log, "second"))
    timers.schedule(2.0, recorder(log, "middle"))
    out: list[Any] = []
    timers.fire_due(2.5, out)
    assert log == [("first", 2.5), ("second", 2.5), ("middle", 2.5)]
    assert out == ["first", "second", "middle"]
    assert timers.next_deadline() == 3.0
    assert len(timers) == 1


def test_nothing_fires_before_its_deadline() -> None:
    timers = Timers()
    log: list[Any] = []
    timers.schedule(10.0, recorder(log, "a"))
    timers.fire_due(9.999, [])
    assert log == []
    timers.fire_due(10.0, [])
    assert log == [("a", 10.0)]
    assert timers.next_deadline() is None


def test_a_cancelled_timer_never_fires_and_is_not_the_next_deadline() -> None:
    timers = Timers()
    log: list[Any] = []
    early = timers.schedule(1.0, recorder(log, "early"))
    timers.schedule(5.0, recorder(log, "late"))
    early.cancel()
    early.cancel()  # twice is harmless
    assert timers.next_deadline() == 5.0
    assert len(timers) == 1
    timers.fire_due(100.0, [])
    assert log == [("late", 100.0)]


def test_cancelling_a_timer_that_fired_changes_nothing() -> None:
    timers = Timers()
    log: list[Any] = []
    timer = timers.schedule(1.0, recorder(log, "a"))
    timers.fire_due(1.0, [])
    timer.cancel()
    assert not timer.cancelled
    assert len(timers) == 0
    timers.schedule(2.0, recorder(log, "b"))
    assert len(timers) == 1


def test_a_callback_may_schedule_more_work_due_in_the_same_call() -> None:
    timers = Timers()
    log: list[Any] = []

    def periodic(now: float, out: list[Any]) -> None:
        log.append(now)
        if len(log) < 3:
            timers.schedule(now, periodic)  # due at once: runs in this fire_due
        else:
            timers.schedule(now + 10, periodic)

    timers.schedule(1.0, periodic)
    timers.fire_due(1.0, [])
    assert log == [1.0, 1.0, 1.0]
    assert timers.next_deadline() == 11.0


def test_a_callback_may_cancel_a_timer_due_in_the_same_call() -> None:
    timers = Timers()
    log: list[Any] = []
    second = timers.schedule(2.0, recorder(log, "second"))

    def cancel_second(now: float, out: list[Any]) -> None:
        log.append(("cancel", now))
        second.cancel()

    timers.schedule(1.0, cancel_second)
    timers.fire_due(5.0, [])
    assert log == [("cancel", 5.0)]


def test_many_cancelled_timers_do_not_pile_up() -> None:
    timers = Timers()
    keep = timers.schedule(1_000_000.0, recorder([], "keep"))
    for deadline in range(10_000):
        timers.schedule(float(deadline), recorder([], "x")).cancel()
    assert len(timers) == 1
    # Only the live timer and fewer cancelled entries than the compaction threshold remain.
    assert len(timers._heap) < 200
    assert timers.next_deadline() == keep.deadline
