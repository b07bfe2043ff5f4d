"""A job grain's runs: attempts of ``execute`` and ``compensate``, their records, retries
with backoff, compensation when retries are spent, and recovery of a run cut off by a lost
silo. :class:`~anu_jobs.grain.job_grain.JobGrain` fires runs and handles requests; this is
the part of it that carries each run to its terminal stage.
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING, Any

from anu_jobs._json import JSONError, check_json
from anu_jobs._time import from_us, to_us
from anu_jobs.clock import TimerHandle
from anu_jobs.errors import InvalidParamsError, LeaseLostError, UnknownJobTypeError
from anu_jobs.grain.attempt import AttemptRunner, Outcome, error_info
from anu_jobs.grain.state import JobState, RunState
from anu_jobs.grain.status import RunStage
from anu_jobs.model import CancellationToken, ErrorInfo, Job, JobContext, load_params
from anu_jobs.runtime.grain import GrainHost

if TYPE_CHECKING:
    from anu_jobs.grain.job_grain import GrainOptions

__all__ = ["MAX_INTERRUPTIONS", "RunLifecycle"]

#: how many times a run may be cut off by a lost silo before it is failed
MAX_INTERRUPTIONS = 5


class _Hooks:
    """``JobContext``'s progress and checkpoint calls, bound to one run."""

    __slots__ = ("_grain", "_run")

    def __init__(self, grain: RunLifecycle, run: RunState) -> None:
        self._grain = grain
        self._run = run

    async def report_progress(self, fraction: float, message: str | None) -> None:
        grain, run = self._grain, self._run
        if grain.state is not None and grain.state.run is run:
            run.progress = [fraction, message, to_us(grain.host.clock.now())]
            grain.touch(run)
            grain.host.save()

    async def save_checkpoint(self, data: Any) -> None:
        try:
            check_json(data, "checkpoint")
        except JSONError as exc:
            raise InvalidParamsError(self._grain.job_type, str(exc)) from None
        grain, run = self._grain, self._run
        if grain.state is not None and grain.state.run is run:
            run.checkpoint = copy.deepcopy(data)  # the job may go on changing its own
            await grain.host.save()


