"""``Cron``: a cron expression evaluated on the wall clock of a time zone."""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from anu_jobs.clock import ensure_utc
from anu_jobs.errors import InvalidScheduleError

from ._base import (
    TICK,
    Trigger,
    check_window,
    dt_json,
    iso,
    read_datetime,
    read_str,
    register,
    utc_or_none,
)
from ._count import count_fires, times_of_day
from ._zone import load_zone, lower_wall_bound, upper_wall_bound, wall_to_utc

__all__ = ["Cron"]

_SHAPE = (
    "Expected 5 fields 'minute hour day-of-month month day-of-week' (e.g. '0 3 * * *'), "
    "6 fields with seconds first 'second minute hour day-of-month month day-of-week' "
    "(e.g. '*/10 * * * * *'), or an alias: @hourly, @daily, @midnight, @weekly, "
    "@monthly, @yearly, @annually"
)

# Where the construction-time probe starts looking for a first match. croniter gives
# up after 50 years without one, which is how an expression that names no real date
# (30 February) is told apart from a rare one (29 February, which recurs within 8 years).
_PROBE = datetime(2001, 1, 1)

# The failures croniter can raise once it is asked past the range a datetime holds.
_OUT_OF_RANGE = (CroniterBadDateError, OverflowError, ValueError, OSError)


# A range whose two ends are equal, with an optional step: "5-5", "mon-MON/2".
_EQUAL_RANGE = re.compile(r"^(?P<low>\w+)-(?P<high>\w+)(?:/\d+)?$")


def _canonical(text: str) -> str:
    """``text`` with every equal-ended range (``5-5``) written as its single value.

    croniter reads ``5-5`` (and ``jan-jan``) as the whole cycle, so ``2-2 * * * *``
    would fire every minute. Every other cron (Vixie, Quartz) and every reader takes
    it as the one value it names; so do we.
    """

    def same(low: str, high: str) -> bool:
        if low.isdigit() and high.isdigit():
            return int(low) == int(high)
        return low.lower() == high.lower()

    def part(token: str) -> str:
        match = _EQUAL_RANGE.match(token)
        return match["low"] if match and same(match["low"], match["high"]) else token

    return " ".join(",".join(map(part, field.split(","))) for field in text.split())


def _full_day_fields_as_star(text: str, expanded: list[list[object]]) -> str:
    """``text`` with a day-of-month or day-of-week field that names every value as ``*``.

    Which of the two day fields is "restricted" decides between "either matches" and
    "both match". croniter judges that partly by the field's text, so ``*/2 * 0-6``
    meant odd days but ``1-15 * 0-6`` meant every day. Here a field naming every value
    (``1-31``, ``0-6``, ``mon-sun``) is simply unrestricted, like ``*``.
    """
    fields = text.split()
    shift = len(fields) - 5  # a seconds field comes first
    if expanded[2] == list(range(1, 32)):
        fields[2 + shift] = "*"
    if expanded[4] == list(range(7)):
        fields[4 + shift] = "*"
    return " ".join(fields)


