"""Claim+commit throughput of the PostgreSQL provider: a quick script, not a test.

    python benchmarks/postgres_storage.py [URL] [--jobs 5000 20000] [--batch 500] [--overlap]

Each round claims ``batch`` due jobs and commits, for each, what a finished run writes:
a new state, the next reminder, one run record, and the lease given back. With
``--overlap`` the next claim runs while the previous batch commits, as in a silo. It runs in a
fresh schema, dropped afterwards. URL defaults to $ANU_JOBS_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from anu_jobs.storage.base import Claim, GrainWrite, LeaseToken, NewJob, RunRecord
from anu_jobs.storage.postgres import PostgresStorage

T0 = datetime(2030, 1, 1, tzinfo=UTC)
STATE = {"params": {"users": list(range(20)), "note": "a digest"}, "attempt": 0, "last": None}


def finished(lease: LeaseToken, etag: int, now: datetime, later: datetime) -> GrainWrite:
    """What a silo writes when a run of a job ends: state, next reminder, run, release."""
    job_id = lease.job_id
    run = RunRecord(f"{job_id}@0", job_id, "digest", "completed", 1, T0, now, now, "silo-1", {})
    state = {**STATE, "last": "ok"}
    return GrainWrite(lease, etag, "digest", "active", state, later, (run,), release=True)


async def bench(url: str, jobs: int, batch: int, overlap: bool = False) -> None:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = PostgresStorage.from_url(f"{url}{'&' if '?' in url else '?'}schema={schema}")
    await store.open()
    try:
        started = time.perf_counter()
        for first in range(0, jobs, 10_000):
            await store.insert_jobs(
                [
                    NewJob(f"job-{i:07}", "digest", "active", STATE, T0 + timedelta(seconds=i % 60))
                    for i in range(first, min(first + 10_000, jobs))
                ]
            )
        inserted = time.perf_counter() - started
        now, later = T0 + timedelta(minutes=5), T0 + timedelta(hours=1)
        claims_ms: list[float] = []
        commits_ms: list[float] = []

        async def claim() -> list[Claim]:
            t = time.perf_counter()
            claims = await store.claim_due("silo-1", now, now, batch, timedelta(seconds=30))
            claims_ms.append((time.perf_counter() - t) * 1000)
            return claims

        async def commit(claims: list[Claim]) -> int:
            t = time.perf_counter()
            results = await store.commit(
                [finished(c.lease, c.envelope.etag, now, later) for c in claims]
            )
            commits_ms.append((time.perf_counter() - t) * 1000)
            assert all(r.ok for r in results)
            return len(results)

        done = 0
        started = time.perf_counter()
        claims = await claim()
        while claims:
            if overlap:  # as a silo does: the next claim runs while the writer commits
                n, claims = await asyncio.gather(commit(claims), claim())
            else:
                n = await commit(claims)
                claims = await claim()
            done += n
        elapsed = time.perf_counter() - started
        assert done == jobs, (done, jobs)
        print(
            f"{jobs:>6} jobs, batches of {batch}: {done / elapsed:>7,.0f} jobs/s claim+commit"
            f"{' overlapped' if overlap else ''}"
            f" | per batch: claim {statistics.median(claims_ms):.1f} ms,"
            f" commit {statistics.median(commits_ms):.1f} ms (medians)"
            f" | insert_jobs {jobs / inserted:,.0f} jobs/s"
        )
    finally:
        await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("ANU_JOBS_TEST_POSTGRES_URL"))
    parser.add_argument("--jobs", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--overlap", action="store_true", help="claim the next batch while committing"
    )
    args = parser.parse_args()
    if not args.url:
        parser.error("give a PostgreSQL URL or set ANU_JOBS_TEST_POSTGRES_URL")
    for jobs in args.jobs:
        asyncio.run(bench(args.url, jobs, args.batch, args.overlap))


if __name__ == "__main__":
    main()
