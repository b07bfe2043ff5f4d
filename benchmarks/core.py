"""Core benchmarks of anu-jobs: burst throughput, timer lateness, idle cost.

    python benchmarks/core.py [--scenario burst|timers|idle|all] [--jobs N] [--rounds 3]
                              [--url URL] [--idle-seconds 30]

Each round runs in a fresh subprocess (``--worker SCENARIO``) on a fresh SQLite file in a
temp dir (durable: the default ``synchronous=FULL``) unless ``--url`` is given; the
worker prints one JSON line. The parent prints a markdown table of medians (min, max).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from anu_jobs import Job, JobClient, JobContext, JobSpec, Once, SiloBuilder
from anu_jobs.storage import open_storage

Result = dict[str, Any]


class _Probe:
    """What the no-op job records: executions, lateness, and when the target is reached."""

    count = 0
    target = 0
    lateness: list[float] = []
    done: asyncio.Event | None = None


class NoopJob(Job):
    """The benchmarked job: counts itself and records its start lateness, nothing else."""

    async def execute(self, ctx: JobContext) -> None:
        _Probe.lateness.append((datetime.now(UTC) - ctx.scheduled_for).total_seconds())
        _Probe.count += 1
        if _Probe.count == _Probe.target and _Probe.done is not None:
            _Probe.done.set()


# -- workers (one per subprocess) ---------------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _specs(prefix: str, times: list[datetime]) -> list[JobSpec]:
    return [
        JobSpec(NoopJob, job_id=f"{prefix}-{i}", trigger=Once(at=t)) for i, t in enumerate(times)
    ]


async def _verify(url: str, ids: list[str]) -> Result:
    """Count completed run records of ``ids`` in the store: lost and duplicated runs."""
    storage = open_storage(url)
    await storage.open()
    try:
        completed: set[str] = set()
        records = 0
        for jid in ids:
            for rec in await storage.read_runs(jid, 10):
                records += 1
                if rec.stage == "completed":
                    completed.add(rec.run_id)
    finally:
        await storage.close()
    return {
        "lost": len(ids) - len(completed),
        "run_records": records,
        "duplicates": _Probe.count - len(ids),
    }


async def _run_due(url: str, times: list[datetime], wait: float) -> tuple[Result, list[str]]:
    """Start a silo, schedule one job per time, wait until all have executed."""
    _Probe.target, _Probe.done = len(times), asyncio.Event()
    silo = SiloBuilder().use_storage(url).use_jobs(NoopJob).build()
    prefix = uuid.uuid4().hex[:8]
    specs = _specs(prefix, times)
    async with silo:
        t0, cpu0 = time.perf_counter(), time.process_time()
        ids = await silo.client.schedule_many(specs)
        t1 = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_Probe.done.wait(), wait)
        t2, cpu2 = time.perf_counter(), time.process_time()
        await asyncio.sleep(0.5)  # let stray duplicates show up before stopping
    res: Result = {
        "submit_s": t1 - t0,
        "total_s": t2 - t0,
        "executed": _Probe.count,
        "cpu_ms_per_job": 1000 * (cpu2 - cpu0) / len(times),
        "commits_per_job": silo.runtime.writer.commits / len(times),
        "writes_per_job": silo.runtime.writer.writes / len(times),
    }
    return res, ids


async def worker_burst(args: argparse.Namespace) -> Result:
    now = datetime.now(UTC)
    res, ids = await _run_due(args.url, [now] * args.jobs, wait=300.0)
    res["exec_per_s"] = args.jobs / res["total_s"]
    res.update(await _verify(args.url, ids))
    return res


async def worker_timers(args: argparse.Namespace) -> Result:
    n, start, span = args.timer_jobs, 2.0, 10.0
    base = datetime.now(UTC) + timedelta(seconds=start)
    times = [base + timedelta(seconds=span * i / n) for i in range(n)]
    res, ids = await _run_due(args.url, times, wait=start + span + 60.0)
    lat = sorted(x * 1000 for x in _Probe.lateness)
    res["p50_ms"] = lat[len(lat) // 2] if lat else float("nan")
    res["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    res["max_ms"] = lat[-1] if lat else float("nan")
    res.update(await _verify(args.url, ids))
    return res


async def worker_idle_schedule(args: argparse.Namespace) -> Result:
    n = args.idle_jobs
    now = datetime.now(UTC)
    times = [now + timedelta(days=1) * (i + 1) / n for i in range(n)]
    specs = _specs(uuid.uuid4().hex[:8], times)
    async with JobClient.connect(args.url, jobs=[NoopJob]) as client:
        t0 = time.perf_counter()
        await client.schedule_many(specs)
        dt = time.perf_counter() - t0
    return {"schedule_s": dt, "schedule_per_s": n / dt}


async def worker_idle_silo(args: argparse.Namespace) -> Result:
    silo = SiloBuilder().use_storage(args.url).use_jobs(NoopJob).build()
    t0 = time.perf_counter()
    async with silo:
        ready = time.perf_counter() - t0
        rss_ready = _rss_mb()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(args.idle_seconds)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        rss = _rss_mb()
    return {
        "ready_s": ready,
        "idle_cpu_pct": 100.0 * cpu / wall,
        "rss_mb": rss,
        "rss_ready_mb": rss_ready,
        "fired_while_idle": _Probe.count,
    }


WORKERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "burst": worker_burst,
    "timers": worker_timers,
    "idle-schedule": worker_idle_schedule,
    "idle-silo": worker_idle_silo,
}


# -- the parent: rounds in subprocesses, then the table -----------------------------------


def _child(worker: str, args: argparse.Namespace, url: str) -> Result:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--url", url]
    cmd += ["--jobs", str(args.jobs), "--timer-jobs", str(args.timer_jobs)]
    cmd += ["--idle-jobs", str(args.idle_jobs), "--idle-seconds", str(args.idle_seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker {worker} failed (exit {proc.returncode})")
    result: Result = json.loads(lines[-1])
    return result


def run_round(scenario: str, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="anu-bench-") as tmp:
        url = args.url or f"sqlite:///{tmp}/bench.db"
        if scenario == "idle":
            return _child("idle-schedule", args, url) | _child("idle-silo", args, url)
        return _child(scenario, args, url)


# scenario -> [(result key, label, format, target check or None, target text)]
Check = Callable[[float], bool] | None
METRICS: dict[str, list[tuple[str, str, str, Check, str]]] = {
    "burst": [
        ("submit_s", "schedule_many time (s)", ".2f", None, ""),
        ("total_s", "submit start → all executed (s)", ".2f", lambda v: v < 5.0, "< 5 s"),
        ("exec_per_s", "executions/s", ",.0f", None, ""),
        ("commits_per_job", "commits per job", ".3f", None, ""),
        ("writes_per_job", "grain writes per job", ".2f", None, ""),
        ("lost", "lost (no completed run)", ".0f", lambda v: v == 0, "0"),
        ("duplicates", "duplicate executions", ".0f", lambda v: v == 0, "0"),
    ],
    "timers": [
        ("p50_ms", "start lateness p50 (ms)", ".1f", None, ""),
        ("p99_ms", "start lateness p99 (ms)", ".1f", lambda v: v < 50.0, "< 50 ms"),
        ("max_ms", "start lateness max (ms)", ".1f", None, ""),
        ("lost", "lost (no completed run)", ".0f", lambda v: v == 0, "0"),
        ("duplicates", "duplicate executions", ".0f", lambda v: v == 0, "0"),
    ],
    "idle": [
        ("schedule_s", "schedule_many time (s)", ".2f", None, ""),
        ("schedule_per_s", "jobs scheduled/s", ",.0f", None, ""),
        ("ready_s", "silo ready time (s)", ".3f", None, ""),
        ("idle_cpu_pct", "idle CPU (% of a core)", ".2f", lambda v: v < 1.0, "< 1 %"),
        ("rss_mb", "RSS at end (MB)", ".1f", lambda v: v < 150.0, "< 150 MB"),
        ("fired_while_idle", "jobs that came due in the window", ".0f", None, ""),
    ],
}


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    try:
        here = Path(__file__).parent
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        rev = ""
    machine = f"{os.cpu_count()} CPUs (nproc), {cpu}; Python {platform.python_version()}"
    return f"{when}; {machine}; commit {rev or '?'}"


def table(args: argparse.Namespace, results: dict[str, list[Result]]) -> str:
    sizes = {
        "burst": f"{args.jobs:,} jobs",
        "timers": f"{args.timer_jobs:,} jobs over 10 s",
        "idle": f"{args.idle_jobs:,} jobs over 24 h, {args.idle_seconds:g} s idle",
    }
    out = [
        f"Machine: {_machine()}",
        f"Store: {args.url or 'SQLite in a temp dir, synchronous=FULL'}; "
        f"{args.rounds} rounds each, fresh process per round",
        "",
    ]
    return "\n".join(out + metric_rows(results, METRICS, sizes))


def metric_rows(
    results: dict[str, list[Result]],
    metrics: dict[str, list[tuple[str, str, str, Check, str]]],
    sizes: dict[str, str],
) -> list[str]:
    """The markdown table (header and one row per metric) of medians, min and max."""
    out = [
        "| scenario | metric | median | min | max | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for scenario, rounds in results.items():
        for key, label, fmt, check, target in metrics[scenario]:
            vals = [float(r[key]) for r in rounds]
            med = statistics.median(vals)
            met = "" if check is None else ("yes" if all(check(v) for v in vals) else "**no**")
            if check is not None and met == "**no**" and check(med):
                met = "median only"
            cells = [format(v, fmt) for v in (med, min(vals), max(vals))]
            out.append(
                f"| {scenario} ({sizes[scenario]}) | {label} | "
                + " | ".join(cells)
                + f" | {target} | {met} |"
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", default="all", choices=["burst", "timers", "idle", "all"])
    p.add_argument("--jobs", type=int, default=5_000, help="burst size")
    p.add_argument("--timer-jobs", type=int, default=2_000)
    p.add_argument("--idle-jobs", type=int, default=100_000)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--url", default=None, help="store URL (default: fresh SQLite per round)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(WORKERS[args.worker](args))), flush=True)
        return
    scenarios = ["burst", "timers", "idle"] if args.scenario == "all" else [args.scenario]
    results: dict[str, list[Result]] = {}
    for scenario in scenarios:
        for i in range(args.rounds):
            res = run_round(scenario, args)
            print(f"# {scenario} round {i + 1}: {json.dumps(res)}", file=sys.stderr, flush=True)
            results.setdefault(scenario, []).append(res)
    print(table(args, results))


if __name__ == "__main__":
    main()
