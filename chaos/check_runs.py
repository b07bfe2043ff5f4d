"""The invariants of the schedule and the store's runs, checked against the ledger.

1. :func:`fires_ran`: every due fire ran (or was skipped by a stated policy), on time
   (within the bound, pushed out by the fault windows around it), and nothing ran that
   the schedule does not have.
2. :func:`one_terminal_record`: exactly one terminal record per run; nothing stuck.
3. :func:`fencing_held`: the store's record is the attempt the ledger shows last; no
   attempt number ran twice.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from chaos.records import FaultEvent, PlannedJob, Report, SoakData
from chaos.tally import RunLedger, Tally

__all__ = ["fencing_held", "fires_ran", "one_terminal_record"]

TERMINAL = frozenset({"completed", "failed", "compensated", "cancelled", "skipped"})
#: how far a begin may precede its due time on the executing silo's own clock
EARLY_TOLERANCE = 0.25
#: a begin this soon after a clock was set may have been decided on the clock before it:
#: a silo launches an attempt on the dot and its code begins a moment later
STEP_WINDOW = 1.0


class _Windows:
    """Fault windows: a fault may keep a fire from running until ``end + recovery``."""

    def __init__(self, faults: Iterable[FaultEvent], recovery: float, bound: float) -> None:
        self.spans = sorted((f.start, f.end + recovery) for f in faults if f.kind not in ("join",))
        self.starts = [s for s, _ in self.spans]
        self.bound = bound

    def deadline(self, due: float) -> float:
        """The latest a fire due at ``due`` may begin: ``due + bound``, pushed to
        ``end + bound`` by every fault window that is open between the due time and the
        deadline so far (faults chain: a fire held up by one may be hit by the next)."""
        deadline = due + self.bound
        changed = True
        while changed:
            changed = False
            hi = bisect.bisect_right(self.starts, deadline)
            for start, end in self.spans[:hi]:
                if end >= due and end + self.bound > deadline and start <= deadline:
                    deadline = end + self.bound
                    changed = True
        return deadline

    def clean(self, due: float) -> bool:
        return self.deadline(due) == due + self.bound


def _stepped_just_before(steps: list[float], wall: float) -> bool:
    """Whether a silo's clock was set within :data:`STEP_WINDOW` before ``wall``."""
    i = bisect.bisect_right(steps, wall)
    return i > 0 and wall - steps[i - 1] <= STEP_WINDOW


def fires_ran(data: SoakData, led: RunLedger, rep: Report, t: Tally) -> None:
    """1. Every due fire ran (or was skipped by a stated policy), on time."""
    cutoff = data.cutoff.timestamp()
    windows = _Windows(data.faults, data.recovery, data.late_bound)
    steps = sorted(f.start for f in data.faults if f.kind == "clock")
    execs = led.execs
    expected: dict[str, tuple[PlannedJob, float]] = t.expected
    optional: set[str] = set()
    for job in data.planned.values():
        # Fires past the horizon are only checked for being on the schedule's grid: the
        # silos still run (and claim ahead) while they are being stopped.
        until = data.horizon + timedelta(minutes=2)
        for rid, due in job.fires(data.scheduled_at - timedelta(days=1), until):
            if due <= data.scheduled_at.timestamp() and job.trigger[0] == "cron":
                optional.add(rid)  # the job may have been created after this fire
            else:
                expected[rid] = (job, due)
    cancel_returned = {c.job_id: c.returned for c in data.cancels if c.outcome == "ok"}
    for rid, (job, due) in expected.items():
        if due > cutoff:
            continue
        t.due_fires += 1
        begun = execs.get(rid)
        stored = data.runs.get(rid)
        if begun:
            t.executed += 1
            first = min(begun, key=lambda e: e.wall)
            # On the executing silo's own clock: a silo whose clock is behind starts its
            # fires late in real time, one ahead starts them early; both are on time.
            late = first.wall + first.offset - due
            t.lateness.append(late)
            t.real.append(first.wall - due)
            if late > t.worst[0]:
                t.worst = (late, rid)
            limit = windows.deadline(due)
            if windows.clean(due):
                t.clean_lateness.append(late)
            if due + late - limit > t.worst_excess[0]:
                t.worst_excess = (due + late - limit, rid)
            if due + late > limit:
                rep.violate(
                    "fire executed later than the bound",
                    f"{rid}: began {late:.2f}s after its due time; the bound, with the "
                    f"faults around it, was {limit - due:.2f}s",
                )
            for e in begun:
                if e.attempt != 1:
                    continue  # later attempts run when a retry or a takeover says, not at due
                if e.wall + e.offset < due - EARLY_TOLERANCE:
                    if _stepped_just_before(steps, e.wall):
                        t.early_after_step += 1
                        continue
                    rep.violate(
                        "fire executed before its due time",
                        f"{rid}: attempt {e.attempt} began {due - e.wall:.2f}s early in real "
                        f"time, {due - e.wall - e.offset:.2f}s early on its silo's clock",
                    )
        elif stored is not None and stored.stage == "skipped":
            reason = stored.reasons[-1] if stored.reasons else ""
            t.skipped["misfire" if "missed" in reason else "overlap"] += 1
            if windows.clean(due):
                # Runs take well under their interval: only a fault can hold one up
                # long enough for the next fire to find it still in flight.
                rep.violate(
                    "fire skipped with no fault around it", f"{rid} (due {_t(due)}): {reason}"
                )
        elif job.family == "long" and job.job_id in cancel_returned:
            t.skipped["cancelled before it fired"] += 1
        else:
            t.lost += 1
            state = stored.stage if stored else "no run record"
            rep.violate("fire lost", f"{rid} (due {_t(due)}): never executed; store: {state}")

    known = set(expected) | optional
    for rid, run in data.runs.items():
        if rid not in known:
            rep.violate(
                "run the schedule does not have",
                f"{rid}: stage {run.stage}, scheduled {_t(run.scheduled_for)}",
            )
    for rid in execs.keys() - known:
        rep.violate("execution of a fire the schedule does not have", rid)


