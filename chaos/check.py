"""The soak's verdict: the ledger and the store, checked against the schedules.

Pure functions over what :mod:`chaos.soak` collected; nothing here talks to a process or a
store. Times are real (wall-clock) seconds since the epoch.

:func:`check` runs the invariant checks in order (:mod:`chaos.check_runs`: the fires, the
terminal records, fencing; :mod:`chaos.check_recovery`: compensation, cancels,
re-executions, the processes), then writes the report's figures and lines from what they
counted (:class:`chaos.tally.Tally`). What it reads and returns is in
:mod:`chaos.records`, and importable from here.
"""

from __future__ import annotations

import statistics
from collections import Counter

from chaos.check_recovery import (
    cancels_honoured,
    compensated_once,
    count_reexecutions,
    processes_behaved,
)
from chaos.check_runs import fencing_held, fires_ran, one_terminal_record
from chaos.records import (
    CancelRecord,
    FaultEvent,
    PlannedJob,
    Report,
    SiloExit,
    SoakData,
    StoredRun,
    run_id,
)
from chaos.tally import RunLedger, Tally

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


def check(data: SoakData) -> Report:
    """The verdict on one soak: every invariant, then the figures and the report's lines."""
    rep = Report()
    led = RunLedger.of(data.ledger)
    if data.torn_lines:
        rep.violate("ledger lines unreadable", f"{data.torn_lines} torn line(s)")
    t = Tally()
    fires_ran(data, led, rep, t)
    one_terminal_record(data, rep, t)
    fencing_held(data, led, rep, t)
    compensated_once(data, led, rep, t)
    cancels_honoured(data, led, rep, t)
    count_reexecutions(data, led, t)
    processes_behaved(data, led, rep, t)
    _summarize(data, led, rep, t)
    return rep


def _summarize(data: SoakData, led: RunLedger, rep: Report, t: Tally) -> None:
    """The figures and the report's lines."""
    cutoff = data.cutoff.timestamp()
    attempts = sum(len(v) for v in led.execs.values())
    fault_counts = Counter(f.kind for f in data.faults)
    f = rep.figures
    f.update(
        fires_due=t.due_fires,
        fires_executed=t.executed,
        fires_skipped=sum(t.skipped.values()),
        lost=t.lost,
        runs=len(data.runs),
        attempts=attempts,
        retries=t.retries,
        compensations=sum(len(v) for v in led.comps.values()),
        duplicate_terminal_records=t.dup_terminal,
        stuck_runs=t.stuck,
        same_attempt_twice=t.same_attempt_twice,
        reexecutions=t.reexec,
        reexecutions_after_faults=t.reexec - t.unexplained,
        reexecutions_unexplained=t.unexplained,
        duplicate_work=t.dup_work,
        duplicate_work_unexplained=t.dup_work_unexplained,
        worst_lateness=round(t.worst[0], 3),
        worst_lateness_real=round(max(t.real, default=0.0), 3),
        worst_lateness_clean=round(max(t.clean_lateness, default=0.0), 3),
        cancels_honoured=t.cancels_ok,
        faults=sum(v for k, v in fault_counts.items() if k in INJECTED),
        begun_after_sigterm=sum(t.after_stop.values()),
    )
    longs = sum(1 for j in data.planned.values() if j.family == "long")
    doomed = sum(
        1 for rid, (j, due) in t.expected.items() if j.family == "doomed" and due <= cutoff
    )
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(fault_counts.items()) if k in INJECTED)
    lines = rep.lines
    lines.append(
        f"faults injected: {f['faults']} ({kinds or 'none'}); silos declared dead and "
        f"restarted by the supervisor: {fault_counts['dead-restart']}; silo crashes: "
        f"{fault_counts['crash']}"
    )
    lines.append(
        f"fires due by the cutoff: {t.due_fires}: executed {t.executed}, not executed by "
        f"policy {sum(t.skipped.values())}" + (f" ({_counts(t.skipped)})" if t.skipped else "")
    )
    lines.append(
        f"runs in the store: {len(data.runs)} ("
        + _counts(t.stages)
        + f"); attempts executed (ledger): {attempts}, of which retries after an error "
        f"{t.retries}; compensations begun {f['compensations']}"
    )
    lines.append(f"lost fires: {t.lost}  [must be 0]")
    lines.append(f"duplicate terminal records: {t.dup_terminal}  [must be 0]")
    lines.append(
        f"runs left unfinished: {t.stuck}  [must be 0]; runs due after the cutoff still in "
        f"flight when the silos stopped: {t.in_flight}"
    )
    lines.append(
        f"fencing: attempts executed twice {t.same_attempt_twice}; store records not "
        f"matching the ledger's last attempt {len(_fencing(rep))}  [must be 0]"
    )
    lines.append(
        f"compensated exactly once: {t.compensated}/{doomed}"
        + (f" (a compensation re-run after a fault: {t.comp_rerun})" if t.comp_rerun else "")
    )
    lat = (
        f"; cancel to token tripped: worst {max(t.cancel_latency):.2f}s" if t.cancel_latency else ""
    )
    lines.append(
        f"cancels honoured: {t.cancels_ok}/{longs}{lat}"
        + (
            f"; pre-cancel attempts started late by a stale silo: {t.late_stale_starts}"
            if t.late_stale_starts
            else ""
        )
    )
    lines.append(
        f"re-executions (a new attempt after one that did not fail): {t.reexec}, after faults "
        f"{t.reexec - t.unexplained} ("
        + _counts(t.by_fault)
        + f"), not explained by a fault {t.unexplained}"
    )
    lines.extend(f"  e.g. {x}" for x in t.examples)
    lines.append(
        f"duplicates (fires whose work succeeded twice in the ledger): {t.dup_work}, of which "
        f"beyond the at-least-once window (no fault on the first silo) {t.dup_work_unexplained}"
    )
    lines.append(
        f"attempts begun by a silo after its SIGTERM: {sum(t.after_stop.values())}  [must be 0]"
        + (f" ({_counts(t.after_stop)})" if t.after_stop else "")
    )
    lines.append(
        f"lateness (first begin - due, on the executing silo's clock): p50 "
        f"{_pct(t.lateness, 50) * 1000:.0f} ms, p99 {_pct(t.lateness, 99):.2f}s, worst "
        f"{t.worst[0]:.2f}s ({t.worst[1]}); outside fault windows ({len(t.clean_lateness)} "
        f"fires) worst {max(t.clean_lateness, default=0.0):.2f}s; bound {data.late_bound:g}s "
        f"+ the faults' windows (each to its end + {data.recovery:g}s), closest to it: "
        f"{t.worst_excess[0]:+.2f}s; in real time: worst {max(t.real, default=0.0):.2f}s, "
        f"earliest {min(t.real, default=0.0):+.2f}s"
    )
    if t.early_after_step:
        lines.append(
            f"began early on a silo clock set back a moment before (launched on the clock "
            f"before the step): {t.early_after_step}"
        )
    if data.log_findings:
        lines.append("silo logs (not invariants; read them):")
        for msg, n in data.log_findings.most_common(12):
            lines.append(f"  {n:5d} x {msg}")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, int(q) - 1))]


def _fencing(rep: Report) -> list[str]:
    return [x for k, v in rep.violations.items() if "fencing" in k for x in v]


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items()))
