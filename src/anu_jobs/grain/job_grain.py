"""The job grain: the lifecycle of one job, fire → attempt → retry → compensate → record.

It runs as turns on the event loop (see ``runtime.grain``), holds the job's
:class:`~anu_jobs.grain.state.JobState`, and asks its host to write after every change;
the runtime batches those writes. A *passive* grain (used by clients that hold a lease
for a moment) applies control requests but never runs a job's code. Carrying each run
through its attempts to a terminal stage is :class:`~anu_jobs.grain.lifecycle.RunLifecycle`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from anu_jobs._time import from_us, from_us_opt, to_us, to_us_opt
from anu_jobs.clock import TimerHandle
from anu_jobs.grain.attempt import AttemptRunner
from anu_jobs.grain.lifecycle import RunLifecycle
from anu_jobs.grain.state import STATE_ERRORS, JobState, RunState, run_id_for
from anu_jobs.grain.status import JobStage, RunStage
from anu_jobs.model import CancellationToken, Job, JobRegistry
from anu_jobs.runtime.grain import GrainHost, GrainLogic, Snapshot
from anu_jobs.storage.base import ControlMessage, StateEnvelope
from anu_jobs.triggers import Manual, Once, Trigger, plan_fires

__all__ = ["GrainOptions", "JobEvents", "JobGrain"]

log = logging.getLogger("anu_jobs.grain")

_ACTIVE_RUN = (RunStage.RUNNING, RunStage.COMPENSATING)

_US = timedelta(microseconds=1)


class JobEvents(Protocol):
    """What a job grain reports as it works (metrics, tracing). Calls are on the event
    loop, must be quick, and must not raise.

    ``attempt`` is the run's attempt number (1 for the first ``execute``, 2 for the first
    retry...); a ``compensate`` attempt reports the number of the ``execute`` attempt it
    follows. So a run starts exactly when ``method == "execute"`` and ``attempt == 1``.
    """

    def attempt_started(
        self, job_type: str, job_id: str, run_id: str, method: str, attempt: int, lateness: float
    ) -> None:
        """An attempt of ``execute`` or ``compensate`` began, ``lateness`` seconds after
        the run's fire time (a retry's lateness includes the backoff it waited)."""

    def attempt_finished(
        self,
        job_type: str,
        job_id: str,
        run_id: str,
        method: str,
        attempt: int,
        outcome: str,
        duration: float,
    ) -> None:
        """An attempt ended after ``duration`` seconds (on the silo's clock): ``ok``,
        ``error``, ``cancelled``, ``interrupted`` or ``lost``."""

    def run_finished(self, job_type: str, job_id: str, run_id: str, stage: str) -> None:
        """A run reached a terminal stage: ``completed``, ``failed``, ``compensated``,
        ``cancelled`` or ``skipped``."""


@dataclass(frozen=True, slots=True)
class GrainOptions:
    """``cancel_grace``: how long a cancelled attempt may run on after its token trips
    before its task is cancelled. ``executor``: where plain-``def`` jobs run. ``events``:
    who hears about attempts and runs (metrics). ``arm_ahead``: an attempt due this soon
    is put on record ahead of time, so that its job's code starts on the dot, with no
    write in between (zero: every attempt waits for its own write before it starts)."""

    cancel_grace: timedelta = timedelta(seconds=5)
    executor: Executor | None = None
    events: JobEvents | None = None
    arm_ahead: timedelta = timedelta(0)


class JobGrain(RunLifecycle, GrainLogic):
    """One job's behaviour while activated."""

    def __init__(
        self,
        host: GrainHost,
        envelope: StateEnvelope,
        registry: JobRegistry,
        options: GrainOptions | None = None,
        *,
        passive: bool = False,
    ) -> None:
        self.host = host
        self.job_id = envelope.job_id
        self.job_type = envelope.job_type
        self.options = options or GrainOptions()
        self.passive = passive
        self.cls: type[Job] | None = (
            registry.get(envelope.job_type) if envelope.job_type in registry else None
        )
        self._raw = envelope.state
        self._stage = envelope.stage
        self.corrupt: str | None = None
        self.state: JobState | None = None
        try:
            self.state = JobState.from_json(envelope.state)
        except STATE_ERRORS as exc:
            self.corrupt = f"{type(exc).__name__}: {exc}"
            log.error(
                "job %s is quarantined: its stored state cannot be read (%s)",
                self.job_id,
                self.corrupt,
            )
        self.deleted = False
        self.alive = True
        self._dirty: dict[str, RunState] = {}
        self._finished: list[str] = []
        self._task_run: RunState | None = None
        self._runner: AttemptRunner | None = None
        self._token: CancellationToken | None = None
        self._cancel_reason: str | None = None
        self._hard_cancel: TimerHandle | None = None
        self._attempt_began: int | None = None
        # The armed attempt (st.armed) is in the store: its start needs no write first.
        self._arm_durable = False
        # The run whose armed attempt a previous activation may have started (and died in).
        self._cut_off: str | None = None
        # No write of this activation has been built, and no earlier holder of the lease
        # can have started an attempt unrecorded: the lease's claim arms a due attempt.
        self._claim_armed = False
        # An attempt launched on the dot whose record is owed (see launch_due).
        self._launch = None
        self._prepared = None
        self._labels: dict[int, tuple[Trigger, str]] = {}

    # -- GrainLogic --------------------------------------------------------------------

    def on_activate(self, control: Sequence[ControlMessage]) -> None:
        st = self.state
        if st is None:
            for msg in control:
                if msg.body.get("op") == "delete":
                    self.deleted = True
            self.host.save()
            return
        run = st.run
        if not self.passive:
            self._note_unrecorded()
        if run is not None and run.stage in _ACTIVE_RUN and not self.passive:
            self._recover(run)
        elif self._cut_off is not None and run is not None and run.run_id == self._cut_off:
            self._cut_off = None
            self._recover(run, armed=True)
        for msg in control:
            self._control(msg.body)
        self._advance_and_save(bool(control))

    def _note_unrecorded(self) -> None:
        """Find an attempt an earlier holder of the lease may have started without a
        record: it armed one whose time has passed, or it claimed the job (the lease
        epoch moved past the last write's) and wrote nothing since. That attempt is
        counted as cut off (``_cut_off``), as a running one would be; if no such holder
        can be, this activation may start a due attempt before its first write lands."""
        st = self.state
        assert st is not None
        armed, st.armed = st.armed, None
        now_us = self._now()[1]
        cut: str | None = None
        if armed is not None and int(armed[1]) <= now_us:
            cut = str(armed[0])
        epoch, last = self.host.epoch, st.epoch
        if epoch and last is not None:
            if epoch == last + 1:
                self._claim_armed = True
            elif epoch > last + 1 and cut is None:
                nxt = self._next_attempt()
                if nxt is not None and nxt[1] <= now_us:
                    cut = nxt[0]
        self._cut_off = cut

    def on_wake(self) -> None:
        if self.state is None or self.deleted or self.passive:
            return
        self._advance_and_save(False)
        if self._launch is not None:  # launched, and this turn did not record it
            launch, self._launch = self._launch, None
            self._drop_launch(launch)

    def _advance_and_save(self, acked: bool) -> None:
        """Advance, then save what changed, unless nothing did or the only change is an
        attempt starting now: that attempt writes the state before the job's code runs, so
        the claim and the start of a due run cost one write, not two. Should the silo die
        in between, the fire is still pending in the stored state and the next silo
        starts the same run."""
        st = self.state
        assert st is not None
        starting = self._task_run
        before = (tuple(st.next), len(st.pending), st.run, st.stage)
        self._advance()
        if (
            acked
            or self._dirty
            or self._finished
            or (
                self._task_run is starting
                and before
                != (
                    tuple(st.next),
                    len(st.pending),
                    st.run,
                    st.stage,
                )
            )
        ):
            self.host.save()

    def on_control(self, body: dict[str, Any]) -> None:
        if self.state is None:
            if body.get("op") == "delete":
                self.deleted = True
                self.host.save()
            return
        self._control(body)
        self._advance()
        self.host.save()

    def next_wake(self) -> datetime | None:
        st = self.state
        if st is None or self.deleted or self.passive or not self.host.accepting:
            # A stopping silo starts nothing: what is due stays on record for the next.
            return None
        times: list[int] = []
        run = st.run
        if st.stage is JobStage.ACTIVE:
            times.extend(n for n in st.next if n is not None)
        if run is None:
            times.extend(int(p[0]) for p in st.pending)
        elif (
            run.stage is RunStage.RETRYING
            and run.next_attempt_at is not None
            and self._task_run is None
        ):
            times.append(run.next_attempt_at)
        elif run.stage is RunStage.SCHEDULED and self._task_run is None:
            times.append(run.scheduled_for)  # a run taken over before its time
        if not times:
            return None
        at = min(times)
        ahead = self.options.arm_ahead
        if ahead and st.armed is None:
            nxt = self._next_attempt()
            if nxt is not None:
                arm_at = nxt[1] - ahead // _US
                if arm_at > self._now()[1]:
                    at = min(at, arm_at)  # wake in time to arm it
        return from_us(at)

    def is_busy(self) -> bool:
        return self._task_run is not None

    def snapshot(self) -> Snapshot:
        finished, self._finished = tuple(self._finished), []
        if self.deleted:
            self._dirty.clear()
            return Snapshot(stage=JobStage.CANCELLED.value, state=None, due_at=None)
        st = self.state
        if st is None:  # quarantined: keep what is stored, never wake it again
            return Snapshot(stage=self._stage, state=self._raw, due_at=None)
        st.updated_at = to_us(self.host.clock.now())
        if self.host.epoch:
            st.epoch = self.host.epoch
            self._claim_armed = False  # from this write on, a crash leaves no epoch gap
        runs = tuple(r.to_record(self.job_id, self.job_type) for r in self._dirty.values())
        self._dirty.clear()
        return Snapshot(
            stage=st.stage.value,
            state=st.to_json(),
            due_at=from_us_opt(st.due_us()),
            runs=runs,
            finished_runs=finished,
        )

    def on_lost(self, reason: str) -> None:
        self.alive = False
        if self._token is not None:
            self._token.cancel(reason)
        if self._runner is not None:
            self._runner.interrupt("lost")
        if self._hard_cancel is not None:
            self._hard_cancel.cancel()

    def on_shutdown(self) -> None:
        if self._runner is not None:
            self._runner.interrupt("interrupted")
        elif self.state is not None and self.state.armed is not None:
            self.state.armed = None  # nothing started: the stopping write clears the mark

    # -- firing ----------------------------------------------------------------------

    def _advance(self) -> None:
        """Turn what is due into runs, and start the next one if nothing runs."""
        st = self.state
        assert st is not None
        now, now_us = self._now()
        if st.stage is JobStage.ACTIVE:
            for i, trig in enumerate(st.triggers):
                nxt = st.next[i]
                if nxt is None or nxt > now_us:
                    continue
                plan = plan_fires(trig, from_us(nxt), now, st.misfire)
                st.next[i] = to_us_opt(plan.next_fire)
                if plan.skipped and plan.last_skipped is not None:
                    self._skip(
                        plan.last_skipped,
                        trig.describe(),
                        f"{plan.skipped} fire(s) missed while no silo ran the job "
                        f"(misfire policy: {st.misfire.describe()})",
                    )
                self._queue_fires(self._label(trig), plan.run)
        if st.run is None and st.pending and not self.passive:
            st.pending.sort(key=lambda p: p[0])
            if st.pending[0][0] <= now_us and st.stage is not JobStage.CANCELLED:
                at, label, run_id = st.pending.pop(0)
                run = RunState(run_id=run_id, scheduled_for=int(at), trigger=str(label))
                run.move(RunStage.SCHEDULED, int(at))
                st.run = run
                if run_id == self._cut_off:
                    self._cut_off = None
                    self._recover(run, armed=True)  # may fail it: cut off too many times
                if st.run is run:
                    self._start(run, "execute")
        elif (
            st.run is not None
            and st.run.stage is RunStage.SCHEDULED
            and self._task_run is None
            and not self.passive
            and st.run.scheduled_for <= now_us
        ):
            # Taken over from an activation that died or stopped before the run's first
            # attempt. Not before its time on this silo's clock: the silo that made the
            # run may have a clock ahead of this one, and this one claimed it ahead.
            self._start(st.run, "execute")
        elif (
            st.run is not None
            and st.run.stage is RunStage.RETRYING
            and self._task_run is None
            and not self.passive
            and st.run.next_attempt_at is not None
            and st.run.next_attempt_at <= now_us
        ):
            self._start(st.run, "execute")
        self._settle_stage()
        self._arm(now_us)

    def _next_attempt(self) -> tuple[str, int] | None:
        """The run id and time of the next attempt this grain starts, if nothing changes."""
        st = self.state
        assert st is not None
        run = st.run
        if run is not None:
            if self._task_run is not None:
                return None
            if run.stage is RunStage.SCHEDULED:
                return run.run_id, run.scheduled_for
            if run.stage is RunStage.RETRYING and run.next_attempt_at is not None:
                return run.run_id, run.next_attempt_at
            return None
        best: tuple[str, int] | None = None
        if st.pending and st.stage is not JobStage.CANCELLED:
            at, _, run_id = min(st.pending, key=lambda p: p[0])
            best = str(run_id), int(at)
        if st.stage is JobStage.ACTIVE:
            for nxt in st.next:
                if nxt is not None and (best is None or nxt < best[1]):
                    best = run_id_for(self.job_id, from_us(nxt)), nxt
        return best

    def _arm(self, now_us: int) -> None:
        """Put the next attempt on record ahead of time when it is due within
        ``arm_ahead``: when it comes, its code starts on the dot. The stored mark says which
        run may start and when; should this silo die after that time without a later write,
        the next activation counts the attempt as cut off, as it would a running one."""
        st = self.state
        assert st is not None
        if self._task_run is not None:
            return  # an attempt is starting or running: its start clears the mark
        want: list[Any] | None = None
        ahead = self.options.arm_ahead
        if ahead and not self.passive and self.alive and self.host.accepting:
            nxt = self._next_attempt()
            if nxt is not None and now_us < nxt[1] <= now_us + ahead // _US:
                want = [nxt[0], nxt[1], self.host.silo_id]
        if want == st.armed or (want is None and st.armed is None):
            return
        st.armed = want
        self._arm_durable = False
        self._prepared = None
        fut = self.host.save()
        if want is not None:

            def landed(f: Any) -> None:
                if not f.cancelled() and f.exception() is None and st.armed is want:
                    self._arm_durable = True
                    self._prepare_launch()

            fut.add_done_callback(landed)

    def _label(self, trig: Trigger) -> str:
        """A trigger's description, the label of its runs (computed once per trigger)."""
        label = self._labels.get(id(trig))
        if label is None or label[0] is not trig:
            label = self._labels[id(trig)] = (trig, trig.describe())
        return label[1]

    def _queue_fires(self, label: str, fires: Sequence[datetime]) -> None:
        """Queue fires to run, unless a run is in flight: then the overlap policy decides."""
        st = self.state
        assert st is not None
        queued = any(p[1] != "manual" for p in st.pending)
        if st.run is None and not queued:
            st.pending.extend([to_us(at), label, run_id_for(self.job_id, at)] for at in fires)
            return
        keep = fires[-1] if st.overlap == "queue_one" and not queued and fires else None
        for at in fires:
            if at is keep:
                st.pending.append([to_us(at), label, run_id_for(self.job_id, at)])
            elif st.overlap == "skip":
                self._skip(at, label, "the previous run was still running (overlap policy skip)")
            else:
                self._skip(at, label, "a run was already queued (overlap policy queue_one)")

    def _settle_stage(self) -> None:
        st = self.state
        assert st is not None
        if (
            st.stage is JobStage.ACTIVE
            and st.run is None
            and not st.pending
            and all(n is None for n in st.next)
            and not any(isinstance(t, Manual) for t in st.triggers)
        ):
            st.stage = JobStage.FINISHED
            st.reason = "no trigger will fire again"

    def _skip(self, at: datetime, label: str, reason: str) -> None:
        _, now_us = self._now()
        run = RunState(run_id=run_id_for(self.job_id, at), scheduled_for=to_us(at), trigger=label)
        run.move(RunStage.SCHEDULED, to_us(at))
        run.move(RunStage.SKIPPED, now_us, reason)
        self._finish(run)

    # -- control ---------------------------------------------------------------------

    def _control(self, body: dict[str, Any]) -> None:
        st = self.state
        assert st is not None
        self._prepared = None  # a request may change what the armed attempt would see
        op = body.get("op")
        now, now_us = self._now()
        reason = body.get("reason")
        if op == "cancel":
            st.stage = JobStage.CANCELLED
            st.reason = reason or "cancelled"
            st.pending.clear()
            st.next = [None] * len(st.triggers)
            self._cancel_run(st.reason)
        elif op == "delete":
            self.deleted = True
            self._cancel_run("the job was deleted")
        elif op == "pause":
            if st.stage is JobStage.ACTIVE:
                st.stage, st.reason = JobStage.PAUSED, reason
        elif op == "resume":
            if st.stage is JobStage.PAUSED:
                st.stage, st.reason = JobStage.ACTIVE, None
                for i, trig in enumerate(st.triggers):
                    nxt = st.next[i]
                    if nxt is not None and nxt <= now_us and not isinstance(trig, Once):
                        st.next[i] = to_us_opt(trig.next_fire(now))
        elif op == "trigger":
            run_id = str(body["run_id"])
            known = {p[2] for p in st.pending}
            if st.run is not None:
                known.add(st.run.run_id)
            if st.last_run is not None:
                known.add(st.last_run["run_id"])
            if run_id not in known and st.stage is not JobStage.CANCELLED:
                st.pending.append([int(body["at"]), "manual", run_id])
                if st.stage is JobStage.FINISHED:
                    st.stage, st.reason = JobStage.ACTIVE, None
        elif op == "replace":
            new = JobState.from_json(body["state"])
            st.params, st.triggers, st.next = new.params, new.triggers, new.next
            st.misfire, st.overlap, st.source = new.misfire, new.overlap, new.source
            st.stage, st.reason = JobStage.ACTIVE, None
            st.pending = [p for p in st.pending if p[1] == "manual"]
            self._settle_stage()
        else:
            log.warning("job %s: ignoring an unknown control request %r", self.job_id, op)

    def _cancel_run(self, reason: str) -> None:
        st = self.state
        assert st is not None
        run = st.run
        if run is None:
            return
        if self._task_run is run and self._token is not None:
            self._cancel_reason = reason
            self._token.cancel(reason)
            grace = self.options.cancel_grace
            runner = self._runner

            def hard_cancel() -> None:
                if runner is not None:
                    runner.interrupt("cancelled")

            self._hard_cancel = self.host.clock.call_at(self.host.clock.now() + grace, hard_cancel)
            return
        _, now_us = self._now()
        run.move(RunStage.CANCELLED, now_us, reason)
        self._finish(run)
