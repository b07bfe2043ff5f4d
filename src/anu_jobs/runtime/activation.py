"""One live activation of a grain in this silo: its lease, its etag, its timer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from anu_jobs.clock import Clock, TimerHandle
from anu_jobs.errors import LeaseLostError
from anu_jobs.runtime.grain import GrainFactory, GrainHost, GrainLogic, Snapshot
from anu_jobs.storage.base import (
    ControlMessage,
    GrainWrite,
    LeaseToken,
    RunRecord,
    StateEnvelope,
    WriteResult,
)

if TYPE_CHECKING:
    from anu_jobs.runtime.runtime import SiloRuntime

__all__ = ["Activation"]

log = logging.getLogger("anu_jobs.runtime")


class Activation(GrainHost):
    """Hosts one grain while this silo holds its lease.

    Writes are coalesced: :meth:`save` marks the activation dirty and the silo's write
    batcher builds one :class:`GrainWrite` from the grain's latest snapshot; only one
    write of an activation is ever in flight, so each carries the etag the last returned.
    """

    def __init__(
        self,
        runtime: SiloRuntime,
        lease: LeaseToken,
        envelope: StateEnvelope,
        factory: GrainFactory,
    ) -> None:
        self.runtime = runtime
        self.job_id = envelope.job_id
        self.silo_id = runtime.silo_id
        self.clock: Clock = runtime.clock
        self.lease = lease
        self.epoch = lease.epoch
        self.etag = envelope.etag
        self.alive = True
        self.releasing = False
        self._timer: TimerHandle | None = None
        self._timer_at: datetime | None = None
        self._waiters: list[asyncio.Future[None]] = []
        # Waiters whose change is in the write now in flight; later ones wait for the next.
        self._in_flight_waiters: list[asyncio.Future[None]] = []
        self._acks: list[int] = []
        self._queued = False
        # An attempt was launched on the dot: the wake-up turn that records it is owed.
        self._owed_wake = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.logic: GrainLogic = factory(self, envelope)

    # -- GrainHost ------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self.alive and self.runtime.claiming

    def save(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(LeaseLostError(self.job_id, self.silo_id, self.lease.epoch))
            return fut
        self._waiters.append(fut)
        if not self._queued:
            self._queued = True
            self.runtime.writer.enqueue(self)
        return fut

    def reschedule(self) -> None:
        if self.alive:
            self._set_timer(self.logic.next_wake())

    def _set_timer(self, at: datetime | None) -> None:
        if at == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and at <= self.runtime.hold_until():
            self._timer = self.clock.call_at(at, self._on_timer)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def lease_fresh(self) -> bool:
        return self.alive and self.runtime.lease_fresh(self.job_id)

    def run_slot(self) -> AbstractAsyncContextManager[None]:
        return self.runtime.slots

    def take_slot(self) -> bool:
        return self.runtime.slots.try_take()

    def give_slot(self) -> None:
        self.runtime.slots.give()

    def turn(self, fn: Callable[[], None]) -> None:
        if not self.alive:
            return
        try:
            if self._owed_wake:
                self._owed_wake = False
                self.logic.on_wake()  # first, the record of the attempt it launched
            fn()
        except Exception:
            log.exception("job %s: a turn of its grain failed", self.job_id)
        self.after_turn()

    # -- runtime side ---------------------------------------------------------------

    def activate(self, control: Sequence[ControlMessage]) -> None:
        self._acks.extend(m.msg_id for m in control)
        self.turn(lambda: self.logic.on_activate(control))

    def deliver(self, msg: ControlMessage) -> None:
        """A control message from the inbox; acknowledged by the next write."""
        if msg.msg_id in self._acks:
            return
        self._acks.append(msg.msg_id)
        self.turn(lambda: self.logic.on_control(msg.body))

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.alive and not self._owed_wake and self.logic.launch_due():
            # Its code starts with the others due now; the turn that records it follows.
            self._owed_wake = True
            self.runtime.settle_soon(self)
            return
        self.turn(self.logic.on_wake)

    def settle(self) -> None:
        """Run the wake-up turn owed since an attempt was launched, if still owed."""
        if self._owed_wake:
            self.turn(_nothing)

    def after_turn(self) -> None:
        """Re-arm the timer; collect the activation when it has nothing to do soon."""
        if not self.alive:
            return
        at = self.logic.next_wake()
        self._set_timer(at)
        busy = self.logic.is_busy()
        self.runtime.note_busy(self, busy)
        if busy or self.releasing:
            return
        if at is None or at > self.runtime.hold_until():
            self.releasing = True
            self.save()

    def build_write(self) -> GrainWrite | None:
        """Called by the write batcher: the grain's snapshot as a write, or None if dead."""
        self._queued = False
        if not self.alive:
            return None
        snap = self.logic.snapshot()
        runs = snap.runs
        if self._carry_runs:
            # The last write failed with the store: its run records still have to go in.
            merged = {r.run_id: r for r in self._carry_runs}
            merged.update((r.run_id, r) for r in snap.runs)
            runs = tuple(merged.values())
            self._carry_runs = ()
        if (
            self.releasing
            and self.runtime.claiming
            and (self.logic.is_busy() or self._wants_to_stay())
        ):
            self.releasing = False  # work arrived since it was marked idle
            self.reschedule()  # its wake-up may have been too far for a timer then
        self._in_flight_waiters, self._waiters = self._waiters, []
        self._pending_finished = self._carry_finished + snap.finished_runs
        self._carry_finished = ()
        acks, self._acks = tuple(self._acks), []
        self._in_flight_acks = acks
        return GrainWrite(
            lease=self.lease,
            expected_etag=self.etag,
            job_type=self.logic.job_type,
            stage=snap.stage,
            state=snap.state,
            due_at=snap.due_at,
            runs=runs,
            ack_control=acks,
            release=self.releasing or snap.state is None,
        )

    def _wants_to_stay(self) -> bool:
        at = self.logic.next_wake()
        return at is not None and at <= self.runtime.hold_until()

    def write_done(self, write: GrainWrite, result: WriteResult) -> None:
        waiters, self._in_flight_waiters = self._in_flight_waiters, []
        if result.ok:
            assert result.etag is not None or write.state is None
            self.etag = result.etag if result.etag is not None else self.etag
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            if write.release:
                self._close()
            if self._pending_finished:
                self.runtime.runs_finished(self.job_id, self._pending_finished)
            return
        err = result.error
        assert err is not None
        log.warning("job %s: write refused, deactivating: %s", self.job_id, err)
        for fut in waiters:
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # nobody may be waiting; do not warn about it
        self.lose(str(err))

    def write_failed(self, write: GrainWrite) -> None:
        """The store failed the whole batch; the write will be built again and retried."""
        self._acks = list(self._in_flight_acks) + self._acks
        self._carry_runs = write.runs
        self._carry_finished = self._pending_finished
        self._waiters = self._in_flight_waiters + self._waiters
        self._in_flight_waiters = []
        self._queued = True

    def lose(self, reason: str) -> None:
        if not self.alive:
            return
        try:
            self.logic.on_lost(reason)
        except Exception:
            log.exception("job %s: on_lost failed", self.job_id)
        self._close()

    def _close(self) -> None:
        self.alive = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.runtime.deactivated(self)
        for fut in self._in_flight_waiters + self._waiters:
            if not fut.done():
                fut.set_exception(LeaseLostError(self.job_id, self.silo_id, self.lease.epoch))
                fut.exception()
        self._waiters = []
        self._in_flight_waiters = []
        if not self.tasks:
            # The grain holds its host: let go of it, so that neither waits for the cyclic
            # garbage collector (a cycle per job, and collections that grow with them).
            self.logic = _Closed(self.logic.job_type)

    _pending_finished: tuple[str, ...] = ()
    _carry_finished: tuple[str, ...] = ()
    _carry_runs: tuple[RunRecord, ...] = ()
    _in_flight_acks: tuple[int, ...] = ()


def _nothing() -> None:
    return None


class _Closed(GrainLogic):
    """What a closed activation keeps in place of its grain: nothing runs any more."""

    def __init__(self, job_type: str) -> None:
        self.job_type = job_type

    def on_activate(self, control: Sequence[ControlMessage]) -> None:
        return None

    def on_wake(self) -> None:
        return None

    def on_control(self, body: dict[str, Any]) -> None:
        return None

    def next_wake(self) -> datetime | None:
        return None

    def is_busy(self) -> bool:
        return False

    def snapshot(self) -> Snapshot:
        raise RuntimeError("a closed activation writes nothing")

    def on_lost(self, reason: str) -> None:
        return None

    def on_shutdown(self) -> None:
        return None
