"""Cron expressions as the engine's ``iii-cron`` reads them, and the times they fire: no clock.

The engine parses trigger expressions with the Rust ``cron`` crate, version 0.15.0 (spec/
engine.md section 4, engine-observed.md section 6), so this module reproduces that crate's
grammar, its validation and its error texts rather than any crontab convention:

- six or seven fields, seconds first: ``sec min hour day-of-month month day-of-week [year]``,
  or one of ``@yearly @monthly @weekly @daily @hourly``;
- each field is a comma list of ``*``, ``n``, ``a-b``, ``NAME``, ``NAME-NAME``, and steps
  ``*/s``, ``n/s`` (``n`` up to the field's maximum), ``a-b/s``, ``NAME-NAME/s``; ``?`` means
  ``*`` in the day-of-month and day-of-week fields only;
- day of week runs 1-7 with **1 = Sunday** (``SUN`` ... ``SAT``; 0 is refused), months 1-12
  (``JAN`` ...), years 1970-2100; ``L``, ``W`` and ``#`` do not exist; ``@weekly`` is Sunday;
- a day must match both the day-of-month and the day-of-week field;
- whitespace (spaces, tabs, newlines) separates fields but is also allowed around numbers, names
  and commas, and fields need none between them (``******`` is six ``*`` fields), all as the
  crate's parser combinators happen to allow.

Theory of operation
-------------------

The crate's parser is built from ``winnow`` combinators, and its error message shows where the
parse stopped: the expression, a caret under that place, then the reason when there is one. To
place the caret exactly, :class:`_Parser` follows the same combinator semantics: an alternative
is tried from where the choice started, the first to succeed wins, and when all fail the *last*
one's failure (its position and reason) is what the caller sees; a sequence fails where its
failing part stopped; a field whose values do not validate fails at the field's start with the
validation's text; a comma list that cannot continue ends before the comma; an optional part
(the year) that fails counts as absent. Positions are byte offsets, as in the crate.

The fire-time search returns the earliest whole second strictly after a given Unix time whose
UTC calendar fields all match, as the crate's ``Schedule::after`` does.
"""

from __future__ import annotations

import bisect
import calendar
import datetime
import math
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias, TypeVar

import attrs

__all__ = ["CronSchedule", "CronSyntaxError", "parse_cron"]

_T = TypeVar("_T")

_WHITESPACE: Final = " \t\r\n"
_U32_MAX: Final = 0xFFFF_FFFF
_UTC: Final = datetime.timezone.utc

# Specifiers, as the crate's parser produces them (before a field's unit gives them meaning).


@attrs.frozen
class _Every:
    """``*`` (or ``?``)."""


@attrs.frozen
class _Point:
    value: int


@attrs.frozen
class _Range:
    start: int
    end: int


@attrs.frozen
class _NamedRange:
    start: str
    end: str


_Specifier: TypeAlias = _Every | _Point | _Range | _NamedRange
_ALL: Final = _Every()


@attrs.frozen
class _Period:
    start: _Specifier
    step: int


@attrs.frozen
class _NamedPoint:
    name: str


_Root: TypeAlias = _Specifier | _Period | _NamedPoint


class CronSyntaxError(ValueError):
    """An expression the engine's cron parser refuses; the message is the parser's own text
    (the expression, a caret line, and the reason, which may be empty)."""


