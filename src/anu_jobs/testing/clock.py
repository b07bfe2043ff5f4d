"""A clock that tests (and users' own tests) drive by hand."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from anu_jobs.clock import Clock, TimerHandle, ensure_utc

__all__ = ["FakeClock"]


class _FakeTimer(TimerHandle):
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock(Clock):
    """Time stands still until the test moves it with :meth:`advance` or :meth:`set`.

    Timers whose time has come run in time order as the clock passes them; between
    timers the event loop gets a few turns so that tasks they wake can react.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = ensure_utc(start) if start else datetime(2030, 1, 1, tzinfo=UTC)
        self._timers: list[tuple[datetime, int, _FakeTimer, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._elapsed = 0.0  # what monotonic() reports: forward moves only, not jumps

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        """Seconds the clock was moved forward by :meth:`set` and :meth:`advance`
        (:meth:`jump` moves :meth:`now` only, as a step of a real clock would)."""
        return self._elapsed

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer()
        if when <= self._now:
            loop = asyncio.get_running_loop()

            def run() -> None:
                if not timer.cancelled:
                    callback()

            loop.call_soon(run)
            return timer
        heapq.heappush(self._timers, (when, next(self._seq), timer, callback))
        return timer

    @property
    def next_timer(self) -> datetime | None:
        """When the earliest pending timer fires, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def set(self, when: datetime) -> None:
        """Move the clock to ``when``, firing every timer due on the way (forwards only)."""
        when = ensure_utc(when)
        while self._timers and self._timers[0][0] <= when:
            at, _, timer, callback = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._move_to(at)
            callback()
            await _settle()
        self._move_to(when)
        await _settle()

    def _move_to(self, when: datetime) -> None:
        if when > self._now:
            self._elapsed += (when - self._now).total_seconds()
            self._now = when

    async def advance(self, seconds: float | timedelta) -> None:
        """Move the clock forward by ``seconds``, firing every timer due on the way."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        await self.set(self._now + delta)

    def jump(self, when: datetime) -> None:
        """Set the time without firing timers (a clock jump, forwards or backwards)."""
        self._now = ensure_utc(when)


async def _settle(turns: int = 5) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)
