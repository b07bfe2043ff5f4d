"""What the outside sees of a job and its runs: stages, ``RunInfo`` and ``JobStatus``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from anu_jobs._time import from_us, from_us_opt
from anu_jobs.model import ErrorInfo
from anu_jobs.triggers import Trigger

__all__ = [
    "TERMINAL_STAGES",
    "JobStage",
    "JobStatus",
    "Progress",
    "RunInfo",
    "RunStage",
    "Transition",
]


class RunStage(StrEnum):
    """Where a run is. ``scheduled → running → completed``; on error
    ``running → retrying → running …``; retries spent: ``failed`` or
    ``compensating → compensated`` (or ``failed`` when compensation fails too);
    ``cancelled`` from any non-terminal stage; ``skipped`` for a fire that did not run
    (overlap or misfire policy)."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATED = "compensated"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STAGES


TERMINAL_STAGES = frozenset(
    {
        RunStage.COMPLETED,
        RunStage.FAILED,
        RunStage.COMPENSATED,
        RunStage.CANCELLED,
        RunStage.SKIPPED,
    }
)


class JobStage(StrEnum):
    """Where a job is: ``active``, ``paused``, ``finished`` (nothing will fire again) or
    ``cancelled``."""

    ACTIVE = "active"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Transition:
    """One stage change of a run: the stage entered, when, and why."""

    stage: RunStage
    at: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    fraction: float
    message: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of a job (one fire), over all its attempts."""

    run_id: str
    job_id: str
    job_type: str
    stage: RunStage
    attempt: int
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    transitions: tuple[Transition, ...]
    error: ErrorInfo | None
    compensation_error: ErrorInfo | None
    progress: Progress | None
    silo_id: str | None
    trigger: str

    @property
    def done(self) -> bool:
        return self.stage.terminal

    @classmethod
    def from_json(cls, job_id: str, job_type: str, data: dict[str, Any]) -> RunInfo:
        """Build from the run document the job grain keeps (see ``grain.state``)."""
        progress = data.get("progress")
        error = data.get("error")
        comp = data.get("compensation_error")
        return cls(
            run_id=data["run_id"],
            job_id=job_id,
            job_type=job_type,
            stage=RunStage(data["stage"]),
            attempt=int(data.get("attempt", 0)),
            scheduled_for=from_us(data["scheduled_for"]),
            started_at=from_us_opt(data.get("started_at")),
            finished_at=from_us_opt(data.get("finished_at")),
            transitions=tuple(
                Transition(RunStage(s), from_us(at), reason)
                for s, at, reason in data.get("transitions", ())
            ),
            error=ErrorInfo.from_json(error) if error else None,
            compensation_error=ErrorInfo.from_json(comp) if comp else None,
            progress=Progress(progress[0], progress[1], from_us(progress[2])) if progress else None,
            silo_id=data.get("silo_id"),
            trigger=str(data.get("trigger", "")),
        )


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job as a whole: its triggers, when it fires next, its current and last run.

    ``quarantined``: its stored state cannot be read (``reason`` says why); no silo runs
    it again. Delete it and schedule it anew.
    """

    job_id: str
    job_type: str
    stage: JobStage
    triggers: tuple[Trigger, ...]
    next_fire_at: datetime | None
    current_run: RunInfo | None
    last_run: RunInfo | None
    params: dict[str, Any]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    quarantined: bool = False
