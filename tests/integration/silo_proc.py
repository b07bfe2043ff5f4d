"""A silo in its own process, for crash and restart tests.

``python -m tests.integration.silo_proc DB_PATH MARKER_DIR`` runs a silo on the SQLite
file until SIGTERM. Its jobs append lines to files in MARKER_DIR, so the test can see
what ran, in which process, without going through the store.
"""

from __future__ import annotations

import asyncio
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
    """Hangs on its first attempt (the test kills the silo then); quick afterwards."""

    async def execute(self, ctx: JobContext) -> None:
        mark("long.log", f"start {ctx.run_id} {ctx.attempt} {os.getpid()}")
        if ctx.attempt == 1:
            await asyncio.sleep(60)
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


def build(db: str) -> SiloBuilder:
    return (
        SiloBuilder()
        .use_storage(f"sqlite:///{db}")
        .use_jobs(Record, LongOnFirstAttempt, WaitsForCancel)
        .use_options(
            lease_ttl=timedelta(seconds=2), dead_after=timedelta(seconds=1), drain_timeout=1.0
        )
    )


if __name__ == "__main__":
    build(sys.argv[1]).build().run()
