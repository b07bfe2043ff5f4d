"""The soak's cluster: silo processes on one store, and a supervisor.

- :class:`SiloProc`: one ``python -m chaos.silo`` process, its signals and its clock offset.
- :class:`Cluster`: the store (a SQLite file, a server of the soak's own or a schema on a
  shared one), starting, stopping and killing silos, and the supervisor that replaces the
  ones that die and restarts the ones declared dead. It also holds what the soak records
  (faults, exits, the planned jobs): the base of :class:`chaos.soak.Soak`, whose load
  (:mod:`chaos.load`), faults (:mod:`chaos.faults`) and collection (:mod:`chaos.collect`)
  are built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from anu_jobs import JobClient
from chaos.config import ROOT, SoakConfig, child_env
from chaos.records import FaultEvent, PlannedJob, SiloExit

__all__ = ["DEAD_GRACE", "ROOT", "Cluster", "SiloProc"]


#: how long a silo may stay declared dead (without joining again) before it is restarted
DEAD_GRACE = 2.0


class SiloProc:
    """One ``python -m chaos.silo`` process."""

    def __init__(self, serial: int, cfg: SoakConfig, url: str, workdir: Path) -> None:
        self.serial = serial
        self.workdir = workdir
        self.err_path = workdir / "logs" / f"silo-{serial:02d}.err"
        env = child_env()
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


class Cluster:
    """The store, the silo processes and the supervisor; what the soak recorded."""

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
