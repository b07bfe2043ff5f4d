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
import logging
import math
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``chaos`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anu_jobs import JobClient
from chaos.check import check
from chaos.cluster import SiloProc
from chaos.collect import Collector
from chaos.config import FAULT_KINDS, SoakConfig
from chaos.faults import FaultInjector
from chaos.jobs import JOB_TYPES
from chaos.load import LoadPlanner
from chaos.records import FaultEvent, Report

__all__ = ["FAULT_KINDS", "SoakConfig", "main", "run_soak"]


class Soak(LoadPlanner, FaultInjector, Collector):
    """One soak: the cluster (:mod:`chaos.cluster`), its load (:mod:`chaos.load`), the
    faults (:mod:`chaos.faults`), then what it collected (:mod:`chaos.collect`) checked by
    :func:`chaos.check.check`."""

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
