"""Job bodies for ``rq_redis.py``, imported by the RQ workers (``_rq_tasks.record``)."""

from __future__ import annotations

import math
import time

import ledger


def record(job_id: str, due: float) -> None:
    ledger.record(job_id, due)


def tick(i: int, anchor: float, period: float) -> None:
    """A cron tick of schedule ``r-i``: RQ passes no due time, so k is the last due time
    passed (the cron scheduler never enqueues early; a tick more than a period late
    counts as the next one, and the one it stood for as lost)."""
    k = math.floor((time.time() - anchor) / period)
    ledger.record(f"r-{i}@{k}", anchor + k * period)
