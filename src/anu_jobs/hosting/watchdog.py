"""``LoopWatchdog``: notices when something blocks a silo's event loop, and says what.

Every job, timer, lease renewal and heartbeat of a silo runs on one asyncio event loop.
An ``async def execute`` that calls blocking code (``time.sleep``, a synchronous HTTP
client, a long computation) holds that loop: for as long as it runs, nothing else in the
silo moves, and a loop held past ``dead_after`` gets the silo declared dead.

Nothing on the loop can see that happen, so the watchdog is a thread: every ``interval``
it posts a no-op to the loop and waits for it to run. When it waits longer than
``threshold`` it logs a warning naming the jobs whose attempts were running, the task that
held the loop and where in its code it was; when the loop answers again it logs how long
it was held. The per-attempt ``timeout`` still applies: an attempt that held the loop past
its deadline fails with ``JobTimeoutError`` once the loop is free (see ``grain.attempt``).

The watchdog measures real elapsed time (``time.monotonic``), not the silo's injected
clock: a loop is blocked in real time whatever a test's fake clock says.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

__all__ = ["LoopWatchdog"]

log = logging.getLogger("anu_jobs.watchdog")

#: how many innermost frames of the blocked loop's stack the warning shows
STACK_FRAMES = 6


class LoopWatchdog:
    """Watches one event loop from a daemon thread; see the module docstring.

    ``running`` is called on the watchdog's thread, while the loop may be blocked, and
    returns the ids of the jobs whose attempts are running; it must only read.
    ``lag`` is the latest measured delay of the loop (or, while it is blocked, how long
    it has been), ``max_lag`` the worst since start, ``stalls`` how many times it was
    held past ``threshold``: for metrics and health checks.
    """

    def __init__(
        self,
        threshold: float,
        *,
        running: Callable[[], Sequence[str]] | None = None,
        interval: float | None = None,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"the watchdog threshold must be positive, not {threshold}")
        self.threshold = threshold
        self.interval = interval if interval is not None else min(threshold / 2, 1.0)
        self._running = running
        self._stop = threading.Event()
        self._beat: threading.Event | None = None
        self._posted: float | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lag = 0.0
        self.max_lag = 0.0
        self.stalls = 0

    @property
    def lag(self) -> float:
        """Seconds the loop is behind: the last measure, or the current wait if longer."""
        posted = self._posted
        if posted is not None:
            return max(self._lag, time.monotonic() - posted)
        return self._lag

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start watching ``loop`` (the running loop by default); call it on that loop."""
        if self._thread is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="anu-jobs-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; returns once the thread has ended (at most about a second)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        beat = self._beat
        if beat is not None:
            beat.set()
        thread.join(timeout=max(self.threshold, 1.0) + 1.0)

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            beat = threading.Event()
            self._beat = beat
            posted = time.monotonic()
            self._posted = posted
            try:
                loop.call_soon_threadsafe(beat.set)
            except RuntimeError:  # the loop is closed
                return
            if not beat.wait(self.threshold):
                if self._stop.is_set():
                    return
                self.stalls += 1
                self._warn(time.monotonic() - posted)
                while not beat.wait(0.5):
                    if self._stop.is_set():
                        return
                held = time.monotonic() - posted
                if not self._stop.is_set():
                    log.warning("the event loop answers again after being held for %.2fs", held)
            self._lag = time.monotonic() - posted
            self._posted = None
            self.max_lag = max(self.max_lag, self._lag)
            self._stop.wait(self.interval)

    def _warn(self, held: float) -> None:
        jobs: Sequence[str] = ()
        if self._running is not None:
            try:
                jobs = self._running()
            except Exception as exc:  # read while the loop's own thread may change it
                log.debug("could not list the running jobs: %s", exc)
        task = self._task_name()
        log.warning(
            "the event loop has been blocked for %.2fs (watchdog threshold %gs): nothing "
            "else in this silo runs meanwhile (timers, heartbeats, other jobs). Running "
            "job attempts: %s. Holding the loop: %s, at:\n%s\nAn async job must not call "
            "blocking code; make execute a plain def (it then runs in a thread) or use "
            "asyncio.to_thread.",
            held,
            self.threshold,
            ", ".join(repr(j) for j in jobs) or "none",
            task,
            self._stack(),
        )

    def _task_name(self) -> str:
        loop = self._loop
        try:
            task = asyncio.current_task(loop) if loop is not None else None
        except RuntimeError:
            task = None
        if task is None:
            return "a callback, not a task"
        return f"task {task.get_name()!r}"

    def _stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread or -1)
        if frame is None:
            return "  (no stack)"
        lines = traceback.format_stack(frame)[-STACK_FRAMES:]
        return "".join(lines).rstrip()
