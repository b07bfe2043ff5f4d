"""What the invariant checks share: the ledger by run (:class:`RunLedger`) and the counts
they keep for the report (:class:`Tally`).

The checks are in :mod:`chaos.check_runs` (the schedule, the terminal records, fencing)
and :mod:`chaos.check_recovery` (compensation, cancels, re-executions, the processes);
:func:`chaos.check.check` runs them in order and writes the report from the tally.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from chaos.ledger import Entry
from chaos.records import PlannedJob

__all__ = ["RunLedger", "Tally"]


@dataclass
class RunLedger:
    """The ledger's begins and ends, by run."""

    execs: dict[str, list[Entry]]  # execute begins per run
    comps: dict[str, list[Entry]]  # compensate begins per run
    ends: dict[tuple[str, int, str, int], Entry]  # (run, attempt, kind, pid) -> end
    comp_ok: dict[str, list[Entry]]  # compensations that ended ok, per run

    @classmethod
    def of(cls, ledger: Iterable[Entry]) -> RunLedger:
        execs: dict[str, list[Entry]] = defaultdict(list)
        comps: dict[str, list[Entry]] = defaultdict(list)
        ends: dict[tuple[str, int, str, int], Entry] = {}
        comp_ok: dict[str, list[Entry]] = defaultdict(list)
        for e in ledger:
            if e.event == "begin":
                (execs if e.kind == "execute" else comps)[e.run_id].append(e)
            else:
                ends[(e.run_id, e.attempt, e.kind, e.pid)] = e
                if e.kind == "compensate" and e.outcome == "ok":
                    comp_ok[e.run_id].append(e)
        return cls(execs, comps, ends, comp_ok)

    def end(self, begin: Entry) -> str:
        """How the attempt begun by ``begin`` ended (``-``: no end in the ledger)."""
        end = self.ends.get((begin.run_id, begin.attempt, begin.kind, begin.pid))
        return end.outcome if end is not None else "-"


@dataclass
class Tally:
    """What the checks counted, for the report's figures and lines."""

    # 1. the fires (chaos.check_runs.fires_ran)
    expected: dict[str, tuple[PlannedJob, float]] = field(default_factory=dict)  # (job, due)
    due_fires: int = 0
    executed: int = 0
    lost: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # not executed by policy, why
    lateness: list[float] = field(default_factory=list)  # on the executing silo's clock
    real: list[float] = field(default_factory=list)  # lateness in real time
    clean_lateness: list[float] = field(default_factory=list)  # outside the fault windows
    worst: tuple[float, str] = (0.0, "")
    worst_excess: tuple[float, str] = (float("-inf"), "")
    early_after_step: int = 0  # began early on a clock set a moment before
    # 2. the terminal records
    stages: Counter[str] = field(default_factory=Counter)
    dup_terminal: int = 0
    stuck: int = 0
    in_flight: int = 0
    # 3. fencing
    same_attempt_twice: int = 0
    # 4. compensation (chaos.check_recovery)
    compensated: int = 0
    comp_rerun: int = 0
    # 5. cancels
    cancels_ok: int = 0
    cancel_latency: list[float] = field(default_factory=list)
    late_stale_starts: int = 0
    # 6. re-executions
    retries: int = 0
    reexec: int = 0
    unexplained: int = 0
    examples: list[str] = field(default_factory=list)
    by_fault: Counter[str] = field(default_factory=Counter)
    dup_work: int = 0
    dup_work_unexplained: int = 0
    # 7. the processes
    after_stop: Counter[str] = field(default_factory=Counter)
