"""A silo in its own process, for crash, restart and cluster tests.

``python -m tests.integration.silo_proc STORE MARKER_DIR [LEASE_TTL DEAD_AFTER]`` runs a
silo until SIGTERM. STORE is a SQLite path or a storage URL. The jobs append lines to
files in MARKER_DIR (an independent ledger: what ran, which attempt, in which process),
so tests can check what happened without trusting the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from anu_jobs import Job, JobContext, SiloBuilder

MARKERS = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")


def mark(name: str, line: str) -> None:
    with open(MARKERS / name, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class Record(Job):
    """Notes each execution."""

    async def execute(self, ctx: JobContext) -> None:
        mark("record.log", f"{ctx.job_id} {ctx.run_id} {ctx.attempt} {os.getpid()}")


class LongOnFirstAttempt(Job):
    """Hangs on its first attempt (the test kills or freezes the silo then); quick after."""

    async def execute(self, ctx: JobContext) -> None:
        mark("long.log", f"start {ctx.run_id} {ctx.attempt} {os.getpid()}")
        if ctx.attempt == 1:
            await asyncio.sleep(float(os.environ.get("ANU_TEST_LONG_SECONDS", "60")))
        mark("long.log", f"done {ctx.run_id} {ctx.attempt} {os.getpid()}")


class WaitsForCancel(Job):
    """Runs until cancelled, then notes that its token tripped."""

    async def execute(self, ctx: JobContext) -> None:
        mark("cancel.log", f"start {ctx.run_id} {os.getpid()}")
        try:
            await asyncio.wait_for(ctx.cancellation.wait(), 60)
        finally:
            mark("cancel.log", f"end {ctx.run_id} cancelled={ctx.cancellation.is_cancelled}")
        ctx.cancellation.raise_if_cancelled()


def build(store: str, lease_ttl: float = 2.0, dead_after: float = 1.0) -> SiloBuilder:
    url = store if "://" in store else f"sqlite:///{store}"
    return (
        SiloBuilder()
        .use_concurrency(int(os.environ.get("ANU_TEST_CONCURRENCY", "100")))
        .use_storage(url)
        .use_jobs(Record, LongOnFirstAttempt, WaitsForCancel)
        .use_options(
            lease_ttl=timedelta(seconds=lease_ttl),
            dead_after=timedelta(seconds=dead_after),
            heartbeat=timedelta(seconds=min(1.0, dead_after / 2)),
            drain_timeout=1.0,
            poll_interval=timedelta(seconds=float(os.environ.get("ANU_TEST_POLL_SECONDS", "1"))),
        )
    )


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {os.getpid()} %(name)s %(message)s"
    )
    args = sys.argv[3:5]
    build(sys.argv[1], *(float(a) for a in args)).build().run()
