"""The invariants of the recovery paths, checked against the ledger and the faults.

4. :func:`compensated_once`: a run whose retries were spent was compensated exactly once
   (again only after a fault on a silo that compensated it).
5. :func:`cancels_honoured`: every cancelled job ended cancelled and began nothing after
   the cancel returned.
6. :func:`count_reexecutions`: re-executions (a new attempt after one that did not fail),
   those explained by a fault on the silo that ran the previous one and those not, and
   the fires whose work succeeded twice.
7. :func:`processes_behaved`: a silo begins no attempt after its SIGTERM, stops cleanly on
   it, and does not die by itself.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from chaos.records import FaultEvent, Report, SoakData, StoredRun
from chaos.tally import RunLedger, Tally

__all__ = ["cancels_honoured", "compensated_once", "count_reexecutions", "processes_behaved"]

#: faults that send a silo SIGTERM
STOPS = frozenset({"term", "leave", "dead-restart", "final-stop"})
#: how long a silo may take to act on a signal
SIGNAL_SLACK = 0.5


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


def compensated_once(data: SoakData, led: RunLedger, rep: Report, t: Tally) -> None:
    """4. Spent retries were compensated exactly once."""
    cutoff = data.cutoff.timestamp()
    execs, comps, comp_ok = led.execs, led.comps, led.comp_ok
    for rid, (job, due) in t.expected.items():
        if due > cutoff:
            continue
        run = data.runs.get(rid)
        if job.family != "doomed":
            if rid in comps:
                rep.violate("compensation of a run that did not need it", rid)
            continue
        if run is None or run.stage != "compensated":
            if run is not None and run.stage == "failed" and _cut_off(run):
                t.skipped["failed: cut off more than 5 times"] += 1
                continue
            rep.violate(
                "run with spent retries not compensated",
                f"{rid}: store {run.stage if run else 'no record'}",
            )
            continue
        errors = {e.attempt for e in execs.get(rid, []) if led.end(e) == "error"}
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
        t.compensated += 1
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
                t.comp_rerun += 1
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


def cancels_honoured(data: SoakData, led: RunLedger, rep: Report, t: Tally) -> None:
    """5. Every cancel was honoured."""
    execs, ends = led.execs, led.ends
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
                    t.skipped["long run failed: cut off more than 5 times"] += 1
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
                    t.late_stale_starts += 1
            for e in execs.get(rid, []):
                end = ends.get((rid, e.attempt, "execute", e.pid))
                if end is not None and end.outcome == "cancelled" and end.wall >= rec.sent:
                    t.cancel_latency.append(end.wall - rec.sent)
        if ok:
            t.cancels_ok += 1


def count_reexecutions(data: SoakData, led: RunLedger, t: Tally) -> None:
    """6. Re-executions: each after a fault, each a new attempt (counted, not violations)."""
    for rid, begun in led.execs.items():
        ordered = sorted(begun, key=lambda e: (e.attempt, e.wall))
        for prev, nxt in itertools.pairwise(ordered):
            if led.end(prev) == "error":
                t.retries += 1
                continue
            t.reexec += 1
            fault = _explaining_fault(data.faults, prev.pid, prev.wall, nxt.wall, data.recovery)
            if fault is not None:
                t.by_fault[fault.kind] += 1
            else:
                t.unexplained += 1
                if len(t.examples) < 5:
                    t.examples.append(
                        f"{rid} attempt {prev.attempt} (pid {prev.pid}, ended "
                        f"{led.end(prev)}) -> attempt {nxt.attempt} (pid {nxt.pid}, "
                        f"{nxt.wall - prev.wall:.1f}s later)"
                    )
        oks = [e for e in ordered if led.end(e) == "ok"]
        if len(oks) > 1:
            t.dup_work += 1
            first = oks[0]
            if not _explaining_fault(
                data.faults, first.pid, first.wall, oks[-1].wall, data.recovery
            ):
                t.dup_work_unexplained += 1


def processes_behaved(data: SoakData, led: RunLedger, rep: Report, t: Tally) -> None:
    """7. The processes."""
    # A silo told to stop (SIGTERM) stops claiming; what it still begins afterwards (fires
    # of the jobs it keeps activated, attempts it interrupted itself) runs during the drain
    # or is cut off by the stop and runs again elsewhere.
    sigterm: dict[int, float] = {}
    for fault in data.faults:
        if fault.kind in STOPS and fault.pids is not None:
            for pid in fault.pids:
                sigterm[pid] = min(sigterm.get(pid, fault.start), fault.start)
    for e in data.ledger:
        if e.event == "begin" and e.pid in sigterm and e.wall > sigterm[e.pid] + SIGNAL_SLACK:
            before = led.ends.get((e.run_id, e.attempt - 1, "execute", e.pid))
            if e.kind == "execute" and before is not None and before.outcome == "interrupted":
                what = "re-run of an attempt it had just interrupted"
            else:
                what = "new attempt"
            t.after_stop[what] += 1
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


def _cut_off(run: StoredRun) -> bool:
    """The run failed because it was cut off by lost silos too many times."""
    return any("cut off" in reason and "giving up" in reason for reason in run.reasons)
