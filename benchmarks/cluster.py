"""Cluster benchmarks of anu-jobs on PostgreSQL: burst over 1 and 2 silo processes,
timer lateness, kill -9 failover with default settings, idle cost.

    python benchmarks/cluster.py [--scenario burst|timers|failover|idle|all] [--rounds 3]
                                 [--url postgresql://postgres@127.0.0.1:5432/test]

Each round gets a fresh schema (dropped afterwards) and fresh processes: a driver
(``--worker SCENARIO``) that starts the silo processes (``--worker silo``), waits until
they are active, then submits and measures; it prints one JSON line. Silos count their
own executions and report them when stopped (SIGTERM). The idle scenario reuses
``core.py``'s workers. The parent prints a markdown table of medians (min, max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import PIPE
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from anu_jobs import Job, JobClient, JobContext, JobSpec, Once, RunStage, SiloBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import core  # benchmarks/ is not a package

Result = dict[str, Any]
SCRIPT = os.path.abspath(__file__)
DEFAULT_URL = os.environ.get(
    "ANU_JOBS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


# -- the jobs, as run inside a silo process -------------------------------------------------


class _Ledger:
    """What this silo process executed: run ids, wall-clock times, start lateness."""

    runs: list[str] = []
    lateness: list[float] = []
    first = 0.0
    last = 0.0


class ClusterNoop(Job):
    """A no-op that notes its run id, its wall-clock time and its start lateness."""

    async def execute(self, ctx: JobContext) -> None:
        now = time.time()
        _Ledger.lateness.append(now - ctx.scheduled_for.timestamp())
        _Ledger.runs.append(ctx.run_id)
        _Ledger.first = _Ledger.first or now
        _Ledger.last = now


class LongFirst(Job):
    """Hangs on its first attempt; quick after. Appends ``attempt pid time`` to the
    marker file named by $ANU_BENCH_MARKERS when each attempt starts."""

    async def execute(self, ctx: JobContext) -> None:
        _mark(f"{ctx.attempt} {os.getpid()} {time.time():.6f}")
        if ctx.attempt == 1:
            await asyncio.sleep(600)


def _mark(line: str) -> None:
    with open(os.environ["ANU_BENCH_MARKERS"], "a") as f:
        f.write(line + "\n")


JOBS: list[type[Job]] = [ClusterNoop, LongFirst]


async def worker_silo(args: argparse.Namespace) -> Result:
    """One silo process with default options, until SIGTERM; then its ledger."""
    await SiloBuilder().use_storage(args.url).use_jobs(*JOBS).build().serve()
    return {
        "pid": os.getpid(),
        "runs": _Ledger.runs,
        "lateness": _Ledger.lateness,
        "first": _Ledger.first,
        "last": _Ledger.last,
    }


# -- the driver: silo processes, submit, wait, verify ----------------------------------------


class Cluster:
    """``n`` silo processes on ``url``; stopped (SIGTERM, report read) on exit."""

    def __init__(self, url: str, n: int, tmp: str) -> None:
        self.url, self.n = url, n
        self.markers = Path(tmp) / "markers.log"
        self.procs: list[asyncio.subprocess.Process] = []
        self.reports: list[Result] = []

    async def __aenter__(self) -> Cluster:
        env = {**os.environ, "ANU_BENCH_MARKERS": str(self.markers)}
        cmd = [SCRIPT, "--worker", "silo", "--url", self.url]
        for _ in range(self.n):
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, *cmd, stdout=PIPE, stderr=PIPE, env=env
                )
            )
        return self

    async def ready(self, client: JobClient, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len([s for s in await client.silos() if s.status == "active"]) >= self.n:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.n} silos did not become active in {timeout:g} s")

    async def kill(self, pid: int) -> float:
        """SIGKILL the silo ``pid``; returns the wall-clock time of the kill."""
        proc = next(p for p in self.procs if p.pid == pid)
        proc.kill()
        killed = time.time()
        await proc.wait()
        return killed

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            lines = out.decode().strip().splitlines()
            if proc.returncode == 0 and lines:
                self.reports.append(json.loads(lines[-1]))
            elif proc.returncode != -signal.SIGKILL:
                sys.stderr.write(err.decode())
                raise RuntimeError(f"silo {proc.pid} failed (exit {proc.returncode})")


def split_url(url: str) -> tuple[str, str | None]:
    """(the libpq URL without anu-jobs' options, the ``schema=`` given or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = ("schema", "connect_timeout", "pool_min_size", "pool_max_size")
    libpq = urlencode([(k, v) for k, v in query if k not in own])
    schema = dict(query).get("schema")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, libpq, "")), schema


