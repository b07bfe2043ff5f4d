"""What the soak hands its verdict, and the verdict.

- :func:`run_id` and :class:`PlannedJob`: a job of the load and its fires, computed here
  without anu-jobs' trigger code.
- :class:`FaultEvent`, :class:`StoredRun`, :class:`CancelRecord`, :class:`SiloExit`: the
  faults, the store's runs, the canceller's calls and the silo processes' ends.
- :class:`SoakData`: all of it with the ledger, for :func:`chaos.check.check`.
- :class:`Report`: the verdict: figures, lines and the invariants that failed.

Times are real (wall-clock) seconds since the epoch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
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
    "run_id",
]


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
