"""The job grain's durable state, and its JSON form.

A job's state document (stored as the grain state, times in microseconds)::

    {"v": 1, "params": {...}, "triggers": [...], "next": [us | null, ...],
     "misfire": {...}, "overlap": "skip", "stage": "active", "reason": null,
     "pending": [[at_us, trigger_label, run_id], ...],
     "run": {...} | null, "last_run": {...} | null,
     "source": "client" | "builder", "created_at": us, "updated_at": us,
     "armed": [run_id, at_us, silo_id],   (only while an attempt is armed)
     "epoch": int}   (the lease epoch of the last write; 0 before any)

``run`` is the run in progress (running, retrying or compensating); its document is also
what the run history stores. ``armed`` says that a silo has put on record, ahead of
time, the attempt it will start at ``at_us``: it then starts the job's code on the dot
without a write in between (see ``JobGrain._arm``). ``epoch`` tells a new activation
whether a silo claimed the job since the last write and may have started an attempt
without a record (see ``JobGrain.on_activate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from anu_jobs._time import from_us, from_us_opt, iso, to_us
from anu_jobs.errors import AnuJobsError
from anu_jobs.grain.status import JobStage, JobStatus, RunInfo, RunStage
from anu_jobs.model import ErrorInfo
from anu_jobs.storage.base import UNREADABLE, RunRecord, StateEnvelope
from anu_jobs.triggers import MisfirePolicy, Trigger, trigger_from_json

__all__ = [
    "STATE_ERRORS",
    "JobState",
    "RunState",
    "new_job_state",
    "run_id_for",
    "status_from_envelope",
]

STATE_VERSION = 1

#: past any time a datetime holds (year 10000), for reading a stored stamp safely
MAX_STAMP_US = 253_402_300_800 * 10**6

#: what parsing a malformed state document may raise
STATE_ERRORS: tuple[type[Exception], ...] = (
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    AnuJobsError,
)


def run_id_for(job_id: str, fire_time: datetime) -> str:
    """The deterministic id of the run for one fire: the job id and the fire time."""
    return f"{job_id}@{iso(fire_time)}"


@dataclass(slots=True)
class RunState:
    """A run in progress, mutated by its job grain only."""

    run_id: str
    scheduled_for: int
    trigger: str
    stage: RunStage = RunStage.SCHEDULED
    attempt: int = 0
    failures: int = 0
    interruptions: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    next_attempt_at: int | None = None
    transitions: list[list[Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    compensation_error: dict[str, str] | None = None
    progress: list[Any] | None = None
    checkpoint: Any = None
    silo_id: str | None = None

    def move(self, stage: RunStage, at: int, reason: str | None = None) -> None:
        """Enter ``stage`` and record the transition."""
        self.stage = stage
        self.transitions.append([stage.value, at, reason])
        if stage.terminal:
            self.finished_at = at
            self.next_attempt_at = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scheduled_for": self.scheduled_for,
            "trigger": self.trigger,
            "stage": self.stage.value,
            "attempt": self.attempt,
            "failures": self.failures,
            "interruptions": self.interruptions,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "next_attempt_at": self.next_attempt_at,
            # A write is encoded later (in a store's thread, after a connection is free)
            # while the grain goes on: lists it appends to are copied; values it only
            # ever replaces whole (error, progress, checkpoint) are shared.
            "transitions": list(self.transitions),
            "error": self.error,
            "compensation_error": self.compensation_error,
            "progress": self.progress,
            "checkpoint": self.checkpoint,
            "silo_id": self.silo_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        return cls(
            run_id=data["run_id"],
            scheduled_for=int(data["scheduled_for"]),
            trigger=str(data.get("trigger", "")),
            stage=RunStage(data["stage"]),
            attempt=int(data.get("attempt", 0)),
            failures=int(data.get("failures", 0)),
            interruptions=int(data.get("interruptions", 0)),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            next_attempt_at=data.get("next_attempt_at"),
            transitions=[list(t) for t in data.get("transitions", [])],
            error=data.get("error"),
            compensation_error=data.get("compensation_error"),
            progress=data.get("progress"),
            checkpoint=data.get("checkpoint"),
            silo_id=data.get("silo_id"),
        )

    def to_record(self, job_id: str, job_type: str) -> RunRecord:
        data = self.to_json()
        del data["checkpoint"]  # checkpoints live with the state, not in history
        return RunRecord(
            run_id=self.run_id,
            job_id=job_id,
            job_type=job_type,
            stage=data["stage"],
            attempt=self.attempt,
            scheduled_for=from_us(self.scheduled_for),
            started_at=from_us_opt(self.started_at),
            finished_at=from_us_opt(self.finished_at),
            silo_id=self.silo_id,
            data=data,
        )

    def set_error(self, error: ErrorInfo) -> None:
        self.error = error.to_json()


@dataclass(slots=True)
class JobState:
    """The whole durable state of one job grain."""

    params: dict[str, Any]
    triggers: list[Trigger]
    next: list[int | None]
    misfire: MisfirePolicy
    overlap: str
    stage: JobStage = JobStage.ACTIVE
    reason: str | None = None
    pending: list[list[Any]] = field(default_factory=list)
    run: RunState | None = None
    last_run: dict[str, Any] | None = None
    source: str = "client"
    created_at: int = 0
    updated_at: int = 0
    armed: list[Any] | None = None
    epoch: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": STATE_VERSION,
            "params": self.params,  # replaced whole, never changed in place
            "triggers": [t.to_json() for t in self.triggers],
            "next": list(self.next),
            "misfire": self.misfire.to_json(),
            "overlap": self.overlap,
            "stage": self.stage.value,
            "reason": self.reason,
            "pending": list(self.pending),
            "run": self.run.to_json() if self.run else None,
            "last_run": self.last_run,
            "source": self.source,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.armed is not None:
            doc["armed"] = list(self.armed)
        if self.epoch is not None:
            doc["epoch"] = self.epoch
        return doc

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobState:
        """Parse a stored document; raises one of :data:`STATE_ERRORS` when it is malformed."""
        if not isinstance(data, dict):
            raise TypeError(f"the stored state is a {type(data).__name__}, not a JSON object")
        if UNREADABLE in data:
            raise ValueError(str(data[UNREADABLE]))
        version = data.get("v")
        if version != STATE_VERSION:
            raise ValueError(
                f"state version {version!r} is not understood by this anu-jobs "
                f"(it reads version {STATE_VERSION}); was it written by a newer release?"
            )
        triggers = [trigger_from_json(t) for t in data["triggers"]]
        nxt = list(data["next"])
        if len(nxt) != len(triggers):
            raise ValueError("state has a next fire time per trigger, but the counts differ")
        run = data.get("run")
        armed = data.get("armed")
        if armed is not None and not (
            isinstance(armed, list)
            and len(armed) == 3
            and isinstance(armed[0], str)
            and isinstance(armed[1], int)
        ):
            raise ValueError(f"malformed armed attempt {armed!r}")
        epoch = data.get("epoch")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise ValueError(f"malformed lease epoch {epoch!r}")
        return cls(
            params=dict(data["params"]),
            triggers=triggers,
            next=nxt,
            misfire=MisfirePolicy.from_json(data["misfire"]),
            overlap=str(data["overlap"]),
            stage=JobStage(data["stage"]),
            reason=data.get("reason"),
            pending=[list(p) for p in data.get("pending", [])],
            run=RunState.from_json(run) if run else None,
            last_run=data.get("last_run"),
            source=str(data.get("source", "client")),
            created_at=int(data.get("created_at", 0)),
            updated_at=int(data.get("updated_at", 0)),
            armed=armed,
            epoch=epoch,
        )

    def next_fire_us(self) -> int | None:
        """The earliest future fire: of a trigger or a queued (pending) fire."""
        times = [n for n in self.next if n is not None]
        times.extend(int(p[0]) for p in self.pending)
        return min(times) if times else None

    def due_us(self) -> int | None:
        """When the grain must wake next, as its reminder says.

        While a run is in flight (waiting for a slot, running, compensating), the reminder
        stays at its fire time, already past: should the activation die, the job is due
        again as soon as its lease lapses, and the next activation picks the run up.
        """
        run = self.run
        if run is not None:
            if run.stage in (RunStage.SCHEDULED, RunStage.RUNNING, RunStage.COMPENSATING):
                return run.scheduled_for
            if run.stage is RunStage.RETRYING and run.next_attempt_at is not None:
                nxt = self.next_fire_us() if self.stage is JobStage.ACTIVE else None
                return min(run.next_attempt_at, nxt) if nxt is not None else run.next_attempt_at
        if self.stage is JobStage.ACTIVE:
            return self.next_fire_us()
        if self.stage is JobStage.PAUSED and self.pending:
            return min(int(p[0]) for p in self.pending)
        return None


def status_from_envelope(envelope: StateEnvelope) -> JobStatus:
    """The public status of a stored job."""
    job_id, job_type = envelope.job_id, envelope.job_type
    try:
        state = JobState.from_json(envelope.state)
    except STATE_ERRORS as exc:
        # A corrupt state is shown, not hidden: the job stays visible with its reason.
        stamp = envelope.state.get("updated_at") if isinstance(envelope.state, dict) else None
        now = from_us(stamp if isinstance(stamp, int) and 0 <= stamp < MAX_STAMP_US else 0)
        return JobStatus(
            job_id,
            job_type,
            JobStage(envelope.stage)
            if envelope.stage in JobStage._value2member_map_
            else JobStage.FINISHED,
            (),
            None,
            None,
            None,
            {},
            f"quarantined: unreadable state ({type(exc).__name__}: {exc})",
            now,
            now,
            quarantined=True,
        )
    current = None
    if state.run is not None:
        current = RunInfo.from_json(job_id, job_type, state.run.to_json())
    elif state.pending:
        at, label, run_id = state.pending[0]
        current = RunInfo.from_json(
            job_id,
            job_type,
            {
                "run_id": run_id,
                "scheduled_for": at,
                "trigger": label,
                "stage": "scheduled",
                "transitions": [["scheduled", at, None]],
            },
        )
    last = RunInfo.from_json(job_id, job_type, state.last_run) if state.last_run else None
    nxt = state.next_fire_us() if state.stage in (JobStage.ACTIVE, JobStage.PAUSED) else None
    return JobStatus(
        job_id=job_id,
        job_type=job_type,
        stage=state.stage,
        triggers=tuple(state.triggers),
        next_fire_at=from_us_opt(nxt) if state.stage is JobStage.ACTIVE else None,
        current_run=current,
        last_run=last,
        params=state.params,
        reason=state.reason,
        created_at=from_us(state.created_at),
        updated_at=from_us(state.updated_at),
    )


def new_job_state(
    params: dict[str, Any],
    triggers: list[Trigger],
    now: datetime,
    misfire: MisfirePolicy,
    overlap: str,
    source: str = "client",
) -> JobState:
    """The state of a freshly scheduled job: relative triggers resolved against ``now``,
    each trigger's first fire computed (a past ``Once`` fires at once)."""
    resolved = [t.resolve(now) for t in triggers]
    nxt = [None if (f := t.first_fire(now)) is None else to_us(f) for t in resolved]
    now_us = to_us(now)
    state = JobState(
        params=params,
        triggers=resolved,
        next=nxt,
        misfire=misfire,
        overlap=overlap,
        source=source,
        created_at=now_us,
        updated_at=now_us,
        epoch=0,
    )
    if all(n is None for n in nxt) and not any(t.kind == "manual" for t in resolved):
        state.stage = JobStage.FINISHED
        state.reason = "no trigger will ever fire"
    return state
