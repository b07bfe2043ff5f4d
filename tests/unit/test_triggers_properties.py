"""Property tests: triggers against brute-force references, across random zones and times.

The cron reference below shares no code with the trigger: it parses nothing (the
strategy hands it the value sets it wrote into the expression), walks the local wall
clock day by day, checks each field's membership, and maps each matching wall time to
an instant by the documented rules: a time that exists fires at its first occurrence,
a time in a spring-forward gap fires where the wall clock resumes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from anu_jobs.errors import InvalidScheduleError
from anu_jobs.triggers import Cron, Every, FirePlan, MisfirePolicy, Trigger, plan_fires

ZONES = [
    "UTC",
    "Europe/Zurich",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # half-hour DST
    "America/Santiago",  # transitions at midnight
    "Asia/Kolkata",  # no DST, a half-hour offset
]
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_US = 3 * 366 * 86_400 * 10**6
TICK = timedelta(microseconds=1)


def _transitions(name: str) -> list[datetime]:
    """The instants (to the hour) where the zone's offset changes in 2024-2026."""
    zone = ZoneInfo(name)
    found = []
    for day in range(3 * 366):
        a, b = EPOCH + timedelta(days=day), EPOCH + timedelta(days=day + 1)
        if a.astimezone(zone).utcoffset() != b.astimezone(zone).utcoffset():
            for hour in range(24):
                h = a + timedelta(hours=hour)
                if (
                    h.astimezone(zone).utcoffset()
                    != (h + timedelta(hours=1)).astimezone(zone).utcoffset()
                ):
                    found.append(h + timedelta(hours=1))
    return found


TRANSITIONS = {name: _transitions(name) for name in ZONES}


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    """Random instants, half of them within three hours of one of the zone's transitions."""
    near = TRANSITIONS[zone]
    use_near: bool = draw(st.booleans())
    if near and use_near:
        base = draw(st.sampled_from(near))
        return base + timedelta(microseconds=draw(st.integers(-3 * 3600 * 10**6, 3 * 3600 * 10**6)))
    return EPOCH + timedelta(microseconds=draw(st.integers(0, SPAN_US)))


# --- a reference cron evaluator -----------------------------------------------------


@dataclass(frozen=True)
class Spec:
    expr: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]  # 0 = Sunday
    days_or: bool  # both day fields restricted: a day matching either fires

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.doms, (day.weekday() + 1) % 7 in self.dows
        return (dom or dow) if self.days_or else (dom and dow)


@st.composite
def cron_field(draw: st.DrawFn, lo: int, hi: int, stars: int) -> tuple[str, frozenset[int]]:
    """A random field (number, range, step, ranged step or list) and the values it names."""

    def piece() -> tuple[str, set[int]]:
        a = draw(st.integers(lo, hi))
        if draw(st.booleans()):
            return str(a), {a}
        b = draw(st.integers(a, hi))
        return f"{a}-{b}", set(range(a, b + 1))

    kind = draw(st.sampled_from(["*"] * stars + ["piece", "step", "range_step", "list"]))
    if kind == "*":
        return "*", frozenset(range(lo, hi + 1))
    if kind == "piece":
        text, values = piece()
        return text, frozenset(values)
    if kind == "step":
        step = draw(st.integers(2, hi - lo))
        return f"*/{step}", frozenset(range(lo, hi + 1, step))
    if kind == "range_step":
        a = draw(st.integers(lo, hi - 1))
        b = draw(st.integers(a + 1, hi))
        step = draw(st.integers(1, b - a))
        return f"{a}-{b}/{step}", frozenset(range(a, b + 1, step))
    pieces = [piece() for _ in range(draw(st.integers(2, 3)))]
    return ",".join(text for text, _ in pieces), frozenset().union(*(v for _, v in pieces))


