"""The job types of the soak's load. Every body notes its begin and end in the ledger.

- :class:`ChaosTick`: a short piece of work (one-time, interval and cron jobs).
- :class:`ChaosFlaky`: fails its first ``fail_first`` attempts, then succeeds.
- :class:`ChaosDoomed`: fails every attempt; once its retries are spent it compensates.
- :class:`ChaosLong`: runs until it is cancelled (by the canceller process).

Recurring jobs catch up every missed fire and queue one fire behind a run in flight, so
that every fire either runs or leaves a ``skipped`` record naming why.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from anu_jobs import Job, JobContext, MisfirePolicy, RetryPolicy
from chaos.ledger import LedgerWriter

__all__ = ["JOB_TYPES", "ChaosDoomed", "ChaosFailure", "ChaosFlaky", "ChaosLong", "ChaosTick"]

#: set by :mod:`chaos.silo` before the silo starts
LEDGER: LedgerWriter | None = None


class ChaosFailure(Exception):
    """The failure the flaky and doomed jobs raise on purpose."""


def _ledger() -> LedgerWriter:
    if LEDGER is None:
        raise RuntimeError("chaos.jobs.LEDGER is not set: run the jobs in chaos.silo")
    return LEDGER


def _param(ctx: JobContext, name: str, default: float) -> float:
    params: Any = ctx.params
    if isinstance(params, dict) and isinstance(params.get(name), int | float):
        return float(params[name])
    return default


async def _work(ctx: JobContext, kind: str, seconds: float, fail: bool) -> None:
    """Note the begin, work for ``seconds``, fail if told to, note the end."""
    ledger = _ledger()
    ledger.write("begin", kind, ctx)
    outcome, note = "interrupted", "-"
    try:
        await asyncio.sleep(seconds)
        if fail:
            outcome = "error"
            raise ChaosFailure(f"{kind} attempt {ctx.attempt} fails on purpose")
        outcome = "ok"
    except asyncio.CancelledError:
        if ctx.cancellation.is_cancelled:
            outcome, note = "cancelled", ctx.cancellation.reason or "-"
        raise
    finally:
        ledger.write("end", kind, ctx, outcome, note)


class _ChaosJob(Job):
    misfire = MisfirePolicy("catch_up")
    overlap = "queue_one"


class ChaosTick(_ChaosJob):
    async def execute(self, ctx: JobContext) -> None:
        await _work(ctx, "execute", _param(ctx, "work_ms", 50) / 1000, fail=False)


class ChaosFlaky(_ChaosJob):
    retry = RetryPolicy(max_retries=3, initial_delay=timedelta(milliseconds=300), backoff=2.0)

    async def execute(self, ctx: JobContext) -> None:
        fail = ctx.attempt <= _param(ctx, "fail_first", 1)
        await _work(ctx, "execute", _param(ctx, "work_ms", 50) / 1000, fail=fail)


class ChaosDoomed(_ChaosJob):
    retry = RetryPolicy(max_retries=2, initial_delay=timedelta(milliseconds=300), backoff=2.0)

    async def execute(self, ctx: JobContext) -> None:
        await _work(ctx, "execute", _param(ctx, "work_ms", 50) / 1000, fail=True)

    async def compensate(self, ctx: JobContext) -> None:
        await _work(ctx, "compensate", _param(ctx, "work_ms", 50) / 1000, fail=False)


class ChaosLong(_ChaosJob):
    async def execute(self, ctx: JobContext) -> None:
        ledger = _ledger()
        ledger.write("begin", "execute", ctx)
        outcome, note = "interrupted", "-"
        try:
            try:
                await asyncio.wait_for(ctx.cancellation.wait(), _param(ctx, "max_s", 900))
            except TimeoutError:
                outcome = "ok"
                return
            outcome, note = "cancelled", ctx.cancellation.reason or "-"
            ctx.cancellation.raise_if_cancelled()
        except asyncio.CancelledError:
            if ctx.cancellation.is_cancelled:
                outcome, note = "cancelled", ctx.cancellation.reason or "-"
            raise
        finally:
            ledger.write("end", "execute", ctx, outcome, note)


JOB_TYPES: tuple[type[Job], ...] = (ChaosTick, ChaosFlaky, ChaosDoomed, ChaosLong)
