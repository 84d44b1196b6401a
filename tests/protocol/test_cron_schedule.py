"""The cron grammar of the engine's ``iii-cron`` (the Rust ``cron`` crate 0.15.0): fields,
ranges, steps, lists, names, the crate's error texts, and the next fire time.

The expected texts and times are the crate's own answers to the same expressions (and, where
engine-observed.md section 6 lists them, the real engine's registration errors).
"""

from __future__ import annotations

import datetime

import pytest

from iii_trio.testing._engine._cron_schedule import CronSyntaxError, parse_cron

UTC = datetime.timezone.utc
# 2026-11-29 16:56:15.5 UTC, a Sunday (the day of the engine observations).
SUNDAY_AFTERNOON = datetime.datetime(2026, 11, 29, 16, 56, 15, 500000, tzinfo=UTC).timestamp()


def fires(expression: str, after: float = SUNDAY_AFTERNOON, count: int = 3) -> list[str]:
    schedule = parse_cron(expression)
    times = []
    for _ in range(count):
        found = schedule.next_after(after)
        if found is None:
            break
        times.append(datetime.datetime.fromtimestamp(found, UTC).isoformat())
        after = found
    return times


def error_of(expression: str) -> str:
    with pytest.raises(CronSyntaxError) as caught:
        parse_cron(expression)
    return str(caught.value)


# -- fields ----------------------------------------------------------------------------------------


def test_six_fields_are_seconds_minutes_hours_day_month_weekday() -> None:
    schedule = parse_cron("1 2 3 4 5 6")
    assert schedule.seconds == (1,)
    assert schedule.minutes == (2,)
    assert schedule.hours == (3,)
    assert schedule.days_of_month == (4,)
    assert schedule.months == (5,)
    assert schedule.days_of_week == (6,)
    assert schedule.years == tuple(range(1970, 2101))


def test_a_seventh_field_is_the_year() -> None:
    assert parse_cron("0 0 0 1 1 * 2027-2029").years == (2027, 2028, 2029)
    assert fires("0 0 12 1 1 * 2027-2029", count=5) == [
        "2027-01-01T12:00:00+00:00",
        "2028-01-01T12:00:00+00:00",
        "2029-01-01T12:00:00+00:00",
    ]


def test_star_and_question_mark() -> None:
    assert parse_cron("* * * ? * ?").days_of_week == tuple(range(1, 8))
    assert parse_cron("* * * * * *").seconds == tuple(range(60))


def test_ranges_steps_and_lists() -> None:
    assert parse_cron("10-14 * * * * *").seconds == (10, 11, 12, 13, 14)
    assert parse_cron("*/15 * * * * *").seconds == (0, 15, 30, 45)
    assert parse_cron("10-20/3 * * * * *").seconds == (10, 13, 16, 19)
    # A point before a step runs to the field's maximum.
    assert parse_cron("* 50/4 * * * *").minutes == (50, 54, 58)
    assert parse_cron("0,30,5-7,*/20 * * * * *").seconds == (0, 5, 6, 7, 20, 30, 40)
    assert parse_cron("* * * ?/10 * *").days_of_month == (1, 11, 21, 31)


def test_names_of_months_and_weekdays_in_any_case() -> None:
    assert parse_cron("* * * * jan,Mar,DECEMBER *").months == (1, 3, 12)
    assert parse_cron("* * * * * MON-FRI").days_of_week == (2, 3, 4, 5, 6)
    assert parse_cron("* * * * * tues,Thurs").days_of_week == (3, 5)
    assert parse_cron("* * * * FEB-NOV/3 SUN-SAT/2").months == (2, 5, 8, 11)
    assert parse_cron("* * * * * SUN-SAT/2").days_of_week == (1, 3, 5, 7)


def test_day_of_week_one_is_sunday() -> None:
    # engine-observed.md 6: on a Sunday, `* * * * * 1` and `SUN` fire and `7` does not.
    assert fires("0 0 9 * * 1", count=1) == ["2026-12-06T09:00:00+00:00"]
    assert fires("0 0 9 * * SUN", count=1) == ["2026-12-06T09:00:00+00:00"]
    assert fires("0 0 9 * * 7", count=1) == ["2026-12-05T09:00:00+00:00"]
    assert fires("* * * * * 1", count=1) == ["2026-11-29T16:56:16+00:00"]


def test_shorthands() -> None:
    assert fires("@yearly", count=1) == ["2027-01-01T00:00:00+00:00"]
    assert fires("@monthly", count=1) == ["2026-12-01T00:00:00+00:00"]
    assert fires("@weekly", count=1) == ["2026-12-06T00:00:00+00:00"]  # Sunday
    assert fires("@daily", count=1) == ["2026-11-30T00:00:00+00:00"]
    assert fires(" @hourly ", count=1) == ["2026-11-29T17:00:00+00:00"]


