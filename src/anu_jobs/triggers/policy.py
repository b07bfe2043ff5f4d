"""What to do with fires that came due while nobody ran them: the misfire policy.

A silo that was down, paused or overloaded finds a job whose stored next fire is in
the past. :func:`plan_fires` decides, purely, which of the fires due since then run
now and which are skipped, and where the schedule goes next.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias, get_args

from anu_jobs.clock import ensure_utc
from anu_jobs.errors import InvalidScheduleError

from ._base import TICK, Trigger, human_delta, micros

__all__ = ["FirePlan", "MisfirePolicy", "Overlap", "plan_fires"]

#: What to do when a fire comes due while the job's previous run is still going:
#: ``"skip"`` drops the fire; ``"queue_one"`` keeps one pending run (later ones merge into it).
Overlap: TypeAlias = Literal["skip", "queue_one"]

PolicyName: TypeAlias = Literal["run_once", "skip", "catch_up"]


@dataclass(frozen=True, slots=True)
class MisfirePolicy:
    """How a job treats fires that were missed.

    A fire is *missed* when it is found more than ``grace`` after its time; fires
    found within ``grace`` are on time and always run.

    - ``"run_once"`` (the default): all missed fires collapse into one run, for the
      latest of them.
    - ``"skip"``: missed fires do not run.
    - ``"catch_up"``: every due fire runs, oldest first.

    Whatever the policy, one plan runs at most ``limit`` fires (the newest ones); the
    older ones are counted as skipped.
    """

    policy: PolicyName = "run_once"
    grace: timedelta = timedelta(seconds=30)
    limit: int = 100

    def __post_init__(self) -> None:
        if self.policy not in get_args(PolicyName):
            raise InvalidScheduleError(
                f"unknown misfire policy {self.policy!r}; use one of "
                + ", ".join(repr(name) for name in get_args(PolicyName))
            )
        if not isinstance(self.grace, timedelta) or self.grace < timedelta(0):
            raise InvalidScheduleError(
                f"misfire grace must be a timedelta of at least 0, got {self.grace!r}"
            )
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise InvalidScheduleError(
                f"misfire limit must be an int of at least 1, got {self.limit!r}"
            )

    def to_json(self) -> dict[str, Any]:
        """``{"policy": ..., "grace_us": int, "limit": int}``."""
        return {"policy": self.policy, "grace_us": micros(self.grace), "limit": self.limit}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MisfirePolicy:
        """Rebuild a policy from :meth:`to_json` output."""
        try:
            grace = data["grace_us"]
            if isinstance(grace, bool) or not isinstance(grace, int):
                raise InvalidScheduleError("misfire grace_us must be whole microseconds (an int)")
            policy, limit = data["policy"], data["limit"]
            if type(policy) is str and type(limit) is int:
                return _policy(policy, grace, limit)  # most jobs share a few policies
            return cls(policy=policy, grace=timedelta(microseconds=grace), limit=limit)
        except (KeyError, TypeError) as exc:
            raise InvalidScheduleError(f"not a stored misfire policy: {data!r} ({exc})") from None

    def describe(self) -> str:
        """Short human text, such as ``"run_once (grace 30s, limit 100)"``."""
        return f"{self.policy} (grace {human_delta(self.grace)}, limit {self.limit})"


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What :func:`plan_fires` decided.

    ``run`` holds the fire times to run now, oldest first. ``skipped`` counts the due
    fires that will not run and ``last_skipped`` is the newest of them. ``next_fire``
    is the trigger's first fire strictly after ``now`` (None when it is done).
    """

    run: tuple[datetime, ...]
    skipped: int
    last_skipped: datetime | None
    next_fire: datetime | None


def plan_fires(
    trigger: Trigger, next_fire: datetime, now: datetime, policy: MisfirePolicy
) -> FirePlan:
    """Decide which due fires of ``trigger`` run at ``now``.

    ``next_fire`` is the trigger's stored next fire; the due fires are it and every
    later fire of ``trigger`` up to ``now`` inclusive. ``trigger`` must be resolved.
    If ``next_fire`` is after ``now`` nothing is due: the plan runs nothing and keeps
    ``next_fire``.

    The work is bounded by ``policy.limit`` plus a constant, however long the outage:
    the newest due fires are found by walking backwards from ``now``, and the older
    ones are only counted. The count is exact by arithmetic for ``Once`` and ``Every``,
    and for ``Cron`` by one step per matching *day*; only a cron outage longer than
    about eight years of matching days has the rest of ``skipped`` extrapolated.
    """
    next_fire = ensure_utc(next_fire, "next_fire")
    now = ensure_utc(now, "now")
    if next_fire > now:
        return FirePlan(run=(), skipped=0, last_skipped=None, next_fire=next_fire)
    upcoming = trigger.next_fire(now)

    # The newest due fires, newest first. Two more than can run: enough to see the
    # newest fire that will not run, even when run_once takes the one before it.
    newest: list[datetime] = []
    complete = False  # whether `newest` reaches back to the stored fire
    cursor = now + TICK
    while len(newest) < policy.limit + 2:
        previous = trigger._prev_fire(cursor)
        if previous is None or previous <= next_fire:
            newest.append(next_fire)  # the stored fire is due even if off the trigger's grid
            complete = True
            break
        newest.append(previous)
        cursor = previous

    total = len(newest)
    if not complete:
        # Older still: the stored fire and whatever lies between it and the oldest seen.
        total += 1 + trigger._count_between(next_fire, newest[-1])

    # Every policy runs a newest stretch of the due fires: on-time fires are the
    # newest ones, and run_once adds the latest missed fire right behind them.
    if policy.policy == "catch_up":
        take = len(newest)
    else:
        deadline = now - policy.grace  # fires before this were missed
        take = sum(1 for fire in newest if fire >= deadline)
        if policy.policy == "run_once" and take < len(newest):
            take += 1
    take = min(take, policy.limit)
    not_run = newest[take:]
    return FirePlan(
        run=tuple(reversed(newest[:take])),
        skipped=total - take,
        last_skipped=not_run[0] if not_run else None,
        next_fire=upcoming,
    )


@functools.lru_cache(maxsize=64)
def _policy(policy: str, grace_us: int, limit: int) -> MisfirePolicy:
    # Policies are frozen: one instance serves every job stored with the same one.
    return MisfirePolicy(policy=policy, grace=timedelta(microseconds=grace_us), limit=limit)  # type: ignore[arg-type]
