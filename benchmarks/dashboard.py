"""Dashboard page times, server side, on a big SQLite store.

    python benchmarks/dashboard.py [--db /tmp/anu-dash-bench/bench.db] [--rebuild]
                                   [--jobs 100000] [--runs-per-job 10] [--requests 20]

Builds (once; ``--rebuild`` to redo) a store of ``--jobs`` jobs with ``--runs-per-job``
runs each: the jobs through ``JobClient.schedule_many`` (real job states; 5 % then paused
and each given a last run, by SQL), the runs by SQL in batches, through the provider's
own schema, finished over the last 24 hours (10 % failed with a traceback). Then serves
``create_app(JobClient.connect(url))`` through httpx's ASGI transport (no network) and
times ``--requests`` requests per page after 2 warm-ups: median and p95 of the whole
request, and of the page's main client call alone. Last, ``EXPLAIN QUERY PLAN`` of the
queries behind the pages. Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from anu_jobs import Cron, Every, Job, JobClient, JobContext, JobSpec, Manual
from anu_jobs.dashboard import create_app
from anu_jobs.storage import open_storage

TYPES = ("SendDigest", "SyncAccount", "BuildReport", "ChargeCard")
RARE_TYPE = "LegacyImport"  # 1 job in 10,000
US = 1_000_000
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/jobs.py", line 42, in execute\n'
    "    await client.post(url, json=payload)\n"
    '  File "/srv/app/http.py", line 118, in post\n'
    "    raise UpstreamError(resp.status, resp.text)\n"
    "UpstreamError: 503 upstream unavailable\n"
)


class BenchJob(Job):
    """Never runs here: the store is read, not worked."""

    async def execute(self, ctx: JobContext) -> None:
        return None


def _job_id(i: int) -> str:
    return f"job-{i:06d}"


def _run_doc(job_id: str, scheduled: int, failed: bool, rng: random.Random) -> dict[str, Any]:
    started = scheduled + rng.randrange(1_000, 20_000)
    finished = started + rng.randrange(50_000, 5 * US)
    silo = f"silo-{rng.randrange(4)}"
    stage = "failed" if failed else "completed"
    transitions: list[list[Any]] = [
        ["scheduled", scheduled, None],
        ["running", started, f"attempt 1 on silo {silo}"],
    ]
    error = None
    if failed:
        reason = "attempt 1 failed: UpstreamError: 503 upstream unavailable; no retries left"
        transitions.append(["failed", finished, reason])
        error = {"type": "UpstreamError", "message": "503 upstream unavailable"}
        error["traceback"] = TRACEBACK
    else:
        transitions.append(["completed", finished, None])
    return {
        "run_id": f"{job_id}@{scheduled}",
        "scheduled_for": scheduled,
        "trigger": "every 1h",
        "stage": stage,
        "attempt": 1,
        "failures": int(failed),
        "interruptions": 0,
        "started_at": started,
        "finished_at": finished,
        "next_attempt_at": None,
        "transitions": transitions,
        "error": error,
        "compensation_error": None,
        "progress": [1.0, "done", finished],
        "silo_id": silo,
    }


async def build(url: str, path: Path, jobs: int, runs_per_job: int) -> None:
    rng = random.Random(42)
    t0 = time.perf_counter()
    triggers = [Every(timedelta(hours=1)), Cron("*/15 * * * *"), Manual(), Every(timedelta(days=1))]
    async with JobClient.connect(url, jobs=[BenchJob]) as client:
        specs = [
            JobSpec(
                BenchJob,
                job_id=_job_id(i),
                params={"account": i, "note": f"customer {i}"},
                trigger=triggers[i % len(triggers)],
            )
            for i in range(jobs)
        ]
        await client.schedule_many(specs, chunk=20_000)
    print(f"  {jobs:,} jobs scheduled in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    _fill(path, jobs, runs_per_job, rng)


def _fill(path: Path, jobs: int, runs_per_job: int, rng: random.Random) -> None:
    t1 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # a throwaway file: speed over durability
    now_us = int(datetime.now(UTC).timestamp() * US)
    span = 24 * 3600 * US
    conn.execute("BEGIN")
    # Job types (one rare), 5 % paused, a rare stage, each job with its last run in its
    # state (as a run leaves it), and 10 % overdue by up to an hour (as if no silo ran).
    updates, overdue = [], []
    for i in range(jobs):
        jid = _job_id(i)
        last = _run_doc(jid, now_us - rng.randrange(span), rng.random() < 0.1, rng)
        stage = "paused" if i % 20 == 7 else "cancelled" if i % 10_000 == 3 else "active"
        job_type = RARE_TYPE if i % 10_000 == 5 else TYPES[i % len(TYPES)]
        updates.append((job_type, stage, stage, json.dumps(last), jid))
        if i % 10 == 1:
            overdue.append((now_us - rng.randrange(2 * 60 * US, 3600 * US), jid))
    conn.executemany(
        "UPDATE jobs SET job_type = ?, stage = ?, "
        "state = json_set(state, '$.stage', ?, '$.last_run', json(?)) WHERE job_id = ?",
        updates,
    )
    conn.executemany("UPDATE reminders SET due_us = ? WHERE job_id = ?", overdue)
    conn.execute("COMMIT")
    total = jobs * runs_per_job
    batch: list[tuple[Any, ...]] = []
    sql = "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    for n in range(total):
        i = n % jobs
        jid = _job_id(i)
        doc = _run_doc(jid, now_us - rng.randrange(span), rng.random() < 0.1, rng)
        row = (doc["run_id"] + f"#{n}", jid, TYPES[i % len(TYPES)], doc["stage"], 1)
        times = (doc["scheduled_for"], doc["started_at"], doc["finished_at"], doc["silo_id"])
        batch.append((*row, *times, json.dumps(doc)))
        if len(batch) == 100_000 or n == total - 1:
            conn.execute("BEGIN")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
            batch.clear()
    # No ANALYZE: the provider never runs it, so the planner works without statistics.
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('dashboard-bench', ?)", (str(total),))
    conn.close()
    print(f"  {total:,} runs inserted in {time.perf_counter() - t1:.1f}s", file=sys.stderr)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


async def _times(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(2):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


Case = tuple[str, str, Callable[[], Awaitable[Any]]]
Row = tuple[str, list[float], list[float]]


def _cases(client: JobClient, jobs: int) -> list[Case]:
    deep, one = _job_id(int(jobs * 0.9)), _job_id(jobs // 2)
    now = client.clock.now()
    lst = client.list
    return [
        ("/jobs (first page)", "/jobs", lambda: lst(limit=51)),
        ("/jobs deep (after 90 %)", f"/jobs?after={deep}", lambda: lst(after=deep, limit=51)),
        ("/jobs search, 1 match", "/jobs?q=012345", lambda: lst(text="012345", limit=51)),
        ("/jobs search, common", "/jobs?q=99", lambda: lst(text="99", limit=51)),
        ("/jobs stage (95 %)", "/jobs?stage=active", lambda: lst(stage="active", limit=51)),
        ("/jobs stage (5 %)", "/jobs?stage=paused", lambda: lst(stage="paused", limit=51)),
        (
            "/jobs stage (10 jobs)",
            "/jobs?stage=cancelled",
            lambda: lst(stage="cancelled", limit=51),
        ),
        (
            "/jobs type (25 %)",
            "/jobs?type=ChargeCard",
            lambda: lst(job_type="ChargeCard", limit=51),
        ),
        (
            "/jobs type (10 jobs)",
            f"/jobs?type={RARE_TYPE}",
            lambda: lst(job_type=RARE_TYPE, limit=51),
        ),
        (f"/jobs/{one}", f"/jobs/{one}", lambda: client.runs(one, limit=21)),
        ("/ (overview)", "/", lambda: client.run_counts(now - timedelta(hours=1))),
        ("/silos", "/silos", client.silos),
    ]


async def measure(url: str, jobs: int, n: int) -> list[Row]:
    async with JobClient.connect(url) as client:
        app = create_app(client)
        transport = httpx.ASGITransport(app=app)
        rows: list[Row] = []
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as h:

            async def page(path: str) -> None:
                response = await h.get(path)
                assert response.status_code == 200, (path, response.status_code)

            for label, path, call in _cases(client, jobs):
                page_ms = await _times(lambda path=path: page(path), n)  # type: ignore[misc]
                rows.append((label, page_ms, await _times(call, n)))
        # The overview makes four calls; time each of them.
        now = client.clock.now()
        for label, call in (
            ("  overview: stage_counts()", client.stage_counts),
            (
                "  overview: run_counts(last hour)",
                lambda: client.run_counts(now - timedelta(hours=1)),
            ),
            ("  overview: overdue(60 s)", client.overdue),
            ("  overview: silos()", client.silos),
        ):
            rows.append((label, [], await _times(call, n)))
    return rows


PLANS = {
    "list_jobs (first page)": "SELECT * FROM jobs ORDER BY job_id LIMIT 51",
    "list_jobs (after)": "SELECT * FROM jobs WHERE job_id > 'job-09' ORDER BY job_id LIMIT 51",
    "list_jobs (search)": "SELECT * FROM jobs WHERE anu_id_matches(job_id, '99') "
    "ORDER BY job_id LIMIT 51",
    "list_jobs (stage)": "SELECT * FROM jobs WHERE stage = 'cancelled' ORDER BY job_id LIMIT 51",
    "list_jobs (type)": "SELECT * FROM jobs WHERE job_type = 'X' ORDER BY job_id LIMIT 51",
    "read_runs": "SELECT * FROM runs WHERE job_id = 'job-050000' AND scheduled_us < 9e18 "
    "ORDER BY scheduled_us DESC, run_id DESC LIMIT 21",
    "stage_counts": "SELECT stage, count(*) FROM jobs GROUP BY stage",
    "run_counts": "SELECT (finished_us / 60000000) * 60000000 AS b, stage, count(*) FROM runs "
    "WHERE finished_us >= 0 GROUP BY b, stage ORDER BY b, stage",
    "overdue_count": "SELECT count(*) FROM reminders AS r "
    "LEFT JOIN leases AS l ON l.job_id = r.job_id LEFT JOIN silos AS s ON s.silo_id = l.silo_id "
    "WHERE r.due_us < 1 AND (l.silo_id IS NULL OR l.expires_us <= 1 "
    "OR s.status IN ('dead', 'stopped'))",
}


def plans(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    conn.create_function("anu_id_matches", 2, lambda a, b: b.lower() in a.lower())
    out = []
    for name, sql in PLANS.items():
        detail = " / ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        out.append((name, detail))
    conn.close()
    return out


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}; {os.cpu_count()} CPUs, {cpu}; Python {platform.python_version()}; {commit}"


def _prepare(path: Path, rebuild: bool) -> bool:
    """Delete the store when asked or half built; True when a complete one is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    built = False
    if path.exists() and not rebuild:
        with sqlite3.connect(path) as conn:
            found = conn.execute("SELECT 1 FROM meta WHERE key = 'dashboard-bench'").fetchone()
            built = found is not None
    if not built:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return built


