"""Every error anu-jobs raises, under one root.

::

    AnuJobsError
    ├── ConfigurationError            the builder or a URL is wrong; fix the call
    │   └── JobDefinitionError        a Job class is malformed (no execute, bad policy)
    ├── InvalidScheduleError          a trigger cannot be built (cron, zone, interval, dates)
    ├── InvalidParamsError            params are not JSON, or fail the job's ``Params``
    ├── UnknownJobTypeError           no registered job type has that name
    ├── JobNotFoundError              no job has that id
    ├── DuplicateJobError             a job with that id exists (pass ``replace=True``)
    ├── JobStateError                 the job is in a stage that does not allow the call
    ├── WaitTimeoutError              ``wait`` gave up before the run ended
    ├── JobCancelledError             raised inside a job by ``raise_if_cancelled()``
    ├── JobTimeoutError               an attempt ran past the job's ``timeout``
    └── StorageError                  the store failed
        ├── StorageUnavailableError   the store cannot be opened or reached
        ├── EtagConflictError         a compare-and-set lost (carries both etags)
        └── LeaseLostError            this activation no longer holds the job's lease

Each error carries typed attributes (the job id, the etags, the expression) and a
message that says what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AnuJobsError",
    "ConfigurationError",
    "DuplicateJobError",
    "EtagConflictError",
    "InvalidParamsError",
    "InvalidScheduleError",
    "JobCancelledError",
    "JobDefinitionError",
    "JobNotFoundError",
    "JobStateError",
    "JobTimeoutError",
    "LeaseLostError",
    "StorageError",
    "StorageUnavailableError",
    "UnknownJobTypeError",
    "WaitTimeoutError",
]


class AnuJobsError(Exception):
    """The root of every error anu-jobs raises."""


class ConfigurationError(AnuJobsError):
    """The silo, the client or a storage URL is configured wrongly."""


class JobDefinitionError(ConfigurationError):
    """A ``Job`` subclass is malformed: no ``execute``, a bad retry policy, a bad timeout."""

    def __init__(self, job_type: str, message: str) -> None:
        self.job_type = job_type
        super().__init__(f"job type {job_type!r}: {message}")


class InvalidScheduleError(AnuJobsError):
    """A trigger cannot be built: an invalid cron expression or zone, a bad interval or date."""

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        self.expression = expression
        super().__init__(message)


class InvalidParamsError(AnuJobsError):
    """Params are not JSON, or fail validation by the job type's ``Params``."""

    def __init__(self, job_type: str, message: str) -> None:
        self.job_type = job_type
        super().__init__(f"params for job type {job_type!r} are invalid: {message}")


class UnknownJobTypeError(AnuJobsError):
    """No job type of that name is registered with the silo or client."""

    def __init__(self, job_type: str, known: tuple[str, ...] = ()) -> None:
        self.job_type = job_type
        self.known = known
        hint = f" Registered types: {', '.join(known)}." if known else ""
        super().__init__(
            f"unknown job type {job_type!r}: register its class with "
            f"SiloBuilder.use_jobs(...) or JobClient(jobs=...).{hint}"
        )


class JobNotFoundError(AnuJobsError):
    """No job with that id exists in the store."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"no job with id {job_id!r}; list jobs with client.list() or `anu-jobs jobs`"
        )


class DuplicateJobError(AnuJobsError):
    """A job with that id already exists."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"a job with id {job_id!r} already exists; pass replace=True to replace it, "
            "or choose another id"
        )


class JobStateError(AnuJobsError):
    """The job's stage does not allow the call (resuming a cancelled job, say)."""

    def __init__(self, job_id: str, stage: str, message: str) -> None:
        self.job_id = job_id
        self.stage = stage
        super().__init__(f"job {job_id!r} is {stage}: {message}")


class WaitTimeoutError(AnuJobsError, TimeoutError):
    """``JobClient.wait`` gave up before the run reached a terminal stage."""

    def __init__(self, job_id: str, run_id: str | None, timeout: float) -> None:
        self.job_id = job_id
        self.run_id = run_id
        self.timeout = timeout
        what = f"run {run_id!r}" if run_id else "its next run"
        super().__init__(
            f"job {job_id!r}: {what} did not end within {timeout:g}s; "
            "the run goes on, wait again or look at client.get()"
        )


class JobCancelledError(AnuJobsError):
    """Raised inside a job by ``ctx.cancellation.raise_if_cancelled()``."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"the run was cancelled: {reason}" if reason else "the run was cancelled")


class JobTimeoutError(AnuJobsError, TimeoutError):
    """An attempt ran longer than its job type's ``timeout``."""

    def __init__(self, job_id: str, timeout: float) -> None:
        self.job_id = job_id
        self.timeout = timeout
        super().__init__(f"job {job_id!r}: the attempt ran past its timeout of {timeout:g}s")


class StorageError(AnuJobsError):
    """The store failed."""


class StorageUnavailableError(StorageError):
    """The store cannot be opened or reached (a bad path, no permission, a dead server)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot open the store {url}: {reason}")


class EtagConflictError(StorageError):
    """A compare-and-set write found another etag than the one it expected."""

    def __init__(self, job_id: str, expected: int | None, actual: int | None) -> None:
        self.job_id = job_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"job {job_id!r}: the state changed underneath this write "
            f"(expected etag {expected}, found {actual}); reload and try again"
        )


class LeaseLostError(StorageError):
    """This activation no longer holds the job's activation lease (another silo took it)."""

    def __init__(self, job_id: str, silo_id: str, epoch: int) -> None:
        self.job_id = job_id
        self.silo_id = silo_id
        self.epoch = epoch
        super().__init__(
            f"job {job_id!r}: silo {silo_id} lost its activation lease (epoch {epoch}); "
            "the job is active elsewhere now"
        )
