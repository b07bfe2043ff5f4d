"""Side-by-side benchmark of anu-jobs and its peers (see README.md and PROTOCOL.md).

    python benchmarks/compare/run.py [--systems a,b] [--scenarios burst,timers,...]
                                     [--rounds 3] [--jobs 5000,50000] [--smoke]

Every scenario runs for every system, interleaved (A B C, A B C, ...), each system in a
process of its own, started with the python of its environment: anu-jobs with this
interpreter, the peers with ``benchmarks/compare/.venv-peers`` (created and filled from
PyPI on first use). Each round gets a fresh work dir, a fresh PostgreSQL database and a
flushed Redis database. Every figure comes from the ledger (``ledger.py``) and from the
system's own ``done`` report; the medians go to a markdown table and the rounds to JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
from ledger import Entry, Ledger  # noqa: E402

Result = dict[str, Any]
PEERS_VENV = HERE / ".venv-peers"
PEER_REQUIREMENTS = [
    "apscheduler<4",
    "sqlalchemy>=2",
    "psycopg[binary]>=3.1",
    "procrastinate",
    "pgqueuer",
    "asyncpg",
    "celery[redis]",
    "rq",
    "psutil",
]
PEER_DISTS = ["APScheduler", "SQLAlchemy", "procrastinate", "pgqueuer", "celery", "rq", "redis"]


@dataclass(frozen=True)
class System:
    env: str  # "anu" (this interpreter) or "peers" (.venv-peers)
    needs: tuple[str, ...] = ()  # "pg", "redis"
    store: str = ""


SYSTEMS: dict[str, System] = {
    "anu_sqlite": System("anu", (), "sqlite"),
    "anu_postgres": System("anu", ("pg",), "postgres"),
    "apscheduler_sqlite": System("peers", (), "sqlite"),
    "apscheduler_postgres": System("peers", ("pg",), "postgres"),
    "procrastinate_pg": System("peers", ("pg",), "postgres"),
    "pgqueuer_pg": System("peers", ("pg",), "postgres"),
    "celery_redis": System("peers", ("redis",), "redis"),
    "rq_redis": System("peers", ("redis",), "redis"),
}


@dataclass(frozen=True)
class Case:
    """One scenario at one size."""

    scenario: str
    jobs: int
    seconds: float = 0.0
    period: float = 1.0
    span: float = 10.0

    @property
    def label(self) -> str:
        if self.scenario == "burst":
            return f"burst, {self.jobs:,} jobs due now"
        if self.scenario == "timers":
            return f"timers, {self.jobs:,} one-time jobs over {self.span:g} s"
        if self.scenario == "recurring":
            return (
                f"recurring, {self.jobs:,} schedules every {self.period:g} s for {self.seconds:g} s"
            )
        return f"scale, {self.jobs:,} jobs over 24 h from +1 h, {self.seconds:g} s idle"


# -- environments ------------------------------------------------------------------------------


def peers_python() -> str:
    """The peers' interpreter; creates and fills their virtualenv on first use."""
    py = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / "requirements.txt"
    wanted = "\n".join(PEER_REQUIREMENTS) + "\n"
    if py.exists() and marker.exists() and marker.read_text() == wanted:
        return str(py)
    print(f"# creating the peers' virtualenv in {PEERS_VENV} ...", file=sys.stderr, flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    marker.write_text(wanted)
    pip = [str(py), "-m", "pip", "install", "-q", "-r", str(marker)]
    if subprocess.run(pip).returncode != 0:
        marker.unlink()
        raise SystemExit("pip install of the peers failed")
    return str(py)


def peer_versions(py: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        f"for d in {PEER_DISTS!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "out['python'] = sys.version.split()[0]\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True)
    return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}


def with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + db))


def create_db(url: str, db: str) -> None:
    import psycopg

    for attempt in range(20):
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')  # type: ignore[arg-type]
            return
        except psycopg.errors.ObjectInUse:  # another session is on the template
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not create database {db}")


