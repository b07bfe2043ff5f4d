"""The chaos soak: silo processes on one store, a mixed load, faults at seeded moments, and
a verdict from an independent ledger.

    python chaos/soak.py --backend postgres --silos 3 --jobs 2000 --duration 300 --seed 42
    python chaos/soak.py --backend postgres --url postgresql://user@host/db   # a shared server
    python chaos/soak.py --backend sqlite --silos 1 --duration 60

On PostgreSQL without ``--url`` the soak starts a server of its own (the pgserver wheel,
``tests/integration/pgserver_ctl.py``) and restarts it as one of the faults; a server given
with ``--url`` is never restarted (the soak works in a fresh schema there and drops it).
The seed fixes the load, the cancel times and the fault plan (kinds, gaps, durations,
victims by rank, clock offsets); what the machine does in between is not reproducible.
Exit status: 0 when every invariant held, 1 when one failed, 2 when the soak itself could
not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

if __package__ in (None, ""):  # run as a file: make ``chaos`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anu_jobs import Cron, Every, JobClient, JobSpec, Once, RunInfo, Trigger
from chaos.check import (
    CancelRecord,
    FaultEvent,
    PlannedJob,
    Report,
    SiloExit,
    SoakData,
    StoredRun,
    check,
)
from chaos.jobs import JOB_TYPES, ChaosDoomed, ChaosFlaky, ChaosLong, ChaosTick
from chaos.ledger import read_ledger

__all__ = ["FAULT_KINDS", "SoakConfig", "main", "run_soak"]

ROOT = Path(__file__).resolve().parents[1]

FAULT_KINDS = ("kill", "freeze", "term", "join", "pg-restart", "clock")

#: the load's mix: family -> share of the jobs
MIX = {"once": 0.40, "every": 0.20, "cron": 0.10, "flaky": 0.15, "doomed": 0.10, "long": 0.05}
EVERY_INTERVALS = (2, 3, 5, 10, 15, 30)
CRON_STEPS = (2, 3, 5, 10, 15, 20, 30)
#: how long a silo may stay declared dead (without joining again) before it is restarted
DEAD_GRACE = 2.0


@dataclass
class SoakConfig:
    """What to run; the defaults are the script's."""

    backend: str = "postgres"  # or "sqlite"
    url: str | None = None  # postgres: a server not to restart; default: a server of our own
    silos: int = 3
    max_silos: int = 5
    jobs: int = 2000
    duration: float = 300.0  # seconds of faults
    seed: int = 42
    faults: tuple[str, ...] = FAULT_KINDS
    fault_gap: tuple[float, float] = (5.0, 12.0)  # seconds between two faults
    lease_ttl: float = 3.0
    dead_after: float = 2.0
    heartbeat: float = 0.5
    drain_timeout: float = 2.0
    cancel_grace: float = 1.0
    clock_jump: float = 1.0  # largest clock offset a jump sets, in seconds
    late_bound: float = 2.0  # how late a fire may begin outside faults
    quiet: float = 15.0  # seconds without faults before the graceful stop
    workdir: Path | None = None
    keep: bool = False
    log: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def recovery(self) -> float:
        """How long after a fault ends its effects may keep a fire from starting: the
        others declare a silent silo dead (``dead_after`` after its last heartbeat, seen at
        their next heartbeat) or its leases expire, a claim poll (1 s) takes its jobs; plus
        2 s for the burst of work that moves at once."""
        return max(self.dead_after + self.heartbeat, self.lease_ttl) + 1.0 + 2.0


# -- silo processes ------------------------------------------------------------------------