@attrs.frozen
class _Unit:
    """One field's unit: its name in messages, its bounds, and the names it accepts."""

    name: str
    minimum: int
    maximum: int
    names: dict[str, int] | None = None
    #: The message for a name the unit does not know, with ``{}`` for the name.
    unknown_name: str = ""

    def ordinal_from_name(self, name: str) -> int:
        if self.names is None:
            raise _Invalid(
                f"The '{self.name}' field does not support using names. '{name}' specified."
            )
        ordinal = self.names.get(name.lower())
        if ordinal is None:
            raise _Invalid(self.unknown_name.format(name))
        return ordinal

    def validate(self, ordinal: int) -> int:
        if ordinal < self.minimum:
            raise _Invalid(
                f"{self.name} must be greater than or equal to {self.minimum}. "
                f"('{ordinal}' specified.)"
            )
        if ordinal > self.maximum:
            raise _Invalid(
                f"{self.name} must be less than {self.maximum}. ('{ordinal}' specified.)"
            )
        return ordinal

    def _is_valid(self, ordinal: int) -> bool:
        return self.minimum <= ordinal <= self.maximum

    def ordinals_of(self, specifier: _Specifier) -> list[int]:
        if isinstance(specifier, _Every):
            return list(range(self.minimum, self.maximum + 1))
        if isinstance(specifier, _Point):
            return [specifier.value]
        if isinstance(specifier, _Range):
            start, end = specifier.start, specifier.end
            if self._is_valid(start) and self._is_valid(end) and start <= end:
                return list(range(start, end + 1))
            raise _Invalid(f"Invalid range for {self.name}: {start}-{end}")
        first = self.ordinal_from_name(specifier.start)
        last = self.ordinal_from_name(specifier.end)
        if self._is_valid(first) and self._is_valid(last) and first <= last:
            return list(range(first, last + 1))
        raise _Invalid(f"Invalid named range for {self.name}: {specifier.start}-{specifier.end}")

    def ordinals_of_root(self, root: _Root) -> list[int]:
        if isinstance(root, _NamedPoint):
            return [self.ordinal_from_name(root.name)]
        if not isinstance(root, _Period):
            return self.ordinals_of(root)
        if root.step == 0:
            raise _Invalid("range step cannot be zero")
        if root.step > self.maximum:
            raise _Invalid(
                f"{self.name} must be between 1 and {self.maximum}. ('{root.step}' specified.)"
            )
        if isinstance(root.start, _Point):
            # A point before a step starts a range that runs to the field's maximum.
            base = list(range(self.validate(root.start.value), self.maximum + 1))
        else:
            base = self.ordinals_of(root.start)
        return base[:: root.step]

    def read(self, roots: Sequence[_Root]) -> tuple[int, ...]:
        """The field's values (ascending), or _Invalid with the crate's text."""
        if len(roots) == 1 and roots[0] == _ALL:
            return tuple(range(self.minimum, self.maximum + 1))
        values: set[int] = set()
        for root in roots:
            for ordinal in sorted(set(self.ordinals_of_root(root))):
                values.add(self.validate(ordinal))
        return tuple(sorted(values))


_MONTH_NAMES: Final = {
    **dict.fromkeys(("jan", "january"), 1),
    **dict.fromkeys(("feb", "february"), 2),
    **dict.fromkeys(("mar", "march"), 3),
    **dict.fromkeys(("apr", "april"), 4),
    "may": 5,
    **dict.fromkeys(("jun", "june"), 6),
    **dict.fromkeys(("jul", "july"), 7),
    **dict.fromkeys(("aug", "august"), 8),
    **dict.fromkeys(("sep", "september"), 9),
    **dict.fromkeys(("oct", "october"), 10),
    **dict.fromkeys(("nov", "november"), 11),
    **dict.fromkeys(("dec", "december"), 12),
}
# 1 = Sunday: the crate counts days from Sunday.
_DAY_NAMES: Final = {
    **dict.fromkeys(("sun", "sunday"), 1),
    **dict.fromkeys(("mon", "monday"), 2),
    **dict.fromkeys(("tue", "tues", "tuesday"), 3),
    **dict.fromkeys(("wed", "wednesday"), 4),
    **dict.fromkeys(("thu", "thurs", "thursday"), 5),
    **dict.fromkeys(("fri", "friday"), 6),
    **dict.fromkeys(("sat", "saturday"), 7),
}

