"""The job model: ``Job``, ``JobContext``, ``RetryPolicy`` and the registry of job types."""

from anu_jobs.model.context import CancellationToken, ErrorInfo, JobContext, RunHooks
from anu_jobs.model.job import Job, RetryPolicy
from anu_jobs.model.registry import JobRegistry, load_params, validate_params

__all__ = [
    "CancellationToken",
    "ErrorInfo",
    "Job",
    "JobContext",
    "JobRegistry",
    "RetryPolicy",
    "RunHooks",
    "load_params",
    "validate_params",
]