def drop_db(url: str, db: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')  # type: ignore[arg-type]


def flush_redis(url: str) -> None:
    """``SELECT db`` + ``FLUSHDB`` over a raw socket (no client library needed here)."""
    import socket

    parts = urlsplit(url)
    db = (parts.path or "/0").lstrip("/") or "0"
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5) as s:
        s.sendall(f"SELECT {db}\r\nFLUSHDB\r\n".encode())
        got = b""
        while got.count(b"\r\n") < 2:
            chunk = s.recv(256)
            if not chunk:
                break
            got += chunk
    if got.count(b"+OK") < 2:
        raise RuntimeError(f"redis flush failed: {got!r}")


# -- one round of one system -------------------------------------------------------------------


class Child:
    """A system script: its JSON events on a queue, its stderr in a file."""

    def __init__(self, cmd: list[str], env: dict[str, str], workdir: Path) -> None:
        self.stderr_path = workdir / "stderr.log"
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            cwd=workdir,
            start_new_session=True,  # its own process group: killed whole at the end
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            if isinstance(ev, dict) and "event" in ev:
                self.events.put(ev)
        self.events.put(None)

    def expect(self, deadline: float) -> dict[str, Any] | None:
        """The next event, ``{"event": "exit"}`` if the script ended, None on timeout."""
        try:
            ev = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        return ev if ev is not None else {"event": "exit", "rc": self.proc.wait()}

    def send(self, line: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def stderr_tail(self, n: int = 12) -> str:
        self._err.flush()
        lines = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def finish(self) -> None:
        """Wait briefly for a clean exit, then kill what is left of its process group."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._err.close()


def run_round(name: str, case: Case, args: argparse.Namespace, python: str) -> Result:
    sysinfo = SYSTEMS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"cmp-{name}-"))
    db = f"cmp_{name}_{uuid.uuid4().hex[:8]}"
    pg_url = args.pg_url
    res: Result = {"system": name, "scenario": case.scenario, "jobs": case.jobs, "status": "ok"}
    try:
        if "pg" in sysinfo.needs:
            create_db(args.pg_url, db)
            pg_url = with_db(args.pg_url, db)
        if "redis" in sysinfo.needs:
            flush_redis(args.redis_url)
        with Ledger(str(workdir / "ledger.sock")) as led:
            _drive(name, case, args, python, workdir, pg_url, led, res)
        if case.scenario == "burst" and name.startswith("anu_") and res["status"] == "ok":
            _ceiling(sysinfo.store, case.jobs, pg_url, res)
    except Exception as exc:
        res["status"] = "error"
        res["why"] = f"{type(exc).__name__}: {exc}"
    finally:
        if "pg" in sysinfo.needs:
            try:
                drop_db(args.pg_url, db)
            except Exception as exc:
                print(f"# could not drop {db}: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def _ceiling(store: str, jobs: int, pg_url: str, res: Result) -> None:
    """anu-jobs' share of the machine's ceiling: ``benchmarks/ceiling.py`` (a plain SQL
    claim-and-ack loop, batches of 100, same durability) right after the round, on the
    same store, in a fresh process; and the commits per executed job."""
    cmd = [sys.executable, str(HERE.parent / "ceiling.py"), "--store", store]
    cmd += ["--jobs", str(jobs), "--batch", "100", "--url", pg_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        res["ceiling_error"] = proc.stderr[-500:]
        return
    per_s = float(json.loads(proc.stdout.strip().splitlines()[-1])["per_s"])
    res["ceiling_per_s"] = per_s
    res["ceiling_share"] = float(res["exec_per_s"]) / per_s
    commits = (res.get("extra") or {}).get("commits")
    if commits is not None:
        res["commits_per_job"] = float(commits) / jobs


def _drive(
    name: str,
    case: Case,
    args: argparse.Namespace,
    python: str,
    workdir: Path,
    pg_url: str,
    led: Ledger,
    res: Result,
) -> None:
    script = HERE / "systems" / f"{name}.py"
    cmd = [python, str(script), "--scenario", case.scenario, "--jobs", str(case.jobs)]
    cmd += ["--workdir", str(workdir), "--pg-url", pg_url, "--redis-url", args.redis_url]
    cmd += ["--store", SYSTEMS[name].store]
    cmd += ["--seconds", f"{case.seconds:g}", "--period", f"{case.period:g}"]
    if case.span != 10.0:
        cmd += ["--span", f"{case.span:g}"]
    env = {**os.environ, "ANU_BENCH_LEDGER": led.path, "PYTHONUNBUFFERED": "1"}
    child = Child(cmd, env, workdir)
    deadline = time.monotonic() + args.timeout
    try:
        events: dict[str, dict[str, Any]] = {}
        for want in ("ready", "submitted"):
            ev = child.expect(deadline)
            if ev is None:
                res.update(status="timeout", why=f"no '{want}' within {args.timeout:g} s")
                return
            if ev["event"] == "unsupported":
                res.update(status="unsupported", why=str(ev.get("why", "")))
                return
            if ev["event"] != want:
                res.update(status="error", why=f"got {ev} instead of '{want}'")
                res["stderr"] = child.stderr_tail()
                return
            events[want] = ev
        sub = events["submitted"]
        complete = _wait_scenario(case, sub, led, deadline)
        stopped_at = time.time()
        child.send("stop")
        # scale restarts the system and idles after stop; everyone gets at least 60 s
        stop_deadline = max(deadline, time.monotonic() + 60 + case.seconds * 2)
        done = child.expect(stop_deadline)
        if done is None or done["event"] != "done":
            res["status"] = "timeout" if done is None else "error"
            res["why"] = "no 'done' after stop" if done is None else f"got {done}"
            res["stderr"] = child.stderr_tail()
        time.sleep(0.2)  # datagrams in flight
        entries = list(led.entries)
        res.update(metrics(case, sub, entries, stopped_at, done or {}))
        if not complete and res["status"] == "ok":
            res["status"] = "timeout"
            res["why"] = f"not every job ran within {args.timeout:g} s"
    finally:
        child.finish()


def _wait_scenario(case: Case, sub: dict[str, Any], led: Ledger, deadline: float) -> bool:
    """Wait for the scenario's end; False if the round's timeout came first."""
    left = deadline - time.monotonic()
    if case.scenario in ("burst", "timers"):
        return led.wait_for(case.jobs, left, quiet=0.5)
    if case.scenario == "recurring":
        end = float(sub["anchor"]) + case.seconds
        time.sleep(max(0.0, min(left, end - time.time())))
        return time.time() >= end - 0.1
    return True


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def metrics(
    case: Case, sub: dict[str, Any], entries: list[Entry], stopped_at: float, done: Result
) -> Result:
    """Everything the table shows, from the ledger and the ``done`` report."""
    t0, t1 = float(sub["t0"]), float(sub["t1"])
    ids = {e.job_id for e in entries}
    first: dict[str, Entry] = {}
    for e in sorted(entries, key=lambda e: e.start):
        first.setdefault(e.job_id, e)
    out: Result = {
        "submit_s": t1 - t0,
        "entries": len(entries),
        "distinct": len(ids),
        "duplicates": len(entries) - len(ids),
        "cpu_s": done.get("cpu_s", math.nan),
        "peak_rss_mb": done.get("peak_rss_mb", math.nan),
    }
    extra = done.get("extra") or {}
    if case.scenario in ("burst", "timers"):
        prefix = "b-" if case.scenario == "burst" else "t-"
        expected = {f"{prefix}{i}" for i in range(case.jobs)}
        out["lost"] = len(expected - ids)
        out["unexpected"] = len(ids - expected)
        if case.scenario == "burst":
            last = max((e.start for e in entries), default=math.nan)
            out["total_s"] = last - t0
            out["exec_per_s"] = len(ids & expected) / out["total_s"] if entries else 0.0
        else:
            late = [(e.start - e.due) * 1000 for e in first.values()]
            out.update(p50_ms=_pct(late, 0.5), p99_ms=_pct(late, 0.99), max_ms=max(late, default=0))
    elif case.scenario == "recurring":
        anchor, grace = float(sub["anchor"]), 0.5
        ticks = max(0, math.floor((stopped_at - grace - anchor) / case.period) + 1)
        expected = {f"r-{i}@{k}" for i in range(case.jobs) for k in range(ticks)}
        fired = ids & expected
        late = [(first[j].start - first[j].due) * 1000 for j in fired]
        out.update(
            expected=len(expected),
            fired=len(fired),
            lost=len(expected) - len(fired),
            p99_ms=_pct(late, 0.99),
            fired_pct=100.0 * len(fired) / len(expected) if expected else math.nan,
        )
    else:
        out.update(
            schedule_s=t1 - t0,
            schedule_per_s=case.jobs / (t1 - t0) if t1 > t0 else math.nan,
            ready_s=extra.get("ready_s", math.nan),
            idle_cpu_pct=extra.get("idle_cpu_pct", math.nan),
            rss_mb=extra.get("rss_mb", math.nan),
            fired_while_idle=len(entries),
        )
    out["extra"] = extra
    return out


# -- the run -----------------------------------------------------------------------------------


def cases(args: argparse.Namespace) -> list[Case]:
    smoke = args.smoke
    out: list[Case] = []
    for scenario in args.scenarios.split(","):
        if scenario == "burst":
            sizes = [200] if smoke else [int(x) for x in args.jobs.split(",")]
            out += [Case("burst", n) for n in sizes]
        elif scenario == "timers":
            out.append(Case("timers", 100 if smoke else args.timer_jobs, span=3 if smoke else 10))
        elif scenario == "recurring":
            n, s = (10, 4.0) if smoke else (args.recurring_jobs, args.recurring_seconds)
            out.append(Case("recurring", n, seconds=s, period=args.period))
        elif scenario == "scale":
            sizes = [1000] if smoke else [int(x) for x in args.scale_jobs.split(",")]
            s = 2.0 if smoke else args.idle_seconds
            out += [Case("scale", n, seconds=s) for n in sizes]
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    p.add_argument("--scenarios", default="burst,timers,recurring,scale")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", default="5000,50000", help="burst sizes, comma-separated")
    p.add_argument("--timer-jobs", type=int, default=2000)
    p.add_argument("--recurring-jobs", type=int, default=1000)
    p.add_argument("--recurring-seconds", type=float, default=30.0)
    p.add_argument("--period", type=float, default=5.0)
    p.add_argument("--scale-jobs", default="100000", help="sizes, comma-separated")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=600.0, help="per round, seconds")
    p.add_argument("--smoke", action="store_true", help="small sizes, 1 round")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    p.add_argument("--out", default=None, help="JSON results (default: results/<time>.json)")
    args = p.parse_args()
    if args.smoke:
        args.rounds = 1
        args.timeout = min(args.timeout, 60.0)
    names = [s for s in args.systems.split(",") if s]
    for name in names:
        if name not in SYSTEMS:
            raise SystemExit(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    missing = [n for n in names if not (HERE / "systems" / f"{n}.py").exists()]
    names = [n for n in names if n not in missing]
    pythons = {"anu": sys.executable}
    if any(SYSTEMS[n].env == "peers" for n in names):
        pythons["peers"] = peers_python()
    plan = cases(args)
    results: list[Result] = []
    started = time.time()
    for case in plan:
        for rnd in range(args.rounds):
            for name in names:
                res = run_round(name, case, args, pythons[SYSTEMS[name].env])
                res.update(round=rnd + 1, case=case.label)
                results.append(res)
                brief = {k: v for k, v in res.items() if k not in ("extra", "stderr")}
                print(f"# {json.dumps(brief, default=str)}", file=sys.stderr, flush=True)
                if res.get("stderr"):
                    print(res["stderr"], file=sys.stderr, flush=True)
    info = report.machine_info()
    info["peers"] = peer_versions(pythons["peers"]) if "peers" in pythons else {}
    info["missing_systems"] = missing
    info["wall_s"] = time.time() - started
    info["rounds"] = args.rounds
    info["argv"] = sys.argv[1:]
    text = report.render(info, [c.label for c in plan], names, results, SYSTEMS)
    print(text)
    out = Path(args.out) if args.out else HERE / "results" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "results": results}, indent=1, default=str))
    out.with_suffix(".md").write_text(text + "\n")
    print(f"\nresults: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