class RunLifecycle(ABC):
    """The run-carrying half of a job grain (see the module's docstring)."""

    host: GrainHost
    job_id: str
    job_type: str
    options: GrainOptions
    cls: type[Job] | None
    state: JobState | None
    alive: bool
    deleted: bool
    _dirty: dict[str, RunState]
    _finished: list[str]
    _task_run: RunState | None
    _runner: AttemptRunner | None
    _token: CancellationToken | None
    _cancel_reason: str | None
    _hard_cancel: TimerHandle | None
    _attempt_began: int | None
    _arm_durable: bool
    _claim_armed: bool

    @abstractmethod
    def _advance(self) -> None:
        """Turn what is due into runs, and start the next one if nothing runs."""

    def _now(self) -> tuple[datetime, int]:
        now = self.host.clock.now()
        return now, to_us(now)

    def _finish(self, run: RunState) -> None:
        st = self.state
        assert st is not None
        st.last_run = run.to_json()
        st.last_run.pop("checkpoint", None)
        if st.run is run:
            st.run = None
        self.touch(run)
        self._finished.append(run.run_id)
        if self.options.events is not None:
            self.options.events.run_finished(
                self.job_type, self.job_id, run.run_id, run.stage.value
            )

    def touch(self, run: RunState) -> None:
        self._dirty[run.run_id] = run

    # -- attempts --------------------------------------------------------------------

    def _start(self, run: RunState, method: str) -> None:
        """Start an attempt of ``execute`` (or the compensation) as a task of the activation.

        Not while the silo stops: the run stays on record as it is (scheduled, retrying,
        compensating) with its reminder due, and the next silo to take the job starts it.
        """
        if not self.host.accepting:
            return
        runner = AttemptRunner(self.host.clock, self.options.executor)
        token = CancellationToken()
        self._runner, self._token, self._task_run = runner, token, run
        self._cancel_reason = None
        self.host.spawn(self._attempt(run, method, runner, token), f"{self.job_id}:{method}")

    async def _attempt(
        self, run: RunState, method: str, runner: AttemptRunner, token: CancellationToken
    ) -> None:
        outcome: Outcome
        async with self.host.run_slot():
            if not self.host.accepting and self.alive:
                self.host.turn(self._abandon)  # the silo began to stop while this waited
                return
            if method == "execute" and self.alive and not token.is_cancelled and self._early(run):
                # This silo's clock stepped back since the attempt came due (while it
                # waited for a slot): it starts again when it is due by the clock now.
                self.host.turn(self._abandon)
                return
            if token.is_cancelled or not self.alive:
                outcome = Outcome("cancelled" if self._cancel_reason else "lost")
            else:
                began: list[tuple[bool, JobContext]] = []
                self.host.turn(lambda: began.append(self._begin(run, method, token)))
                if not began:
                    return
                armed, ctx = began[0]
                if armed:
                    self.host.save()  # the armed mark is on record: start on the dot
                else:
                    try:
                        # The attempt is on record before the job's code runs: should this
                        # silo die now, the next one knows to run the next attempt.
                        await self.host.save()
                    except LeaseLostError:
                        return
                ctx.started_at = self.host.clock.now()
                if self.options.events is not None:
                    lateness = ctx.started_at - ctx.scheduled_for
                    self.options.events.attempt_started(
                        self.job_type,
                        self.job_id,
                        run.run_id,
                        method,
                        run.attempt,
                        lateness.total_seconds(),
                    )
                cls = self.cls
                if cls is None:
                    err = UnknownJobTypeError(self.job_type)
                    outcome = Outcome("error", error_info(err))
                else:
                    outcome = await runner.run(cls, method, ctx, token, cls.timeout)
        self.host.turn(lambda: self._attempt_done(run, method, outcome))

    def _early(self, run: RunState) -> bool:
        due = run.next_attempt_at if run.stage is RunStage.RETRYING else run.scheduled_for
        return due is not None and due > self._now()[1]

    def _abandon(self) -> None:
        self._task_run = self._runner = self._token = None

    def _begin(
        self, run: RunState, method: str, token: CancellationToken
    ) -> tuple[bool, JobContext]:
        st = self.state
        assert st is not None
        now, now_us = self._now()
        fast = False
        if method == "execute":
            armed = st.armed
            fast = (
                self._claim_armed
                or (self._arm_durable and armed is not None and armed[0] == run.run_id)
            ) and self.host.lease_fresh()
            st.armed = None
            self._arm_durable = False
            run.attempt += 1
            if run.started_at is None:
                run.started_at = now_us
            run.next_attempt_at = None
            run.silo_id = self.host.silo_id
            run.move(RunStage.RUNNING, now_us, f"attempt {run.attempt} on silo {self.host.silo_id}")
            # Written by _attempt, and awaited before the job's code runs unless the attempt
            # was armed: then its mark in the store stands for it until this lands.
            self.touch(run)
        self._attempt_began = now_us
        # The job gets its own copies: the state's values are shared with writes in flight.
        params: Any = copy.deepcopy(st.params) if st.params else {}
        if self.cls is not None:
            with contextlib.suppress(InvalidParamsError):
                params = load_params(self.cls, params)
        return fast, JobContext(
            job_id=self.job_id,
            job_type=self.job_type,
            run_id=run.run_id,
            attempt=run.attempt,
            params=params,
            trigger=run.trigger,
            scheduled_for=from_us(run.scheduled_for),
            started_at=now,
            cancellation=token,
            hooks=_Hooks(self, run),
            checkpoint=copy.deepcopy(run.checkpoint) if run.checkpoint is not None else None,
            error=ErrorInfo.from_json(run.error)
            if (method == "compensate" and run.error)
            else None,
        )

    def _attempt_done(self, run: RunState, method: str, outcome: Outcome) -> None:
        self._task_run = self._runner = self._token = None
        events = self.options.events
        if events is not None and self._attempt_began is not None:
            took = (to_us(self.host.clock.now()) - self._attempt_began) / 1e6
            events.attempt_finished(
                self.job_type, self.job_id, run.run_id, method, run.attempt, outcome.kind, took
            )
        self._attempt_began = None
        if self._hard_cancel is not None:
            self._hard_cancel.cancel()
            self._hard_cancel = None
        st = self.state
        if (
            st is None
            or self.deleted
            or not self.alive
            or st.run is not run
            or outcome.kind == "lost"
        ):
            return
        _, now_us = self._now()
        self.touch(run)
        if self._cancel_reason is not None or outcome.kind == "cancelled":
            run.move(RunStage.CANCELLED, now_us, self._cancel_reason or "cancelled")
            self._finish(run)
        elif outcome.kind == "interrupted":
            # A shutdown is not the job's fault: no retry is spent, it runs again next start.
            if method == "execute":
                run.next_attempt_at = now_us
                run.move(
                    RunStage.RETRYING,
                    now_us,
                    "interrupted: the silo stopped; it runs again when a silo takes the job",
                )
        elif outcome.kind == "ok":
            if method == "execute":
                run.move(RunStage.COMPLETED, now_us)
            else:
                run.move(RunStage.COMPENSATED, now_us, "compensation completed")
            self._finish(run)
        elif method == "compensate":
            assert outcome.error is not None
            run.compensation_error = outcome.error.to_json()
            run.move(
                RunStage.FAILED,
                now_us,
                f"compensation failed: {outcome.error.type}: {outcome.error.message}",
            )
            self._finish(run)
        else:
            assert outcome.error is not None
            self._failed(run, outcome.error, now_us)
        self._advance()
        self.host.save()

    def _failed(self, run: RunState, error: ErrorInfo, now_us: int) -> None:
        run.failures += 1
        run.error = error.to_json()
        cls = self.cls
        policy = cls.retry if cls is not None else None
        what = f"attempt {run.attempt} failed: {error.type}: {error.message}"
        if policy is not None and run.failures <= policy.max_retries:
            delay = policy.delay(run.failures)
            run.next_attempt_at = now_us + int(delay.total_seconds() * 1_000_000)
            run.move(
                RunStage.RETRYING,
                now_us,
                f"{what}; retry {run.failures} of {policy.max_retries} "
                f"in {delay.total_seconds():g}s",
            )
        elif cls is not None and cls.has_compensation():
            run.move(RunStage.COMPENSATING, now_us, f"{what}; retries spent, compensating")
            self._start(run, "compensate")
        else:
            run.move(RunStage.FAILED, now_us, f"{what}; retries spent" if policy else what)
            self._finish(run)

    def _recover(self, run: RunState, armed: bool = False) -> None:
        """The previous activation died with this run in flight, or (``armed``) after the
        time of an attempt it had armed: try it again."""
        _, now_us = self._now()
        self.touch(run)
        self._claim_armed = False  # the next attempt waits for this to be on record
        if armed:
            run.attempt += 1  # it may have begun: its number is not given again
        if run.stage is RunStage.COMPENSATING:
            run.move(
                RunStage.COMPENSATING,
                now_us,
                "compensation cut off by a lost silo; compensating again",
            )
            self._start(run, "compensate")
            return
        run.interruptions += 1
        err = ErrorInfo(
            "AttemptInterrupted", "the silo running this attempt stopped before it finished"
        )
        run.error = err.to_json()
        what = f"attempt {run.attempt} cut off: {err.type}: {err.message}"
        if run.interruptions > MAX_INTERRUPTIONS:
            # A job that takes its silo down with it must not do so forever.
            run.move(
                RunStage.FAILED, now_us, f"{what}; cut off {run.interruptions} times, giving up"
            )
            self._finish(run)
            return
        # Not the job's fault: no retry is spent, and it runs again at once.
        run.next_attempt_at = now_us
        run.move(RunStage.RETRYING, now_us, f"{what}; running it again")