@st.composite
def cron_specs(draw: st.DrawFn, allow_seconds: bool = True) -> Spec:
    with_seconds = allow_seconds and draw(st.booleans())
    second = draw(cron_field(0, 59, 3)) if with_seconds else ("", frozenset({0}))
    minute = draw(cron_field(0, 59, 2))
    hour = draw(cron_field(0, 23, 3))
    dom = draw(cron_field(1, 31, 6))
    month = draw(cron_field(1, 12, 6))
    dow = draw(cron_field(0, 6, 5))
    fields = [minute[0], hour[0], dom[0], month[0], dow[0]]
    if with_seconds:
        fields.insert(0, second[0])
    return Spec(
        expr=" ".join(fields),
        seconds=tuple(sorted(second[1])),
        minutes=tuple(sorted(minute[1])),
        hours=tuple(sorted(hour[1])),
        doms=dom[1],
        months=month[1],
        dows=dow[1],
        # Both day fields restricted: either matches. A field naming every value is "*".
        days_or=dom[1] != frozenset(range(1, 32)) and dow[1] != frozenset(range(7)),
    )


@functools.lru_cache(maxsize=4096)
def _resume(minute: datetime, zone: str) -> datetime:
    """Where the wall clock resumes after the gap holding ``minute``: step to a real minute."""
    tz = ZoneInfo(zone)
    probe = minute
    while _exists(probe, tz) is None:
        probe += timedelta(minutes=1)
    return probe.replace(tzinfo=tz).astimezone(UTC)


def _exists(wall: datetime, tz: ZoneInfo) -> datetime | None:
    instant = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first occurrence
    return instant if instant.astimezone(tz).replace(tzinfo=None) == wall else None


def reference_map(wall: datetime, zone: str) -> datetime:
    instant = _exists(wall, ZoneInfo(zone))
    return instant if instant is not None else _resume(wall.replace(second=0), zone)


def reference_fires(spec: Spec, zone: str, after: datetime) -> Iterator[datetime]:
    """The fires strictly after ``after``, in order, by walking the wall clock."""
    # Start two hours of wall clock early so the first pass of a repeated hour is seen.
    begin = after.astimezone(ZoneInfo(zone)).replace(tzinfo=None) - timedelta(hours=2)
    last = after
    day = begin.date()
    for _ in range(9 * 366):
        if spec.day_matches(day):
            for h, m, s in itertools.product(spec.hours, spec.minutes, spec.seconds):
                wall = datetime(day.year, day.month, day.day, h, m, s)
                if wall < begin:
                    continue
                fire = reference_map(wall, zone)
                if fire > last:  # several wall times in one gap share a fire
                    yield fire
                    last = fire
        day += timedelta(days=1)


