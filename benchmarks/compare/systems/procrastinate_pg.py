"""procrastinate (PostgreSQL task queue) under the comparison protocol.

Configuration, documented so that it can be judged:

- ``App(connector=PsycopgConnector(conninfo=url, max_size=10))``, its schema applied with
  ``schema_manager.apply_schema_async()`` in the round's fresh database.
- One worker in this process: ``run_worker_async(concurrency=10, listen_notify=True,
  fetch_job_polling_interval=1.0, install_signal_handlers=False)``; async tasks share the
  event loop, and 10 slots match the pool's 10 connections (each slot fetches its own
  jobs). A job deferred for later sends no notice when it comes due, so the worker finds
  it at its next poll: 1 s here (the default is 5 s), as anu-jobs' ``poll_interval``.
  Other options default (jobs are kept, ``delete_jobs="never"``).
- Submission: ``task.batch_defer_async(*kwargs)`` (one INSERT for the batch) for jobs due
  now. A batch shares its ``configure`` options, so jobs each due at their own time
  (timers, scale) are deferred one by one with ``configure(schedule_at=...)
  .defer_async(...)``, 10 at a time (the pool's size).
- Recurring: ``@app.periodic(cron="* * * * * */P", periodic_id=...)`` once per schedule
  (6-field cron, seconds last), registered before the worker starts, since the worker's
  periodic deferrer reads them at start. procrastinate passes each job its tick's
  ``timestamp`` (whole seconds), which is recorded as the due time. Periods must be whole
  seconds dividing 60.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import _common as c
from procrastinate import App, PsycopgConnector

CONCURRENCY = 10
_anchor = 0.0
_period = 1.0


def _app(url: str) -> App:
    return App(connector=PsycopgConnector(conninfo=url, min_size=1, max_size=CONCURRENCY))


def _register(app: App) -> tuple[Any, Any]:
    @app.task(name="noop")
    async def noop(job_id: str, due: float) -> None:
        c.record(job_id, due)

    @app.task(name="tick")
    async def tick(timestamp: int, job_id: str) -> None:
        k = round((timestamp - _anchor) / _period)
        c.record(f"{job_id}@{k}", float(timestamp))

    return noop, tick


def _worker(app: App) -> asyncio.Task[None]:
    return asyncio.create_task(
        app.run_worker_async(
            concurrency=CONCURRENCY,
            listen_notify=True,
            fetch_job_polling_interval=1.0,
            install_signal_handlers=False,
        )
    )


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)


async def _bounded(coros: list[Awaitable[Any]], width: int) -> None:
    for i in range(0, len(coros), width):
        await asyncio.gather(*coros[i : i + width])


async def _defer_at(task: Any, prefix: str, dues: list[float]) -> None:
    def one(i: int, due: float) -> Awaitable[Any]:
        at = datetime.fromtimestamp(due, UTC)
        return task.configure(schedule_at=at).defer_async(job_id=f"{prefix}-{i}", due=due)

    await _bounded([one(i, d) for i, d in enumerate(dues)], CONCURRENCY)


async def _scale_phase(url: str, seconds: float) -> dict[str, float]:
    """A fresh app and worker on the stored jobs. procrastinate loads no schedule at
    start: ready_s is opening the pool and starting the worker."""
    app = _app(url)
    _register(app)
    t0 = time.perf_counter()
    async with app.open_async():
        worker = _worker(app)
        await asyncio.sleep(0)
        ready = time.perf_counter() - t0
        meter = c.IdleMeter()
        await asyncio.sleep(seconds)
        res = meter.result()
        await _stop(worker)
    return {"ready_s": ready, **res}


async def main_async() -> None:
    global _anchor, _period
    logging.basicConfig(level=logging.WARNING)
    args = c.parse_args()
    n, url = args.jobs, args.pg_url
    _period = args.period
    if args.scenario == "recurring" and (args.period < 1 or 60 % args.period):
        c.unsupported("cron periods are whole seconds dividing 60")
    app = _app(url)
    noop, tick = _register(app)
    fields: dict[str, float] = {}
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        worker = None if args.scenario == "recurring" else _worker(app)
        await asyncio.sleep(0.2)  # let the worker connect and listen
        c.emit("ready")
        t0 = time.time()
        if args.scenario == "burst":
            await noop.batch_defer_async(*({"job_id": f"b-{i}", "due": 0.0} for i in range(n)))
        elif args.scenario == "timers":
            await _defer_at(noop, "t", c.timer_dues(n, t0, args.span))
        elif args.scenario == "scale":
            await _defer_at(noop, "s", c.scale_dues(n, t0))
        else:
            _anchor = c.anchor(args.period)
            fields["anchor"] = _anchor
            t0 = time.time()
            cron = f"* * * * * */{int(args.period)}"
            for i in range(n):
                app.periodic(cron=cron, periodic_id=f"r-{i}", task_kwargs={"job_id": f"r-{i}"})(
                    tick
                )
            worker = _worker(app)
        c.emit("submitted", t0=t0, t1=time.time(), **fields)
        await c.wait_stop_async()
        await _stop(worker)
    extra = await _scale_phase(url, args.seconds) if args.scenario == "scale" else {}
    c.done(**extra)


if __name__ == "__main__":
    asyncio.run(main_async())
