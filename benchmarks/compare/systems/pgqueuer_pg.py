"""pgqueuer (PostgreSQL job queue) under the comparison protocol.

Configuration, documented so that it can be judged:

- asyncpg connections (pgqueuer's primary driver): one for the worker
  (``PgQueuer(AsyncpgDriver(conn))``), one for the producer (``Queries``), as a separate
  client would; the tables installed with ``Queries.install()`` in the round's fresh
  database.
- The worker: ``PgQueuer.run()`` with its defaults (``batch_size=10``, no cap on
  concurrent tasks, LISTEN/NOTIFY wake-ups); async entrypoints share the event loop.
- Submission: ``Queries.enqueue`` with lists (one statement per call), 10,000 jobs per
  call; one-time jobs due later get ``execute_after`` (a delay from the database's
  ``now()``, computed just before each call).
- Recurring: pgqueuer's schedules are cron expressions registered per (entrypoint,
  expression) with ``@pgq.schedule``, so each of the N schedules is an entrypoint of its
  own with ``* * * * * */P`` (croniter's 6th field: seconds). The scheduled function gets
  no tick time; it records the latest tick due at its start (``_common.tick_of``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import _common as c
import asyncpg
from pgqueuer import PgQueuer, Queries
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job, Schedule

CHUNK = 10_000


def _worker_app(conn: Any) -> PgQueuer:
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        assert job.payload is not None
        job_id, due = job.payload.decode().split(" ")
        c.record(job_id, float(due))

    return pgq


def _tick(job_id: str, anchor: float, period: float) -> Callable[[Schedule], Awaitable[None]]:
    async def fire(schedule: Schedule) -> None:
        k = c.tick_of(anchor, period, time.time())
        c.record(f"{job_id}@{k}", anchor + k * period)

    return fire


async def _enqueue(q: Queries, prefix: str, dues: list[float] | None, n: int) -> None:
    for start in range(0, n, CHUNK):
        idx = range(start, min(n, start + CHUNK))
        now = time.time()
        payloads: list[bytes | None] = [
            f"{prefix}-{i} {dues[i] if dues else 0.0!r}".encode() for i in idx
        ]
        after: list[timedelta | None] | None = (
            [timedelta(seconds=max(0.0, dues[i] - now)) for i in idx] if dues else None
        )
        await q.enqueue(["noop"] * len(idx), payloads, [0] * len(idx), after)


async def _stop(pgq: PgQueuer, task: asyncio.Task[None]) -> None:
    pgq.shutdown.set()
    try:
        await asyncio.wait_for(task, 30)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _scale_phase(url: str, seconds: float) -> dict[str, float]:
    """A fresh worker on the stored jobs. pgqueuer loads no schedule at start: ready_s is
    connecting and starting the worker."""
    t0 = time.perf_counter()
    conn = await asyncpg.connect(url)
    pgq = _worker_app(conn)
    task = asyncio.create_task(pgq.run())
    await asyncio.sleep(0)
    ready = time.perf_counter() - t0
    meter = c.IdleMeter()
    await asyncio.sleep(seconds)
    res = meter.result()
    await _stop(pgq, task)
    await conn.close()
    return {"ready_s": ready, **res}


async def main_async() -> None:
    logging.basicConfig(level=logging.WARNING)
    args = c.parse_args()
    n, url = args.jobs, args.pg_url
    if args.scenario == "recurring" and (args.period < 1 or 60 % args.period):
        c.unsupported("cron periods are whole seconds dividing 60")
    wconn = await asyncpg.connect(url)
    pconn = await asyncpg.connect(url)
    producer = Queries(AsyncpgDriver(pconn))
    await producer.install()
    pgq = _worker_app(wconn)
    fields: dict[str, float] = {}
    anchor = 0.0
    if args.scenario == "recurring":
        # schedules are declared in code, before the scheduler starts: "submission" is
        # their registration, and the scheduler's start stores them
        anchor = c.anchor(args.period)
        fields["anchor"] = anchor
        t0 = time.time()
        cron = f"* * * * * */{int(args.period)}"
        for i in range(n):
            pgq.schedule(f"r-{i}", cron)(_tick(f"r-{i}", anchor, args.period))
    task = asyncio.create_task(pgq.run())
    await asyncio.sleep(0.2)  # let the worker connect and listen
    c.emit("ready")
    if args.scenario != "recurring":
        t0 = time.time()
    if args.scenario == "burst":
        await _enqueue(producer, "b", None, n)
    elif args.scenario == "timers":
        await _enqueue(producer, "t", c.timer_dues(n, t0, args.span), n)
    elif args.scenario == "scale":
        await _enqueue(producer, "s", c.scale_dues(n, t0), n)
    c.emit("submitted", t0=t0, t1=time.time(), **fields)
    await c.wait_stop_async()
    await _stop(pgq, task)
    await wconn.close()
    await pconn.close()
    extra = await _scale_phase(url, args.seconds) if args.scenario == "scale" else {}
    c.done(**extra)


if __name__ == "__main__":
    asyncio.run(main_async())
