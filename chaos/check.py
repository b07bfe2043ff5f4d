"""The soak's verdict: the ledger and the store, checked against the schedules.

Pure functions over what :mod:`chaos.soak` collected; nothing here talks to a process or a
store. Times are real (wall-clock) seconds since the epoch.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from chaos.ledger import Entry

__all__ = [
    "CancelRecord",
    "FaultEvent",
    "PlannedJob",
    "Report",
    "SiloExit",
    "SoakData",
    "StoredRun",
    "check",
    "run_id",
]

#: the faults the soak injects (the others: what its supervisor did, and the final stop)
INJECTED = frozenset({"kill", "freeze", "term", "join", "leave", "pg-restart", "clock"})
#: faults that send a silo SIGTERM
STOPS = frozenset({"term", "leave", "dead-restart", "final-stop"})
TERMINAL = frozenset({"completed", "failed", "compensated", "cancelled", "skipped"})
#: how long a silo may take to act on a signal
SIGNAL_SLACK = 0.5
#: how far a begin may precede its due time on the executing silo's own clock
EARLY_TOLERANCE = 0.25


def run_id(job_id: str, fire: datetime) -> str:
    """The deterministic run id of a fire, as anu-jobs forms it."""
    return f"{job_id}@{fire.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def _epoch(value: datetime) -> float:
    return value.timestamp()


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One job of the load and how it fires, computed here without anu-jobs' trigger code.

    ``trigger`` is ``("once", at)``, ``("every", start, interval_s)`` or
    ``("cron", step_s)`` (``*/step * * * * *`` in UTC).
    """

    job_id: str
    family: str  # once, every, cron, flaky, doomed, long
    type_name: str
    trigger: tuple[object, ...]
    max_retries: int = 0
    fail_first: int = 0
    cancel_at: float | None = None

    def fires(self, after: datetime, until: datetime) -> Iterator[tuple[str, float]]:
        """``(run_id, due)`` of every fire in ``(after, until]``."""
        kind = self.trigger[0]
        if kind == "once":
            at = self.trigger[1]
            assert isinstance(at, datetime)
            if after < at <= until:
                yield run_id(self.job_id, at), _epoch(at)
        elif kind == "every":
            start, interval = self.trigger[1], self.trigger[2]
            assert isinstance(start, datetime) and isinstance(interval, int | float)
            step = timedelta(seconds=interval)
            k = 0
            while (at := start + k * step) <= until:
                if at > after:
                    yield run_id(self.job_id, at), _epoch(at)
                k += 1
        elif kind == "cron":
            sec = self.trigger[1]
            assert isinstance(sec, int)
            at = after.replace(microsecond=0) + timedelta(seconds=1)
            while at <= until:
                if at.second % sec == 0:
                    yield run_id(self.job_id, at), _epoch(at)
                at += timedelta(seconds=1)
        else:
            raise ValueError(f"unknown trigger {self.trigger!r}")


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault, from its start to the end of its action (a freeze: until SIGCONT)."""

    kind: str
    start: float
    end: float
    pids: frozenset[int] | None  # None: every process (a database restart)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StoredRun:
    """What the store holds of one run."""

    run_id: str
    job_id: str
    stage: str
    attempt: int
    silo_id: str | None
    scheduled_for: float
    terminal_transitions: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CancelRecord:
    job_id: str
    sent: float
    returned: float
    tries: int
    outcome: str


@dataclass(frozen=True, slots=True)
class SiloExit:
    serial: int
    pid: int
    code: int | None
    how: str  # "stopped" (SIGTERM, expected 0), "killed" (SIGKILL), "crashed"


@dataclass
class SoakData:
    """Everything the verdict needs."""

    planned: dict[str, PlannedJob]
    scheduled_at: datetime  # the schedule call returned: fires before it are optional
    cutoff: datetime  # the end of the fault phase: fires up to here must have run
    horizon: datetime  # the silos were told to stop
    job_stages: dict[str, str]
    runs: dict[str, StoredRun]
    ledger: list[Entry]
    torn_lines: int
    faults: list[FaultEvent]
    cancels: list[CancelRecord]
    exits: list[SiloExit]
    log_findings: Counter[str]
    recovery: float  # seconds a fault may keep a fire from running after it ends
    late_bound: float  # seconds a fire may be late outside faults


@dataclass
class Report:
    """The verdict: figures, findings and the invariants that failed (must be empty)."""

    figures: dict[str, float | int | str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violate(self, invariant: str, example: str) -> None:
        self.violations.setdefault(invariant, []).append(example)

    def text(self) -> str:
        out = list(self.lines)
        if self.violations:
            out.append("INVARIANTS FAILED:")
            for name, examples in self.violations.items():
                out.append(f"  {name}: {len(examples)}")
                out.extend(f"    {ex}" for ex in examples[:8])
            out.append("RESULT: FAIL")
        else:
            out.append("RESULT: PASS (every invariant held)")
        return "\n".join(out)


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


def _explaining_fault(
    faults: list[FaultEvent], pid: int, begin: float, until: float, recovery: float
) -> FaultEvent | None:
    """A fault on ``pid`` (or on every process) active between ``begin`` and ``until``."""
    for f in faults:
        if f.kind == "join":
            continue
        if f.pids is not None and pid not in f.pids:
            continue
        if f.start - 1.0 <= until and f.end + recovery >= begin:
            return f
    return None


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, int(q) - 1))]


def check(data: SoakData) -> Report:
    rep = Report()
    run: StoredRun | None
    cutoff = data.cutoff.timestamp()
    windows = _Windows(data.faults, data.recovery, data.late_bound)

    execs: dict[str, list[Entry]] = defaultdict(list)  # execute begins per run
    comps: dict[str, list[Entry]] = defaultdict(list)  # compensate begins per run
    ends: dict[tuple[str, int, str, int], Entry] = {}  # (run, attempt, kind, pid) -> end
    comp_ok: dict[str, list[Entry]] = defaultdict(list)
    for e in data.ledger:
        if e.event == "begin":
            (execs if e.kind == "execute" else comps)[e.run_id].append(e)
        else:
            ends[(e.run_id, e.attempt, e.kind, e.pid)] = e
            if e.kind == "compensate" and e.outcome == "ok":
                comp_ok[e.run_id].append(e)
    if data.torn_lines:
        rep.violate("ledger lines unreadable", f"{data.torn_lines} torn line(s)")

    # -- 1. every due fire ran (or was skipped by a stated policy), on time -----------
    expected: dict[str, tuple[PlannedJob, float]] = {}
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
    due_fires = lost = executed = 0
    skipped: Counter[str] = Counter()
    lateness: list[float] = []
    real: list[float] = []
    clean_lateness: list[float] = []
    worst = (0.0, "")
    worst_excess = (float("-inf"), "")
    for rid, (job, due) in expected.items():
        if due > cutoff:
            continue
        due_fires += 1
        begun = execs.get(rid)
        stored = data.runs.get(rid)
        if begun:
            executed += 1
            first = min(begun, key=lambda e: e.wall)
            # On the executing silo's own clock: a silo whose clock is behind starts its
            # fires late in real time, one ahead starts them early; both are on time.
            late = first.wall + first.offset - due
            lateness.append(late)
            real.append(first.wall - due)
            if late > worst[0]:
                worst = (late, rid)
            limit = windows.deadline(due)
            if windows.clean(due):
                clean_lateness.append(late)
            if due + late - limit > worst_excess[0]:
                worst_excess = (due + late - limit, rid)
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
                    rep.violate(
                        "fire executed before its due time",
                        f"{rid}: attempt {e.attempt} began {due - e.wall:.2f}s early in real "
                        f"time, {due - e.wall - e.offset:.2f}s early on its silo's clock",
                    )
        elif stored is not None and stored.stage == "skipped":
            reason = stored.reasons[-1] if stored.reasons else ""
            skipped["misfire" if "missed" in reason else "overlap"] += 1
            if windows.clean(due):
                # Runs take well under their interval: only a fault can hold one up
                # long enough for the next fire to find it still in flight.
                rep.violate(
                    "fire skipped with no fault around it", f"{rid} (due {_t(due)}): {reason}"
                )
        elif job.family == "long" and job.job_id in cancel_returned:
            skipped["cancelled before it fired"] += 1
        else:
            lost += 1
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

    # -- 2. exactly one terminal record per run; nothing stuck -------------------------
    dup_terminal = stuck = in_flight = 0
    stages: Counter[str] = Counter()
    for run in data.runs.values():
        stages[run.stage] += 1
        if run.terminal_transitions > 1:
            dup_terminal += 1
            rep.violate(
                "run with two terminal records",
                f"{run.run_id}: {run.terminal_transitions} terminal transitions "
                f"({', '.join(run.reasons[-3:])})",
            )
        if run.stage in TERMINAL and run.terminal_transitions == 0:
            rep.violate("terminal run without its transition", run.run_id)
        if run.stage not in TERMINAL and run.scheduled_for > cutoff:
            in_flight += 1
        elif run.stage not in TERMINAL:
            stuck += 1
            rep.violate(
                "run left unfinished",
                f"{run.run_id}: stage {run.stage} at the end (due {_t(run.scheduled_for)})",
            )

    # -- 3. fencing: the store's record is the attempt the ledger shows last ----------
    same_attempt_twice = 0
    for rid, begun in execs.items():
        per_attempt = Counter(e.attempt for e in begun)
        for attempt, n in per_attempt.items():
            if n > 1:
                same_attempt_twice += 1
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
                    f"{rid}: attempt {run.attempt} ended " + ", ".join(_end(ends, e) for e in last),
                )

    # -- 4. spent retries were compensated exactly once --------------------------------
    compensated = comp_rerun = 0
    for rid, (job, due) in expected.items():
        if due > cutoff:
            continue
        run = data.runs.get(rid)
        if job.family != "doomed":
            if rid in comps:
                rep.violate("compensation of a run that did not need it", rid)
            continue
        if run is None or run.stage != "compensated":
            if run is not None and run.stage == "failed" and _cut_off(run):
                skipped["failed: cut off more than 5 times"] += 1
                continue
            rep.violate(
                "run with spent retries not compensated",
                f"{rid}: store {run.stage if run else 'no record'}",
            )
            continue
        errors = {e.attempt for e in execs.get(rid, []) if _end(ends, e) == "error"}
        first_comp = min((e.wall for e in comps.get(rid, [])), default=None)
        if len(errors) < job.max_retries + 1:
            rep.violate(
                "compensated before its retries were spent",
                f"{rid}: {len(errors)} failed attempt(s) in the ledger, "
                f"{job.max_retries + 1} needed",
            )
        done = comp_ok.get(rid, [])
        if not done:
            rep.violate("compensated in the store, never in the ledger", rid)
            continue
        compensated += 1
        if len(done) > 1:
            # A fault on the silo that began compensating first (it may finish last: a
            # frozen silo's compensation ends when it thaws, after the next one's), or
            # on the one that finished first, explains the second compensation.
            first = min(done, key=lambda e: e.wall)
            later = max(done, key=lambda e: e.wall)
            began = min(comps.get(rid, done), key=lambda e: e.wall)
            if any(
                _explaining_fault(data.faults, e.pid, e.wall, later.wall, data.recovery)
                for e in (began, first)
            ):
                comp_rerun += 1
            else:
                rep.violate(
                    "compensated more than once without a fault",
                    f"{rid}: {len(done)} successful compensations, processes "
                    f"{sorted(e.pid for e in done)}",
                )
        if first_comp is not None and any(
            e.wall > first_comp for e in execs.get(rid, []) if e.attempt > max(errors, default=0)
        ):
            rep.violate("executed again after its compensation began", rid)

    # -- 5. every cancel was honoured ---------------------------------------------------
    cancels_ok = 0
    cancel_latency: list[float] = []
    late_stale_starts = 0
    for c in data.cancels:
        if c.outcome != "ok":
            rep.violate("cancel call failed", f"{c.job_id}: {c.outcome} after {c.tries} tries")
    for job in data.planned.values():
        if job.family != "long":
            continue
        rec = next((c for c in data.cancels if c.job_id == job.job_id), None)
        if rec is None:
            rep.violate("cancel never sent", job.job_id)
            continue
        if data.job_stages.get(job.job_id) != "cancelled":
            rep.violate(
                "cancelled job not cancelled in the store",
                f"{job.job_id}: {data.job_stages.get(job.job_id)}",
            )
        fire = next(iter(job.fires(data.scheduled_at - timedelta(days=1), data.horizon)), None)
        ok = True
        if fire is not None:
            rid = fire[0]
            run = data.runs.get(rid)
            if run is not None and run.stage not in ("cancelled",):
                if run.stage == "failed" and _cut_off(run):
                    skipped["long run failed: cut off more than 5 times"] += 1
                else:
                    ok = False
                    rep.violate("cancelled run did not end cancelled", f"{rid}: {run.stage}")
            stored_attempt = run.attempt if run is not None else 0
            for e in execs.get(rid, []):
                if e.wall <= rec.returned:
                    continue
                if e.attempt > stored_attempt:
                    ok = False
                    rep.violate(
                        "executed after the cancel returned",
                        f"{rid}: attempt {e.attempt} began {e.wall - rec.returned:.2f}s after",
                    )
                else:
                    late_stale_starts += 1
            for e in execs.get(rid, []):
                end = ends.get((rid, e.attempt, "execute", e.pid))
                if end is not None and end.outcome == "cancelled" and end.wall >= rec.sent:
                    cancel_latency.append(end.wall - rec.sent)
        if ok:
            cancels_ok += 1

    # -- 6. re-executions: each after a fault, each a new attempt ---------------------
    retries = reexec = unexplained = 0
    examples: list[str] = []
    by_fault: Counter[str] = Counter()
    dup_work = dup_work_unexplained = 0
    for rid, begun in execs.items():
        ordered = sorted(begun, key=lambda e: (e.attempt, e.wall))
        for prev, nxt in itertools.pairwise(ordered):
            if _end(ends, prev) == "error":
                retries += 1
                continue
            reexec += 1
            fault = _explaining_fault(data.faults, prev.pid, prev.wall, nxt.wall, data.recovery)
            if fault is not None:
                by_fault[fault.kind] += 1
            else:
                unexplained += 1
                if len(examples) < 5:
                    examples.append(
                        f"{rid} attempt {prev.attempt} (pid {prev.pid}, ended "
                        f"{_end(ends, prev)}) -> attempt {nxt.attempt} (pid {nxt.pid}, "
                        f"{nxt.wall - prev.wall:.1f}s later)"
                    )
        oks = [e for e in ordered if _end(ends, e) == "ok"]
        if len(oks) > 1:
            dup_work += 1
            first = oks[0]
            if not _explaining_fault(
                data.faults, first.pid, first.wall, oks[-1].wall, data.recovery
            ):
                dup_work_unexplained += 1

    # -- 7. the processes ----------------------------------------------------------------
    # A silo told to stop (SIGTERM) stops claiming; what it still begins afterwards (fires
    # of the jobs it keeps activated, attempts it interrupted itself) runs during the drain
    # or is cut off by the stop and runs again elsewhere.
    sigterm: dict[int, float] = {}
    for fault in data.faults:
        if fault.kind in STOPS and fault.pids is not None:
            for pid in fault.pids:
                sigterm[pid] = min(sigterm.get(pid, fault.start), fault.start)
    after_stop: Counter[str] = Counter()
    for e in data.ledger:
        if e.event == "begin" and e.pid in sigterm and e.wall > sigterm[e.pid] + SIGNAL_SLACK:
            before = ends.get((e.run_id, e.attempt - 1, "execute", e.pid))
            if e.kind == "execute" and before is not None and before.outcome == "interrupted":
                what = "re-run of an attempt it had just interrupted"
            else:
                what = "new attempt"
            after_stop[what] += 1
            rep.violate(
                "attempt begun by a silo after its SIGTERM (a stopping silo starts none)",
                f"{e.run_id}: attempt {e.attempt} ({what}), pid {e.pid}, "
                f"{e.wall - sigterm[e.pid]:.2f}s after the signal",
            )
    for x in data.exits:
        if x.how == "stopped" and x.code != 0:
            rep.violate(
                "silo did not stop cleanly on SIGTERM", f"silo {x.serial} (pid {x.pid}): {x.code}"
            )
        if x.how == "crashed":
            rep.violate("silo process died by itself", f"silo {x.serial} (pid {x.pid}): {x.code}")

    # -- figures and the report ----------------------------------------------------------
    attempts = sum(len(v) for v in execs.values())
    fault_counts = Counter(f.kind for f in data.faults)
    f = rep.figures
    f.update(
        fires_due=due_fires,
        fires_executed=executed,
        fires_skipped=sum(skipped.values()),
        lost=lost,
        runs=len(data.runs),
        attempts=attempts,
        retries=retries,
        compensations=sum(len(v) for v in comps.values()),
        duplicate_terminal_records=dup_terminal,
        stuck_runs=stuck,
        same_attempt_twice=same_attempt_twice,
        reexecutions=reexec,
        reexecutions_after_faults=reexec - unexplained,
        reexecutions_unexplained=unexplained,
        duplicate_work=dup_work,
        duplicate_work_unexplained=dup_work_unexplained,
        worst_lateness=round(worst[0], 3),
        worst_lateness_real=round(max(real, default=0.0), 3),
        worst_lateness_clean=round(max(clean_lateness, default=0.0), 3),
        cancels_honoured=cancels_ok,
        faults=sum(v for k, v in fault_counts.items() if k in INJECTED),
        begun_after_sigterm=sum(after_stop.values()),
    )
    longs = sum(1 for j in data.planned.values() if j.family == "long")
    doomed = sum(1 for rid, (j, due) in expected.items() if j.family == "doomed" and due <= cutoff)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(fault_counts.items()) if k in INJECTED)
    lines = rep.lines
    lines.append(
        f"faults injected: {f['faults']} ({kinds or 'none'}); silos declared dead and "
        f"restarted by the supervisor: {fault_counts['dead-restart']}; silo crashes: "
        f"{fault_counts['crash']}"
    )
    lines.append(
        f"fires due by the cutoff: {due_fires}: executed {executed}, not executed by policy "
        f"{sum(skipped.values())}" + (f" ({_counts(skipped)})" if skipped else "")
    )
    lines.append(
        f"runs in the store: {len(data.runs)} ("
        + _counts(stages)
        + f"); attempts executed (ledger): {attempts}, of which retries after an error "
        f"{retries}; compensations begun {f['compensations']}"
    )
    lines.append(f"lost fires: {lost}  [must be 0]")
    lines.append(f"duplicate terminal records: {dup_terminal}  [must be 0]")
    lines.append(
        f"runs left unfinished: {stuck}  [must be 0]; runs due after the cutoff still in "
        f"flight when the silos stopped: {in_flight}"
    )
    lines.append(
        f"fencing: attempts executed twice {same_attempt_twice}; store records not matching "
        f"the ledger's last attempt {len(_fencing(rep))}  [must be 0]"
    )
    lines.append(
        f"compensated exactly once: {compensated}/{doomed}"
        + (f" (a compensation re-run after a fault: {comp_rerun})" if comp_rerun else "")
    )
    lat = f"; cancel to token tripped: worst {max(cancel_latency):.2f}s" if cancel_latency else ""
    lines.append(
        f"cancels honoured: {cancels_ok}/{longs}{lat}"
        + (
            f"; pre-cancel attempts started late by a stale silo: {late_stale_starts}"
            if late_stale_starts
            else ""
        )
    )
    lines.append(
        f"re-executions (a new attempt after one that did not fail): {reexec}, after faults "
        f"{reexec - unexplained} ("
        + _counts(by_fault)
        + f"), not explained by a fault {unexplained}"
    )
    lines.extend(f"  e.g. {x}" for x in examples)
    lines.append(
        f"duplicates (fires whose work succeeded twice in the ledger): {dup_work}, of which "
        f"beyond the at-least-once window (no fault on the first silo) {dup_work_unexplained}"
    )
    lines.append(
        f"attempts begun by a silo after its SIGTERM: {sum(after_stop.values())}  [must be 0]"
        + (f" ({_counts(after_stop)})" if after_stop else "")
    )
    lines.append(
        f"lateness (first begin - due, on the executing silo's clock): p50 "
        f"{_pct(lateness, 50) * 1000:.0f} ms, p99 {_pct(lateness, 99):.2f}s, worst "
        f"{worst[0]:.2f}s ({worst[1]}); outside fault windows ({len(clean_lateness)} fires) "
        f"worst {max(clean_lateness, default=0.0):.2f}s; bound {data.late_bound:g}s + the "
        f"faults' windows (each to its end + {data.recovery:g}s), closest to it: "
        f"{worst_excess[0]:+.2f}s; in real time: worst {max(real, default=0.0):.2f}s, "
        f"earliest {min(real, default=0.0):+.2f}s"
    )
    if data.log_findings:
        lines.append("silo logs (not invariants; read them):")
        for msg, n in data.log_findings.most_common(12):
            lines.append(f"  {n:5d} x {msg}")
    return rep


def _fencing(rep: Report) -> list[str]:
    return [x for k, v in rep.violations.items() if "fencing" in k for x in v]


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items()))


def _cut_off(run: StoredRun) -> bool:
    """The run failed because it was cut off by lost silos too many times."""
    return any("cut off" in reason and "giving up" in reason for reason in run.reasons)


def _end(ends: dict[tuple[str, int, str, int], Entry], begin: Entry) -> str:
    end = ends.get((begin.run_id, begin.attempt, begin.kind, begin.pid))
    return end.outcome if end is not None else "-"


def _t(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S.%f")[:-3]
