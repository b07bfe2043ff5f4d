"""RQ's cron scheduler with the recurring scenario's schedules (a child of ``rq_redis.py``).

    python _rq_cron.py REDIS_URL QUEUE JOBS ANCHOR PERIOD

Registers one interval job per schedule (``CronScheduler.register``, RQ >= 2.5), then
starts the scheduler at the anchor: an interval job is enqueued as soon as the scheduler
starts and then every interval after its last enqueue.
"""

from __future__ import annotations

import logging
import sys
import time

from _rq_tasks import tick
from redis import Redis
from rq.cron import CronScheduler


def main() -> None:
    url, queue, jobs, anchor, period = sys.argv[1:]
    a, p = float(anchor), float(period)
    cron = CronScheduler(connection=Redis.from_url(url), logging_level=logging.WARNING)
    for i in range(int(jobs)):
        cron.register(
            tick, queue_name=queue, args=(i, a, p), interval=int(p), result_ttl=0, name=f"r-{i}"
        )
    time.sleep(max(0.0, a - time.time()))
    cron.start()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
