"""RQ with Redis, driven by the comparison protocol (``../PROTOCOL.md``).

Run with the peers' virtualenv::

    benchmarks/compare/.venv-peers/bin/python benchmarks/compare/systems/rq_redis.py \
        --scenario burst --jobs 5000 --redis-url redis://127.0.0.1:6379/6

Workers run as a child ``rq worker-pool``; the recurring scenario adds RQ's cron
scheduler as a second child (``_rq_cron.py``).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import rq
from _redis_common import (
    SCALE_FIRST_DUE_S,
    Tree,
    anchor_ahead,
    emit,
    parse_args,
    redis_cpu_s,
    redis_used_mb,
    stop_event,
    venv_bin,
    wait_until,
)
from _rq_tasks import record
from rq import Queue, Worker

QUEUE = "anu"
BATCH = 1000  # jobs per Redis pipeline when submitting
# Worker setup for a 2-core machine: `rq worker-pool` with two SimpleWorkers. RQ's
# default Worker forks a work horse per job; its docs ("Notes on Performance") measure
# SimpleWorker ~6x faster for jobs that last milliseconds, which is all ours do. Two
# workers, one per core; every worker of a pool runs with the scheduler enabled, and
# one of them takes the scheduler lock (timers are enqueued from the scheduled registry
# by that scheduler, polling once a second).
WORKERS = 2
WORKER_CLASS = "rq.worker.SimpleWorker"


def scheduler_lock(r: Any) -> bytes | None:
    value: bytes | None = r.get(f"rq:scheduler-lock:{QUEUE}")
    return value


def start_pool(tree: Tree, work: Path, r: Any, url: str, tag: str) -> Any:
    old_lock = scheduler_lock(r)
    p = tree.spawn(
        [
            venv_bin("rq"),
            "worker-pool",
            "-u",
            url,
            "-n",
            str(WORKERS),
            "-w",
            WORKER_CLASS,
            "-l",
            "WARNING",
            QUEUE,
        ],
        work / f"worker-pool-{tag}.log",
    )

    def up() -> bool:
        lock = scheduler_lock(r)
        return Worker.count(connection=r) >= WORKERS and lock is not None and lock != old_lock

    if not wait_until(up, 180, step=0.05):
        sys.exit("rq workers (and scheduler) did not come up within 180 s")
    return p


def main() -> None:
    args = parse_args(default_redis_db=6)
    r = redis.Redis.from_url(args.redis_url)
    r.flushdb()
    q = Queue(QUEUE, connection=r)
    work = Path(args.workdir)
    stop = stop_event()
    rcpu0, rmem0 = redis_cpu_s(r), redis_used_mb(r)
    tree = Tree()
    pool = start_pool(tree, work, r, args.redis_url, "a")
    extra: dict[str, Any] = {
        "rq": rq.__version__,
        "worker": f"rq worker-pool -n {WORKERS} -w {WORKER_CLASS} (scheduler in a worker)",
    }
    emit("ready")

    n = args.jobs
    if args.scenario == "burst":
        t0 = time.time()
        for lo in range(0, n, BATCH):
            q.enqueue_many(
                [
                    Queue.prepare_data(record, (f"b-{i}", 0.0), result_ttl=0)
                    for i in range(lo, min(n, lo + BATCH))
                ]
            )
        emit("submitted", t0=t0, t1=time.time())
    elif args.scenario == "timers":
        t0 = time.time()
        schedule(q, r, [(f"t-{i}", t0 + 2 + 10 * i / n) for i in range(n)])
        emit("submitted", t0=t0, t1=time.time())
        extra["timers"] = (
            "RQ keeps scheduled jobs in a sorted set scored by whole seconds (the due time "
            "truncated) and its scheduler moves due ones to the queue once a second, so a "
            "job can start up to 1 s before its due time and ~1 s after"
        )
    elif args.scenario == "recurring":
        if args.period != int(args.period) or args.period < 1:
            emit("unsupported", why="RQ cron intervals are whole seconds")
            stop.wait()
            res = tree.finish()
            emit("done", cpu_s=res["cpu_s"], peak_rss_mb=res["peak_rss_mb"], extra=extra)
            return
        anchor = anchor_ahead(3.0)
        t0 = time.time()
        tree.spawn(
            [
                sys.executable,
                str(Path(__file__).with_name("_rq_cron.py")),
                args.redis_url,
                QUEUE,
                str(n),
                repr(anchor),
                repr(args.period),
            ],
            work / "cron.log",
        )
        emit("submitted", t0=t0, t1=time.time(), anchor=anchor)
        extra["recurring"] = (
            "rq.cron.CronScheduler, one interval job per schedule, started at the anchor; "
            "an interval re-anchors on each enqueue time"
        )
    else:
        scale(args, q, r, tree, work, pool, extra, rmem0)

    stop.wait()
    extra["redis_cpu_s"] = round(redis_cpu_s(r) - rcpu0, 2)
    extra["redis_used_mb"] = round(redis_used_mb(r) - rmem0, 1)
    res = tree.finish()
    extra["cpu_s_reaped"], extra["cpu_s_sampled"] = res["cpu_s_reaped"], res["cpu_s_sampled"]
    r.flushdb()
    emit("done", cpu_s=res["cpu_s"], peak_rss_mb=res["peak_rss_mb"], extra=extra)


def schedule(q: Queue, r: Any, jobs: list[tuple[str, float]]) -> None:
    """``enqueue_at`` for each job, sent in pipelines of ``BATCH``."""
    for lo in range(0, len(jobs), BATCH):
        with r.pipeline() as pipe:
            for job_id, due in jobs[lo : lo + BATCH]:
                q.enqueue_at(
                    datetime.fromtimestamp(due, UTC),
                    record,
                    job_id,
                    due,
                    result_ttl=0,
                    pipeline=pipe,
                )
            pipe.execute()


def scale(
    args: Any,
    q: Queue,
    r: Any,
    tree: Tree,
    work: Path,
    pool: Any,
    extra: dict[str, Any],
    rmem0: float,
) -> None:
    n = args.jobs
    t0 = time.time()
    span = 86400.0 - SCALE_FIRST_DUE_S
    schedule(q, r, [(f"s-{i}", t0 + SCALE_FIRST_DUE_S + span * i / n) for i in range(n)])
    emit("submitted", t0=t0, t1=time.time())
    extra["rss_mb_loaded"] = round(tree.live_rss_mb(), 1)
    # ready_s: a fresh worker pool (with its scheduler) over the stored jobs, which stay
    # in Redis (one hash per job plus the scheduled registry) until due.
    tq = time.time()
    tree.terminate(pool, timeout=120)
    extra["warm_shutdown_s"] = round(time.time() - tq, 2)
    ts = time.time()
    start_pool(tree, work, r, args.redis_url, "b")
    extra["ready_s"] = round(time.time() - ts, 2)
    extra["ready_s_means"] = "fresh worker pool registered and its scheduler holding the lock"
    extra["stored"] = int(r.zcard(f"rq:scheduled:{QUEUE}"))
    c0, i0 = tree.live_cpu(), time.monotonic()
    time.sleep(args.seconds)  # the idle window runs in full even if stop came already
    dt = time.monotonic() - i0
    extra["idle_s"] = round(dt, 2)
    extra["idle_cpu_pct"] = round(100 * (tree.live_cpu() - c0) / dt, 2)
    extra["rss_mb"] = round(tree.live_rss_mb(), 1)
    extra["redis_mb_stored"] = round(redis_used_mb(r) - rmem0, 1)
    extra["scale_due"] = f"spread over t0+{SCALE_FIRST_DUE_S:.0f}s .. t0+24h"


if __name__ == "__main__":
    main()