class SiloProc:
    """One ``python -m chaos.silo`` process."""

    def __init__(self, serial: int, cfg: SoakConfig, url: str, workdir: Path) -> None:
        self.serial = serial
        self.workdir = workdir
        self.err_path = workdir / "logs" / f"silo-{serial:02d}.err"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        cmd = [
            sys.executable,
            "-m",
            "chaos.silo",
            "--url",
            url,
            "--dir",
            str(workdir),
            "--lease-ttl",
            str(cfg.lease_ttl),
            "--dead-after",
            str(cfg.dead_after),
            "--heartbeat",
            str(cfg.heartbeat),
            "--drain-timeout",
            str(cfg.drain_timeout),
            "--cancel-grace",
            str(cfg.cancel_grace),
        ]
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.pid = self.proc.pid
        self.frozen = False
        self.busy = False  # a fault or the supervisor is acting on it
        self.offset = 0.0
        self.ended = False
        self.dead_since: float | None = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def silo_id(self) -> str | None:
        path = self.workdir / "silos" / f"{self.pid}.id"
        try:
            return path.read_text().strip() or None
        except OSError:
            return None

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def set_offset(self, seconds: float) -> None:
        path = self.workdir / "clock" / f"{self.pid}.offset"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{seconds:.6f}\n")
        tmp.replace(path)
        self.offset = seconds
        self.send(signal.SIGUSR1)


# -- the soak ------------------------------------------------------------------------------