_SECONDS: Final = _Unit("Seconds", 0, 59)
_MINUTES: Final = _Unit("Minutes", 0, 59)
_HOURS: Final = _Unit("Hours", 0, 23)
_DAYS_OF_MONTH: Final = _Unit("Days of Month", 1, 31)
_MONTHS: Final = _Unit("Months", 1, 12, _MONTH_NAMES, "'{}' is not a valid month name.")
_DAYS_OF_WEEK: Final = _Unit(
    "Days of Week", 1, 7, _DAY_NAMES, "'{}' is not a valid day of the week."
)
_YEARS: Final = _Unit("Years", 1970, 2100)


@attrs.frozen
class CronSchedule:
    """A parsed expression: the values each field allows, ascending."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    #: 1 = Sunday ... 7 = Saturday.
    days_of_week: tuple[int, ...]
    years: tuple[int, ...]

    def next_after(self, unix_time: float) -> int | None:
        """The first fire time strictly after ``unix_time``, in whole Unix seconds (UTC), or
        ``None`` when there is none (its years are past, or it names a day that never comes)."""
        first = datetime.datetime.fromtimestamp(math.floor(unix_time) + 1, _UTC)
        for year in _from(self.years, first.year):
            on_first_year = year == first.year
            for month in _from(self.months, first.month if on_first_year else 0):
                on_first_month = on_first_year and month == first.month
                last_day = calendar.monthrange(year, month)[1]
                for day in _from(self.days_of_month, first.day if on_first_month else 0):
                    if day > last_day:
                        break
                    if _day_of_week(year, month, day) not in self.days_of_week:
                        continue
                    # Only the first day starts later than midnight.
                    earliest = (
                        (first.hour, first.minute, first.second)
                        if on_first_month and day == first.day
                        else (0, 0, 0)
                    )
                    found = self._first_time_of_day(year, month, day, earliest)
                    if found is not None:
                        return found
        return None

    def _first_time_of_day(
        self, year: int, month: int, day: int, earliest: tuple[int, int, int]
    ) -> int | None:
        low_hour, low_minute, low_second = earliest
        for hour in _from(self.hours, low_hour):
            on_low_hour = hour == low_hour
            for minute in _from(self.minutes, low_minute if on_low_hour else 0):
                on_low_minute = on_low_hour and minute == low_minute
                for second in _from(self.seconds, low_second if on_low_minute else 0):
                    moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=_UTC)
                    return int(moment.timestamp())
        return None


def _from(values: tuple[int, ...], lowest: int) -> tuple[int, ...]:
    return values[bisect.bisect_left(values, lowest) :]


def _day_of_week(year: int, month: int, day: int) -> int:
    """1 = Sunday ... 7 = Saturday (``weekday()`` has Monday = 0)."""
    return (datetime.date(year, month, day).weekday() + 1) % 7 + 1


def parse_cron(expression: str) -> CronSchedule:
    """Parse ``expression`` as the engine does.

    Raises:
        CronSyntaxError: with the crate's message (what follows ``Invalid cron expression
            '<expression>': `` in the engine's registration error).
    """
    parser = _Parser(expression)
    try:
        fields = parser.schedule()
    except _Fail as failure:
        raise CronSyntaxError(_parse_error_text(expression, failure)) from None
    return CronSchedule(expression, *fields)


# -- the parser -----------------------------------------------------------------------------------


class _Invalid(Exception):
    """A field's values do not validate: the crate's message."""


class _Fail(Exception):
    """A parser failed (winnow's backtrack) at ``position`` (chars), with an optional reason."""

    def __init__(self, position: int, reason: str | None = None) -> None:
        super().__init__(position, reason)
        self.position = position
        self.reason = reason


_Fields: TypeAlias = tuple[
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
]
_Step: TypeAlias = Callable[[int], tuple[_T, int]]

_ANY_HOUR: Final = tuple(range(24))
_ANY_DAY: Final = tuple(range(1, 32))
_ANY_MONTH: Final = tuple(range(1, 13))
_ANY_WEEKDAY: Final = tuple(range(1, 8))
_ANY_YEAR: Final = tuple(range(1970, 2101))
_MIDNIGHT: Final = ((0,), (0,), (0,))
_SHORTHANDS: Final[tuple[tuple[str, _Fields], ...]] = (
    ("@yearly", (*_MIDNIGHT, (1,), (1,), _ANY_WEEKDAY, _ANY_YEAR)),
    ("@monthly", (*_MIDNIGHT, (1,), _ANY_MONTH, _ANY_WEEKDAY, _ANY_YEAR)),
    ("@weekly", (*_MIDNIGHT, _ANY_DAY, _ANY_MONTH, (1,), _ANY_YEAR)),
    ("@daily", (*_MIDNIGHT, _ANY_DAY, _ANY_MONTH, _ANY_WEEKDAY, _ANY_YEAR)),
    ("@hourly", ((0,), (0,), _ANY_HOUR, _ANY_DAY, _ANY_MONTH, _ANY_WEEKDAY, _ANY_YEAR)),
)


class _Parser:
    """Each method parses from a position and returns ``(value, next position)`` or raises
    :class:`_Fail`; see the module docstring for the rules they share."""

    def __init__(self, text: str) -> None:
        self.text = text

    # -- the combinators' semantics -------------------------------------------------------------

    @staticmethod
    def alt(position: int, *choices: _Step[_T]) -> tuple[_T, int]:
        failure: _Fail | None = None
        for choice in choices:
            try:
                return choice(position)
            except _Fail as error:
                failure = error
        assert failure is not None
        raise failure

    def skip_space(self, position: int) -> int:
        while position < len(self.text) and self.text[position] in _WHITESPACE:
            position += 1
        return position

    def literal(self, position: int, word: str) -> int:
        if not self.text.startswith(word, position):
            raise _Fail(position)
        return position + len(word)

    def take(self, position: int, accept: Callable[[str], bool]) -> tuple[str, int]:
        end = position
        while end < len(self.text) and accept(self.text[end]):
            end += 1
        if end == position:
            raise _Fail(position)
        return self.text[position:end], end

    # -- tokens ---------------------------------------------------------------------------------

    def ordinal(self, position: int) -> tuple[int, int]:
        digits, end = self.take(self.skip_space(position), _is_digit)
        value = int(digits)
        if value > _U32_MAX:
            raise _Fail(position, "number too large to fit in target type")
        return value, self.skip_space(end)

    def name(self, position: int) -> tuple[str, int]:
        word, end = self.take(self.skip_space(position), _is_letter)
        return word, self.skip_space(end)

    # -- specifiers -----------------------------------------------------------------------------

    def all(self, position: int) -> tuple[_Specifier, int]:
        return _ALL, self.literal(position, "*")

    def any(self, position: int) -> tuple[_Specifier, int]:
        return _ALL, self.literal(position, "?")

    def point(self, position: int) -> tuple[_Specifier, int]:
        value, position = self.ordinal(position)
        return _Point(value), position

    def range(self, position: int) -> tuple[_Specifier, int]:
        start, position = self.ordinal(position)
        end, position = self.ordinal(self.literal(position, "-"))
        return _Range(start, end), position

    def named_range(self, position: int) -> tuple[_Specifier, int]:
        start, position = self.name(position)
        end, position = self.name(self.literal(position, "-"))
        return _NamedRange(start, end), position

    def named_point(self, position: int) -> tuple[_Root, int]:
        word, position = self.name(position)
        return _NamedPoint(word), position

    def specifier(self, position: int) -> tuple[_Specifier, int]:
        return self.alt(position, self.all, self.range, self.point, self.named_range)

    def specifier_with_any(self, position: int) -> tuple[_Specifier, int]:
        return self.alt(position, self.any, self.specifier)

    def period(self, position: int, start: _Step[_Specifier]) -> tuple[_Root, int]:
        first, position = start(position)
        step, position = self.ordinal(self.literal(position, "/"))
        return _Period(first, step), position

    def root(self, position: int, with_any: bool) -> tuple[_Root, int]:
        specifier = self.specifier_with_any if with_any else self.specifier
        choices: tuple[_Step[_Root], ...] = (
            lambda at: self.period(at, specifier),
            specifier,
            self.named_point,
        )
        return self.alt(position, *choices)

    def root_list(self, position: int, with_any: bool) -> tuple[list[_Root], int]:
        # winnow's separated(1.., root, ","): a comma not followed by an item ends the list
        # before the comma. (The crate offers the list, then a single item: the same parser.)
        first, position = self.root(self.skip_space(position), with_any)
        roots = [first]
        while True:
            try:
                after_comma = self.literal(position, ",")
                item, after_item = self.root(after_comma, with_any)
            except _Fail:
                break
            roots.append(item)
            position = after_item
        return roots, self.skip_space(position)

    def field(
        self, position: int, unit: _Unit, *, with_any: bool = False
    ) -> tuple[tuple[int, ...], int]:
        roots, end = self.root_list(position, with_any)
        try:
            return unit.read(roots), end
        except _Invalid as invalid:
            raise _Fail(position, str(invalid)) from None

    # -- the expression -------------------------------------------------------------------------

    def shorthand(self, position: int) -> tuple[_Fields, int]:
        position = self.skip_space(position)

        def keyword(word: str, fields: _Fields) -> _Step[_Fields]:
            return lambda at: (fields, self.literal(at, word))

        value, position = self.alt(
            position, *(keyword(word, fields) for word, fields in _SHORTHANDS)
        )
        return value, self.skip_space(position)

    def longhand(self, position: int) -> tuple[_Fields, int]:
        seconds, position = self.field(position, _SECONDS)
        minutes, position = self.field(position, _MINUTES)
        hours, position = self.field(position, _HOURS)
        days_of_month, position = self.field(position, _DAYS_OF_MONTH, with_any=True)
        months, position = self.field(position, _MONTHS)
        days_of_week, position = self.field(position, _DAYS_OF_WEEK, with_any=True)
        try:
            years, position = self.field(position, _YEARS)
        except _Fail:
            years = _ANY_YEAR
        self.end(position)
        fields = (seconds, minutes, hours, days_of_month, months, days_of_week, years)
        return fields, position

    def end(self, position: int) -> None:
        if position != len(self.text):
            raise _Fail(position)

    def schedule(self) -> _Fields:
        fields, position = self.alt(0, self.shorthand, self.longhand)
        self.end(position)
        return fields


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_letter(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _parse_error_text(expression: str, failure: _Fail) -> str:
    """winnow's rendering of a parse error: the input, a caret under the failing byte offset
    (or a located excerpt when the input has several lines), then the reason."""
    data = expression.encode()
    offset = len(expression[: failure.position].encode())
    reason = failure.reason or ""
    if b"\n" not in data:
        return f"{expression}\n{' ' * offset}^\n{reason}"
    line_index, column = _line_and_column(data, offset)
    line_number = line_index + 1
    gutter = " " * len(str(line_number))
    content = data.split(b"\n")[line_index].decode(errors="replace")
    return (
        f"parse error at line {line_number}, column {column + 1}\n"
        f"{gutter} |\n"
        f"{line_number} | {content}\n"
        f"{gutter} | {' ' * column}^\n"
        f"{reason}"
    )


def _line_and_column(data: bytes, index: int) -> tuple[int, int]:
    # As winnow counts: past the end counts as columns beyond the last byte, and the column is
    # in characters when the line up to and including the byte at ``index`` decodes, else bytes.
    safe_index = min(index, len(data) - 1)
    beyond = index - safe_index
    line_start = data.rfind(b"\n", 0, safe_index) + 1
    line = data.count(b"\n", 0, line_start)
    try:
        column = len(data[line_start : safe_index + 1].decode()) - 1
    except UnicodeDecodeError:
        column = safe_index - line_start
    return line, column + beyond
