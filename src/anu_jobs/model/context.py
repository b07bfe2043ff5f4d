"""What a running job sees: ``JobContext`` and its cancellation token."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from anu_jobs._json import clean_text
from anu_jobs.errors import JobCancelledError

__all__ = ["CancellationToken", "ErrorInfo", "JobContext", "RunHooks"]

T = TypeVar("T")

# Each job type's logger, as logging.getLogger returns it (always the same object for a
# name), without taking the logging module's lock for every attempt.
_LOGGERS: dict[str, logging.Logger] = {}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as history keeps it: its type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(str(data["type"]), str(data["message"]), str(data.get("traceback", "")))


class CancellationToken:
    """Tripped when the run is cancelled; jobs check it at safe points.

    ``is_cancelled`` may be read from any thread (a plain-``def`` job reads it from its
    worker thread): it is one attribute, set once, from ``False`` to ``True``.
    """

    __slots__ = ("_cancelled", "_event", "_reason")

    def __init__(self) -> None:
        self._cancelled = False
        self._event: asyncio.Event | None = None
        self._reason: str | None = None

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled

    @property
    def reason(self) -> str | None:
        return self._reason

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~anu_jobs.errors.JobCancelledError` if the run was cancelled."""
        if self._cancelled:
            raise JobCancelledError(self._reason)

    async def wait(self) -> None:
        """Return once the run is cancelled."""
        if self._cancelled:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    def cancel(self, reason: str | None = None) -> None:
        """Trip the token (the runtime does this; jobs have no need to)."""
        if self._cancelled:
            return
        self._reason = reason
        self._cancelled = True
        if self._event is not None:
            self._event.set()


class RunHooks(Protocol):
    """What the job grain offers a running attempt (progress and checkpoints)."""

    async def report_progress(self, fraction: float, message: str | None) -> None: ...

    async def save_checkpoint(self, data: Any) -> None: ...


class JobContext:
    """Everything an attempt knows about itself.

    ``run_id`` is the same for every attempt of one fire (the job id and the fire
    time): use it as the idempotency key of the job's side effects.
    """

    __slots__ = (
        "_hooks",
        "_loop",
        "attempt",
        "cancellation",
        "checkpoint",
        "error",
        "job_id",
        "job_type",
        "logger",
        "params",
        "run_id",
        "scheduled_for",
        "started_at",
        "trigger",
    )

    def __init__(
        self,
        *,
        job_id: str,
        job_type: str,
        run_id: str,
        attempt: int,
        params: Any,
        trigger: str,
        scheduled_for: datetime,
        started_at: datetime,
        cancellation: CancellationToken,
        hooks: RunHooks,
        checkpoint: Any = None,
        error: ErrorInfo | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.job_id = job_id
        self.job_type = job_type
        self.run_id = run_id
        self.attempt = attempt
        self.params = params
        self.trigger = trigger
        self.scheduled_for = scheduled_for
        self.started_at = started_at
        self.cancellation = cancellation
        self.checkpoint = checkpoint
        self.error = error
        self._hooks = hooks
        self._loop = asyncio.get_running_loop()
        base = _LOGGERS.get(job_type)
        if base is None:
            base = _LOGGERS[job_type] = logging.getLogger(f"anu_jobs.job.{job_type}")
        self.logger = logger or logging.LoggerAdapter(
            base, {"job_id": job_id, "run_id": run_id, "attempt": attempt}
        )

    async def report_progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the attempt is (0.0 to 1.0), with an optional message."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress is a fraction from 0.0 to 1.0, not {fraction}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a progress message is a string, not {type(message).__name__}")
        await self._hooks.report_progress(float(fraction), clean_text(message or "") or None)

    async def save_checkpoint(self, data: Any) -> None:
        """Durably save a small JSON value that the next attempt of this run sees as
        ``ctx.checkpoint``; returns once it is stored."""
        await self._hooks.save_checkpoint(data)
        self.checkpoint = data

    def blocking(self, awaitable: Awaitable[T]) -> T:
        """From a plain-``def`` job's worker thread, run one of this context's coroutines
        (``ctx.blocking(ctx.report_progress(0.5))``) and return its result."""
        if not asyncio.iscoroutine(awaitable):
            raise TypeError("blocking() takes a coroutine such as ctx.report_progress(...)")
        coro: Coroutine[Any, Any, T] = awaitable
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