#: What storage would need to serve every dashboard page from an index alone: filters
#: that walk (stage, job_id) / (job_type, job_id) in id order with no sort, and run
#: counts read from the index. ``--proposed-indexes`` swaps them in for a run (then back).
PROPOSED = (
    ("jobs_stage", "jobs (stage)", "jobs (stage, job_id)"),
    ("jobs_job_type", "jobs (job_type)", "jobs (job_type, job_id)"),
    ("runs_finished", "runs (finished_us)", "runs (finished_us, stage)"),
)


def _swap_indexes(path: Path, proposed: bool) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for name, current, better in PROPOSED:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.execute(f"CREATE INDEX {name} ON {better if proposed else current}")
    conn.execute("COMMIT")
    conn.close()


def _size(path: Path) -> tuple[int, int, float]:
    with sqlite3.connect(path) as conn:
        n_jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
        n_runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    return n_jobs, n_runs, path.stat().st_size / 2**20


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--db", default="/tmp/anu-dash-bench/bench.db")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs-per-job", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument(
        "--proposed-indexes",
        action="store_true",
        help="measure with the indexes of PROPOSED instead of the schema's (restored after)",
    )
    args = parser.parse_args()
    path = Path(args.db)
    url = f"sqlite:///{path}"
    if not _prepare(path, args.rebuild):
        print(f"building {path} ...", file=sys.stderr)
        storage = open_storage(url)
        await storage.open()
        await storage.close()
        await build(url, path, args.jobs, args.runs_per_job)
    n_jobs, n_runs, size = _size(path)
    if args.proposed_indexes:
        _swap_indexes(path, proposed=True)
    try:
        rows = await measure(url, n_jobs, args.requests)
        plan_rows = plans(path)
    finally:
        if args.proposed_indexes:
            _swap_indexes(path, proposed=False)
    print(f"Machine: {machine()}")
    print(
        f"Store: {path} ({size:,.0f} MB): {n_jobs:,} jobs, {n_runs:,} runs; {args.requests} "
        "requests per page after 2 warm-ups, through httpx.ASGITransport"
        + ("; with the proposed indexes" if args.proposed_indexes else "")
        + "\n"
    )
    print("| page | request median | request p95 | main client call median | call p95 |")
    print("|---|---:|---:|---:|---:|")
    for label, page_ms, call_ms in rows:
        page = f"{statistics.median(page_ms):.1f} | {_p95(page_ms):.1f}" if page_ms else " | "
        call = f"{statistics.median(call_ms):.1f} | {_p95(call_ms):.1f}"
        print(f"| {label} | {page} | {call} |")
    print("\n(milliseconds)\n\nQuery plans (EXPLAIN QUERY PLAN):\n")
    for name, detail in plan_rows:
        print(f"- {name}: {detail}")


if __name__ == "__main__":
    asyncio.run(main())