def test_whitespace_is_loose_as_in_the_crate() -> None:
    assert parse_cron(" 0 , 30 * * * * * ").seconds == (0, 30)
    assert parse_cron("0\t0\n0 * * *").hours == (0,)
    assert parse_cron("******").seconds == tuple(range(60))


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # The engine's own answers (engine-observed.md 6).
        ("bad", "bad\n^\nThe 'Seconds' field does not support using names. 'bad' specified."),
        ("* * * * *", "* * * * *\n         ^\n"),
        (
            "0 0 0 * * 0",
            "0 0 0 * * 0\n          ^\n"
            "Days of Week must be greater than or equal to 1. ('0' specified.)",
        ),
        (
            "0 0 0 * * 8",
            "0 0 0 * * 8\n          ^\nDays of Week must be less than 7. ('8' specified.)",
        ),
        ("60 * * * * *", "60 * * * * *\n^\nSeconds must be less than 59. ('60' specified.)"),
        (
            "0 0 0 L * *",
            "0 0 0 L * *\n      ^\n"
            "The 'Days of Month' field does not support using names. 'L' specified.",
        ),
        ("0 0 0 ? * 2#1", "0 0 0 ? * 2#1\n           ^\n"),
        ("* * * * * * * *", "* * * * * * * *\n              ^\n"),
        # The crate's other answers.
        ("*/0 * * * * *", "*/0 * * * * *\n^\nrange step cannot be zero"),
        (
            "1-5/61 * * * * *",
            "1-5/61 * * * * *\n^\nSeconds must be between 1 and 59. ('61' specified.)",
        ),
        (
            "* * * * * */8",
            "* * * * * */8\n          ^\nDays of Week must be between 1 and 7. ('8' specified.)",
        ),
        ("75/5 * * * * *", "75/5 * * * * *\n^\nSeconds must be less than 59. ('75' specified.)"),
        ("10-5 * * * * *", "10-5 * * * * *\n^\nInvalid range for Seconds: 10-5"),
        (
            "0 0 0 1-40 * *",
            "0 0 0 1-40 * *\n      ^\nInvalid range for Days of Month: 1-40",
        ),
        (
            "* * * * * FRI-MON",
            "* * * * * FRI-MON\n          ^\nInvalid named range for Days of Week: FRI-MON",
        ),
        (
            "* * * * * MON,TURTLE",
            "* * * * * MON,TURTLE\n          ^\n'TURTLE' is not a valid day of the week.",
        ),
        ("* * * * Foo *", "* * * * Foo *\n        ^\n'Foo' is not a valid month name."),
        (
            "* * 24 * * *",
            "* * 24 * * *\n    ^\nHours must be less than 23. ('24' specified.)",
        ),
        ("? * * * * *", "? * * * * *\n^\n"),
        # An invalid year makes the year absent, so the parse stops there with no reason.
        ("0 0 0 1 1 ? 1969", "0 0 0 1 1 ? 1969\n            ^\n"),
        ("0 0 0 1 1 ? 2020-2040/2200", "0 0 0 1 1 ? 2020-2040/2200\n            ^\n"),
        ("99999999999 * * * * *", "99999999999 * * * * *\n^\n"),
        ("@dailyBla", "@dailyBla\n      ^\n"),
        ("@DAILY", "@DAILY\n^\n"),
        ("   ", "   \n   ^\n"),
        # The caret counts bytes, as the crate does.
        ("* é * * * *", "* é * * * *\n  ^\n"),
        ("é * * * * *", "é * * * * *\n^\n"),
    ],
)
def test_errors_are_the_crates(expression: str, message: str) -> None:
    assert error_of(expression) == message


def test_errors_in_expressions_of_several_lines_name_line_and_column() -> None:
    assert error_of("*\n* * * *") == (
        "parse error at line 2, column 8\n  |\n2 | * * * *\n  |        ^\n"
    )
    assert error_of("* * *\n* *x *") == (
        "parse error at line 2, column 4\n  |\n2 | * *x *\n  |    ^\n"
        "'x' is not a valid day of the week."
    )


# -- next fire time --------------------------------------------------------------------------------


def test_next_fire_is_strictly_after_at_whole_seconds() -> None:
    on_the_second = datetime.datetime(2026, 11, 29, 16, 56, 16, tzinfo=UTC).timestamp()
    assert fires("*/2 * * * * *") == [
        "2026-11-29T16:56:16+00:00",
        "2026-11-29T16:56:18+00:00",
        "2026-11-29T16:56:20+00:00",
    ]
    assert fires("*/2 * * * * *", after=on_the_second, count=1) == ["2026-11-29T16:56:18+00:00"]
    assert fires("*/2 * * * * *", after=on_the_second - 0.001, count=1) == [
        "2026-11-29T16:56:16+00:00"
    ]


def test_a_day_must_match_both_day_fields() -> None:
    # The 13th that is a Friday (day 6).
    assert fires("0 0 0 13 * FRI", count=2) == [
        "2027-08-13T00:00:00+00:00",
        "2028-10-13T00:00:00+00:00",
    ]


def test_months_without_the_day_are_skipped() -> None:
    assert fires("0 0 0 31 * *", count=3) == [
        "2026-12-31T00:00:00+00:00",
        "2027-01-31T00:00:00+00:00",
        "2027-03-31T00:00:00+00:00",
    ]
    assert fires("0 0 0 29 2 *", count=2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]


def test_rollover_at_the_end_of_a_year() -> None:
    new_years_eve = datetime.datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert fires("0 * * * * *", after=new_years_eve, count=2) == [
        "2027-01-01T00:00:00+00:00",
        "2027-01-01T00:01:00+00:00",
    ]


def test_a_schedule_that_never_fires_has_no_next_time() -> None:
    assert fires("0 0 0 30 2 *") == []
    assert fires("0 0 0 * * * 2020") == []
    assert fires("59 59 23 31 12 7 2100") == []  # a Friday
    assert fires("59 59 23 31 12 * 2100") == ["2100-12-31T23:59:59+00:00"]
