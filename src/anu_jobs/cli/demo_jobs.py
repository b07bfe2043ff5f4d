"""The sample jobs of ``anu-jobs demo``, and the silo builder that declares them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from anu_jobs import Job, JobContext, RetryPolicy, SiloBuilder

__all__ = [
    "CANCEL_ID",
    "MANUAL_JOBS",
    "CardCharge",
    "Heartbeat",
    "LongImport",
    "ReportBuilder",
    "SecondsCron",
    "demo_builder",
]

CANCEL_ID = "demo-import"


class Heartbeat(Job):
    """A quick recurring job (every 2 s)."""

    async def execute(self, ctx: JobContext) -> None:
        await asyncio.sleep(0.05)


class SecondsCron(Job):
    """A cron job with a seconds field (every 3 s)."""

    async def execute(self, ctx: JobContext) -> None:
        await asyncio.sleep(0.05)


class CardCharge(Job):
    """Always fails: retried twice with backoff (0.5 s, then 1 s), then compensated."""

    retry = RetryPolicy(max_retries=2, initial_delay=timedelta(seconds=0.5), backoff=2.0)

    async def execute(self, ctx: JobContext) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError(f"card declined (attempt {ctx.attempt})")

    async def compensate(self, ctx: JobContext) -> None:
        await asyncio.sleep(0.2)  # release the hold on the card
        ctx.logger.info("refunded after %s", ctx.error.type if ctx.error else "an error")


async def _work(ctx: JobContext, steps: int, step: float, what: str) -> None:
    for i in range(steps):
        ctx.cancellation.raise_if_cancelled()
        await asyncio.sleep(step)
        await ctx.report_progress((i + 1) / steps, f"{what} {i + 1}/{steps}")


class ReportBuilder(Job):
    """A long job (about 4 s) that reports its progress."""

    async def execute(self, ctx: JobContext) -> None:
        await _work(ctx, 16, 0.25, "page")


class LongImport(Job):
    """A long job (about 60 s) that the demo cancels mid-run."""

    async def execute(self, ctx: JobContext) -> None:
        await _work(ctx, 240, 0.25, "batch")


#: The demo's one-off jobs: declared with a manual trigger, fired by the demo at start.
MANUAL_JOBS: dict[str, type[Job]] = {
    "demo-charge": CardCharge,
    "demo-report": ReportBuilder,
    CANCEL_ID: LongImport,
}


def demo_builder(url: str) -> SiloBuilder:
    """A silo builder on ``url`` with the demo's five jobs declared.

    Declared jobs are upserted at every start without being reset, so the demo can run
    any number of times on one database.
    """
    builder = (
        SiloBuilder()
        .use_storage(url)
        .use_options(drain_timeout=2.0, cancel_grace=timedelta(seconds=1))
        .use_recurring_job(Heartbeat, timedelta(seconds=2), job_id="demo-every")
        .use_cron_job(SecondsCron, "*/3 * * * * *", job_id="demo-cron")
    )
    for job_id, cls in MANUAL_JOBS.items():
        builder.use_job(cls, job_id=job_id)
    return builder
