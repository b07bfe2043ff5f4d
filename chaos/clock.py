"""A silo's clock that the soak can jump forward and backward while the silo runs.

:class:`ChaosClock` is the system clock plus an offset. The soak writes the new offset
(seconds, a decimal number) to the silo's offset file and sends the process SIGUSR1, whose
handler reads the file; SIGUSR2 sets the offset back to zero. Timers are armed on the
event loop's monotonic clock from the offset in force when they are armed, as a real
clock step would leave them.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from anu_jobs.clock import SystemClock, TimerHandle

__all__ = ["ChaosClock"]


class _Timer(TimerHandle):
    __slots__ = ("_handle",)

    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self._handle = handle

    def cancel(self) -> None:
        self._handle.cancel()


class ChaosClock(SystemClock):
    """``now()`` is the wall clock plus :attr:`offset` seconds."""

    def __init__(self, offset_file: Path | None = None) -> None:
        self.offset = 0.0
        self.offset_file = offset_file
        self.jumps = 0

    def install(self) -> None:
        """Read the offset file now and on every SIGUSR1; reset to zero on SIGUSR2."""
        self.reload()
        signal.signal(signal.SIGUSR1, self._on_reload)
        signal.signal(signal.SIGUSR2, self._on_reset)

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload()

    def _on_reset(self, signum: int, frame: FrameType | None) -> None:
        self.set_offset(0.0)

    def reload(self) -> None:
        if self.offset_file is None:
            return
        try:
            text = self.offset_file.read_text().strip()
        except OSError:
            return
        try:
            self.set_offset(float(text))
        except ValueError:
            return

    def set_offset(self, seconds: float) -> None:
        if seconds != self.offset:
            self.jumps += 1
        self.offset = seconds

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        delay = (when - self.now()).total_seconds()
        return _Timer(loop.call_at(loop.time() + max(delay, 0.0), callback))
