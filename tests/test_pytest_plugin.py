"""The pytest plugin in a plain project, as a user would have it: no trio_mode, no markers."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import iii_trio


async def test_add(iii_worker):
    iii_worker.register_function("math::add", lambda p: p["a"] + p["b"])
    assert await iii_worker.trigger("math::add", {"a": 1, "b": 2}) == 3


async def test_two_workers(iii_engine):
    async with iii_trio.open_worker(iii_engine.url, name="other") as other:
        other.register_function("other::hi", lambda p: "hi " + p)
        await other.wait_registered()
        async with iii_trio.open_worker(iii_engine.url, name="asker") as asker:
            assert await asker.trigger("other::hi", "there") == "hi there"


def test_plain_tests_are_untouched():
    assert True
"""


def test_tests_using_the_fixtures_run_under_trio_without_markers(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_a_project_in_trio_mode_keeps_working(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
