"""Cron triggers across daylight saving time, north and south of the equator.

The 2024 transitions used here:

- Europe/Zurich: 31 Mar 02:00 -> 03:00 (at 01:00Z); 27 Oct 03:00 -> 02:00 (at 01:00Z).
- America/New_York: 10 Mar 02:00 -> 03:00 (07:00Z); 3 Nov 02:00 -> 01:00 (06:00Z).
- Australia/Sydney: 6 Oct 02:00 -> 03:00 (5 Oct 16:00Z); 7 Apr 03:00 -> 02:00 (6 Apr 16:00Z).
- Australia/Lord_Howe (half-hour DST): 6 Oct 02:00 -> 02:30; 7 Apr 02:00 -> 01:30.
- America/Santiago (at midnight): 8 Sep 00:00 -> 01:00 (04:00Z); 7 Apr 00:00 -> 6 Apr 23:00.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from anu_jobs.triggers import Cron, MisfirePolicy, Trigger, plan_fires
from anu_jobs.triggers import _cron as cron_module


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def chain(trigger: Trigger, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(n):
        fire = trigger.next_fire(after)
        assert fire is not None
        out.append(fire)
        after = fire
    return out


@pytest.mark.parametrize(
    ("tz", "expr", "after", "expected"),
    [
        (
            "Europe/Zurich",
            "30 2 * * *",
            utc(2024, 3, 30, 12),
            [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)],
        ),
        (
            "Europe/Zurich",
            "0 30 2 * * *",
            utc(2024, 3, 30, 12),
            [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)],
        ),
        (
            "America/New_York",
            "30 2 * * *",
            utc(2024, 3, 9, 12),
            [utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30)],
        ),
        (
            "Australia/Sydney",
            "30 2 * * *",
            utc(2024, 10, 5),
            [utc(2024, 10, 5, 16), utc(2024, 10, 6, 15, 30)],
        ),
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            utc(2024, 10, 5),
            [utc(2024, 10, 5, 15, 30), utc(2024, 10, 6, 15, 15)],
        ),
        (
            "America/Santiago",
            "0 0 * * *",
            utc(2024, 9, 7, 12),
            [utc(2024, 9, 8, 4), utc(2024, 9, 9, 3)],
        ),
    ],
)
def test_gap_fires_at_the_first_instant_after_it(
    tz: str, expr: str, after: datetime, expected: list[datetime]
) -> None:
    assert chain(Cron(expr, tz=tz), after, len(expected)) == expected


def test_matches_inside_one_gap_collapse_into_one_fire() -> None:
    cron = Cron("*/15 2 * * *", tz="Europe/Zurich")
    assert chain(cron, utc(2024, 3, 30, 23), 3) == [
        utc(2024, 3, 31, 1),  # 02:00, 02:15, 02:30 and 02:45 do not exist: one fire at 03:00
        utc(2024, 4, 1, 0),
        utc(2024, 4, 1, 0, 15),
    ]
    # 03:00 itself matches too, and is the same instant as the collapsed gap.
    assert chain(Cron("0,30 2,3 * * *", tz="Europe/Zurich"), utc(2024, 3, 30, 23), 2) == [
        utc(2024, 3, 31, 1),
        utc(2024, 3, 31, 1, 30),
    ]


@pytest.mark.parametrize(
    ("tz", "expr", "after", "expected"),
    [
        (
            "Europe/Zurich",
            "30 2 * * *",
            utc(2024, 10, 26, 12),
            [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)],
        ),
        (
            "America/New_York",
            "30 1 * * *",
            utc(2024, 11, 2, 12),
            [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)],
        ),
        (
            "Australia/Sydney",
            "30 2 * * *",
            utc(2024, 4, 6),
            [utc(2024, 4, 6, 15, 30), utc(2024, 4, 7, 16, 30)],
        ),
        (
            "Australia/Lord_Howe",
            "45 1 * * *",
            utc(2024, 4, 6),
            [utc(2024, 4, 6, 14, 45), utc(2024, 4, 7, 15, 15)],
        ),
        (
            "America/Santiago",
            "30 23 * * *",
            utc(2024, 4, 6, 12),
            [utc(2024, 4, 7, 2, 30), utc(2024, 4, 8, 3, 30)],
        ),
    ],
)
def test_repeated_wall_time_fires_once_at_its_first_occurrence(
    tz: str, expr: str, after: datetime, expected: list[datetime]
) -> None:
    assert chain(Cron(expr, tz=tz), after, len(expected)) == expected


@pytest.mark.parametrize(
    ("tz", "after", "expected"),
    [
        ("Europe/Zurich", utc(2024, 10, 27, 1, 15), utc(2024, 10, 28, 1, 30)),  # 02:15 second pass
        ("America/New_York", utc(2024, 11, 3, 6, 0), utc(2024, 11, 4, 6, 30)),  # 01:00 second pass
    ],
)
def test_after_in_the_second_pass_does_not_fire_the_repeat_again(
    tz: str, after: datetime, expected: datetime
) -> None:
    expr = "30 2 * * *" if tz == "Europe/Zurich" else "30 1 * * *"
    assert Cron(expr, tz=tz).next_fire(after) == expected


@pytest.mark.parametrize(
    ("tz", "after", "expected"),
    [
        # spring: 01:59 then 03:00 (the whole missing hour is one fire) then 03:01
        (
            "Europe/Zurich",
            utc(2024, 3, 31, 0, 58),
            [utc(2024, 3, 31, 0, 59), utc(2024, 3, 31, 1), utc(2024, 3, 31, 1, 1)],
        ),
        (
            "America/New_York",
            utc(2024, 3, 10, 6, 58),
            [utc(2024, 3, 10, 6, 59), utc(2024, 3, 10, 7), utc(2024, 3, 10, 7, 1)],
        ),
        # fall: the last minute of the first pass, then the first minute after the repeat
        (
            "Europe/Zurich",
            utc(2024, 10, 27, 0, 58),
            [utc(2024, 10, 27, 0, 59), utc(2024, 10, 27, 2), utc(2024, 10, 27, 2, 1)],
        ),
        (
            "America/New_York",
            utc(2024, 11, 3, 5, 58),
            [utc(2024, 11, 3, 5, 59), utc(2024, 11, 3, 7), utc(2024, 11, 3, 7, 1)],
        ),
        (
            "Australia/Sydney",
            utc(2024, 4, 6, 15, 58),
            [utc(2024, 4, 6, 15, 59), utc(2024, 4, 6, 17), utc(2024, 4, 6, 17, 1)],
        ),
    ],
)
def test_every_minute_across_transitions(
    tz: str, after: datetime, expected: list[datetime]
) -> None:
    assert chain(Cron("* * * * *", tz=tz), after, 3) == expected


@pytest.mark.parametrize(
    ("tz", "day", "count"),
    [
        ("Europe/Zurich", (2024, 3, 31), 23 * 60),  # 02:00-02:59 collapse into 03:00
        ("Europe/Zurich", (2024, 10, 27), 24 * 60),  # a 25-hour day: each wall minute once
        ("America/New_York", (2024, 3, 10), 23 * 60),
        ("America/New_York", (2024, 11, 3), 24 * 60),
        ("Australia/Lord_Howe", (2024, 10, 6), 24 * 60 - 30),
    ],
)
def test_a_whole_transition_day_of_minutes(tz: str, day: tuple[int, int, int], count: int) -> None:
    cron = Cron("* * * * *", tz=tz)
    start = datetime(*day, tzinfo=cron.zone).astimezone(UTC)
    end = (datetime(*day, tzinfo=cron.zone) + timedelta(days=1)).astimezone(UTC)
    fires = [start]
    while (fire := cron.next_fire(fires[-1])) is not None and fire < end:
        fires.append(fire)
    assert len(fires) == count
    assert all(a < b for a, b in itertools.pairwise(fires))
    assert {f.astimezone(cron.zone).second for f in fires} == {0}


def test_seconds_cron_across_the_fall_back() -> None:
    cron = Cron("*/30 * * * * *", tz="Europe/Zurich")
    assert chain(cron, utc(2024, 10, 27, 0, 59, 15), 3) == [
        utc(2024, 10, 27, 0, 59, 30),
        utc(2024, 10, 27, 2),
        utc(2024, 10, 27, 2, 0, 30),
    ]


def test_seconds_cron_across_the_spring_gap() -> None:
    cron = Cron("*/20 * * * * *", tz="America/New_York")
    assert chain(cron, utc(2024, 3, 10, 6, 59, 30), 3) == [
        utc(2024, 3, 10, 6, 59, 40),
        utc(2024, 3, 10, 7),
        utc(2024, 3, 10, 7, 0, 20),
    ]


def test_no_walking_through_the_repeated_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"next": 0, "prev": 0}
    real_next, real_prev = cron_module._next_match, cron_module._prev_match

    def counting_next(expr: str, bound: datetime) -> datetime | None:
        calls["next"] += 1
        return real_next(expr, bound)

    def counting_prev(expr: str, bound: datetime) -> datetime | None:
        calls["prev"] += 1
        return real_prev(expr, bound)

    monkeypatch.setattr(cron_module, "_next_match", counting_next)
    monkeypatch.setattr(cron_module, "_prev_match", counting_prev)
    cron = Cron("* * * * * *", tz="Europe/Zurich")
    # 01:00:00.5Z is 02:00:00.5 on the second pass; all 3,600 seconds of the repeat are past.
    assert cron.next_fire(utc(2024, 10, 27, 1) + timedelta(milliseconds=500)) == utc(
        2024, 10, 27, 2
    )
    assert cron._prev_fire(utc(2024, 10, 27, 2)) == utc(2024, 10, 27, 0, 59, 59)
    # The end of the spring gap: the 3,600 seconds inside the gap fire at 01:00Z itself.
    assert cron._prev_fire(utc(2024, 3, 31, 1)) == utc(2024, 3, 31, 0, 59, 59)
    assert cron.next_fire(utc(2024, 3, 31, 0, 59, 59)) == utc(2024, 3, 31, 1)
    assert cron.next_fire(utc(2024, 3, 31, 1)) == utc(2024, 3, 31, 1, 0, 1)
    assert calls == {"next": 3, "prev": 2}


def test_zone_without_dst_is_a_plain_offset() -> None:
    cron = Cron("0 9 * * *", tz="Asia/Kolkata")
    assert chain(cron, utc(2024, 3, 30), 2) == [utc(2024, 3, 30, 3, 30), utc(2024, 3, 31, 3, 30)]


def test_missed_fires_are_counted_across_a_gap_that_begins_at_midnight() -> None:
    """Santiago springs forward at midnight (00:00 → 01:00 on 2024-09-08): a midnight
    that does not exist. An outage from 23:59 to 01:03 wall time is four minutes long
    and misses the fires of 01:00, 01:01 and 01:02 (the gap's own fire is 01:00); the
    count took the nonexistent hour for sixty more."""
    cron = Cron("* * * * *", tz="America/Santiago")
    stored = datetime(2024, 9, 8, 3, 59, tzinfo=UTC)  # 23:59 on the 7th, wall time
    now = stored + timedelta(minutes=4)
    assert cron._count_between(stored, now) == 3
    plan = plan_fires(cron, stored, now, MisfirePolicy("run_once", timedelta(0), 1))
    assert plan.run == (now,) and plan.skipped == 4
