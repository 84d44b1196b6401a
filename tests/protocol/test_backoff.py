"""The reconnect delay schedule (spec/protocol.md section 8; spec/api.md ``Backoff``)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from iii_trio import Backoff
from iii_trio._protocol._backoff import delays


def _first(policy: Backoff, count: int, seed: int = 0) -> list[float]:
    return list(itertools.islice(delays(policy, random.Random(seed)), count))


def test_backoff_defaults_match_the_official_sdks() -> None:
    policy = Backoff()
    assert policy.initial == 1.0
    assert policy.maximum == 30.0
    assert policy.multiplier == 2.0
    assert policy.jitter == 0.3
    assert policy.max_attempts is None


def test_default_schedule_without_jitter_doubles_up_to_the_cap() -> None:
    assert _first(Backoff(jitter=0), 9) == [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_schedule_follows_a_custom_initial_and_multiplier() -> None:
    assert _first(Backoff(initial=0.5, multiplier=3, maximum=10, jitter=0), 5) == [
        0.5,
        1.5,
        4.5,
        10,
        10,
    ]


def test_multiplier_one_gives_a_constant_delay() -> None:
    assert _first(Backoff(initial=2, multiplier=1, jitter=0), 4) == [2, 2, 2, 2]


def test_initial_above_the_cap_is_capped() -> None:
    assert _first(Backoff(initial=60, maximum=30, jitter=0), 3) == [30, 30, 30]


def test_zero_initial_delay_retries_immediately() -> None:
    assert _first(Backoff(initial=0, jitter=0), 3) == [0, 0, 0]


def test_unlimited_schedule_keeps_going_without_overflow() -> None:
    tail = _first(Backoff(jitter=0), 5000)[-3:]
    assert tail == [30, 30, 30]


def test_jitter_stays_within_thirty_percent_of_the_base_delay() -> None:
    bases = [1, 2, 4, 8, 16] + [30] * 195
    for seed in range(20):
        for base, delay in zip(bases, _first(Backoff(), len(bases), seed), strict=True):
            assert base * 0.7 - 1e-9 <= delay <= base * 1.3 + 1e-9


def test_jitter_actually_varies_the_delays() -> None:
    jittered = _first(Backoff(), 50)
    assert len(set(jittered[5:])) > 1  # after the cap, the base alone would repeat 30
    assert any(delay != 30 for delay in jittered[5:])
    # ... and both ways round the base.
    assert any(delay < 30 for delay in jittered[5:])
    assert any(delay > 30 for delay in jittered[5:])


def test_full_jitter_never_gives_a_negative_wait() -> None:
    assert all(delay >= 0 for delay in _first(Backoff(jitter=1.0), 500))


@pytest.mark.parametrize("jitter", [1.01, 5])
def test_jitter_above_the_whole_delay_is_rejected(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=jitter)


@pytest.mark.parametrize("field", ["initial", "maximum", "multiplier", "jitter"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_backoff_value_that_is_not_finite_is_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(**{field: value})


@pytest.mark.parametrize("field", ["initial", "maximum", "multiplier", "jitter"])
@pytest.mark.parametrize("value", ["1", None, True])
def test_a_backoff_value_that_is_not_a_number_is_a_type_error(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        Backoff(**{field: value})


@pytest.mark.parametrize("max_attempts", [2.5, "3", True])
def test_max_attempts_must_be_an_integer(max_attempts: object) -> None:
    with pytest.raises(TypeError, match="max_attempts"):
        Backoff(max_attempts=max_attempts)  # type: ignore[arg-type]


def test_same_seed_gives_the_same_schedule() -> None:
    assert _first(Backoff(), 30, seed=1234) == _first(Backoff(), 30, seed=1234)


def test_different_seeds_give_different_schedules() -> None:
    assert _first(Backoff(), 30, seed=1) != _first(Backoff(), 30, seed=2)


def test_schedule_ignores_the_global_random_state() -> None:
    saved = random.getstate()
    try:
        random.seed(1)
        first = _first(Backoff(), 20, seed=99)
        random.seed(2)
        second = _first(Backoff(), 20, seed=99)
    finally:
        random.setstate(saved)
    assert first == second


@pytest.mark.parametrize(("max_attempts", "expected"), [(1, 0), (2, 1), (3, 2), (7, 6)])
def test_max_attempts_allows_one_fewer_delays(max_attempts: int, expected: int) -> None:
    # The first attempt needs no wait, so N attempts have N - 1 delays between them.
    schedule = list(delays(Backoff(max_attempts=max_attempts, jitter=0), random.Random(0)))
    assert len(schedule) == expected
    assert schedule == [1, 2, 4, 8, 16, 30][:expected]


@pytest.mark.parametrize("field", ["initial", "maximum", "multiplier", "jitter"])
def test_negative_backoff_value_is_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(**{field: -0.1})


@pytest.mark.parametrize("field", ["initial", "maximum", "multiplier", "jitter"])
def test_zero_backoff_value_is_accepted(field: str) -> None:
    assert getattr(Backoff(**{field: 0}), field) == 0


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_max_attempts_below_one_is_rejected(max_attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=max_attempts)


def test_backoff_is_immutable() -> None:
    policy = Backoff()
    with pytest.raises(AttributeError):
        policy.initial = 5.0  # type: ignore[misc]
