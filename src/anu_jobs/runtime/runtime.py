"""The silo's grain runtime: membership, claims, activations, leases, notices."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from anu_jobs._gc import collector_paused
from anu_jobs.clock import Clock
from anu_jobs.runtime.activation import Activation
from anu_jobs.runtime.grain import GrainFactory
from anu_jobs.runtime.writer import WriteBatcher
from anu_jobs.storage.base import (
    ControlMessage,
    LeaseToken,
    Notice,
    SiloInfo,
    StateEnvelope,
    Storage,
)

__all__ = ["RuntimeOptions", "SiloRuntime"]

log = logging.getLogger("anu_jobs.runtime")

#: claims activated between two yields to the event loop
_ACTIVATE_SLICE = 16


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Tuning of a silo's runtime; the defaults suit most deployments.

    - ``max_concurrency``: attempts running at once in this silo.
    - ``claim_batch``: most jobs claimed per transaction.
    - ``lookahead``: fires due this soon are claimed ahead, then started on the dot.
    - ``keepalive``: an activation whose next fire is this near stays activated
      (timers in memory, no claim round trip); further ones are released.
    - ``lease_ttl``: how long a lease lasts unless renewed (renewed every third of it,
      by this process's steady clock). The store, not this silo, says when it has lapsed.
    - ``heartbeat``: how often the silo reports itself alive; ``dead_after`` missed
      heartbeats for this long (by the store's clock) and other silos declare it dead
      and take its jobs.
    - ``poll_interval``: the slow fallback poll for work that no notice announced.
    """

    max_concurrency: int = 100
    claim_batch: int = 500
    lookahead: timedelta = timedelta(milliseconds=500)
    keepalive: timedelta = timedelta(seconds=15)
    lease_ttl: timedelta = timedelta(seconds=10)
    heartbeat: timedelta = timedelta(seconds=1)
    dead_after: timedelta = timedelta(seconds=5)
    poll_interval: timedelta = timedelta(seconds=1)
    maintenance_interval: timedelta = timedelta(seconds=60)


