"""Celery 5 with the Redis broker, driven by the comparison protocol (``../PROTOCOL.md``).

Run with the peers' virtualenv::

    benchmarks/compare/.venv-peers/bin/python benchmarks/compare/systems/celery_redis.py \
        --scenario burst --jobs 5000 --redis-url redis://127.0.0.1:6379/5

Workers and beat run as child processes (``celery -A _celery_tasks worker|beat``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
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

QUEUE = "celery"  # the default queue: a Redis list of that name
# Worker setup for a 2-core machine. A job body is one datagram, so the cost is all in
# the worker's own message handling. Draining 20,000 queued jobs on this (shared) VM:
# one solo worker ~500-600/s at ~1.5 ms CPU/job, two solo workers (one per core)
# ~900-1,000/s at ~1.6 ms, threads -c 4 ~500/s at ~1.9 ms, prefork -c 2 ~350-400/s at
# ~2.4 ms (every job crosses a pipe to a pool process and back). Two solo nodes is the
# fastest and the cheapest per job. "pool,concurrency,nodes" in $ANU_CELERY_WORKER
# overrides it to re-check the choice.
POOL, CONCURRENCY, NODES = (os.environ.get("ANU_CELERY_WORKER") or "solo,1,2").split(",")


def start_workers(tree: Tree, work: Path, app: Any, tag: str) -> list[Any]:
    names = [f"anu{tag}{n}@bench" for n in range(int(NODES))]
    procs = [
        tree.spawn(
            [
                venv_bin("celery"),
                "-A",
                "_celery_tasks",
                "worker",
                "-n",
                name,
                "--pool",
                POOL,
                "--concurrency",
                CONCURRENCY,
                "--loglevel",
                "WARNING",
                # the optimizing guide's advice for throughput: no gossip/mingle/heartbeat
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--pidfile",
                "",
                "-Q",
                QUEUE,
            ],
            work / f"worker-{name.split('@')[0]}.log",
        )
        for name in names
    ]

    def all_up() -> bool:
        replies = app.control.ping(destination=names, timeout=0.3)
        return len(replies) == len(names)

    if not wait_until(all_up, 120, step=0.1):
        sys.exit("celery workers did not answer ping within 120 s")
    return procs


def submit(task: Any, app: Any, calls: Sequence[tuple[tuple[Any, ...], datetime | None]]) -> None:
    """One message per job over one producer, in kombu 5.7's ``Producer.batch()``.

    The batch sends the Redis LPUSHes in pipelines of 1,000 instead of one round trip
    each (measured ~1,900 vs ~1,550 submits/s alone on this VM); ``group(...)`` does
    the same publishes one by one plus group bookkeeping (~1,350/s). ``chunks`` would
    merge jobs into fewer tasks, which is not the same workload.
    """
    with app.producer_or_acquire() as producer, producer.batch(1000):
        for args, eta in calls:
            task.apply_async(args, eta=eta, producer=producer)


def main() -> None:
    args = parse_args(default_redis_db=5)
    os.environ["ANU_CELERY_BROKER"] = args.redis_url
    from _celery_tasks import app, record  # after the broker URL is set

    r = redis.Redis.from_url(args.redis_url)
    r.flushdb()
    work = Path(args.workdir)
    stop = stop_event()
    rcpu0, rmem0 = redis_cpu_s(r), redis_used_mb(r)
    tree = Tree()
    workers = start_workers(tree, work, app, "a")
    extra: dict[str, Any] = {
        "celery": __import__("celery").__version__,
        "worker": f"{NODES} x --pool {POOL} --concurrency {CONCURRENCY}",
        "prefetch_multiplier": 128,
    }
    emit("ready")

    n = args.jobs
    if args.scenario == "burst":
        t0 = time.time()
        submit(record, app, [((f"b-{i}", 0.0), None) for i in range(n)])
        emit("submitted", t0=t0, t1=time.time())
    elif args.scenario == "timers":
        t0 = time.time()
        dues = [t0 + 2 + 10 * i / n for i in range(n)]
        submit(
            record,
            app,
            [((f"t-{i}", d), datetime.fromtimestamp(d, UTC)) for i, d in enumerate(dues)],
        )
        emit("submitted", t0=t0, t1=time.time())
    elif args.scenario == "recurring":
        anchor = anchor_ahead(3.0)  # beat's start-up (imports, n entries) takes ~1 s
        os.environ["ANU_CELERY_BEAT"] = f"{n} {anchor!r} {args.period!r}"
        t0 = time.time()
        tree.spawn(
            [
                venv_bin("celery"),
                "-A",
                "_celery_tasks",
                "beat",
                "--loglevel",
                "WARNING",
                "-s",
                str(work / "celerybeat-schedule"),
                "--pidfile",
                "",
            ],
            work / "beat.log",
        )
        emit("submitted", t0=t0, t1=time.time(), anchor=anchor)
        extra["recurring"] = (
            "celery beat, one interval entry per schedule (PersistentScheduler); an "
            "interval re-anchors on each send time, so lateness can accumulate per tick"
        )
    else:
        scale(args, app, record, r, tree, work, workers, extra, stop)

    stop.wait()
    extra["redis_cpu_s"] = round(redis_cpu_s(r) - rcpu0, 2)
    extra["redis_used_mb"] = round(redis_used_mb(r) - rmem0, 1)
    res = tree.finish()
    extra["cpu_s_reaped"], extra["cpu_s_sampled"] = res["cpu_s_reaped"], res["cpu_s_sampled"]
    r.flushdb()
    emit("done", cpu_s=res["cpu_s"], peak_rss_mb=res["peak_rss_mb"], extra=extra)


def scale(
    args: Any,
    app: Any,
    record: Any,
    r: Any,
    tree: Tree,
    work: Path,
    workers: list[Any],
    extra: dict[str, Any],
    stop: threading.Event,
) -> None:
    n = args.jobs
    t0 = time.time()
    span = 86400.0 - SCALE_FIRST_DUE_S
    calls = [
        ((f"s-{i}", d), datetime.fromtimestamp(d, UTC))
        for i, d in ((i, t0 + SCALE_FIRST_DUE_S + span * i / n) for i in range(n))
    ]
    submit(record, app, calls)
    del calls
    t1 = time.time()
    emit("submitted", t0=t0, t1=t1)
    # The workers pull every ETA message into their own memory (Redis keeps it in the
    # unacked hash meanwhile) and hold it there until due.
    drained = wait_until(lambda: r.llen(QUEUE) == 0, 1800, step=0.2)
    extra["first_load_s"] = round(time.time() - t1, 2) if drained else None
    extra["rss_mb_loaded"] = round(tree.live_rss_mb(), 1)
    # ready_s: a fresh set of workers taking the stored jobs up again. A warm shutdown
    # puts the unacked messages back on the queue.
    tq = time.time()
    for w in workers:
        tree.terminate(w, timeout=900)
    extra["warm_shutdown_s"] = round(time.time() - tq, 2)
    extra["restored_to_queue"] = int(r.llen(QUEUE))
    ts = time.time()
    start_workers(tree, work, app, "b")
    ok = wait_until(lambda: r.llen(QUEUE) == 0, 1800, step=0.2)
    extra["ready_s"] = round(time.time() - ts, 2) if ok else None
    extra["ready_s_means"] = (
        "fresh workers answering ping and holding every stored ETA message in memory "
        "(queue list drained)"
    )
    c0, i0 = tree.live_cpu(), time.monotonic()
    time.sleep(args.seconds)  # the idle window runs in full even if stop came already
    dt = time.monotonic() - i0
    extra["idle_s"] = round(dt, 2)
    extra["idle_cpu_pct"] = round(100 * (tree.live_cpu() - c0) / dt, 2)
    extra["rss_mb"] = round(tree.live_rss_mb(), 1)
    extra["rss_kb_per_job"] = round(extra["rss_mb"] * 1024 / n, 1)
    extra["scale_due"] = f"spread over t0+{SCALE_FIRST_DUE_S:.0f}s .. t0+24h"
    extra["note"] = (
        "Celery keeps ETA tasks in worker memory (not in Redis) until due; the Redis "
        "visibility_timeout is raised to 26 h so none is redelivered early; at ~10 KB of "
        "worker RSS per held job and ~1,000 submits/s, 1,000,000 jobs would need ~10 GB "
        "and ~20 min to submit: impractical on this 2-core VM, not run"
    )


if __name__ == "__main__":
    main()
