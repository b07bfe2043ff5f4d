"""APScheduler 3.x under the comparison protocol (shared by the SQLite and PostgreSQL scripts).

Configuration, documented so that it can be judged:

- ``BackgroundScheduler`` (the scheduler on a thread of its own, so that jobs run while
  the main thread is still adding them) with a ``SQLAlchemyJobStore`` (the persistent
  store APScheduler documents) on the given URL, and the default ``ThreadPoolExecutor``
  of 10 threads (the job is a plain function: it only sends a datagram).
- ``job_defaults``: ``misfire_grace_time=None`` (run a job however late it is; the
  default of 1 s would silently drop most of a 5,000 job burst) and ``coalesce=True``
  (a recurring job that fell behind runs once, as anu-jobs' default ``run_once``).
- Submission: APScheduler 3 has no batch API, so ``add_job`` in a loop (``date`` trigger
  for one-time jobs, ``interval`` trigger with ``start_date`` for recurring ones). Each
  ``add_job`` on a running scheduler is one INSERT and commit in the job store.
- The job function gets no scheduled time from APScheduler, so a recurring job records
  the latest tick due at its start (``_common.tick_of``) with that tick's due time.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import _common as c
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger


def one_time(job_id: str, due: float) -> None:
    c.record(job_id, due)


def recurring(job_id: str, anchor: float, period: float) -> None:
    k = c.tick_of(anchor, period, time.time())
    c.record(f"{job_id}@{k}", anchor + k * period)


def _scheduler(url: str) -> BackgroundScheduler:
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)},
        executors={"default": ThreadPoolExecutor(10)},
        job_defaults={"misfire_grace_time": None, "coalesce": True},
        timezone=UTC,
    )


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _scale_phase(url: str, seconds: float) -> dict[str, Any]:
    sched = _scheduler(url)
    t0 = time.perf_counter()
    sched.start()
    ready = time.perf_counter() - t0
    meter = c.IdleMeter()
    time.sleep(seconds)
    res = meter.result()
    sched.shutdown(wait=True)
    return {"ready_s": ready, **res}


def main(url: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = c.parse_args()
    n = args.jobs
    sched = _scheduler(url)
    sched.start()
    c.emit("ready")
    fields: dict[str, float] = {}
    t0 = time.time()
    if args.scenario == "burst":
        now = DateTrigger(run_date=_at(t0), timezone=UTC)
        for i in range(n):
            sched.add_job(one_time, now, args=[f"b-{i}", 0.0], id=f"b-{i}")
    elif args.scenario in ("timers", "scale"):
        prefix = "t" if args.scenario == "timers" else "s"
        dues = c.timer_dues(n, t0, args.span) if prefix == "t" else c.scale_dues(n, t0)
        for i, due in enumerate(dues):
            trig = DateTrigger(run_date=_at(due), timezone=UTC)
            sched.add_job(one_time, trig, args=[f"{prefix}-{i}", due], id=f"{prefix}-{i}")
    else:
        anchor = c.anchor(args.period)
        fields["anchor"] = anchor
        t0 = time.time()
        trig = IntervalTrigger(seconds=args.period, start_date=_at(anchor), timezone=UTC)
        for i in range(n):
            sched.add_job(recurring, trig, args=[f"r-{i}", anchor, args.period], id=f"r-{i}")
    c.emit("submitted", t0=t0, t1=time.time(), **fields)
    c.wait_stop_blocking()
    sched.shutdown(wait=True)
    extra = _scale_phase(url, args.seconds) if args.scenario == "scale" else {}
    c.done(**extra)