async def _connect(url: str) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    """A plain connection to the store's schema, for checks independent of anu-jobs."""
    base, schema = split_url(url)
    conn = await psycopg.AsyncConnection.connect(base, autocommit=True)
    await conn.execute(
        sql.SQL("SET search_path TO {}").format(sql.Identifier(schema or "anu_jobs"))
    )
    return conn


async def _one(conn: psycopg.AsyncConnection[tuple[Any, ...]], query: str) -> tuple[Any, ...]:
    row = await (await conn.execute(query)).fetchone()
    assert row is not None
    return row


VERIFY = """
SELECT count(*) FILTER (WHERE completed = 0), count(*) FILTER (WHERE completed > 1),
       count(*) FILTER (WHERE max_attempt > 1)
FROM (SELECT j.job_id, count(r.run_id) FILTER (WHERE r.stage = 'completed') AS completed,
             coalesce(max(r.attempt), 0) AS max_attempt
      FROM jobs j LEFT JOIN runs r USING (job_id) GROUP BY j.job_id) per_job
"""


async def _due_round(args: argparse.Namespace, silos: int, times: list[datetime]) -> Result:
    """Start ``silos`` silo processes, schedule one no-op per time, wait until all ran."""
    n = len(times)
    specs = [JobSpec(ClusterNoop, job_id=f"j-{i}", trigger=Once(at=t)) for i, t in enumerate(times)]
    count = "SELECT count(*) FROM runs WHERE stage = 'completed'"
    with tempfile.TemporaryDirectory(prefix="anu-cluster-") as tmp:
        async with (
            JobClient.connect(args.url, jobs=JOBS) as client,
            await _connect(args.url) as conn,
        ):
            async with Cluster(args.url, silos, tmp) as cluster:
                await cluster.ready(client)
                t0 = time.time()
                await client.schedule_many(specs)
                t1 = time.time()
                deadline = time.monotonic() + (times[-1] - times[0]).total_seconds() + 300
                while time.monotonic() < deadline:
                    if (await _one(conn, count))[0] >= n:
                        break
                    await asyncio.sleep(0.05)
                t_store = time.time()
                await asyncio.sleep(1.0)  # let stray duplicates show up before stopping
            lost, multi, retried = await _one(conn, VERIFY)
    reports = cluster.reports
    runs = Counter(r for rep in reports for r in rep["runs"])
    executed = sum(runs.values())
    shares = sorted((100.0 * len(rep["runs"]) / max(executed, 1) for rep in reports), reverse=True)
    lat = sorted(x * 1000 for rep in reports for x in rep["lateness"])
    res: Result = {
        "submit_s": t1 - t0,
        "total_s": max(rep["last"] for rep in reports) - t0,
        "store_s": t_store - t0,
        "executed": executed,
        "exec_per_s": n / (max(rep["last"] for rep in reports) - t0),
        "lost": lost,
        "duplicates": executed - len(runs) + multi,
        "retried": retried,
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max_ms": lat[-1],
    }
    res.update({f"share{i + 1}_pct": s for i, s in enumerate(shares)})
    return res


async def worker_burst(args: argparse.Namespace) -> Result:
    return await _due_round(args, args.silos, [datetime.now(UTC)] * args.jobs)


async def worker_timers(args: argparse.Namespace) -> Result:
    n, start, span = args.timer_jobs, 2.0, 10.0
    base = datetime.now(UTC) + timedelta(seconds=start)
    return await _due_round(args, 1, [base + timedelta(seconds=span * i / n) for i in range(n)])


def _markers(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def _until(fn: Callable[[], list[list[str]]], n: int, timeout: float) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while len(lines := fn()) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for attempt {n}")
        await asyncio.sleep(0.01)
    return lines


async def worker_failover(args: argparse.Namespace) -> Result:
    """Two default silos; the silo running a long first attempt is killed with SIGKILL."""
    with tempfile.TemporaryDirectory(prefix="anu-cluster-") as tmp:
        async with (
            JobClient.connect(args.url, jobs=JOBS) as client,
            Cluster(args.url, 2, tmp) as cluster,
        ):
            await cluster.ready(client)
            await client.schedule(LongFirst, job_id="long", trigger=Once(delay=timedelta(0)))
            first = (await _until(lambda: _markers(cluster.markers), 1, 30))[0]
            await asyncio.sleep(1.0)  # kill it 1 s into the attempt
            killed = await cluster.kill(int(first[1]))
            second = (await _until(lambda: _markers(cluster.markers), 2, 60))[1]
            run = await client.wait("long", timeout=30)
    return {
        "failover_s": float(second[2]) - killed,
        "other_silo": float(second[1] != first[1] and second[0] == "2"),
        "completed": float(run.stage is RunStage.COMPLETED and run.attempt == 2),
    }


WORKERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "silo": worker_silo,
    "burst": worker_burst,
    "timers": worker_timers,
    "failover": worker_failover,
}


# -- the parent: rounds in fresh schemas and processes, then the table -----------------------


