"""Triggers: fire times, validation, JSON and descriptions (DST lives in test_triggers_dst)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import anu_jobs.triggers as triggers
from anu_jobs.errors import InvalidScheduleError
from anu_jobs.triggers import Cron, Every, Manual, Once, Trigger, trigger_from_json

T0 = datetime(2030, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)


def chain(trigger: Trigger, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(n):
        fire = trigger.next_fire(after)
        if fire is None:
            break
        out.append(fire)
        after = fire
    return out


def test_public_surface_is_what_was_meant() -> None:
    assert triggers.__all__ == sorted(triggers.__all__)
    assert set(triggers.__all__) == {
        "Cron",
        "Every",
        "FirePlan",
        "Manual",
        "MisfirePolicy",
        "Once",
        "Overlap",
        "Trigger",
        "plan_fires",
        "trigger_from_json",
    }


# --- Manual and Once ----------------------------------------------------------------


def test_manual_never_fires() -> None:
    assert Manual().first_fire(T0) is None
    assert Manual().next_fire(T0) is None
    assert Manual().resolve(T0) == Manual()


def test_once_at_fires_once() -> None:
    once = Once(at=T0)
    assert once.first_fire(T0 - S) == T0
    assert once.next_fire(T0 - S) == T0
    assert once.next_fire(T0) is None
    assert once.resolve(T0 + S) is once


def test_once_in_the_past_is_due_at_once() -> None:
    once = Once(at=T0)
    assert once.first_fire(T0 + timedelta(days=1)) == T0


def test_once_delay_resolves_against_now() -> None:
    once = Once(delay=timedelta(seconds=10))
    assert once.first_fire(T0) == T0 + 10 * S
    resolved = once.resolve(T0)
    assert resolved == Once(at=T0 + 10 * S)
    assert resolved.next_fire(T0) == T0 + 10 * S


def test_unresolved_trigger_refuses_next_fire() -> None:
    with pytest.raises(InvalidScheduleError, match=r"resolve\(now\)"):
        Once(delay=S).next_fire(T0)
    with pytest.raises(InvalidScheduleError, match=r"resolve\(now\)"):
        Every(S).next_fire(T0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"at": T0, "delay": S}, "exactly one of"),
        ({"delay": -S}, "must not be negative"),
        ({"at": datetime(2030, 1, 1)}, "no time zone"),
        ({"delay": 5}, "must be a timedelta"),
    ],
)
def test_once_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message):
        Once(**kwargs)


def test_aware_non_utc_input_is_normalised_to_utc() -> None:
    zurich = datetime(2030, 1, 1, 1, tzinfo=ZoneInfo("Europe/Zurich"))
    once = Once(at=zurich)
    assert once.at == T0
    assert once.at is not None
    assert once.at.tzinfo is UTC
    assert once == Once(at=T0)
    assert hash(once) == hash(Once(at=T0))


def test_naive_now_is_refused() -> None:
    with pytest.raises(InvalidScheduleError, match="no time zone"):
        Every(S, start=T0).next_fire(datetime(2030, 1, 1))
    with pytest.raises(InvalidScheduleError, match="no time zone"):
        Cron("* * * * *").first_fire(datetime(2030, 1, 1))


# --- Every --------------------------------------------------------------------------


def test_every_fires_on_its_grid() -> None:
    every = Every(timedelta(seconds=5), start=T0)
    assert every.first_fire(T0 - timedelta(days=3)) == T0
    assert chain(every, T0 - S, 4) == [T0 + 5 * k * S for k in range(4)]
    assert every.next_fire(T0 + 2 * S) == T0 + 5 * S
    assert every.next_fire(T0 + 5 * S) == T0 + 10 * S


def test_every_without_start_first_fires_one_interval_after_now() -> None:
    every = Every(timedelta(minutes=5))
    assert every.first_fire(T0) == T0 + timedelta(minutes=5)
    resolved = every.resolve(T0)
    assert resolved.start == T0 + timedelta(minutes=5)
    assert resolved.resolve(T0 + timedelta(days=1)) is resolved


def test_every_end_is_inclusive() -> None:
    every = Every(timedelta(seconds=5), start=T0, end=T0 + 10 * S)
    assert chain(every, T0 - S, 10) == [T0, T0 + 5 * S, T0 + 10 * S]


def test_every_is_arithmetic_far_in_the_future() -> None:
    every = Every(timedelta(microseconds=7), start=T0)
    far = datetime(9000, 6, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    began = time.perf_counter()
    fire = every.next_fire(far)
    assert time.perf_counter() - began < 0.05
    assert fire is not None
    assert far < fire <= far + timedelta(microseconds=7)
    assert (fire - T0) % timedelta(microseconds=7) == timedelta(0)
    assert every.next_fire(datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) is None


def test_every_jitter_is_deterministic_and_bounded() -> None:
    every = Every(timedelta(minutes=1), start=T0, jitter=timedelta(seconds=20))
    fires = chain(every, T0 - S, 50)
    assert fires == chain(Every(timedelta(minutes=1), start=T0, jitter=20 * S), T0 - S, 50)
    for k, fire in enumerate(fires):
        nominal = T0 + k * timedelta(minutes=1)
        assert nominal <= fire < nominal + 20 * S
    assert len({fire - (T0 + k * timedelta(minutes=1)) for k, fire in enumerate(fires)}) > 40
    assert every.first_fire(T0) == fires[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": timedelta(0)}, "interval must be positive"),
        ({"interval": -S}, "interval must be positive"),
        ({"interval": 5}, "must be a timedelta"),
        ({"interval": S, "start": T0, "end": T0}, "end .* must be after start"),
        ({"interval": S, "start": T0, "end": T0 - S}, "end .* must be after start"),
        ({"interval": S, "jitter": S}, "jitter must be at least 0 and less than"),
        ({"interval": S, "jitter": -S}, "jitter must be at least 0 and less than"),
        ({"interval": S, "end": datetime(2030, 1, 1)}, "end .* has no time zone"),
    ],
)
def test_every_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message):
        Every(**kwargs)


def test_every_resolve_refuses_an_end_already_passed() -> None:
    with pytest.raises(InvalidScheduleError, match="must be after start"):
        Every(timedelta(hours=1), end=T0).resolve(T0)


# --- Cron ---------------------------------------------------------------------------


def test_cron_five_fields() -> None:
    cron = Cron("0 3 * * *")
    assert cron.first_fire(T0) == T0 + timedelta(hours=3)
    assert chain(cron, T0, 3) == [T0 + timedelta(hours=3, days=d) for d in range(3)]
    assert cron.next_fire(T0 + timedelta(hours=3)) == T0 + timedelta(hours=3, days=1)
    assert cron.next_fire(T0 + timedelta(hours=2, minutes=59, seconds=59.5)) == T0 + 3 * 3600 * S


def test_cron_six_fields_have_seconds_first() -> None:
    cron = Cron("*/15 30 * * * *")
    fires = chain(cron, T0, 5)
    assert fires == [
        T0 + timedelta(minutes=30),
        T0 + timedelta(minutes=30, seconds=15),
        T0 + timedelta(minutes=30, seconds=30),
        T0 + timedelta(minutes=30, seconds=45),
        T0 + timedelta(hours=1, minutes=30),
    ]
    assert Cron("5 0 0 * * *").next_fire(T0 + 5 * S) == T0 + timedelta(days=1, seconds=5)


def test_cron_sub_second_after_is_strict() -> None:
    cron = Cron("* * * * * *")
    assert cron.next_fire(T0 + timedelta(microseconds=1)) == T0 + S
    assert cron.next_fire(T0 - timedelta(microseconds=1)) == T0


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@hourly", T0 + timedelta(hours=1)),
        ("@daily", T0 + timedelta(days=1)),
        ("@midnight", T0 + timedelta(days=1)),
        ("@weekly", datetime(2030, 1, 6, tzinfo=UTC)),  # the first Sunday
        ("@monthly", datetime(2030, 2, 1, tzinfo=UTC)),
        ("@yearly", datetime(2031, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2031, 1, 1, tzinfo=UTC)),
    ],
)
def test_cron_aliases(alias: str, expected: datetime) -> None:
    assert Cron(alias).next_fire(T0) == expected


def test_cron_day_of_month_or_day_of_week() -> None:
    # Both restricted: a day matching either fires (classic cron); 2030-01-01 is a Tuesday.
    fires = chain(Cron("0 0 15 * 5"), T0, 4)
    assert [f.day for f in fires] == [4, 11, 15, 18]


@pytest.mark.parametrize(
    ("expr", "fires"),
    [
        ("2-2 * * * *", [T0 + 2 * M, T0 + 62 * M]),
        ("0 0 * jan-JAN *", [T0 + 1440 * M, T0 + 2 * 1440 * M]),
        ("5-5/10 1 * * * *", [T0 + M + 5 * S, T0 + 61 * M + 5 * S]),
    ],
)
def test_cron_equal_range_is_its_one_value(expr: str, fires: list[datetime]) -> None:
    # croniter alone reads "2-2" as the whole cycle, i.e. every minute.
    assert chain(Cron(expr), T0, 2) == fires
    assert Cron(expr).expr == expr  # stored as written


@pytest.mark.parametrize(
    ("expr", "days"),
    [
        ("0 0 */2 * 0-6", [1, 3, 5, 7]),  # every weekday is no weekday restriction
        ("0 0 1-3 * 0-6", [1, 2, 3, 1]),
        ("0 0 1-31 * 5", [4, 11, 18, 25]),  # Fridays; every day of the month is "*"
        ("0 0 * * mon-sun", [1, 2, 3, 4]),
    ],
)
def test_cron_day_field_naming_every_value_is_a_star(expr: str, days: list[int]) -> None:
    assert [f.day for f in chain(Cron(expr), T0 - S, 4)] == days


def test_cron_in_a_zone() -> None:
    cron = Cron("0 3 * * *", tz="Europe/Zurich")
    assert cron.next_fire(T0) == T0 + timedelta(hours=2)  # CET is UTC+1 in January
    summer = datetime(2030, 7, 1, tzinfo=UTC)
    assert cron.next_fire(summer) == summer + timedelta(hours=1)  # CEST is UTC+2


def test_cron_start_and_end() -> None:
    cron = Cron("0 * * * *", start=T0 + timedelta(hours=5), end=T0 + timedelta(hours=7))
    assert cron.first_fire(T0) == T0 + timedelta(hours=5)
    assert chain(cron, T0, 10) == [T0 + timedelta(hours=h) for h in (5, 6, 7)]
    assert cron._prev_fire(T0 + timedelta(days=1)) == T0 + timedelta(hours=7)
    assert cron._prev_fire(T0 + timedelta(hours=5)) is None


def test_cron_rare_dates_are_found() -> None:
    assert Cron("0 0 29 2 *").next_fire(T0) == datetime(2032, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * *", "has 3 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("", "has 0 fields"),
        ("61 * * * *", "out of range"),
        ("* 24 * * *", "out of range"),
        ("*/0 * * * *", "step '0'"),
        ("x * * * *", "invalid cron expression 'x \\* \\* \\* \\*'"),
        ("@fortnightly", "invalid cron expression '@fortnightly'"),
        ("H * * * *", "invalid cron expression"),
    ],
)
def test_cron_invalid_expression(expr: str, message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message) as info:
        Cron(expr)
    assert info.value.expression == expr
    assert "minute hour day-of-month month day-of-week" in str(info.value)
    assert "seconds first" in str(info.value)


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 31 2 *"])
def test_cron_that_can_never_fire(expr: str) -> None:
    began = time.perf_counter()
    with pytest.raises(InvalidScheduleError, match="can never fire") as info:
        Cron(expr)
    assert time.perf_counter() - began < 1.0
    assert info.value.expression == expr


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "Europe/"])
def test_cron_unknown_zone(tz: str) -> None:
    with pytest.raises(InvalidScheduleError, match=r"time zone|IANA"):
        Cron("* * * * *", tz=tz)


def test_cron_window_validation() -> None:
    with pytest.raises(InvalidScheduleError, match="must be after start"):
        Cron("* * * * *", start=T0, end=T0 - S)


# --- JSON and descriptions ----------------------------------------------------------

ODD = datetime(2030, 3, 4, 5, 6, 7, 890_123, tzinfo=UTC)

ROUND_TRIPS: list[Trigger] = [
    Manual(),
    Once(at=ODD),
    Once(delay=timedelta(days=2, microseconds=3)),
    Every(timedelta(seconds=5)),
    Every(timedelta(microseconds=1_234_567), start=ODD, end=ODD + timedelta(days=9)),
    Every(timedelta(hours=1), start=ODD, jitter=timedelta(minutes=7, microseconds=1)),
    Cron("0 3 * * *"),
    Cron("*/10 * * * * *", tz="Europe/Zurich", start=ODD, end=ODD + timedelta(days=1)),
    Cron("@daily", tz="America/New_York"),
]


@pytest.mark.parametrize("trigger", ROUND_TRIPS, ids=lambda t: t.describe())
def test_json_round_trip_is_exact(trigger: Trigger) -> None:
    data = trigger.to_json()
    assert data["kind"] == trigger.kind
    back = trigger_from_json(json.loads(json.dumps(data)))
    assert back == trigger
    assert type(back) is type(trigger)
    for name in ("at", "start", "end"):
        value = getattr(back, name, None)
        if value is not None:
            assert value.tzinfo is UTC
            assert value.microsecond == getattr(trigger, name).microsecond


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "weekly"}, "unknown trigger kind 'weekly'; expected one of: cron, every"),
        ({}, "unknown trigger kind None"),
        ({"kind": "cron", "tz": "UTC", "start": None, "end": None}, "lacks the field 'expr'"),
        ({"kind": "cron", "expr": "bad", "tz": "UTC", "start": None, "end": None}, "1 fields"),
        ({"kind": "once", "at": "2030-01-01T00:00:00", "delay_us": None}, "no time zone"),
        ({"kind": "once", "at": "yesterday", "delay_us": None}, "not an ISO datetime"),
        ({"kind": "once", "at": None, "delay_us": 1.5}, "whole microseconds"),
        (
            {"kind": "every", "interval_us": None, "start": None, "end": None, "jitter_us": None},
            "interval_us",
        ),
    ],
)
def test_json_rejects_what_is_not_a_trigger(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message):
        trigger_from_json(data)


def test_json_accepts_other_utc_spellings() -> None:
    data = {"kind": "once", "at": "2030-01-01T01:00:00+01:00", "delay_us": None}
    assert trigger_from_json(data) == Once(at=T0)


@pytest.mark.parametrize(
    ("trigger", "text"),
    [
        (Manual(), "manual"),
        (Once(at=T0), "once at 2030-01-01T00:00:00Z"),
        (Once(delay=timedelta(seconds=90)), "once after 1m30s"),
        (Every(timedelta(seconds=5)), "every 5s"),
        (Every(timedelta(milliseconds=250)), "every 0.25s"),
        (Every(timedelta(days=1, hours=2)), "every 1d2h"),
        (Every(timedelta(minutes=5), jitter=timedelta(seconds=30)), "every 5m (jitter 30s)"),
        (Every(timedelta(hours=1), start=T0), "every 1h from 2030-01-01T00:00:00Z"),
        (Cron("0 3 * * *", tz="Europe/Zurich"), "cron '0 3 * * *' in Europe/Zurich"),
        (Cron("@hourly"), "cron '@hourly' in UTC"),
    ],
)
def test_describe(trigger: Trigger, text: str) -> None:
    assert trigger.describe() == text


def test_triggers_are_hashable_values() -> None:
    assert len({Cron("0 3 * * *"), Cron("0 3 * * *"), Cron("0 3 * * *", tz="Europe/Zurich")}) == 2
    assert Every(S, start=T0) == Every(S, start=T0.astimezone(timezone(timedelta(hours=5))))
    with pytest.raises(AttributeError):
        Cron("0 3 * * *").expr = "0 4 * * *"  # type: ignore[misc]