class _Slots:
    """The silo's concurrency limit: an async context manager, and a slot taken at once
    or not at all (:meth:`try_take`, for an attempt launched on the dot). A slot given
    back goes to the longest waiter first."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    def give(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes to it
                return
        self._free += 1

    async def __aenter__(self) -> None:
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot, but cancelled before it could use it
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.give()


class SiloRuntime:
    """Hosts grain activations for one silo process.

    The claim loop takes due jobs' leases in batches and activates them; activations
    keep their grain's timers in memory while their next fire is near; the write batcher
    group-commits their state; leases are renewed in batches; notices from the store
    wake the claim loop and deliver control messages; a slow poll covers lost notices.
    """

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        factory: GrainFactory,
        options: RuntimeOptions | None = None,
        maintenance: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.options = options or RuntimeOptions()
        self.silo_id = _new_silo_id()
        self.generation = 1
        self._factory = factory
        self._maintenance = maintenance
        self.activations: dict[str, Activation] = {}
        # job id -> clock.monotonic() when the request that last set its lease's expiry
        # (a claim or a renewal) was sent: the store's expiry is at least lease_ttl later.
        self._confirmed: dict[str, float] = {}
        self._busy: set[str] = set()
        # clock.monotonic() when the last heartbeat the store accepted was sent
        self._alive_at: float | None = None
        # How long a confirmed lease, and an accepted heartbeat, count as fresh (seconds).
        self._fresh_lease = self.options.lease_ttl.total_seconds() / 2
        self._fresh_alive = self.options.dead_after.total_seconds() / 2
        self.writer = WriteBatcher(storage)
        self.slots = _Slots(self.options.max_concurrency)
        self._wake = asyncio.Event()
        self._capacity = asyncio.Event()
        self._control_poke = asyncio.Event()
        self._stop = asyncio.Event()
        self._drained = asyncio.Event()
        self._claiming = False
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._remove_listener: Callable[[], None] | None = None
        self.fatal: BaseException | None = None
        self.claimed = 0
        # Activations that launched an attempt on the dot and still owe its record.
        self._owing: list[Activation] = []

    @property
    def claiming(self) -> bool:
        """Whether this silo claims due work now: from :meth:`start` until :meth:`stop`
        begins (it is already False while a stop drains), or until the cluster declared
        this silo dead."""
        return self._claiming

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        now, sent = self.clock.now(), self.clock.monotonic()
        await self.storage.register_silo(
            SiloInfo(self.silo_id, socket.gethostname(), os.getpid(), now, now)
        )
        self._alive_at = sent  # registering is the first heartbeat
        self._running = True
        self._claiming = True
        self._remove_listener = self.storage.add_listener(self._on_notice)
        self.writer.start()
        loop = asyncio.get_running_loop()
        for coro, name in (
            (self._claim_loop(), "claim"),
            (self._membership_loop(), "membership"),
            (self._renew_loop(), "renew"),
            (self._control_loop(), "control"),
            (self._maintenance_loop(), "maintenance"),
        ):
            self._tasks.append(loop.create_task(coro, name=f"anu-jobs-{name}"))
        log.info("silo %s started on %s", self.silo_id, self.storage.url)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop claiming, let running attempts finish for up to ``drain_timeout`` seconds,
        interrupt the rest (they are retried by the next silo), write everything and
        hand every lease back."""
        if not self._running:
            return
        self._claiming = False
        self._wake.set()
        try:
            await self.storage.set_silo_status(self.silo_id, "stopping", self.clock.now())
        except Exception as exc:
            log.warning("could not mark the silo stopping: %s", exc)
        if self._busy:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
            except TimeoutError:
                log.warning(
                    "%d attempts still running after the drain timeout; interrupting them",
                    len(self._busy),
                )
        for act in list(self.activations.values()):
            act.turn(act.logic.on_shutdown)
        pending = [t for act in self.activations.values() for t in act.tasks]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        for act in list(self.activations.values()):
            if act.alive:
                act.releasing = True
                act.save()
        await self.writer.stop()
        self._running = False
        self._stop.set()  # loops leave at their next pause, even if a cancel gets swallowed
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._remove_listener is not None:
            self._remove_listener()
        try:
            await self.storage.set_silo_status(self.silo_id, "stopped", self.clock.now())
        except Exception as exc:
            log.warning("could not mark the silo stopped: %s", exc)
        log.info("silo %s stopped", self.silo_id)

    # -- activations ------------------------------------------------------------------

    def hold_until(self) -> datetime:
        """Activations whose next wake-up is after this are released."""
        return self.clock.now() + self.options.keepalive

    def activate(
        self,
        lease: LeaseToken,
        envelope: StateEnvelope,
        control: Sequence[ControlMessage],
        confirmed: float | None = None,
    ) -> Activation:
        """Host a grain whose lease this silo took; ``confirmed``: the clock's
        :meth:`~anu_jobs.clock.Clock.monotonic` time when the request that took it was
        sent (now when not given)."""
        old = self.activations.get(envelope.job_id)
        if old is not None and old.alive:
            # This silo was paused past its own lease and claimed the job again: the old
            # activation is stale (its epoch is gone), so it stops before the new one starts.
            old.lose("the lease expired and this silo took the job again")
        act = Activation(self, lease, envelope, self._factory)
        self.activations[envelope.job_id] = act
        self._confirmed[envelope.job_id] = (
            self.clock.monotonic() if confirmed is None else confirmed
        )
        act.activate(control)
        return act

    def lease_fresh(self, job_id: str) -> bool:
        """Whether this silo certainly holds ``job_id``'s lease now and for a while yet:
        the request that last set its expiry, and the last heartbeat the store took, were
        both sent less than half a lease (half of ``dead_after``) ago on the steady clock.
        An attempt may then start before its record lands; after a pause of the process
        (a freeze, a long GC), it waits for the write that the store fences instead."""
        confirmed = self._confirmed.get(job_id)
        alive = self._alive_at
        if confirmed is None or alive is None:
            return False
        now = self.clock.monotonic()
        return now - confirmed < self._fresh_lease and now - alive < self._fresh_alive

    def settle_soon(self, act: Activation) -> None:
        """``act`` launched an attempt's code ahead of the turn that records it: run that
        turn once every attempt launched at this instant has started (two passes of the
        loop later: the launches' tasks take their first step in between)."""
        self._owing.append(act)
        if len(self._owing) == 1:
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._settle_owing)

    def _settle_owing(self) -> None:
        owing, self._owing = self._owing, []
        with collector_paused(len(owing)):
            for act in owing:
                act.settle()

    def note_busy(self, act: Activation, busy: bool) -> None:
        if busy:
            self._busy.add(act.job_id)
        elif act.job_id in self._busy:
            self._busy.discard(act.job_id)
            self._capacity.set()
            if not self._busy:
                self._drained.set()

    def deactivated(self, act: Activation) -> None:
        if self.activations.get(act.job_id) is act:
            del self.activations[act.job_id]
            self._confirmed.pop(act.job_id, None)
        if act.job_id in self._busy:
            self._busy.discard(act.job_id)
            self._capacity.set()
            if not self._busy:
                self._drained.set()

    def runs_finished(self, job_id: str, run_ids: Sequence[str]) -> None:
        """Runs of ``job_id`` ended: tell waiting clients (one notice per loop iteration)."""
        self._notify_later(Notice("run", job_id))

    _outbox: list[Notice] | None = None

    def _notify_later(self, notice: Notice) -> None:
        # One notify call per loop iteration, however many runs ended in it.
        if self._outbox is None:
            self._outbox = []
            asyncio.get_running_loop().call_soon(self._flush_notices)
        self._outbox.append(notice)

    def _flush_notices(self) -> None:
        notices, self._outbox = self._outbox or [], None
        if notices:
            task = asyncio.get_running_loop().create_task(self._safe_notify(notices))
            self._tasks.append(task)
            task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _safe_notify(self, notices: list[Notice]) -> None:
        try:
            await self.storage.notify(notices)
        except Exception as exc:
            log.debug("notify failed: %s", exc)

    # -- notices ----------------------------------------------------------------------

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind == "due":
            horizon = self.clock.now() + self.options.lookahead
            if notice.due_at is None or notice.due_at <= horizon:
                self._wake.set()
            else:
                self._wake_at(notice.due_at - self.options.lookahead)
        elif notice.kind == "control":
            if notice.job_id is not None and notice.job_id in self.activations:
                self._control_poke.set()
            else:
                self._wake.set()
        elif notice.kind == "changed":
            self._wake.set()
            if self.activations:
                self._control_poke.set()

    _next_wake: datetime | None = None

    def _wake_at(self, at: datetime) -> None:
        if self._next_wake is None or at < self._next_wake:
            self._next_wake = at
            self._wake.set()  # the claim loop re-plans its sleep

    # -- loops ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        opts = self.options
        backoff = 0.05
        while not self._stop.is_set():
            if not self._claiming:  # stopping, or rejoining after being declared dead
                await self._wait(self._wake, None)
                continue
            try:
                now = self.clock.now()
                room = 2 * opts.max_concurrency - len(self._busy)
                limit = min(opts.claim_batch, room)
                if limit <= 0:
                    self._capacity.clear()
                    await self._wait(self._capacity, None)
                    continue
                sent = self.clock.monotonic()
                claims = await self.storage.claim_due(
                    self.silo_id, now, now + opts.lookahead, limit, opts.lease_ttl
                )
                backoff = 0.05
                for i, claim in enumerate(claims):
                    if i and i % _ACTIVATE_SLICE == 0:
                        await asyncio.sleep(0)  # let timers due meanwhile fire on time
                    if not self._claiming:
                        # The silo began to stop meanwhile: hand back what it took.
                        await self._release_quietly([c.lease for c in claims[i:]])
                        break
                    self.claimed += 1
                    try:
                        self.activate(claim.lease, claim.envelope, claim.control, sent)
                    except Exception:
                        log.exception("job %s: activation failed", claim.lease.job_id)
                if len(claims) >= limit:
                    await asyncio.sleep(0)
                    continue
                nxt = await self.storage.next_due(self.clock.now())
                deadline = self.clock.now() + opts.poll_interval
                if nxt is not None:
                    deadline = min(deadline, nxt - opts.lookahead)
                if self._next_wake is not None:
                    deadline = min(deadline, self._next_wake)
                    self._next_wake = None
                await self._wait(self._wake, deadline)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("claiming failed, retrying in %.2fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _release_quietly(self, tokens: list[LeaseToken]) -> None:
        try:
            await self.storage.release_leases(tokens)
        except Exception as exc:  # they lapse at their expiry instead
            log.warning("could not hand back %d leases: %s", len(tokens), exc)

    async def _wait(self, event: asyncio.Event, deadline: datetime | None) -> None:
        """Wait for ``event`` or, if given, this clock's ``deadline``; clear the event."""
        if event.is_set():
            event.clear()
            return
        handle = self.clock.call_at(deadline, event.set) if deadline is not None else None
        try:
            await event.wait()
        finally:
            event.clear()
            if handle is not None:
                handle.cancel()

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` of the clock's time; False when the silo stops meanwhile.

        Loops rely on this, not only on task cancellation, to end: a store driver that
        turns a cancellation into its own error would otherwise keep a loop alive.
        """
        if self._stop.is_set():
            return False
        woke: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woke.done():
                woke.set_result(None)

        handle = self.clock.call_at(self.clock.now() + timedelta(seconds=seconds), wake)
        stop = asyncio.ensure_future(self._stop.wait())
        either: set[asyncio.Future[Any]] = {stop, woke}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            handle.cancel()
            stop.cancel()
            woke.cancel()
        return not self._stop.is_set()

    async def _rejoin(self, now: datetime) -> None:
        """The cluster declared this silo dead (it was frozen or cut off for too long):
        its leases are gone and its writes are fenced off. Drop every activation and join
        again as a new silo; a dead silo never comes back under its old identity."""
        old = self.silo_id
        self._claiming = False
        for act in list(self.activations.values()):
            act.lose("this silo was declared dead")
        self.silo_id = _new_silo_id()
        self.generation += 1
        sent = self.clock.monotonic()
        await self.storage.register_silo(
            SiloInfo(
                self.silo_id,
                socket.gethostname(),
                os.getpid(),
                now,
                now,
                generation=self.generation,
            )
        )
        log.error(
            "silo %s was declared dead by the cluster; dropped its activations and joined "
            "again as %s (generation %d)",
            old,
            self.silo_id,
            self.generation,
        )
        self._alive_at = sent
        if self._running and not self._stop.is_set():
            self._claiming = True
            self._wake.set()

    async def _membership_loop(self) -> None:
        opts = self.options
        while self._running:
            try:
                # The store stamps the heartbeat and judges the others' with its own clock,
                # so a silo whose clock is off neither looks dead nor kills the others.
                sent = self.clock.monotonic()
                if not await self.storage.heartbeat(self.silo_id):
                    self._alive_at = None
                    await self._rejoin(self.clock.now())
                    continue
                self._alive_at = sent
                dead = await self.storage.declare_dead(opts.dead_after, by=self.silo_id)
                if dead:
                    log.warning("declared dead: %s", ", ".join(dead))
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            if not await self._pause(opts.heartbeat.total_seconds()):
                return

    async def _renew_loop(self) -> None:
        """Renew every held lease each third of ``lease_ttl``, for ``lease_ttl`` from the
        store's time. The pauses are timers, which run on the process's steady clock, so
        a step of this silo's wall clock neither hurries nor delays them."""
        opts = self.options
        every = opts.lease_ttl.total_seconds() / 3
        while self._running:
            if not await self._pause(every):
                return
            acts = [a for a in self.activations.values() if a.alive]
            if not acts:
                continue
            sent = self.clock.monotonic()
            try:
                lost = await self.storage.renew_leases([a.lease for a in acts], opts.lease_ttl)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)
                self._drop_lapsing(every)
                continue
            for token in lost:
                act = self.activations.get(token.job_id)
                if act is not None and act.lease == token:
                    log.warning("job %s: lease lost to another silo", token.job_id)
                    act.lose("the lease was taken over by another silo")
            for act in acts:
                if act.alive and self.activations.get(act.job_id) is act:
                    self._confirmed[act.job_id] = sent

    def _drop_lapsing(self, every: float) -> None:
        """A renewal failed. The store lets a lease lapse ``lease_ttl`` (by its clock)
        after the request that last set it; an activation whose lease the next renewal
        might reach only after that (it is due in ``every``, and is given half as long
        again to get through) is lost now, before another silo may take its job over."""
        now = self.clock.monotonic()
        ttl = self.options.lease_ttl.total_seconds()
        for act in list(self.activations.values()):
            confirmed = self._confirmed.get(act.job_id, now)
            if act.alive and now - confirmed + 1.5 * every >= ttl:
                log.warning(
                    "job %s: lease not renewed for %.1fs, giving the job up", act.job_id,
                    now - confirmed,
                )  # fmt: skip
                act.lose("its lease could not be renewed in time")

    async def _control_loop(self) -> None:
        while self._running:
            await self._wait(self._control_poke, self.clock.now() + self.options.poll_interval)
            if not self._running:
                return
            if not self.activations:
                continue
            try:
                msgs = await self.storage.pending_control(self.silo_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading control messages failed: %s", exc)
                continue
            for msg in msgs:
                act = self.activations.get(msg.job_id)
                if act is not None and act.alive:
                    act.deliver(msg)

    async def _maintenance_loop(self) -> None:
        while self._running:
            if not await self._pause(self.options.maintenance_interval.total_seconds()):
                return
            if self._maintenance is None:
                continue
            try:
                await self._maintenance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("maintenance failed: %s", exc)


def _new_silo_id() -> str:
    """``host-pid-nonce``: unique per start, and per rejoin after being declared dead."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
