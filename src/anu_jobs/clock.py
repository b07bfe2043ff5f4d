"""The injected clock. Runtime code asks its clock for the time and for timers; it never
calls ``datetime.now()`` or ``time.time()`` itself, so tests can drive time
(:class:`anu_jobs.testing.FakeClock`) instead of sleeping."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "SystemClock", "TimerHandle", "ensure_utc"]


def ensure_utc(value: datetime, what: str = "time") -> datetime:
    """Return ``value`` as an aware UTC datetime; naive datetimes are refused."""
    if value.tzinfo is UTC:
        return value  # what astimezone(UTC) returns for it, without its cost
    if value.tzinfo is None or value.utcoffset() is None:
        from anu_jobs.errors import InvalidScheduleError

        raise InvalidScheduleError(
            f"{what} {value.isoformat()} has no time zone; pass an aware datetime "
            "(for example datetime.now(UTC) or datetime(..., tzinfo=ZoneInfo('Europe/Zurich')))"
        )
    return value.astimezone(UTC)


class TimerHandle(ABC):
    """A pending timer; ``cancel()`` stops it from firing."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop the timer; cancelling a fired or cancelled timer does nothing."""


class Clock(ABC):
    """Where the runtime gets the time and its timers.

    Implementations must return aware UTC datetimes from :meth:`now` that never go
    backwards within one process unless the clock is deliberately set back (tests).
    """

    @abstractmethod
    def now(self) -> datetime:
        """The current time, aware and in UTC."""

    @abstractmethod
    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on the event loop once :meth:`now` reaches ``when``.

        A ``when`` in the past runs the callback on the next loop iteration.
        """

    def monotonic(self) -> float:
        """Seconds on a steady clock, for measuring how long something lasted (how long
        ago a lease was last confirmed): jumps of :meth:`now` do not move it. By default
        the running event loop's clock, which the loop's timers use too."""
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: datetime) -> None:
        """Return once :meth:`now` reaches ``when``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        handle = self.call_at(when, wake)
        try:
            await fut
        finally:
            handle.cancel()

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""
        await self.sleep_until(self.now() + timedelta(seconds=seconds))


class _LoopTimer(TimerHandle):
    __slots__ = ("_handle",)

    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self._handle = handle

    def cancel(self) -> None:
        self._handle.cancel()


class SystemClock(Clock):
    """The wall clock, with timers on the running event loop (millisecond precision)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        delay = (when - datetime.now(UTC)).total_seconds()
        return _LoopTimer(loop.call_at(loop.time() + max(delay, 0.0), callback))
