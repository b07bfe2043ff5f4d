"""Running a job's own code: one attempt of ``execute`` or ``compensate``, contained.

Whatever the job does (raise anything, run too long, block in a thread), the silo goes on:
exceptions become an :class:`Outcome`, ``KeyboardInterrupt`` and ``SystemExit`` raised by a
job included, and a deadline or a cancel stops waiting for it.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from anu_jobs._json import clean_text
from anu_jobs.clock import Clock, TimerHandle
from anu_jobs.errors import JobCancelledError, JobTimeoutError
from anu_jobs.model import CancellationToken, ErrorInfo, Job, JobContext

__all__ = ["AttemptRunner", "Outcome", "error_info"]

OutcomeKind = Literal["ok", "error", "cancelled", "interrupted", "lost"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended. ``interrupted``: the silo stopped it to shut down;
    ``lost``: the silo lost the job's lease; ``cancelled``: the run was cancelled."""

    kind: OutcomeKind
    error: ErrorInfo | None = None


class _JobRaisedBaseException(Exception):
    """Carries a ``KeyboardInterrupt`` or ``SystemExit`` raised by a job's own code, so
    that it fails the attempt instead of stopping the silo's event loop."""

    def __init__(self, inner: BaseException) -> None:
        self.inner = inner
        super().__init__(f"{type(inner).__name__}: {inner}")


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, _JobRaisedBaseException):
        exc = exc.inner
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        message = str(exc)
    except Exception:  # a job's exception whose __str__ raises
        message = f"<unprintable {type(exc).__qualname__}>"
    # Job-made text, kept as valid UTF-8 whatever the job put in it (a lone surrogate
    # would make the store refuse the whole write).
    return ErrorInfo(
        clean_text(type(exc).__qualname__), clean_text(message), clean_text(tb[-8000:])
    )


class AttemptRunner:
    """Runs one method of one job instance and classifies how it ended."""

    __slots__ = ("_clock", "_executor", "_inside", "_user", "_why")

    def __init__(self, clock: Clock, executor: Executor | None) -> None:
        self._clock = clock
        self._executor = executor
        self._user: asyncio.Future[Any] | None = None
        # The task running an async job's code, while it runs it.
        self._inside: asyncio.Task[Any] | None = None
        self._why: OutcomeKind | None = None

    def interrupt(self, why: OutcomeKind) -> None:
        """Stop waiting for the job's code (cancel it; a thread runs on, ignored)."""
        if self._why is None:
            self._why = why
        if self._inside is not None:
            self._inside.cancel()
        elif self._user is not None and not self._user.done():
            self._user.cancel()

    async def run(
        self,
        cls: type[Job],
        method: str,
        ctx: JobContext,
        token: CancellationToken,
        timeout: timedelta | None,
    ) -> Outcome:
        job = cls()
        fn: Callable[..., Any] = getattr(job, method)
        loop = asyncio.get_running_loop()
        if cls.is_async(method):
            return await self.run_async(fn, ctx, token, timeout)
        user = loop.run_in_executor(self._executor, fn, ctx)
        self._user = user
        timed_out = overdue = False
        handle: TimerHandle | None = None
        if timeout is not None:

            def on_timeout() -> None:
                nonlocal timed_out, overdue
                if not user.done():
                    timed_out = True
                    user.cancel()
                elif not user.cancelled():
                    # An async job that blocked the event loop past its deadline ends
                    # before this timer can run: it ran too long all the same.
                    overdue = True

            handle = self._clock.call_at(self._clock.now() + timeout, on_timeout)
        if self._why is not None:  # interrupted before it began
            user.cancel()
        try:
            await _wait(loop, user)
        finally:
            if handle is not None:
                handle.cancel()
            self._user = None
        if user.cancelled():
            if timed_out:
                return Outcome(
                    "error",
                    error_info(
                        JobTimeoutError(ctx.job_id, timeout.total_seconds() if timeout else 0)
                    ),
                )
            return Outcome(self._why or "cancelled")
        exc = user.exception()
        if overdue and not token.is_cancelled:
            return Outcome(
                "error",
                error_info(JobTimeoutError(ctx.job_id, timeout.total_seconds() if timeout else 0)),
            )
        if exc is None:
            return Outcome("ok")
        if token.is_cancelled and isinstance(exc, (JobCancelledError, asyncio.CancelledError)):
            return Outcome("cancelled")
        return Outcome("error", error_info(exc))

    async def run_async(
        self,
        fn: Callable[..., Any],
        ctx: JobContext,
        token: CancellationToken,
        timeout: timedelta | None,
    ) -> Outcome:
        """Run an async job's bound method (``execute`` or ``compensate``) and classify how
        it ended. The job's code runs in the attempt's own task, not one of its own (a task
        and a turn of the loop less per attempt). A deadline or :meth:`interrupt` cancels
        that task while, and only while, the job's code runs."""
        if self._why is not None:  # interrupted before it began
            return Outcome(self._why)
        task = asyncio.current_task()
        assert task is not None
        timed_out = False
        handle: TimerHandle | None = None
        due = None
        if timeout is not None:
            due = self._clock.now() + timeout

            def on_timeout() -> None:
                nonlocal timed_out
                if self._inside is task:
                    timed_out = True
                    task.cancel()

            handle = self._clock.call_at(due, on_timeout)
        exc: BaseException | None = None
        cancelled = False
        self._inside = task
        try:
            await fn(ctx)
        except asyncio.CancelledError:
            cancelled = True
        except (KeyboardInterrupt, SystemExit) as raised:
            exc = _JobRaisedBaseException(raised)
        except BaseException as raised:  # GeneratorExit, MemoryError...: the job's
            exc = raised
        finally:
            self._inside = None
            if handle is not None:
                handle.cancel()
        ours = timed_out or self._why is not None
        if ours and task.cancelling():
            task.uncancel()  # the cancel was this runner's, and it has been delivered
        elif cancelled and task.cancelling():
            raise asyncio.CancelledError  # the attempt itself is being cancelled
        if cancelled:
            if timed_out:
                return Outcome("error", error_info(JobTimeoutError(ctx.job_id, _secs(timeout))))
            return Outcome(self._why or "cancelled")
        if due is not None and self._clock.now() >= due and not token.is_cancelled:
            # An async job that blocked the event loop past its deadline ends before the
            # deadline's timer can run: it ran too long all the same.
            return Outcome("error", error_info(JobTimeoutError(ctx.job_id, _secs(timeout))))
        if exc is None:
            return Outcome("ok")
        if token.is_cancelled and isinstance(exc, JobCancelledError):
            return Outcome("cancelled")
        return Outcome("error", error_info(exc))


def _secs(timeout: timedelta | None) -> float:
    return timeout.total_seconds() if timeout is not None else 0.0


async def _wait(loop: asyncio.AbstractEventLoop, user: asyncio.Future[Any]) -> None:
    """``await asyncio.wait([user])``, without what that costs for a set of futures."""
    if user.done():
        await asyncio.wait([user])
        return
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: asyncio.Future[Any]) -> None:
        if not waiter.done():
            waiter.set_result(None)

    user.add_done_callback(wake)
    try:
        await waiter
    finally:
        user.remove_done_callback(wake)
