"""The seam between the grain runtime and what it hosts.

The runtime knows grains only through :class:`GrainLogic`; a grain knows its runtime
only through :class:`GrainHost`. Every ``GrainLogic`` method is one *turn*: it runs on
the event loop, to the end, never concurrently with another turn of the same grain
(Orleans' turn-based concurrency), so a grain's state needs no locks.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anu_jobs.clock import Clock
from anu_jobs.storage.base import ControlMessage, RunRecord, StateEnvelope

__all__ = ["GrainFactory", "GrainHost", "GrainLogic", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a grain wants stored: state (None deletes the grain), stage, reminder and the
    run records that changed since the last snapshot."""

    stage: str
    state: dict[str, Any] | None
    due_at: datetime | None
    runs: tuple[RunRecord, ...] = ()
    finished_runs: tuple[str, ...] = ()  # ids of runs that reached a terminal stage


class GrainHost(ABC):
    """What an activation offers its grain."""

    job_id: str
    silo_id: str
    clock: Clock
    #: the epoch of the lease the grain is hosted under (0: none)
    epoch: int = 0

    @property
    @abstractmethod
    def accepting(self) -> bool:
        """Whether the grain may start new work (attempts). False once the silo stops:
        work not yet started stays on record for the next silo."""

    @abstractmethod
    def save(self) -> asyncio.Future[None]:
        """Ask for the grain's state to be written; the future resolves once it is durable
        (or fails with :class:`~anu_jobs.errors.LeaseLostError`). Writes coalesce."""

    @abstractmethod
    def reschedule(self) -> None:
        """Re-arm the wake-up timer from :meth:`GrainLogic.next_wake`."""

    @abstractmethod
    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run background work that belongs to this activation (an attempt)."""

    @abstractmethod
    def run_slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one of the silo's concurrency slots while an attempt runs."""

    def take_slot(self) -> bool:
        """Take one of the silo's concurrency slots now if one is free (give it back
        with :meth:`give_slot`)."""
        return False

    def give_slot(self) -> None:
        """Give back a slot taken with :meth:`take_slot`."""
        raise RuntimeError("this host has no slots to give back")

    def lease_fresh(self) -> bool:
        """Whether the lease is certainly held now and for a while yet, so that an
        attempt put on record ahead of time may start before its next write lands."""
        return False

    @abstractmethod
    def turn(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` as a turn of this grain (from a task or a timer), then let the runtime
        decide whether the activation stays or goes idle."""


class GrainLogic(ABC):
    """A grain's behaviour."""

    job_type: str

    @abstractmethod
    def on_activate(self, control: Sequence[ControlMessage]) -> None:
        """The activation started (lease taken); apply pending control messages."""

    @abstractmethod
    def on_wake(self) -> None:
        """The wake-up time came (a fire, a retry)."""

    @abstractmethod
    def on_control(self, body: dict[str, Any]) -> None:
        """A request (cancel, pause, trigger…) arrived."""

    @abstractmethod
    def next_wake(self) -> datetime | None:
        """When :meth:`on_wake` should run next; None for never."""

    @abstractmethod
    def is_busy(self) -> bool:
        """Whether work is in flight, so the activation must not be collected."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """The write to make now."""

    @abstractmethod
    def on_lost(self, reason: str) -> None:
        """The lease is gone: stop all work at once and never write again."""

    @abstractmethod
    def on_shutdown(self) -> None:
        """The silo is stopping: interrupt running work so that it is retried later."""

    def launch_due(self) -> bool:
        """The wake-up time came: start what is due at once, ahead of the turn that
        records it, if the grain can (its record is owed: the host runs :meth:`on_wake`
        before any other turn of the grain). True if it did."""
        return False


GrainFactory = Callable[[GrainHost, StateEnvelope], GrainLogic]