def chain(trigger: Trigger, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    while len(out) < n and (fire := trigger.next_fire(out[-1] if out else after)) is not None:
        out.append(fire)
    return out


@st.composite
def cron_cases(draw: st.DrawFn, allow_seconds: bool = True) -> tuple[Spec, str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    return draw(cron_specs(allow_seconds)), zone, draw(instants(zone))


@settings(max_examples=250, deadline=None)
@given(cron_cases())
def test_cron_matches_the_reference(case: tuple[Spec, str, datetime]) -> None:
    spec, zone, after = case
    if not any(spec.day_matches(date(2024, 1, 1) + timedelta(days=d)) for d in range(3300)):
        with pytest.raises(InvalidScheduleError, match="can never fire"):
            Cron(spec.expr, tz=zone)
        return
    cron = Cron(spec.expr, tz=zone)
    fires = chain(cron, after, 5)
    assert fires == list(itertools.islice(reference_fires(spec, zone, after), 5))
    assert all(a < b for a, b in itertools.pairwise([after, *fires]))
    # Walking backwards retraces the same fires.
    for older, newer in itertools.pairwise(fires):
        assert cron._prev_fire(newer) == older
    before_first = cron._prev_fire(fires[0])
    assert before_first is None or before_first <= after


# --- Every --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    interval_us=st.integers(1, 10**11),
    jitter_share=st.none() | st.floats(0, 1, exclude_max=True),
    start_us=st.integers(0, SPAN_US),
    after_us=st.integers(-(10**12), SPAN_US + 10**12),
    end_intervals=st.none() | st.integers(1, 30),
)
def test_every_fires_step_through_the_grid(
    interval_us: int,
    jitter_share: float | None,
    start_us: int,
    after_us: int,
    end_intervals: int | None,
) -> None:
    interval = timedelta(microseconds=interval_us)
    start = EPOCH + timedelta(microseconds=start_us)
    jitter = (
        None if jitter_share is None else timedelta(microseconds=int(interval_us * jitter_share))
    )
    end = None if end_intervals is None else start + end_intervals * interval
    every = Every(interval, start=start, end=end, jitter=jitter)
    after = EPOCH + timedelta(microseconds=after_us)
    fires = chain(every, after, 20)
    assert all(a < b for a, b in itertools.pairwise([after, *fires]))
    ks = [(fire - start) // interval for fire in fires]
    for k, fire in zip(ks, fires, strict=True):
        nominal = start + k * interval
        assert nominal <= fire < nominal + (jitter or TICK)
        assert end is None or fire <= end
    if ks:
        assert ks == list(range(ks[0], ks[0] + len(ks)))  # no grid point skipped
        # The first fire is the first grid point after `after` (or the one after that,
        # when jitter keeps the grid point's own fire at or before `after`).
        assert ks[0] in (0, (after - start) // interval, (after - start) // interval + 1)
        before_first = every._prev_fire(fires[0])
        assert before_first is None or before_first <= after
        assert every._count_between(after, fires[-1]) == len(fires) - 1
        for older, newer in itertools.pairwise(fires):
            assert every._prev_fire(newer) == older
    if len(fires) < 20:
        assert end is not None  # only an end makes an Every run out


# --- misfire plans ------------------------------------------------------------------


def expected_plan(due: list[datetime], now: datetime, policy: MisfirePolicy) -> FirePlan:
    """The policy semantics, stated directly over the full list of due fires."""
    if policy.policy == "catch_up":
        chosen = list(due)
    else:
        on_time = [f for f in due if now - f <= policy.grace]
        missed = [f for f in due if now - f > policy.grace]
        chosen = sorted(on_time + (missed[-1:] if policy.policy == "run_once" else []))
    chosen = chosen[-policy.limit :]
    not_run = [f for f in due if f not in chosen]
    return FirePlan(
        run=tuple(chosen),
        skipped=len(due) - len(chosen),
        last_skipped=max(not_run) if not_run else None,
        next_fire=None,
    )


policies = st.builds(
    MisfirePolicy,
    policy=st.sampled_from(["run_once", "skip", "catch_up"]),
    grace=st.integers(0, 7200).map(lambda s: timedelta(seconds=s)),
    limit=st.integers(1, 40),
)


@settings(max_examples=150, deadline=None)
@given(
    interval_s=st.integers(1, 3600),
    jitter=st.booleans(),
    stored_us=st.integers(0, 10**12),
    outage=st.floats(0, 400),
    policy=policies,
)
def test_every_plan_matches_the_semantics(
    interval_s: int, jitter: bool, stored_us: int, outage: float, policy: MisfirePolicy
) -> None:
    interval = timedelta(seconds=interval_s)
    every = Every(interval, start=EPOCH, jitter=interval / 3 if jitter else None)
    stored = every.next_fire(EPOCH + timedelta(microseconds=stored_us))
    assert stored is not None
    now = stored + outage * interval
    due = [stored, *itertools.takewhile(lambda f: f <= now, _fires_after(every, stored))]
    plan = plan_fires(every, stored, now, policy)
    assert plan == _with_next(expected_plan(due, now, policy), every.next_fire(now))


@settings(max_examples=120, deadline=None)
@given(case=cron_cases(allow_seconds=False), outage_s=st.integers(0, 2 * 86_400), policy=policies)
def test_cron_plan_matches_the_semantics(
    case: tuple[Spec, str, datetime], outage_s: int, policy: MisfirePolicy
) -> None:
    spec, zone, after = case
    try:
        cron = Cron(spec.expr, tz=zone)
    except InvalidScheduleError:
        assume(False)
        raise
    reference = reference_fires(spec, zone, after)
    stored = next(reference)
    now = stored + timedelta(seconds=outage_s)
    due = [stored]
    upcoming = None
    for fire in reference:
        if fire > now:
            upcoming = fire
            break
        due.append(fire)
    plan = plan_fires(cron, stored, now, policy)
    assert plan == _with_next(expected_plan(due, now, policy), upcoming)


def _fires_after(trigger: Trigger, after: datetime) -> Iterator[datetime]:
    while (fire := trigger.next_fire(after)) is not None:
        yield fire
        after = fire


def _with_next(plan: FirePlan, next_fire: datetime | None) -> FirePlan:
    return FirePlan(plan.run, plan.skipped, plan.last_skipped, next_fire)
