"""The Celery app and job bodies for ``celery_redis.py`` (imported by the worker and beat).

Configured from the environment the script sets for its children:
``ANU_CELERY_BROKER`` (the Redis URL), and for beat ``ANU_CELERY_BEAT`` =
``"<jobs> <anchor> <period>"``.
"""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime, timedelta

import ledger
from celery import Celery

app = Celery("anu_bench", broker=os.environ.get("ANU_CELERY_BROKER", "redis://127.0.0.1:6379/5"))
app.conf.update(
    # The ledger is the record: no result backend, nothing stored per task.
    task_ignore_result=True,
    # "Optimizing" guide: for many short tasks a large prefetch multiplier
    # (64 or 128) gives the most tasks/s.
    worker_prefetch_multiplier=128,
    worker_disable_rate_limits=True,
    # Redis redelivers a message not acked within the visibility timeout; an ETA task
    # waits unacked in the worker until due, so the timeout must exceed the longest
    # ETA (24 h in the scale scenario) or it runs twice (Celery's Redis caveats).
    broker_transport_options={"visibility_timeout": 26 * 3600},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    enable_utc=True,
)


@app.task(name="anu.record")  # type: ignore[untyped-decorator]
def record(job_id: str, due: float) -> None:
    ledger.record(job_id, due)


@app.task(name="anu.tick")  # type: ignore[untyped-decorator]
def tick(i: int, anchor: float, period: float) -> None:
    """A beat tick of schedule ``r-i``: beat passes no due time, so k is the last due
    time passed (beat never sends early; a tick more than a period late counts as the
    next one, and the one it stood for as lost)."""
    k = math.floor((time.time() - anchor) / period)
    ledger.record(f"r-{i}@{k}", anchor + k * period)


def _beat_schedule() -> dict[str, dict[str, object]]:
    spec = os.environ.get("ANU_CELERY_BEAT")
    if not spec:
        return {}
    n, anchor, period = spec.split()
    a, p = float(anchor), float(period)
    # An interval entry first runs one period after last_run_at; starting from
    # anchor - period makes the first run due at the anchor.
    first = datetime.fromtimestamp(a - p, UTC)
    return {
        f"r-{i}": {
            "task": "anu.tick",
            "schedule": timedelta(seconds=p),
            "args": (i, a, p),
            "last_run_at": first,
        }
        for i in range(int(n))
    }


app.conf.beat_schedule = _beat_schedule()