def one_terminal_record(data: SoakData, rep: Report, t: Tally) -> None:
    """2. Exactly one terminal record per run; nothing stuck."""
    cutoff = data.cutoff.timestamp()
    for run in data.runs.values():
        t.stages[run.stage] += 1
        if run.terminal_transitions > 1:
            t.dup_terminal += 1
            rep.violate(
                "run with two terminal records",
                f"{run.run_id}: {run.terminal_transitions} terminal transitions "
                f"({', '.join(run.reasons[-3:])})",
            )
        if run.stage in TERMINAL and run.terminal_transitions == 0:
            rep.violate("terminal run without its transition", run.run_id)
        if run.stage not in TERMINAL and run.scheduled_for > cutoff:
            t.in_flight += 1
        elif run.stage not in TERMINAL:
            t.stuck += 1
            rep.violate(
                "run left unfinished",
                f"{run.run_id}: stage {run.stage} at the end (due {_t(run.scheduled_for)})",
            )


def fencing_held(data: SoakData, led: RunLedger, rep: Report, t: Tally) -> None:
    """3. Fencing: the store's record is the attempt the ledger shows last."""
    ends = led.ends
    for rid, begun in led.execs.items():
        per_attempt = Counter(e.attempt for e in begun)
        for attempt, n in per_attempt.items():
            if n > 1:
                t.same_attempt_twice += 1
                pids = sorted(e.pid for e in begun if e.attempt == attempt)
                rep.violate(
                    "attempt executed twice (a re-execution must be a new attempt)",
                    f"{rid}: attempt {attempt} began {n} times, in processes {pids}",
                )
        run = data.runs.get(rid)
        if run is None:
            if max(e.wall for e in begun) < data.horizon.timestamp() - 5:
                rep.violate("execution the store has no run for", rid)
            continue
        top = max(per_attempt)
        if top > run.attempt:
            rep.violate(
                "attempt executed that the store never recorded (fencing)",
                f"{rid}: the ledger has attempt {top}, the store's record attempt {run.attempt}",
            )
        if run.stage in ("completed", "compensated", "failed") and run.attempt > 0:
            last = [e for e in begun if e.attempt == run.attempt]
            if not last:
                rep.violate(
                    "terminal record names an attempt that never executed (fencing)",
                    f"{rid}: {run.stage} as attempt {run.attempt}; the ledger has "
                    f"{sorted(per_attempt)}",
                )
                continue
            if all(e.silo_id != run.silo_id for e in last):
                rep.violate(
                    "terminal record names another silo than the one that ran it (fencing)",
                    f"{rid}: store says {run.silo_id}, the ledger {last[0].silo_id}",
                )
            if run.stage == "completed" and not any(
                (end := ends.get((rid, e.attempt, "execute", e.pid))) is not None
                and end.outcome == "ok"
                for e in last
            ):
                rep.violate(
                    "completed run whose recorded attempt did not succeed (fencing)",
                    f"{rid}: attempt {run.attempt} ended " + ", ".join(led.end(e) for e in last),
                )


def _t(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S.%f")[:-3]
