"""A job grain's runs: attempts of ``execute`` and ``compensate``, their records, retries
with backoff, compensation when retries are spent, and recovery of a run cut off by a lost
silo. :class:`~anu_jobs.grain.job_grain.JobGrain` fires runs and handles requests; this is
the part of it that carries each run to its terminal stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from anu_jobs._json import JSONError, check_json
from anu_jobs._time import from_us, to_us
from anu_jobs.clock import TimerHandle
from anu_jobs.errors import InvalidParamsError, LeaseLostError, UnknownJobTypeError
from anu_jobs.grain.attempt import AttemptRunner, Outcome, error_info
from anu_jobs.grain.state import JobState, RunState, run_id_for
from anu_jobs.grain.status import JobStage, RunStage
from anu_jobs.model import CancellationToken, ErrorInfo, Job, JobContext, load_params
from anu_jobs.runtime.grain import GrainHost
from anu_jobs.triggers import Trigger
from anu_jobs.triggers._base import micros

if TYPE_CHECKING:
    from anu_jobs.grain.job_grain import GrainOptions

__all__ = ["MAX_INTERRUPTIONS", "RunLifecycle"]

log = logging.getLogger("anu_jobs.grain")

#: how many times a run may be cut off by a lost silo before it is failed
MAX_INTERRUPTIONS = 5


class _Hooks:
    """``JobContext``'s progress and checkpoint calls, bound to one run (by its id: an
    attempt launched on the dot gets its context before its run is recorded)."""

    __slots__ = ("_grain", "_run_id")

    def __init__(self, grain: RunLifecycle, run_id: str) -> None:
        self._grain = grain
        self._run_id = run_id

    def _run(self) -> RunState | None:
        st = self._grain.state
        run = st.run if st is not None else None
        return run if run is not None and run.run_id == self._run_id else None

    async def report_progress(self, fraction: float, message: str | None) -> None:
        grain, run = self._grain, self._run()
        if run is not None:
            run.progress = [fraction, message, to_us(grain.host.clock.now())]
            grain.touch(run)
            grain.host.save()

    async def save_checkpoint(self, data: Any) -> None:
        try:
            check_json(data, "checkpoint")
        except JSONError as exc:
            raise InvalidParamsError(self._grain.job_type, str(exc)) from None
        grain, run = self._grain, self._run()
        if run is not None:
            run.checkpoint = copy.deepcopy(data)  # the job may go on changing its own
            await grain.host.save()


class _Launch:
    """An attempt whose code was launched on the dot, ahead of the turn that records it
    (``run`` is set by that turn)."""

    __slots__ = (
        "at_us",
        "ctx",
        "fell_back",
        "fn",
        "last_us",
        "name",
        "run",
        "run_id",
        "runner",
        "token",
    )

    def __init__(
        self,
        run_id: str,
        at_us: int,
        last_us: int,
        ctx: JobContext,
        runner: AttemptRunner,
        token: CancellationToken,
    ) -> None:
        self.run_id = run_id
        self.at_us = at_us
        self.last_us = last_us  # the last moment it is on time (the misfire grace)
        self.name = f"{ctx.job_id}:execute"  # its task's
        # An async job's ``execute``, bound to a fresh instance (None: a plain ``def``).
        self.fn: Callable[[JobContext], Awaitable[None]] | None = None
        self.ctx = ctx
        self.runner = runner
        self.token = token
        self.run: RunState | None = None
        # No concurrency slot was free when its code was to start: it starts the usual way.
        self.fell_back = False


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
    _cut_off: str | None
    _launch: _Launch | None
    _prepared: _Launch | None
    passive: bool

    @abstractmethod
    def _label(self, trig: Trigger) -> str:
        """A trigger's description, the label of its runs."""

    @abstractmethod
    def _advance(self) -> None:
        """Turn what is due into runs, and start the next one if nothing runs."""

    def _now(self) -> tuple[datetime, int]:
        now = self.host.clock.now()
        now_us = to_us(now)
        launch = self._launch
        if launch is not None and now_us < launch.at_us:
            # The clock was set back after an attempt was launched on the dot: until its
            # turn records it, the grain's time does not go back past that fire's time,
            # so that the turn finds the fire due, as the launch did.
            return from_us(launch.at_us), launch.at_us
        return now, now_us

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
        launch = self._launch
        if launch is not None:
            self._launch = None
            if launch.fell_back:
                pass  # its code never started: this start is the one
            elif method == "execute" and run.run_id == launch.run_id and run.attempt == 0:
                self._adopt(run, launch)
                return
            else:
                self._drop_launch(launch)
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
            self._record_begin(run, now_us)
        self._attempt_began = now_us
        return fast, self._context(
            run.run_id,
            run.attempt,
            run.trigger,
            run.scheduled_for,
            now,
            token,
            run.checkpoint,
            ErrorInfo.from_json(run.error) if (method == "compensate" and run.error) else None,
        )

    def _record_begin(self, run: RunState, now_us: int) -> None:
        """An attempt of ``execute`` begins: the armed mark has served its purpose."""
        st = self.state
        assert st is not None
        st.armed = None
        self._arm_durable = False
        self._prepared = None
        run.attempt += 1
        if run.started_at is None:
            run.started_at = now_us
        run.next_attempt_at = None
        run.silo_id = self.host.silo_id
        run.move(RunStage.RUNNING, now_us, f"attempt {run.attempt} on silo {self.host.silo_id}")
        # Written by _attempt, and awaited before the job's code runs unless the attempt
        # was armed: then its mark in the store stands for it until this lands.
        self.touch(run)

    def _context(
        self,
        run_id: str,
        attempt: int,
        trigger: str,
        scheduled_for: int,
        now: datetime,
        token: CancellationToken,
        checkpoint: Any,
        error: ErrorInfo | None,
    ) -> JobContext:
        st = self.state
        assert st is not None
        # The job gets its own copies: the state's values are shared with writes in flight.
        params: Any = copy.deepcopy(st.params) if st.params else {}
        if self.cls is not None:
            with contextlib.suppress(InvalidParamsError):
                params = load_params(self.cls, params)
        return JobContext(
            job_id=self.job_id,
            job_type=self.job_type,
            run_id=run_id,
            attempt=attempt,
            params=params,
            trigger=trigger,
            scheduled_for=from_us(scheduled_for),
            started_at=now,
            cancellation=token,
            hooks=_Hooks(self, run_id),
            checkpoint=copy.deepcopy(checkpoint) if checkpoint is not None else None,
            error=error,
        )

    # -- attempts launched on the dot -------------------------------------------------

    def _prepare_launch(self) -> None:
        """Once the armed mark is on record: make the attempt's context ahead of its time
        if :meth:`launch_due` may launch it (see there), so that little is left to do then."""
        self._prepared = None
        st = self.state
        if (
            st is None
            or st.armed is None
            or st.run is not None
            or st.pending
            or st.stage is not JobStage.ACTIVE
            or self.passive
            or self.cls is None
        ):
            return
        run_id, at_us = str(st.armed[0]), int(st.armed[1])
        label = None
        for i, nxt in enumerate(st.next):
            if nxt == at_us:
                label = self._label(st.triggers[i])
                break
        if label is None or run_id != run_id_for(self.job_id, from_us(at_us)):
            return  # not a trigger's fire (a manual one, say): the usual way
        token = CancellationToken()
        ctx = self._context(run_id, 1, label, at_us, self.host.clock.now(), token, None, None)
        runner = AttemptRunner(self.host.clock, self.options.executor)
        prep = _Launch(run_id, at_us, at_us + micros(st.misfire.grace), ctx, runner, token)
        if self.cls.is_async("execute"):
            prep.fn = self.cls().execute
        self._prepared = prep

    def launch_due(self) -> bool:
        """Start the armed attempt's code now, ahead of the turn that records it, when
        that turn is certain to record exactly this attempt: a trigger's fire on time, the
        job active with nothing else in flight or queued, its armed mark on record and
        the lease fresh (and, when its code is to start, a concurrency slot free; if none
        is, it starts the usual way, waiting for one). The attempts due at one instant then
        all start before any of them is recorded; each record follows within two passes of
        the event loop, before any other turn of the grain (the host sees to that)."""
        prep = self._prepared
        st = self.state
        if (
            prep is None
            or st is None
            or st.armed is None
            or st.armed[0] != prep.run_id
            or not self._arm_durable
            or self._task_run is not None
            or self._launch is not None
            or st.run is not None
            or st.pending
            or st.stage is not JobStage.ACTIVE
            or self.deleted
            or self._cut_off is not None
        ):
            return False
        now_us = to_us(self.host.clock.now())
        if not prep.at_us <= now_us <= prep.last_us:
            return False  # not due yet, or missed: the misfire policy decides
        if not (self.host.accepting and self.host.lease_fresh()):
            return False
        self._prepared = None
        self._launch = prep
        # Reachable by on_lost and on_shutdown from now on, recorded or not.
        self._runner, self._token, self._cancel_reason = prep.runner, prep.token, None
        self.host.spawn(self._launched(prep), prep.name)
        return True

    async def _launched(self, launch: _Launch) -> None:
        cls = self.cls
        assert cls is not None
        if self.host.take_slot():
            try:
                outcome = await self._run_launched(launch, cls)
            finally:
                self.host.give_slot()
        elif launch.run is None:
            launch.fell_back = True  # its owed turn starts the attempt the usual way
            return
        else:
            # Recorded already (a turn of the grain came first), so it runs: when it can.
            async with self.host.run_slot():
                outcome = await self._run_launched(launch, cls)
        if launch.run is None:
            # Not recorded yet: the attempts launched with it start before its record.
            await asyncio.sleep(0)
        self.host.turn(lambda: self._launch_done(launch, outcome))

    async def _run_launched(self, launch: _Launch, cls: type[Job]) -> Outcome:
        launch.ctx.started_at = self.host.clock.now()
        if launch.fn is not None:
            return await launch.runner.run_async(launch.fn, launch.ctx, launch.token, cls.timeout)
        return await launch.runner.run(cls, "execute", launch.ctx, launch.token, cls.timeout)

    def _adopt(self, run: RunState, launch: _Launch) -> None:
        """The turn owed to a launched attempt: record it as this run's first attempt."""
        launch.run = run
        self._runner, self._token, self._task_run = launch.runner, launch.token, run
        started = launch.ctx.started_at
        began = to_us(started)
        self._record_begin(run, began)
        self._attempt_began = began
        self.host.save()  # the armed mark stood for it until this lands
        if self.options.events is not None:
            lateness = started - launch.ctx.scheduled_for
            self.options.events.attempt_started(
                self.job_type, self.job_id, run.run_id, "execute", 1, lateness.total_seconds()
            )

    def _drop_launch(self, launch: _Launch) -> None:
        """A launched attempt that its turn does not record (it cannot happen while
        :meth:`launch_due` checks what that turn does): stop it, loudly."""
        log.error(
            "job %s: run %s was launched on the dot but its turn did not record it; cancelling it",
            self.job_id,
            launch.run_id,
        )
        launch.token.cancel("not recorded")
        launch.runner.interrupt("cancelled")
        if self._runner is launch.runner:
            self._abandon()

    def _launch_done(self, launch: _Launch, outcome: Outcome) -> None:
        if launch.run is None:
            # Never recorded: the lease went (or the turn dropped it) before its turn.
            if self._runner is launch.runner:
                self._abandon()
            return
        self._attempt_done(launch.run, "execute", outcome)

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
