"""Passes over many grains at once run with the cyclic garbage collector paused.

A silo does much of its work in passes: the timers of one instant, the turns owed to the
attempts launched then, the writes of one transaction. What such a pass allocates
outlives it (tasks, runs, snapshots waiting for their commit), so a collection in the
middle of it frees nothing, yet it scans everything the pass made so far, and it delays
every job still to start in that pass. Pausing the collector for the pass leaves the
collections to the allocations after it. The pause is process-wide while it lasts, and
it lasts one pass of the event loop's callbacks (no job code runs in it); a collector the
application disabled stays disabled.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MIN_PASS", "collector_paused"]

#: passes over fewer items than this run as they are
MIN_PASS = 16


@contextmanager
def collector_paused(items: int) -> Iterator[None]:
    """Pause the collector for a pass over ``items`` items, if it is on and
    ``items > MIN_PASS``."""
    paused = items > MIN_PASS and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
