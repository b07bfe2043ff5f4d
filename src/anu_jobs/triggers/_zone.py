"""Wall clock to UTC and back, with the DST rules a cron trigger promises.

A cron expression names *wall-clock* times in a zone. Mapping those to instants:

- a wall time that exists once maps to its instant;
- a wall time in a spring-forward gap does not exist; it maps to the first instant
  after the gap (the transition itself), so every match inside one gap collapses
  into that one fire;
- a wall time that a fall-back repeats maps to its first occurrence (``fold=0``).

That mapping never decreases as the wall time grows, which is what lets
:class:`~anu_jobs.triggers.Cron` turn "the first fire after an instant" into "the
first wall-clock match after a wall-clock bound" with no search through matches.
This module computes those bounds. It assumes at most one offset change within any
span of a few hours around the times it is asked about, as every tz database zone does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anu_jobs.errors import InvalidScheduleError

from ._base import TICK

__all__ = [
    "load_zone",
    "lower_wall_bound",
    "offset_at",
    "transition",
    "upper_wall_bound",
    "wall_to_utc",
]


def load_zone(name: str) -> ZoneInfo:
    """The zone called ``name``; an unknown or malformed name is an InvalidScheduleError."""
    if not isinstance(name, str) or not name:
        raise InvalidScheduleError(f"tz must be an IANA zone name such as 'UTC', not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC', "
            "'Europe/Zurich' or 'America/New_York'"
        ) from None


def offset_at(instant: datetime, zone: tzinfo) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def transition(zone: tzinfo, lo: datetime, hi: datetime) -> datetime:
    """The first instant in ``(lo, hi]`` that has ``hi``'s UTC offset.

    ``lo`` and ``hi`` must have different offsets. zoneinfo does not expose its
    transition table, so bisect over whole microseconds: a 24-hour span (the widest
    jump in the tz database) takes under 40 steps.
    """
    target = offset_at(hi, zone)
    low, high = 0, (hi - lo) // TICK  # offset(lo + low*TICK) != target == offset(lo + high*TICK)
    while high - low > 1:
        mid = (low + high) // 2
        if offset_at(lo + mid * TICK, zone) == target:
            high = mid
        else:
            low = mid
    return lo + high * TICK


def _utc(naive: datetime, offset: timedelta) -> datetime:
    return (naive - offset).replace(tzinfo=UTC)


def _offsets(naive: datetime, zone: tzinfo) -> tuple[timedelta, timedelta]:
    first = naive.replace(tzinfo=zone, fold=0).utcoffset()
    second = naive.replace(tzinfo=zone, fold=1).utcoffset()
    # A ZoneInfo always has an offset; the asserts narrow the Optional for mypy.
    assert first is not None
    assert second is not None
    return first, second


def wall_to_utc(naive: datetime, zone: tzinfo) -> datetime:
    """The fire instant of the wall time ``naive`` in ``zone`` (see the module docstring)."""
    # PEP 495: fold=0 reads the wall time with the offset from before a transition,
    # fold=1 with the one after. They differ only at a transition: in a gap the
    # offset grows (before < after), in a repeat it shrinks.
    before, after = _offsets(naive, zone)
    if before >= after:
        return _utc(naive, before)  # unambiguous, or the first pass of a repeat
    # In a gap: the transition lies between reading it with either offset.
    return transition(zone, _utc(naive, after), _utc(naive, before))


def _repeat_end(local: datetime, zone: tzinfo) -> datetime:
    """For a ``fold=1`` local time, the naive wall time where the repeated span ends."""
    first_offset = local.replace(fold=0).utcoffset()
    second_offset = local.utcoffset()
    assert first_offset is not None
    assert second_offset is not None
    naive = local.replace(tzinfo=None, fold=0)
    # The first pass of this wall time has the earlier offset, the instant itself the
    # later one; the repeat began between them, and the span it repeats ends one
    # offset difference after that, on the wall clock of the first pass.
    start = transition(zone, _utc(naive, first_offset), _utc(naive, second_offset))
    return (start + first_offset).replace(tzinfo=None)


def upper_wall_bound(after: datetime, zone: tzinfo) -> datetime:
    """The naive wall time B such that a wall match fires after ``after`` iff it is > B.

    Normally B is the wall time of ``after``. When ``after`` lies in the second pass
    of a repeated hour, every match inside that hour already fired on the first pass,
    so B is the last microsecond of the repeat: the search skips the whole hour in
    one step instead of visiting each match in it.
    """
    local = after.astimezone(zone)
    if local.fold == 1:
        return _repeat_end(local, zone) - TICK
    return local.replace(tzinfo=None)


def lower_wall_bound(before: datetime, zone: tzinfo) -> datetime:
    """The naive wall time B such that a wall match fires before ``before`` iff it is < B.

    The mirror of :func:`upper_wall_bound`. If ``before`` is the end of a gap, the
    matches inside the gap fire at ``before`` itself, so B is the start of the gap;
    reading the wall clock one microsecond earlier and stepping back gives exactly that.
    """
    local = before.astimezone(zone)
    if local.fold == 1:
        return _repeat_end(local, zone)
    return (before - TICK).astimezone(zone).replace(tzinfo=None, fold=0) + TICK