@functools.lru_cache(maxsize=512)
def _parse(expr: str) -> croniter:
    """The parsed expression, as a croniter template to copy before each use.

    croniter instances carry a cursor, so the cached one is never iterated itself;
    shallow copies share only the parsed fields, which croniter does not mutate.
    """
    text = expr.strip()
    if not text.startswith("@"):
        fields = len(text.split())
        if fields not in (5, 6):
            raise InvalidScheduleError(
                f"invalid cron expression {expr!r}: it has {fields} fields. {_SHAPE}",
                expression=expr,
            )
        text = _canonical(text)
    try:
        template = croniter(text, _PROBE, second_at_beginning=True)
        if not text.startswith("@"):
            starred = _full_day_fields_as_star(text, template.expanded)
            if starred != text:
                template = croniter(starred, _PROBE, second_at_beginning=True)
    except (CroniterError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidScheduleError(
            f"invalid cron expression {expr!r}: {exc}. {_SHAPE}", expression=expr
        ) from None
    try:
        copy.copy(template).get_next(datetime, start_time=_PROBE)
    except CroniterBadDateError:
        raise InvalidScheduleError(
            f"cron expression {expr!r} can never fire: no date matches its day and month "
            "fields (like 30 February or 31 April)",
            expression=expr,
        ) from None
    return template


def _next_match(expr: str, bound: datetime) -> datetime | None:
    """The first naive wall time matching ``expr`` strictly after naive ``bound``."""
    # Matches fall on whole seconds, so "after bound" is "after bound's whole second";
    # handing croniter whole seconds also keeps its float timestamps exact.
    try:
        match: datetime = copy.copy(_parse(expr)).get_next(
            datetime, start_time=bound.replace(microsecond=0)
        )
    except _OUT_OF_RANGE:
        return None
    return match


def _prev_match(expr: str, bound: datetime) -> datetime | None:
    """The last naive wall time matching ``expr`` strictly before naive ``bound``."""
    if bound.microsecond:
        bound = bound.replace(microsecond=0) + timedelta(seconds=1)
    try:
        match: datetime = copy.copy(_parse(expr)).get_prev(datetime, start_time=bound)
    except _OUT_OF_RANGE:
        return None
    return match


@register
@dataclass(frozen=True, slots=True)
class Cron(Trigger):
    """Fires at the wall-clock times a cron expression names in the zone ``tz``.

    ``expr`` has 5 fields (minute hour day-of-month month day-of-week), or 6 with
    *seconds first* (second minute hour day-of-month month day-of-week, as in Quartz
    and APScheduler), or is an alias such as ``@hourly`` or ``@daily``. When both
    day-of-month and day-of-week are restricted, a day matching either one fires
    (classic cron); a day field naming every value (``1-31``, ``0-6``) counts as
    ``*``. A range with equal ends (``5-5``) names that one value. Fires lie in
    ``[start, end]`` when those are set.

    Daylight saving time: a wall time that does not exist (spring forward) fires at
    the first instant after the gap, and several matches inside one gap fire once
    there; a wall time that occurs twice (fall back) fires once, at its first
    occurrence. Fire times therefore strictly increase.

    An invalid expression, one that can never fire, or an unknown zone raises
    :class:`InvalidScheduleError` at construction.
    """

    expr: str
    tz: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None

    kind: ClassVar[str] = "cron"

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str):
            raise InvalidScheduleError(
                f"a cron expression must be a string, not {type(self.expr).__name__}. {_SHAPE}"
            )
        _parse(self.expr)
        load_zone(self.tz)
        object.__setattr__(self, "start", utc_or_none(self.start, "start"))
        object.__setattr__(self, "end", utc_or_none(self.end, "end"))
        check_window(self.start, self.end)

    @property
    def zone(self) -> ZoneInfo:
        """The :class:`~zoneinfo.ZoneInfo` the expression is evaluated in."""
        return load_zone(self.tz)

    def first_fire(self, now: datetime) -> datetime | None:
        """The first fire strictly after ``now`` (and not before ``start``)."""
        return self.next_fire(now)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after``, or None past ``end``.

        Costs one croniter step in the usual case, however far ``after`` is from the
        previous fire, including when ``after`` falls in the second pass of a
        repeated hour.
        """
        after = ensure_utc(after, "after")
        if self.start is not None and after < self.start:
            after = self.start - TICK
        zone = self.zone
        try:
            bound = upper_wall_bound(after, zone)
            while True:
                match = _next_match(self.expr, bound)
                if match is None:
                    return None
                fire = wall_to_utc(match, zone)
                # The bound makes the first match the answer; the loop only guards
                # against a zone whose offsets change twice within hours.
                if fire > after:
                    break
                bound = match
        except OverflowError:
            return None
        if self.end is not None and fire > self.end:
            return None
        return fire

    def to_json(self) -> dict[str, Any]:
        """The expression and zone as given, times as ISO strings."""
        return {
            "kind": self.kind,
            "expr": self.expr,
            "tz": self.tz,
            "start": dt_json(self.start),
            "end": dt_json(self.end),
        }

    def describe(self) -> str:
        """``"cron '0 3 * * *' in Europe/Zurich"``, with start and end when set."""
        text = f"cron {self.expr!r} in {self.tz}"
        if self.start is not None:
            text += f" from {iso(self.start)}"
        if self.end is not None:
            text += f" until {iso(self.end)}"
        return text

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> Cron:
        return cls(
            expr=read_str(data, "expr"),
            tz=read_str(data, "tz"),
            start=read_datetime(data, "start"),
            end=read_datetime(data, "end"),
        )

    def _count_between(self, lo: datetime, hi: datetime) -> int:
        # Exact by day-and-time-of-day arithmetic (see _count); the walking fallback of
        # the base class only serves expressions whose time fields are not plain sets.
        if self.start is not None:
            lo = max(lo, self.start - TICK)
        if self.end is not None:
            hi = min(hi, self.end + TICK)
        clock = times_of_day(_parse(self.expr).expanded)
        if clock is None:
            return Trigger._count_between(self, lo, hi)
        return count_fires(functools.partial(_next_match, self.expr), clock, self.zone, lo, hi)

    def _prev_fire(self, before: datetime) -> datetime | None:
        before = ensure_utc(before, "before")
        if self.end is not None and before > self.end:
            before = self.end + TICK
        zone = self.zone
        try:
            bound = lower_wall_bound(before, zone)
            while True:
                match = _prev_match(self.expr, bound)
                if match is None:
                    return None
                fire = wall_to_utc(match, zone)
                if fire < before:
                    break
                bound = match
        except OverflowError:
            return None
        if self.start is not None and fire < self.start:
            return None
        return fire
