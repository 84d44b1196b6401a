"""The waiting primitive every pending call and round trip of the worker uses."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from iii_trio._waiting import Waiters, WaitersStatistics


async def test_a_waiter_gets_its_value_and_others_keep_waiting() -> None:
    waiters: Waiters[str, int] = Waiters()
    got: dict[str, int] = {}

    async def wait(key: str) -> None:
        got[key] = await waiters.wait(key)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "a")
        nursery.start_soon(wait, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert len(waiters) == 2
        assert waiters.resolve("b", 2)
        await trio.testing.wait_all_tasks_blocked()
        assert got == {"b": 2}
        assert "a" in waiters
        assert waiters.resolve("a", 1)
    assert got == {"a": 1, "b": 2}
    assert waiters.statistics() == WaitersStatistics(waiting=0, resolved=2, failed=0, dropped=0)


async def test_fail_raises_in_the_waiter_and_fail_all_gives_each_its_own_error() -> None:
    waiters: Waiters[int, None] = Waiters()
    errors: list[BaseException] = []

    async def wait(key: int) -> None:
        try:
            await waiters.wait(key)
        except LookupError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for key in range(4):
            nursery.start_soon(wait, key)
        await trio.testing.wait_all_tasks_blocked()
        assert waiters.fail(0, LookupError("just this one"))
        assert waiters.fail_all(lambda: LookupError("all the rest")) == 3
    assert [str(error) for error in errors].count("all the rest") == 3
    assert len({id(error) for error in errors}) == 4
    assert waiters.statistics().failed == 4


async def test_a_cancelled_waiter_removes_itself_and_its_late_answer_is_dropped() -> None:
    waiters: Waiters[str, str] = Waiters()
    with trio.move_on_after(0.01):
        await waiters.wait("late")
    assert "late" not in waiters
    assert not waiters.resolve("late", "too late")
    assert not waiters.fail("never", RuntimeError())
    assert waiters.statistics() == WaitersStatistics(waiting=0, resolved=0, failed=0, dropped=2)


async def test_one_key_has_one_waiter() -> None:
    waiters: Waiters[str, None] = Waiters()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiters.wait, "k")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="already waits"):
            waiters.park("k")
        waiters.resolve("k", None)
