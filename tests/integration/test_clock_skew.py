"""Silos whose clocks disagree, on one PostgreSQL: the server's clock decides who holds a
job and who is alive, so a silo 10 minutes ahead and one 10 minutes behind keep their
jobs and each other, and a silo that stops heartbeating is still found dead."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from chaos.clock import ChaosClock

from anu_jobs import Job, JobClient, JobContext, Once, RunStage, Silo, SiloBuilder

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TEN_MINUTES = 600.0
HOLD = 4.0  # seconds a Hold attempt runs: longer than the lease and dead_after below
STARTS: list[tuple[str, int]] = []  # (job id, attempt) of every attempt begun


class Hold(Job):
    """Runs for HOLD seconds, noting that it began."""

    async def execute(self, ctx: JobContext) -> None:
        STARTS.append((ctx.job_id, ctx.attempt))
        await asyncio.sleep(HOLD)


@asynccontextmanager
async def skewed_silo(url: str, offset: float) -> AsyncIterator[Silo]:
    """A silo in this process whose clock is ``offset`` seconds off the real time."""
    clock = ChaosClock()
    clock.set_offset(offset)
    silo = (
        SiloBuilder()
        .use_storage(url)
        .use_jobs(Hold)
        .use_clock(clock)
        .use_options(
            lease_ttl=timedelta(seconds=1.5),
            heartbeat=timedelta(seconds=0.25),
            dead_after=timedelta(seconds=1),
            drain_timeout=HOLD + 2,
        )
        .build()
    )
    async with silo:
        yield silo


async def until(predicate: Callable[[], Awaitable[bool] | bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.timeout(60)
async def test_silos_ten_minutes_apart_keep_their_jobs_and_each_other(pg_url: str) -> None:
    """The slow silo takes its jobs, then the fast one joins and takes its own. By its clock
    the slow silo's heartbeats and leases are 20 minutes old; before the store's clock
    decided, it declared the slow silo dead at once and ran its jobs again (attempt 2)."""
    STARTS.clear()
    async with skewed_silo(pg_url, -TEN_MINUTES) as slow:
        for i in range(3):
            await slow.client.schedule(Hold, job_id=f"slow-{i}", trigger=Once(delay=timedelta(0)))
        await until(lambda: len(STARTS) == 3, "the slow silo to start its jobs", 10)
        async with skewed_silo(pg_url, TEN_MINUTES) as fast:
            for i in range(3):
                await fast.client.schedule(
                    Hold, job_id=f"fast-{i}", trigger=Once(delay=timedelta(0))
                )
            await until(lambda: len(STARTS) >= 6, "the fast silo to start its jobs", 10)
            # Both hold their jobs for HOLD seconds: many heartbeats, renewals and claims.
            assert {f"slow-{i}" for i in range(3)} <= set(slow.runtime.activations)
            assert {f"fast-{i}" for i in range(3)} <= set(fast.runtime.activations)
            runs = {
                job_id: await slow.client.wait(job_id, timeout=HOLD + 5) for job_id, _ in STARTS
            }
            ids = (slow.silo_id, fast.silo_id)
            silos = await slow.client.silos()
            assert (slow.runtime.generation, fast.runtime.generation) == (1, 1)
    assert sorted(STARTS) == sorted((job_id, 1) for job_id in runs)  # each ran once
    assert all(r.stage is RunStage.COMPLETED and r.attempt == 1 for r in runs.values()), runs
    shown = [(s.silo_id, s.status) for s in silos]
    assert {s.silo_id for s in silos} == set(ids), shown
    assert all(s.status == "active" for s in silos), shown


# -- a silo that really stops --------------------------------------------------------------


class ChaosSilo:
    """A chaos silo process (``chaos/silo.py``): lease 3 s, heartbeat 1 s, dead after 2 s;
    its clock's offset is set through its offset file and SIGUSR1."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chaos.silo", "--url", url, "--dir", str(workdir)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def skew(self, seconds: float) -> None:
        (self.workdir / "clock" / f"{self.pid}.offset").write_text(str(seconds))
        self.proc.send_signal(signal.SIGUSR1)


@pytest.fixture
def chaos_workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="anu-skew-") as tmp:
        workdir = Path(tmp)
        for sub in ("clock", "silos", "ledger"):
            (workdir / sub).mkdir()
        yield workdir


@pytest.mark.timeout(60)
async def test_a_slow_silo_finds_a_stopped_fast_one_dead(pg_url: str, chaos_workdir: Path) -> None:
    """Before the store's clock decided, a silo 10 minutes behind saw the heartbeats of
    one 10 minutes ahead as 20 minutes in the future: stopped (SIGSTOP), that one was
    never declared dead, and its jobs were stuck as long as its leases said."""
    fast, slow = ChaosSilo(pg_url, chaos_workdir), ChaosSilo(pg_url, chaos_workdir)
    try:
        async with JobClient.connect(pg_url) as client:

            async def statuses() -> dict[int, list[str]]:
                found: dict[int, list[str]] = {fast.pid: [], slow.pid: []}
                for info in await client.silos():
                    if info.pid in found:
                        found[info.pid].append(info.status)
                return found

            async def both_active() -> bool:
                return all(s == ["active"] for s in (await statuses()).values())

            await until(both_active, "two silos", 20)
            fast.skew(TEN_MINUTES)
            slow.skew(-TEN_MINUTES)
            await asyncio.sleep(3)  # heartbeats and judgements, 20 minutes apart
            assert await statuses() == {fast.pid: ["active"], slow.pid: ["active"]}
            fast.proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()

            async def fast_dead() -> bool:
                return (await statuses())[fast.pid] == ["dead"]

            await until(fast_dead, "the stopped fast silo to be declared dead", 10)
            took = time.monotonic() - stopped
            assert (await statuses())[slow.pid] == ["active"]
    finally:
        for silo in (fast, slow):
            silo.proc.send_signal(signal.SIGCONT)
            silo.proc.send_signal(signal.SIGTERM)
        for silo in (fast, slow):
            try:
                silo.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                silo.proc.kill()
                silo.proc.wait()
    assert took < 6, f"declared dead {took:.1f}s after it stopped (dead after 2 s)"
