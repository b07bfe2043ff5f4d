"""Counting a cron trigger's fires over a long span without visiting each one.

The misfire planner needs "how many fires did the outage skip". A seconds cron
missed for a month has 2.6 million of them, so walking them is out; extrapolating
from the first few thousand is badly wrong for uneven schedules (business hours,
weekdays). The count here is exact instead, and cheap, because a cron expression
splits into a set of days and a set of times of day: every matching day holds every
matching time of day. So the count takes one croniter step per *matching day*
(croniter settles which days match, with all its day-of-month/day-of-week rules) and
counts times of day by arithmetic on the expanded hour, minute and second fields.
DST gaps, where several matches collapse into one fire, are corrected for exactly.
Past :data:`DAY_BUDGET` matching days the rest is extrapolated by time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import TypeAlias

from ._base import TICK
from ._zone import lower_wall_bound, offset_at, transition, upper_wall_bound

__all__ = ["DAY_BUDGET", "count_fires"]

#: How many matching days :func:`count_fires` visits before it extrapolates the rest.
DAY_BUDGET = 3_000

_DAY = timedelta(days=1)

#: The first naive wall time matching an expression strictly after a naive bound.
NextMatch: TypeAlias = Callable[[datetime], datetime | None]


@dataclass(frozen=True, slots=True)
class TimesOfDay:
    """The times of day an expression matches: every hour x minute x second combination."""

    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]

    @property
    def per_day(self) -> int:
        """How many times of day match, i.e. the matches on one matching day."""
        return len(self.hours) * len(self.minutes) * len(self.seconds)

    def before(self, wall: datetime) -> int:
        """How many matching times of day come strictly before ``wall``'s time of day."""
        # Matches fall on whole seconds, so "before 10:00:00.5" is "before 10:00:01".
        mark = wall.hour * 3600 + wall.minute * 60 + wall.second + (1 if wall.microsecond else 0)
        hour, rest = divmod(mark, 3600)
        minute, second = divmod(rest, 60)
        count = bisect_left(self.hours, hour) * len(self.minutes) * len(self.seconds)
        if hour in self.hours:
            count += bisect_left(self.minutes, minute) * len(self.seconds)
            if minute in self.minutes:
                count += bisect_left(self.seconds, second)
        return count


def times_of_day(expanded: list[list[object]]) -> TimesOfDay | None:
    """The times of day of croniter's expanded fields, or None if they are not plain sets."""

    def field(values: list[object], size: int) -> tuple[int, ...] | None:
        if values == ["*"]:
            return tuple(range(size))
        if not all(isinstance(v, int) for v in values):
            return None
        return tuple(sorted({v for v in values if isinstance(v, int)}))

    # croniter's order: minute, hour, day, month, weekday, then second for 6 fields.
    minutes, hours = field(expanded[0], 60), field(expanded[1], 24)
    seconds = field(expanded[5], 60) if len(expanded) > 5 else (0,)
    if minutes is None or hours is None or seconds is None:
        return None
    return TimesOfDay(hours=hours, minutes=minutes, seconds=seconds)


def count_fires(
    next_match: NextMatch,
    clock: TimesOfDay,
    zone: tzinfo,
    lo: datetime,
    hi: datetime,
) -> int:
    """How many fires lie strictly between the instants ``lo`` and ``hi``.

    ``next_match(bound)`` gives the first naive wall-clock match after ``bound``.
    """
    if hi <= lo:
        return 0
    # Matches strictly between these wall bounds are exactly the fires in (lo, hi).
    low, high = upper_wall_bound(lo, zone), lower_wall_bound(hi, zone)
    gaps: set[datetime] = set()
    count = _count_matches(next_match, clock, low, high, zone, gaps)
    for start in gaps:
        count -= _gap_surplus(next_match, clock, zone, start, low, high)
    return count


def _count_matches(
    next_match: NextMatch,
    clock: TimesOfDay,
    low: datetime,
    high: datetime,
    zone: tzinfo | None = None,
    gaps: set[datetime] | None = None,
) -> int:
    """Naive wall-clock matches strictly between ``low`` and ``high``.

    With ``zone`` and ``gaps``, also collects the DST gaps that begin on matching days.
    """
    count = 0
    cursor = low
    for _ in range(DAY_BUDGET):
        match = next_match(cursor)
        if match is None or match >= high:
            return count
        day = datetime.combine(match.date(), time())
        next_day = day + _DAY
        upto = clock.per_day if high >= next_day else clock.before(high)
        count += upto - clock.before(match)
        if zone is not None and gaps is not None:
            _note_gap(zone, day, gaps)
        if high <= next_day:
            return count
        cursor = next_day - TICK
    # Out of budget: assume the rest of the span matches at the rate seen so far.
    covered = cursor + TICK - low
    return count + round(count * ((high - cursor - TICK) / covered))


def _note_gap(zone: tzinfo, day: datetime, gaps: set[datetime]) -> None:
    """Add to ``gaps`` the transition instant of a spring-forward gap during ``day``."""
    # fold=0 at the start and fold=1 at the end read a midnight that falls inside a
    # gap with the offsets from either side of it, so a gap across midnight shows too.
    first = day.replace(tzinfo=zone, fold=0)
    last = (day + _DAY).replace(tzinfo=zone, fold=1)
    before, after = offset_at(first, zone), offset_at(last, zone)
    if before is None or after is None or after <= before:
        return
    # Aware datetimes sharing a tzinfo subtract as wall times; bisect in UTC instead.
    # A midnight inside the gap reads, with fold=0, as the transition instant itself: the
    # bisection starts a tick before it, where the old offset still holds.
    gaps.add(transition(zone, first.astimezone(UTC) - TICK, last.astimezone(UTC)))


def _gap_surplus(
    next_match: NextMatch,
    clock: TimesOfDay,
    zone: tzinfo,
    instant: datetime,
    low: datetime,
    high: datetime,
) -> int:
    """How many of the counted matches are duplicates because they fall in this gap."""
    before, after = offset_at(instant - TICK, zone), offset_at(instant, zone)
    assert before is not None
    assert after is not None
    start = (instant + before).replace(tzinfo=None)
    end = (instant + after).replace(tzinfo=None)
    inside = _count_matches(next_match, clock, max(low, start - TICK), min(high, end))
    if not inside:
        return 0
    # They all fire at the transition. So does a match at the wall time the gap ends
    # on, if there is one; otherwise the gap keeps one fire of its own.
    ends_on_match = next_match(end - TICK) == end
    return inside if ends_on_match else inside - 1
