"""One silo process of the soak: ``python -m chaos.silo --url URL --dir WORKDIR ...``.

Runs until SIGTERM (a graceful stop). Its clock is a :class:`~chaos.clock.ChaosClock`
whose offset the soak changes through ``WORKDIR/clock/<pid>.offset`` and SIGUSR1. It
writes its silo id to ``WORKDIR/silos/<pid>.id`` and its jobs' ledger to
``WORKDIR/ledger/<pid>.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``chaos`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anu_jobs import Silo, SiloBuilder
from chaos import jobs
from chaos.clock import ChaosClock
from chaos.ledger import LedgerWriter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--dead-after", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--drain-timeout", type=float, default=2.0)
    parser.add_argument("--cancel-grace", type=float, default=1.0)
    args = parser.parse_args(argv)
    pid = os.getpid()
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {pid} %(levelname)s %(name)s %(message)s"
    )
    # The soak sends SIGQUIT to a silo that does not stop: every thread's stack to stderr.
    faulthandler.register(signal.SIGQUIT, all_threads=True)
    workdir: Path = args.dir
    clock = ChaosClock(workdir / "clock" / f"{pid}.offset")
    clock.install()
    silo = (
        SiloBuilder()
        .use_storage(args.url)
        .use_jobs(*jobs.JOB_TYPES)
        .use_clock(clock)
        .use_history(1_000_000)  # keep every run: the soak checks them all
        .use_options(
            lease_ttl=timedelta(seconds=args.lease_ttl),
            dead_after=timedelta(seconds=args.dead_after),
            heartbeat=timedelta(seconds=args.heartbeat),
            drain_timeout=args.drain_timeout,
            cancel_grace=timedelta(seconds=args.cancel_grace),
        )
        .use_service(PublishSiloId(workdir / "silos" / f"{pid}.id"))
        .build()
    )
    jobs.LEDGER = LedgerWriter(workdir / "ledger" / f"{pid}.log", lambda: silo.silo_id, clock)
    silo.run()


class PublishSiloId:
    """Keeps ``<pid>.id`` naming the silo's id now: a silo that the cluster declared dead
    may join again under a new id, and the soak's supervisor must know it is alive."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._task: asyncio.Task[None] | None = None

    def write(self, silo_id: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(silo_id)
        tmp.replace(self.path)

    async def start(self, silo: Silo) -> None:
        self.write(silo.silo_id)
        self._task = asyncio.get_running_loop().create_task(self._watch(silo))

    async def _watch(self, silo: Silo) -> None:
        known = silo.silo_id
        while True:
            await asyncio.sleep(0.1)
            if silo.silo_id != known:
                known = silo.silo_id
                self.write(known)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


if __name__ == "__main__":
    main()
