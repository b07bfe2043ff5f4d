"""The injected clock. Runtime code asks its clock for the time and for timers; it never
calls ``datetime.now()`` or ``time.time()`` itself, so tests can drive time
(:class:`anu_jobs.testing.FakeClock`) instead of sleeping."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from anu_jobs._gc import collector_paused

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


class _Timer(TimerHandle):
    """One callback of an :class:`_Instant`; ``instant`` is None once it ran or was
    cancelled."""

    __slots__ = ("callback", "instant")

    def __init__(self, callback: Callable[[], None], instant: _Instant) -> None:
        self.callback = callback
        self.instant: _Instant | None = instant

    def cancel(self) -> None:
        instant = self.instant
        if instant is not None:
            self.instant = None
            instant.live -= 1
            if instant.live == 0:
                instant.drop()


class _Instant:
    """The timers of one event loop due at one instant, run by one timer of the loop:
    a thousand jobs due at the same second cost the loop's heap one entry, not a
    thousand, and start one after the other in one pass (in the order they were set)."""

    __slots__ = ("handle", "key", "live", "loop", "table", "timers")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, table: dict[datetime, _Instant], key: datetime
    ) -> None:
        self.loop = loop
        self.table = table
        self.key = key
        self.timers: list[_Timer] = []
        self.live = 0
        self.handle: asyncio.TimerHandle | None = None

    def drop(self) -> None:
        """Every timer was cancelled: the loop's timer goes too."""
        if self.table.get(self.key) is self:
            del self.table[self.key]
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def fire(self) -> None:
        if self.table.get(self.key) is self:
            del self.table[self.key]  # a timer set now for this instant runs next pass
        self.handle = None
        with collector_paused(len(self.timers)):
            self._run()

    def _run(self) -> None:
        for timer in self.timers:
            if timer.instant is not self:
                continue  # cancelled
            timer.instant = None
            try:
                timer.callback()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # As the loop reports an exception of a callback of its own: the
                # callbacks after it still run.
                self.loop.call_exception_handler(
                    {
                        "message": f"Exception in timer callback {timer.callback!r}",
                        "exception": exc,
                    }
                )
        self.timers = []


class SystemClock(Clock):
    """The wall clock, with timers on the running event loop (millisecond precision).

    Timers due at the same instant share one timer of the loop (see :class:`_Instant`).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._instants: dict[datetime, _Instant] = {}

    def now(self) -> datetime:
        return datetime.now(UTC)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Another loop (tests run several in turn): instants of the old one keep
            # their own table.
            self._loop, self._instants = loop, {}
        table = self._instants
        instant = table.get(when)
        if instant is None:
            instant = table[when] = _Instant(loop, table, when)
            delay = (when - datetime.now(UTC)).total_seconds()
            instant.handle = loop.call_at(loop.time() + max(delay, 0.0), instant.fire)
        timer = _Timer(callback, instant)
        instant.timers.append(timer)
        instant.live += 1
        return timer
