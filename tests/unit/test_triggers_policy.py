"""Misfire policies: which due fires run, how many are skipped, and in bounded time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from anu_jobs.errors import InvalidScheduleError
from anu_jobs.triggers import Cron, Every, FirePlan, Manual, MisfirePolicy, Once, plan_fires

T0 = datetime(2030, 1, 1, tzinfo=UTC)
M = timedelta(minutes=1)
S = timedelta(seconds=1)
Policy = Literal["run_once", "skip", "catch_up"]


def test_policy_defaults_and_json() -> None:
    policy = MisfirePolicy()
    assert (policy.policy, policy.grace, policy.limit) == ("run_once", 30 * S, 100)
    odd = MisfirePolicy("catch_up", grace=timedelta(microseconds=1_500_001), limit=7)
    assert odd.to_json() == {"policy": "catch_up", "grace_us": 1_500_001, "limit": 7}
    assert MisfirePolicy.from_json(odd.to_json()) == odd
    assert MisfirePolicy.from_json(policy.to_json()) == policy
    assert policy.describe() == "run_once (grace 30s, limit 100)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "retry"}, "unknown misfire policy 'retry'; use one of 'run_once'"),
        ({"grace": -S}, "grace must be a timedelta of at least 0"),
        ({"grace": 30}, "grace must be a timedelta"),
        ({"limit": 0}, "limit must be an int of at least 1"),
        ({"limit": True}, "limit must be an int"),
    ],
)
def test_policy_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message):
        MisfirePolicy(**kwargs)


@pytest.mark.parametrize(
    "data",
    [{}, {"policy": "skip", "limit": 1}, {"policy": "skip", "grace_us": "1", "limit": 1}],
)
def test_policy_from_json_rejects_garbage(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidScheduleError):
        MisfirePolicy.from_json(data)


def test_nothing_due_plans_nothing() -> None:
    plan = plan_fires(Every(M, start=T0), T0 + M, T0, MisfirePolicy())
    assert plan == FirePlan(run=(), skipped=0, last_skipped=None, next_fire=T0 + M)


@pytest.mark.parametrize("name", ["run_once", "skip", "catch_up"])
def test_on_time_fire_always_runs(name: Policy) -> None:
    plan = plan_fires(Every(M, start=T0), T0, T0 + 5 * S, MisfirePolicy(name))
    assert plan == FirePlan(run=(T0,), skipped=0, last_skipped=None, next_fire=T0 + M)


def test_fire_exactly_at_grace_is_on_time() -> None:
    plan = plan_fires(Once(at=T0), T0, T0 + 30 * S, MisfirePolicy("skip"))
    assert plan.run == (T0,)
    plan = plan_fires(
        Once(at=T0), T0, T0 + 30 * S + timedelta(microseconds=1), MisfirePolicy("skip")
    )
    assert plan.run == ()


# A one-minute Every down for ten minutes: fires at 0..10 min are due; the one at 10 min is
# 10 s late (on time), the ten before it were missed.
OUTAGE_TRIGGER = Every(M, start=T0)
OUTAGE_NOW = T0 + 10 * M + 10 * S


def outage(policy: MisfirePolicy) -> FirePlan:
    return plan_fires(OUTAGE_TRIGGER, T0, OUTAGE_NOW, policy)


def test_run_once_collapses_missed_fires_into_the_latest() -> None:
    plan = outage(MisfirePolicy("run_once"))
    assert plan == FirePlan(
        run=(T0 + 9 * M, T0 + 10 * M), skipped=9, last_skipped=T0 + 8 * M, next_fire=T0 + 11 * M
    )


def test_skip_runs_only_on_time_fires() -> None:
    plan = outage(MisfirePolicy("skip"))
    assert plan == FirePlan(
        run=(T0 + 10 * M,), skipped=10, last_skipped=T0 + 9 * M, next_fire=T0 + 11 * M
    )


def test_catch_up_runs_every_due_fire_oldest_first() -> None:
    plan = outage(MisfirePolicy("catch_up"))
    assert plan == FirePlan(
        run=tuple(T0 + k * M for k in range(11)),
        skipped=0,
        last_skipped=None,
        next_fire=T0 + 11 * M,
    )


def test_catch_up_keeps_the_newest_limit() -> None:
    plan = outage(MisfirePolicy("catch_up", limit=3))
    assert plan == FirePlan(
        run=(T0 + 8 * M, T0 + 9 * M, T0 + 10 * M),
        skipped=8,
        last_skipped=T0 + 7 * M,
        next_fire=T0 + 11 * M,
    )


def test_limit_caps_on_time_fires_too() -> None:
    policy = MisfirePolicy("skip", grace=timedelta(hours=1), limit=2)
    plan = plan_fires(Every(M, start=T0), T0, T0 + 5 * M, policy)
    assert plan.run == (T0 + 4 * M, T0 + 5 * M)
    assert (plan.skipped, plan.last_skipped) == (4, T0 + 3 * M)


@pytest.mark.parametrize(
    ("name", "run", "skipped"), [("run_once", (T0,), 0), ("skip", (), 1), ("catch_up", (T0,), 0)]
)
def test_once_in_the_past(name: Policy, run: tuple[datetime, ...], skipped: int) -> None:
    plan = plan_fires(Once(at=T0), T0, T0 + timedelta(hours=1), MisfirePolicy(name))
    assert plan.run == run
    assert plan.skipped == skipped
    assert plan.last_skipped == (T0 if skipped else None)
    assert plan.next_fire is None


def test_manual_run_stored_as_due() -> None:
    plan = plan_fires(Manual(), T0, T0 + timedelta(hours=1), MisfirePolicy())
    assert plan == FirePlan(run=(T0,), skipped=0, last_skipped=None, next_fire=None)


def test_stored_fire_off_the_grid_still_counts() -> None:
    # A schedule edited under a job: the stored fire need not be one of the trigger's.
    plan = plan_fires(Every(M, start=T0), T0 + 30 * S, T0 + 2 * M, MisfirePolicy("catch_up"))
    assert plan.run == (T0 + 30 * S, T0 + M, T0 + 2 * M)


def test_every_outage_of_a_year_is_counted_exactly() -> None:
    now = T0 + timedelta(days=365)
    began = time.perf_counter()
    plan = plan_fires(Every(S, start=T0), T0, now, MisfirePolicy("catch_up", limit=100))
    assert time.perf_counter() - began < 0.5
    assert plan.run == tuple(now - k * S for k in range(99, -1, -1))
    assert plan.skipped == 365 * 86_400 + 1 - 100
    assert plan.last_skipped == now - 100 * S


@pytest.mark.parametrize("name", ["run_once", "skip", "catch_up"])
def test_seconds_cron_missed_for_a_day_is_planned_in_bounded_time(name: Policy) -> None:
    cron = Cron("* * * * * *", tz="Europe/Zurich")
    now = T0 + timedelta(days=1)
    began = time.perf_counter()
    plan = plan_fires(cron, T0, now, MisfirePolicy(name, limit=100))
    assert time.perf_counter() - began < 1.0
    due = 86_400 + 1
    # Grace is 30 s: the 31 fires from now-30s to now are on time.
    newest = {"run_once": 32, "skip": 31, "catch_up": 100}[name]  # run_once adds now-31s
    expected_run = tuple(now - k * S for k in range(newest - 1, -1, -1))
    assert plan.run == expected_run
    assert plan.skipped == due - len(expected_run)
    assert plan.last_skipped == expected_run[0] - S
    assert plan.next_fire == now + S


def test_business_hours_cron_outage_counts_exactly() -> None:
    # Weekdays 09:00-17:59 every 10 s, down for the first three weeks of 2030 (no DST):
    # fourteen weekdays x 9 hours x 360 fires. Walking fires would take 48,600 steps.
    cron = Cron("*/10 * 9-17 * * 1-5", tz="Europe/Zurich")
    first = datetime(2030, 1, 1, 8, tzinfo=UTC)
    assert cron.next_fire(T0) == first
    now = datetime(2030, 1, 21, tzinfo=UTC)
    began = time.perf_counter()
    plan = plan_fires(cron, first, now, MisfirePolicy("skip"))
    assert time.perf_counter() - began < 0.5
    assert plan.run == ()
    assert plan.skipped == 14 * 9 * 360
    assert plan.last_skipped == datetime(2030, 1, 18, 16, 59, 50, tzinfo=UTC)
    assert plan.next_fire == datetime(2030, 1, 21, 8, tzinfo=UTC)


def test_cron_outage_across_dst_counts_collapsed_fires_once() -> None:
    # Every 15 min from 02:00 to 02:45 Zurich time, 30 Mar - 1 Apr 2024: 4 + 1 + 4 fires
    # (on the 31st all four fall in the gap and fire once, at 03:00).
    cron = Cron("*/15 2 * * *", tz="Europe/Zurich")
    first = datetime(2024, 3, 30, 1, tzinfo=UTC)
    assert cron.next_fire(datetime(2024, 3, 30, tzinfo=UTC)) == first
    now = datetime(2024, 4, 1, 23, 50, tzinfo=UTC)
    plan = plan_fires(cron, first, now, MisfirePolicy("run_once"))
    assert plan.run == (datetime(2024, 4, 1, 0, 45, tzinfo=UTC),)
    assert plan.skipped == 8


def test_cron_count_past_the_day_budget_is_extrapolated_in_bounded_time() -> None:
    # Twelve years of a seconds cron: past the ~3,000 matching days counted one by one,
    # the rest is extrapolated; evenly spaced fires still come out exact.
    lo, hi = T0, datetime(2042, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    assert Cron("* * * * * *")._count_between(lo, hi) == (hi - lo) // S - 1
    uneven = Cron("0 */10 9-17 * * 1-5")._count_between(lo, hi)
    assert time.perf_counter() - began < 1.0
    weekdays = sum(1 for d in range((hi - lo).days) if (lo + timedelta(days=d)).weekday() < 5)
    assert abs(uneven - weekdays * 9 * 6) <= weekdays * 9 * 6 * 0.01
