"""The job grain: one job's lifecycle, its durable state and its public status."""

from anu_jobs.grain.job_grain import GrainOptions, JobEvents, JobGrain
from anu_jobs.grain.state import JobState, RunState, new_job_state, run_id_for, status_from_envelope
from anu_jobs.grain.status import (
    TERMINAL_STAGES,
    JobStage,
    JobStatus,
    Progress,
    RunInfo,
    RunStage,
    Transition,
)

__all__ = [
    "TERMINAL_STAGES",
    "GrainOptions",
    "JobEvents",
    "JobGrain",
    "JobStage",
    "JobState",
    "JobStatus",
    "Progress",
    "RunInfo",
    "RunStage",
    "RunState",
    "Transition",
    "new_job_state",
    "run_id_for",
    "status_from_envelope",
]
