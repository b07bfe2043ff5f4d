"""anu-jobs under the comparison protocol: one silo in this process, default options.

Submission is ``client.schedule_many`` (one transaction per 10,000 jobs), with ``Once``
triggers for one-time jobs and ``Every(period, start=anchor)`` for recurring ones. The
job is an ``async`` no-op that reports its execution to the ledger. The silo runs with
its defaults (``use_concurrency`` 100, ``lookahead`` 500 ms, ``claim_batch`` 500); on
SQLite the store is the embedded default (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import _common as c

from anu_jobs import Every, Job, JobContext, JobSpec, Once, SiloBuilder


class _Run:
    scenario = ""
    anchor = 0.0
    period = 1.0


class NoopJob(Job):
    """Reports itself to the ledger; nothing else."""

    async def execute(self, ctx: JobContext) -> None:
        if _Run.scenario == "burst":
            c.record(ctx.job_id, 0.0)
        elif _Run.scenario == "recurring":
            due = ctx.scheduled_for.timestamp()
            c.record(f"{ctx.job_id}@{round((due - _Run.anchor) / _Run.period)}", due)
        else:
            c.record(ctx.job_id, ctx.scheduled_for.timestamp())


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _silo(url: str) -> SiloBuilder:
    return SiloBuilder().use_storage(url).use_jobs(NoopJob)


async def _scale_phase(url: str, seconds: float) -> dict[str, float]:
    """A fresh silo on the stored jobs: its start time, then its idle cost."""
    silo = _silo(url).build()
    t0 = time.perf_counter()
    async with silo:
        ready = time.perf_counter() - t0
        meter = c.IdleMeter()
        await asyncio.sleep(seconds)
        res = meter.result()
    return {"ready_s": ready, **res}


async def main_async(url: str) -> None:
    args = c.parse_args()
    _Run.scenario, _Run.period = args.scenario, args.period
    n = args.jobs
    silo = _silo(url).build()
    extra: dict[str, float] = {}
    async with silo:
        client = silo.client
        c.emit("ready")
        fields: dict[str, float] = {}
        if args.scenario == "burst":
            specs = [JobSpec(NoopJob, job_id=f"b-{i}", trigger=Once(at=_at(0))) for i in range(n)]
            t0 = time.time()
            await client.schedule_many(specs)
        elif args.scenario == "timers":
            t0 = time.time()
            dues = c.timer_dues(n, t0, args.span)
            await client.schedule_many(
                JobSpec(NoopJob, job_id=f"t-{i}", trigger=Once(at=_at(d)))
                for i, d in enumerate(dues)
            )
        elif args.scenario == "recurring":
            _Run.anchor = c.anchor(args.period)
            every = Every(timedelta(seconds=args.period), start=_at(_Run.anchor))
            t0 = time.time()
            await client.schedule_many(
                JobSpec(NoopJob, job_id=f"r-{i}", trigger=every) for i in range(n)
            )
            fields["anchor"] = _Run.anchor
        else:
            t0 = time.time()
            dues = c.scale_dues(n, t0)
            await client.schedule_many(
                JobSpec(NoopJob, job_id=f"s-{i}", trigger=Once(at=_at(d)))
                for i, d in enumerate(dues)
            )
        c.emit("submitted", t0=t0, t1=time.time(), **fields)
        await c.wait_stop_async()
        writer = silo.runtime.writer
        extra = {"commits": writer.commits, "writes": writer.writes}
    if args.scenario == "scale":
        extra |= await _scale_phase(url, args.seconds)
    c.done(**extra)


def main(url: str) -> None:
    asyncio.run(main_async(url))
