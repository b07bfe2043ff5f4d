"""anu-jobs: durable job scheduling on virtual actors.

A job is a :class:`Job` subclass; each scheduled job lives in a grain with one live
activation in the whole cluster, durable state and a durable reminder, hosted by a
:class:`Silo`. Build a silo with :class:`SiloBuilder`; schedule and control jobs with its
``client`` (a :class:`JobClient`) or, from another process, ``JobClient.connect(url)``.
"""

from anu_jobs.clock import Clock, SystemClock
from anu_jobs.errors import (
    AnuJobsError,
    ConfigurationError,
    DuplicateJobError,
    EtagConflictError,
    InvalidParamsError,
    InvalidScheduleError,
    JobCancelledError,
    JobDefinitionError,
    JobNotFoundError,
    JobStateError,
    JobTimeoutError,
    LeaseLostError,
    StorageError,
    StorageUnavailableError,
    UnknownJobTypeError,
    WaitTimeoutError,
)
from anu_jobs.grain import JobStage, JobStatus, Progress, RunInfo, RunStage, Transition
from anu_jobs.hosting import JobClient, JobSpec, Silo, SiloBuilder, SyncJobClient
from anu_jobs.model import CancellationToken, ErrorInfo, Job, JobContext, RetryPolicy
from anu_jobs.triggers import Cron, Every, Manual, MisfirePolicy, Once, Trigger

__version__ = "0.1.0"

__all__ = [
    "AnuJobsError",
    "CancellationToken",
    "Clock",
    "ConfigurationError",
    "Cron",
    "DuplicateJobError",
    "ErrorInfo",
    "EtagConflictError",
    "Every",
    "InvalidParamsError",
    "InvalidScheduleError",
    "Job",
    "JobCancelledError",
    "JobClient",
    "JobContext",
    "JobDefinitionError",
    "JobNotFoundError",
    "JobSpec",
    "JobStage",
    "JobStateError",
    "JobStatus",
    "JobTimeoutError",
    "LeaseLostError",
    "Manual",
    "MisfirePolicy",
    "Once",
    "Progress",
    "RetryPolicy",
    "RunInfo",
    "RunStage",
    "Silo",
    "SiloBuilder",
    "StorageError",
    "StorageUnavailableError",
    "SyncJobClient",
    "SystemClock",
    "Transition",
    "Trigger",
    "UnknownJobTypeError",
    "WaitTimeoutError",
    "__version__",
]