class Soak:
    def __init__(self, cfg: SoakConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.url = ""
        self.owned: Any = None  # tests.integration.pgserver_ctl.OwnedPostgres
        self.drop_schema: tuple[str, str] | None = None  # (server url, schema)
        self.client: JobClient | None = None
        self.silos: list[SiloProc] = []
        self.faults: list[FaultEvent] = []
        self.exits: list[SiloExit] = []
        self.problems: list[str] = []
        self.planned: dict[str, PlannedJob] = {}
        self.began = time.time()
        self._serial = 0
        self._supervising = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- output

    def say(self, msg: str) -> None:
        if self.cfg.log is not None:
            self.cfg.log(f"[{time.time() - self.began:7.1f}s] {msg}")

    # -- the store

    def open_store(self) -> None:
        cfg = self.cfg
        if cfg.backend == "sqlite":
            self.url = f"sqlite:///{self.workdir / 'jobs.db'}"
            return
        if cfg.backend != "postgres":
            raise SystemExit(f"unknown backend {cfg.backend!r}: postgres or sqlite")
        if cfg.url is None:
            # The tests' restartable server (the pgserver wheel, from the test extra).
            ctl = importlib.import_module("tests.integration.pgserver_ctl")
            self.owned = ctl.OwnedPostgres(self.workdir / "pg")
            base = str(self.owned.url)
        else:
            base = cfg.url
        if "schema" in parse_qs(urlsplit(base).query):
            self.url = base
            return
        schema = f"chaos_{cfg.seed}_{uuid.uuid4().hex[:8]}"
        self.url = f"{base}{'&' if '?' in base else '?'}{urlencode({'schema': schema})}"
        self.drop_schema = (base, schema)

    def close_store(self) -> None:
        if self.drop_schema is not None and not self.cfg.keep:
            import psycopg
            from psycopg import sql

            base, schema = self.drop_schema
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
        if self.owned is not None:
            self.owned.cleanup()

    # -- silos

    def start_silo(self) -> SiloProc:
        self._serial += 1
        silo = SiloProc(self._serial, self.cfg, self.url, self.workdir)
        self.silos.append(silo)
        return silo

    def live(self) -> list[SiloProc]:
        return [s for s in self.silos if not s.ended and s.running]

    def ended(self, silo: SiloProc, how: str) -> None:
        if not silo.ended:
            silo.ended = True
            self.exits.append(SiloExit(silo.serial, silo.pid, silo.proc.returncode, how))

    async def wait_active(self, silo: SiloProc, timeout: float = 30.0) -> bool:
        assert self.client is not None
        deadline = time.time() + timeout
        while time.time() < deadline:
            sid = silo.silo_id
            if not silo.running:
                break
            if sid is not None:
                with contextlib.suppress(Exception):
                    if any(
                        s.silo_id == sid and s.status == "active" for s in await self.client.silos()
                    ):
                        return True
            await asyncio.sleep(0.1)
        self.problems.append(f"silo {silo.serial} (pid {silo.pid}) did not become active")
        return False

    async def stop_silo(self, silo: SiloProc) -> None:
        """SIGTERM (a graceful stop) and wait for the process to end."""
        silo.send(signal.SIGCONT)
        silo.send(signal.SIGTERM)
        try:
            await asyncio.to_thread(silo.proc.wait, self.cfg.drain_timeout + 25)
        except subprocess.TimeoutExpired:
            self.problems.append(
                f"silo {silo.serial} (pid {silo.pid}) had not stopped "
                f"{self.cfg.drain_timeout + 25:g}s after SIGTERM (its stacks: {silo.err_path})"
            )
            silo.send(signal.SIGQUIT)  # chaos.silo dumps every thread's stack
            await asyncio.sleep(0.5)
            silo.proc.kill()
            await asyncio.to_thread(silo.proc.wait)
        self.ended(silo, "stopped")

    async def kill_silo(self, silo: SiloProc) -> None:
        silo.send(signal.SIGCONT)
        silo.proc.kill()
        await asyncio.to_thread(silo.proc.wait)
        self.ended(silo, "killed")

    # -- the load

    def plan_load(self, t0: datetime, rng: random.Random) -> list[JobSpec]:
        cfg = self.cfg
        d_ms = int(cfg.duration * 1000)
        counts = {k: int(cfg.jobs * share) for k, share in MIX.items()}
        counts["long"] = max(1, counts["long"])
        counts["once"] += cfg.jobs - sum(counts.values())
        specs: list[JobSpec] = []
        cutoff = t0 + timedelta(milliseconds=d_ms)

        def at(lo_ms: int, hi_ms: int) -> datetime:
            return t0 + timedelta(milliseconds=rng.randint(lo_ms, max(lo_ms, hi_ms)))

        def add(job: PlannedJob, cls: type[Any], trigger: Trigger, params: dict[str, Any]) -> None:
            self.planned[job.job_id] = job
            specs.append(JobSpec(cls, job_id=job.job_id, params=params, trigger=trigger))

        n = 0
        for family in ("once", "every", "cron", "flaky", "doomed", "long"):
            for _ in range(counts[family]):
                n += 1
                job_id = f"{family}-{n:05d}"
                work = {"work_ms": rng.randint(10, 200)}
                if family == "once":
                    when = at(1000, d_ms)
                    add(
                        PlannedJob(job_id, family, "ChaosTick", ("once", when)),
                        ChaosTick,
                        Once(at=when),
                        work,
                    )
                elif family == "every" or (family == "flaky" and rng.random() < 0.2):
                    interval = rng.choice(EVERY_INTERVALS if family == "every" else (10, 15, 30))
                    start = at(500, interval * 1000)
                    fail = rng.randint(1, 2) if family == "flaky" else 0
                    cls = ChaosTick if family == "every" else ChaosFlaky
                    add(
                        PlannedJob(
                            job_id,
                            family,
                            cls.name,
                            ("every", start, interval),
                            max_retries=cls.retry.max_retries,
                            fail_first=fail,
                        ),
                        cls,
                        Every(timedelta(seconds=interval), start=start),
                        {**work, "fail_first": fail},
                    )
                elif family == "cron":
                    step = rng.choice(CRON_STEPS)
                    add(
                        PlannedJob(job_id, family, "ChaosTick", ("cron", step)),
                        ChaosTick,
                        Cron(f"*/{step} * * * * *"),
                        work,
                    )
                elif family == "flaky":
                    when = at(1000, d_ms)
                    fail = rng.randint(1, 2)
                    add(
                        PlannedJob(
                            job_id,
                            family,
                            "ChaosFlaky",
                            ("once", when),
                            max_retries=ChaosFlaky.retry.max_retries,
                            fail_first=fail,
                        ),
                        ChaosFlaky,
                        Once(at=when),
                        {**work, "fail_first": fail},
                    )
                elif family == "doomed":
                    when = at(1000, d_ms)
                    add(
                        PlannedJob(
                            job_id,
                            family,
                            "ChaosDoomed",
                            ("once", when),
                            max_retries=ChaosDoomed.retry.max_retries,
                        ),
                        ChaosDoomed,
                        Once(at=when),
                        work,
                    )
                else:
                    when = at(1000, int(d_ms * 0.6))
                    span = max(3.0, min(15.0, cfg.duration * 0.3))
                    cancel = when.timestamp() + rng.uniform(3.0, span)
                    cancel = min(cancel, cutoff.timestamp() - 1.0)
                    add(
                        PlannedJob(job_id, family, "ChaosLong", ("once", when), cancel_at=cancel),
                        ChaosLong,
                        Once(at=when),
                        {"max_s": 900},
                    )
        return specs

    def start_canceller(self) -> subprocess.Popen[bytes]:
        plan = sorted(
            ((j.job_id, j.cancel_at) for j in self.planned.values() if j.cancel_at is not None),
            key=lambda p: p[1],
        )
        (self.workdir / "cancel-plan.json").write_text(json.dumps(plan))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with (self.workdir / "logs" / "canceller.err").open("wb") as err:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chaos.canceller",
                    "--url",
                    self.url,
                    "--plan",
                    str(self.workdir / "cancel-plan.json"),
                    "--out",
                    str(self.workdir / "cancels.log"),
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    # -- the supervisor: what an operator's process manager does ----------------------

    async def supervise(self) -> None:
        """Replace silo processes that died by themselves, and restart silos the cluster
        declared dead (they stop claiming for good: the README says to restart them)."""
        assert self.client is not None
        while self._supervising:
            await asyncio.sleep(0.5)
            for silo in list(self.silos):
                if silo.ended or silo.busy or silo.frozen or silo.running:
                    continue
                now = time.time()
                self.ended(silo, "crashed")
                self.faults.append(
                    FaultEvent(
                        "crash", now, now, frozenset({silo.pid}), f"exit {silo.proc.returncode}"
                    )
                )
                self.say(f"silo {silo.serial} (pid {silo.pid}) died: replacing it")
                self.start_silo()
            try:
                infos = await self.client.silos()
            except Exception:
                continue
            status = {i.silo_id: i.status for i in infos}
            now = time.time()
            for silo in self.live():
                if silo.busy or silo.frozen or status.get(silo.silo_id or "") != "dead":
                    silo.dead_since = None
                    continue
                # A silo may notice it was declared dead and join again under a new id
                # by itself; one that has not done so within this grace is restarted.
                if silo.dead_since is None:
                    silo.dead_since = now
                if now - silo.dead_since >= DEAD_GRACE:
                    silo.busy = True
                    self.spawn(self._restart_dead(silo))

    async def _restart_dead(self, silo: SiloProc) -> None:
        began = time.time()
        self.say(f"silo {silo.serial} (pid {silo.pid}) was declared dead: restarting it")
        await self.stop_silo(silo)
        new = self.start_silo()
        await self.wait_active(new)
        self.faults.append(
            FaultEvent(
                "dead-restart",
                began,
                time.time(),
                frozenset({silo.pid}),
                f"silo {silo.serial} -> {new.serial}",
            )
        )

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- faults --------------------------------------------------------------------------

    def fault_kinds(self) -> list[str]:
        kinds = []
        for kind in self.cfg.faults:
            if kind == "pg-restart" and self.owned is None:
                continue  # never restart a server the soak does not own
            if kind == "join" and self.cfg.backend == "sqlite":
                continue  # one silo on SQLite
            kinds.append(kind)
        return kinds

    async def inject(self, until: float, rng: random.Random) -> None:
        kinds = self.fault_kinds()
        if not kinds:
            await asyncio.sleep(max(0.0, until - time.time()))
            return
        cycle: list[str] = []
        while True:
            gap = rng.uniform(*self.cfg.fault_gap)
            draws = (rng.random(), rng.random(), rng.random())
            if not cycle:
                cycle = rng.sample(kinds, len(kinds))
            kind = cycle.pop()
            if time.time() + gap >= until:
                break
            await asyncio.sleep(gap)
            await self.fault(kind, draws)
        await asyncio.sleep(max(0.0, until - time.time()))

    def pick(self, u: float) -> SiloProc | None:
        able = sorted(
            (s for s in self.live() if not s.busy and not s.frozen and s.silo_id is not None),
            key=lambda s: s.serial,
        )
        return able[min(len(able) - 1, int(u * len(able)))] if able else None

    async def fault(self, kind: str, u: tuple[float, float, float]) -> None:
        cfg = self.cfg
        victim = self.pick(u[0])
        t = time.time()
        if kind == "pg-restart":
            self.say("restarting PostgreSQL")
            await asyncio.to_thread(self.owned.restart)
            self.faults.append(FaultEvent(kind, t, time.time(), None, "pg_ctl restart -m fast"))
            return
        if kind == "join":
            if len(self.live()) < cfg.max_silos:
                new = self.start_silo()
                self.say(f"silo {new.serial} (pid {new.pid}) joins")
                await self.wait_active(new)
                self.faults.append(FaultEvent("join", t, time.time(), frozenset({new.pid})))
                return
            kind = "leave"  # at the most silos: one leaves gracefully instead
        if victim is None:
            self.say(f"no silo to {kind}")
            return
        victim.busy = True
        pid = frozenset({victim.pid})
        others = any(s is not victim and not s.frozen for s in self.live())
        try:
            if kind == "kill":
                self.say(f"kill -9 silo {victim.serial} (pid {victim.pid})")
                await self.kill_silo(victim)
                await asyncio.sleep(0.5 + 2.0 * u[1])
                new = self.start_silo()
                await self.wait_active(new)
                end = t if others else time.time()
                self.faults.append(FaultEvent(kind, t, end, pid, f"replaced by {new.serial}"))
            elif kind == "freeze":
                hold = cfg.lease_ttl + 0.5 + 3.0 * u[1]
                self.say(f"SIGSTOP silo {victim.serial} (pid {victim.pid}) for {hold:.1f}s")
                victim.frozen = True
                victim.send(signal.SIGSTOP)
                await asyncio.sleep(hold)
                victim.send(signal.SIGCONT)
                victim.frozen = False
                self.faults.append(FaultEvent(kind, t, time.time(), pid, f"{hold:.1f}s"))
            elif kind in ("term", "leave"):
                self.say(f"SIGTERM silo {victim.serial} (pid {victim.pid})")
                await self.stop_silo(victim)
                stopped = time.time()
                detail = f"stopped in {stopped - t:.1f}s"
                if kind == "term":
                    new = self.start_silo()
                    await self.wait_active(new)
                    detail += f", restarted as {new.serial}"
                end = stopped if others else time.time()
                self.faults.append(FaultEvent(kind, t, end, pid, detail))
            elif kind == "clock":
                size = 0.3 + max(0.0, cfg.clock_jump - 0.3) * u[1]
                offset = round(size if u[2] < 0.5 else -size, 3)
                old = victim.offset
                change = f"{old:+.2f}s -> {offset:+.2f}s"
                self.say(f"clock of silo {victim.serial} (pid {victim.pid}): {change}")
                victim.set_offset(offset)
                self.faults.append(FaultEvent(kind, t, t, None, f"silo {victim.serial}: {change}"))
            else:
                raise ValueError(f"unknown fault {kind!r}")
        finally:
            victim.busy = False

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> Report:
        cfg = self.cfg
        for sub in ("ledger", "clock", "silos", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.open_store()
        rng = random.Random(cfg.seed)
        fault_rng = random.Random(f"faults-{cfg.seed}")
        canceller: subprocess.Popen[bytes] | None = None
        # The driver's own client logs the store's faults (a restart): to a file, not the
        # report's terminal.
        handler = logging.FileHandler(self.workdir / "logs" / "driver.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        saved = []
        for name in ("anu_jobs", "psycopg"):
            logger = logging.getLogger(name)
            saved.append((logger, logger.propagate))
            logger.addHandler(handler)
            logger.propagate = False
        try:
            self.client = await JobClient.connect(self.url, jobs=list(JOB_TYPES))
            self.say(f"store {_redact(self.url)}; starting {cfg.silos} silo(s)")
            first = [self.start_silo() for _ in range(cfg.silos)]
            for silo in first:
                if not await self.wait_active(silo):
                    raise RuntimeError(f"silo {silo.serial} did not start: {_tail(silo)}")
            t0 = datetime.fromtimestamp(math.ceil(time.time()) + 1, UTC)
            specs = self.plan_load(t0, rng)
            began = time.time()
            await self.client.schedule_many(specs)
            scheduled_at = datetime.now(UTC)
            cutoff = t0 + timedelta(seconds=cfg.duration)
            self.say(
                f"scheduled {len(specs)} jobs in {time.time() - began:.2f}s; faults until "
                f"{cutoff:%H:%M:%S}"
            )
            canceller = self.start_canceller()
            self._supervising = True
            self.spawn(self.supervise())
            await self.inject(cutoff.timestamp(), fault_rng)
            self.say(f"faults over; {cfg.quiet:g}s without faults")
            for silo in self.live():
                if silo.frozen:
                    silo.send(signal.SIGCONT)
                    silo.frozen = False
                if silo.offset:
                    t = time.time()
                    self.faults.append(
                        FaultEvent("clock", t, t, None, f"silo {silo.serial}: reset to 0")
                    )
                    silo.set_offset(0.0)
            await asyncio.sleep(cfg.quiet)
            self._supervising = False
            while self._tasks:
                await asyncio.wait(set(self._tasks))
            horizon = datetime.now(UTC)
            last = self.live()
            self.say(f"stopping {len(last)} silo(s) gracefully")
            t = time.time()
            await asyncio.gather(*(self.stop_silo(s) for s in last))
            self.faults.append(
                FaultEvent("final-stop", t, time.time(), frozenset(s.pid for s in last))
            )
            for silo in self.silos:  # ended without us: record it
                if not silo.ended:
                    self.ended(silo, "crashed")
            try:
                await asyncio.to_thread(canceller.wait, 30)
            except subprocess.TimeoutExpired:
                self.problems.append("the canceller was still running at the end")
                canceller.kill()
                await asyncio.to_thread(canceller.wait)
            self.say("reading the ledger and the store")
            data = await self.collect(scheduled_at, cutoff, horizon)
            report = check(data)
            for problem in self.problems:
                report.violate("soak harness", problem)
            if not report.ok:
                await self.keep_evidence(report, data)
            self.headline(report, len(specs))
            return report
        finally:
            self._supervising = False
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            for silo in self.silos:
                if silo.running:
                    silo.send(signal.SIGCONT)
                    silo.proc.kill()
                silo.proc.wait()
            if canceller is not None and canceller.poll() is None:
                canceller.kill()
                canceller.wait()
            if self.client is not None:
                await self.client.close()
            self.close_store()
            for logger, propagate in saved:
                logger.removeHandler(handler)
                logger.propagate = propagate
            handler.close()

    def headline(self, report: Report, jobs: int) -> None:
        cfg = self.cfg
        where = (
            "SQLite"
            if cfg.backend == "sqlite"
            else "PostgreSQL (a server of its own)"
            if self.owned is not None
            else "PostgreSQL (a shared server: never restarted)"
        )
        head = [
            f"chaos soak: {where}, {cfg.silos} silo(s) (at most {cfg.max_silos}), {jobs} jobs, "
            f"{cfg.duration:g}s of faults + {cfg.quiet:g}s quiet, seed {cfg.seed}; "
            f"wall time {time.time() - self.began:.0f}s",
            f"options: lease_ttl {cfg.lease_ttl:g}s, dead_after {cfg.dead_after:g}s, heartbeat "
            f"{cfg.heartbeat:g}s, drain {cfg.drain_timeout:g}s, clock jumps up to "
            f"{cfg.clock_jump:g}s; silo processes started {len(self.silos)}",
        ]
        report.lines[:0] = head
        report.figures["wall_time"] = round(time.time() - self.began, 1)

    async def keep_evidence(self, report: Report, data: SoakData) -> None:
        """The store's state, runs and ledger lines of the jobs named by the failures, in
        ``evidence/<job>.json`` (the store may be a server of the soak's own, now gone)."""
        assert self.client is not None
        storage = self.client.storage
        named = re.compile(r"\b(?:once|every|cron|flaky|doomed|long)-\d{5}\b")
        jobs: list[str] = []
        for examples in report.violations.values():
            for example in examples[:8]:
                for job_id in named.findall(example):
                    if job_id not in jobs:
                        jobs.append(job_id)
        out = self.workdir / "evidence"
        out.mkdir(exist_ok=True)
        for job_id in jobs[:30]:
            env = await storage.read_state(job_id)
            records = await storage.read_runs(job_id, 1_000_000)
            doc = {
                "state": env.state if env is not None else None,
                "runs": [r.data for r in records],
                "ledger": [list(astuple(e)) for e in data.ledger if e.job_id == job_id],
            }
            (out / f"{job_id}.json").write_text(json.dumps(doc, indent=1, default=str))
        report.lines.append(f"evidence of {min(len(jobs), 30)} job(s) in {out}")

    async def collect(
        self, scheduled_at: datetime, cutoff: datetime, horizon: datetime
    ) -> SoakData:
        assert self.client is not None
        client = self.client
        sem = asyncio.Semaphore(8)
        stages: dict[str, str] = {}
        runs: dict[str, StoredRun] = {}

        async def one(job_id: str) -> None:
            async with sem:
                status = await client.get(job_id)
                history = await client.runs(job_id, limit=1_000_000)
            stages[job_id] = status.stage.value
            for r in history:
                runs[r.run_id] = _stored(r)
            # A run in flight may have no history row yet: the job's state holds it.
            current = status.current_run
            if current is not None and current.run_id not in runs:
                runs[current.run_id] = _stored(current)

        await asyncio.gather(*(one(j) for j in self.planned))
        ledger, torn = read_ledger(self.workdir / "ledger")
        return SoakData(
            planned=self.planned,
            scheduled_at=scheduled_at,
            cutoff=cutoff,
            horizon=horizon,
            job_stages=stages,
            runs=runs,
            ledger=ledger,
            torn_lines=torn,
            faults=self.faults,
            cancels=_read_cancels(self.workdir / "cancels.log"),
            exits=self.exits,
            log_findings=_log_findings(self.workdir / "logs"),
            recovery=self.cfg.recovery,
            late_bound=self.cfg.late_bound,
        )


def _stored(r: RunInfo) -> StoredRun:
    return StoredRun(
        run_id=r.run_id,
        job_id=r.job_id,
        stage=r.stage.value,
        attempt=r.attempt,
        silo_id=r.silo_id,
        scheduled_for=r.scheduled_for.timestamp(),
        terminal_transitions=sum(1 for t in r.transitions if t.stage.terminal),
        reasons=tuple(t.reason or t.stage.value for t in r.transitions),
    )


def _read_cancels(path: Path) -> list[CancelRecord]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        job_id, sent, returned, tries, outcome = line.split("\t")
        out.append(CancelRecord(job_id, int(sent) / 1e6, int(returned) / 1e6, int(tries), outcome))
    return out


_NOISE = (
    (re.compile(r"\b(once|every|cron|flaky|doomed|long)-\d{5}(@\S+)?"), "<job>"),
    (re.compile(r"\b[\w.-]+-\d+-[0-9a-f]{8}\b"), "<silo>"),
    (re.compile(r"\d+(\.\d+)?"), "N"),
)


def _log_findings(logs: Path) -> Counter[str]:
    """Warnings, errors and tracebacks in the silos' stderr, with ids and numbers masked."""
    found: Counter[str] = Counter()
    for path in sorted(logs.glob("*.err")):
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                j = i + 1
                while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                    j += 1
                last = lines[j] if j < len(lines) else "?"
                found[_mask(f"Traceback: {last}")] += 1
                continue
            m = re.search(r" (WARNING|ERROR|CRITICAL) (\S+) (.*)$", line)
            if m:
                found[_mask(f"{m.group(1)} {m.group(2)}: {m.group(3)}")] += 1
    return found


def _mask(text: str) -> str:
    for pattern, repl in _NOISE:
        text = pattern.sub(repl, text)
    return text[:160]


def _tail(silo: SiloProc) -> str:
    return silo.err_path.read_text(errors="replace")[-2000:]


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


async def run_soak(cfg: SoakConfig) -> Report:
    """Run the soak and return its verdict (``report.ok``, ``report.text()``)."""
    if cfg.workdir is not None:
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        return await Soak(cfg, cfg.workdir).run()
    workdir = Path(tempfile.mkdtemp(prefix="anu-chaos-"))
    report: Report | None = None
    try:
        report = await Soak(cfg, workdir).run()
        return report
    finally:
        if cfg.keep or report is None or not report.ok:
            if cfg.log is not None:
                cfg.log(f"the soak's files (ledger, silo logs) are kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = SoakConfig()
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default=d.backend)
    parser.add_argument(
        "--url", help="a PostgreSQL server to use (never restarted); default: one of our own"
    )
    parser.add_argument("--silos", type=int, help="3 on PostgreSQL, 1 on SQLite")
    parser.add_argument("--max-silos", type=int, default=d.max_silos)
    parser.add_argument("--jobs", type=int, default=d.jobs)
    parser.add_argument("--duration", type=float, default=d.duration, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--faults", default=",".join(FAULT_KINDS), help="kinds to inject, comma-separated"
    )
    parser.add_argument(
        "--fault-gap", type=float, nargs=2, default=d.fault_gap, metavar=("MIN", "MAX")
    )
    parser.add_argument("--lease-ttl", type=float, default=d.lease_ttl)
    parser.add_argument("--dead-after", type=float, default=d.dead_after)
    parser.add_argument("--heartbeat", type=float, default=d.heartbeat)
    parser.add_argument("--drain-timeout", type=float, default=d.drain_timeout)
    parser.add_argument("--clock-jump", type=float, default=d.clock_jump)
    parser.add_argument("--late-bound", type=float, default=d.late_bound)
    parser.add_argument("--quiet", type=float, default=d.quiet)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the files and the schema")
    parser.add_argument("-q", "--quiet-log", action="store_true", help="print the report only")
    args = parser.parse_args(argv)
    faults = tuple(k for k in args.faults.split(",") if k)
    unknown = set(faults) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    silos = args.silos or (1 if args.backend == "sqlite" else d.silos)
    if args.backend == "sqlite" and silos != 1:
        parser.error("SQLite runs one silo: pass --silos 1")
    cfg = SoakConfig(
        backend=args.backend,
        url=args.url,
        silos=silos,
        max_silos=max(args.max_silos, silos),
        jobs=args.jobs,
        duration=args.duration,
        seed=args.seed,
        faults=faults,
        fault_gap=(args.fault_gap[0], args.fault_gap[1]),
        lease_ttl=args.lease_ttl,
        dead_after=args.dead_after,
        heartbeat=args.heartbeat,
        drain_timeout=args.drain_timeout,
        clock_jump=args.clock_jump,
        late_bound=args.late_bound,
        quiet=args.quiet,
        workdir=args.workdir,
        keep=args.keep,
        log=None if args.quiet_log else lambda m: print(m, flush=True),
    )
    try:
        report = asyncio.run(run_soak(cfg))
    except KeyboardInterrupt:
        return 2
    print(report.text(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