def _child(worker: str, args: argparse.Namespace, url: str, *extra: str) -> Result:
    cmd = [sys.executable, SCRIPT, "--worker", worker, "--url", url, *extra]
    cmd += ["--jobs", str(args.jobs), "--timer-jobs", str(args.timer_jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker {worker} failed (exit {proc.returncode})")
    result: Result = json.loads(lines[-1])
    return result


def run_round(scenario: str, args: argparse.Namespace) -> Result:
    base, _ = split_url(args.url)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    try:
        if scenario == "idle":
            return core._child("idle-schedule", args, url) | core._child("idle-silo", args, url)
        if scenario.startswith("burst"):
            return _child("burst", args, url, "--silos", scenario[-1])
        return _child(scenario, args, url)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


Check = core.Check
_LOSS: list[tuple[str, str, str, Check, str]] = [
    ("lost", "lost (store: job without a completed run)", ".0f", lambda v: v == 0, "0"),
    ("duplicates", "duplicates (silo ledgers + store)", ".0f", lambda v: v == 0, "0"),
]
_BURST: list[tuple[str, str, str, Check, str]] = [
    ("submit_s", "schedule_many time (s)", ".2f", None, ""),
    ("total_s", "submit start → all executed (s)", ".2f", lambda v: v < 5.0, "< 5 s"),
    ("store_s", "submit start → all completed in store (s)", ".2f", None, ""),
    ("exec_per_s", "executions/s", ",.0f", None, ""),
]
METRICS: dict[str, list[tuple[str, str, str, Check, str]]] = {
    "burst-1": _BURST + _LOSS,
    "burst-2": [
        *_BURST,
        ("share1_pct", "larger silo's share (%)", ".1f", None, ""),
        ("share2_pct", "smaller silo's share (%)", ".1f", None, ""),
        *_LOSS,
    ],
    "timers": [
        ("p50_ms", "start lateness p50 (ms)", ".1f", None, ""),
        ("p99_ms", "start lateness p99 (ms)", ".1f", lambda v: v < 50.0, "< 50 ms"),
        ("max_ms", "start lateness max (ms)", ".1f", None, ""),
        *_LOSS,
    ],
    "failover": [
        ("failover_s", "kill -9 → attempt 2 starts (s)", ".2f", lambda v: v < 10.0, "< 10 s"),
        ("other_silo", "attempt 2 on the other silo (1 = yes)", ".0f", lambda v: v == 1, "1"),
        ("completed", "run completed at attempt 2 (1 = yes)", ".0f", lambda v: v == 1, "1"),
    ],
    "idle": core.METRICS["idle"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    choices = ["burst", "timers", "failover", "idle", "all"]
    p.add_argument("--scenario", default="all", choices=choices)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--url", default=DEFAULT_URL, help=f"PostgreSQL server (default {DEFAULT_URL})")
    p.add_argument("--jobs", type=int, default=5_000, help="burst size")
    p.add_argument("--timer-jobs", type=int, default=2_000)
    p.add_argument("--idle-jobs", type=int, default=100_000)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--silos", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(WORKERS[args.worker](args))), flush=True)
        return
    try:
        with psycopg.connect(split_url(args.url)[0], connect_timeout=5) as conn:
            sync = conn.execute("SHOW synchronous_commit").fetchone()
    except psycopg.Error as exc:
        raise SystemExit(f"cannot reach PostgreSQL at {args.url}: {exc}".strip()) from None
    bursts = ["burst-1", "burst-2"]
    names = {"burst": bursts, "all": [*bursts, "timers", "failover", "idle"]}
    results: dict[str, list[Result]] = {}
    for scenario in names.get(args.scenario, [args.scenario]):
        for i in range(args.rounds):
            res = run_round(scenario, args)
            brief = {k: v for k, v in res.items() if not isinstance(v, list)}
            print(f"# {scenario} round {i + 1}: {json.dumps(brief)}", file=sys.stderr, flush=True)
            results.setdefault(scenario, []).append(res)
    sizes = {
        "burst-1": f"{args.jobs:,} jobs, 1 silo",
        "burst-2": f"{args.jobs:,} jobs, 2 silos",
        "timers": f"{args.timer_jobs:,} jobs over 10 s, 1 silo",
        "failover": "2 silos, default options",
        "idle": f"{args.idle_jobs:,} jobs over 24 h, {args.idle_seconds:g} s idle",
    }
    print(f"Machine: {core._machine()}")
    print(
        f"Store: {split_url(args.url)[0]} (a fresh schema per round, "
        f"synchronous_commit={sync[0] if sync else '?'}); "
        f"{args.rounds} rounds each, fresh processes per round\n"
    )
    print("\n".join(core.metric_rows(results, METRICS, sizes)))


if __name__ == "__main__":
    main()
