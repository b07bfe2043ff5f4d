"""Many silo processes on one PostgreSQL: one activation, failover, fencing, cancels."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from anu_jobs import Cron, Every, JobClient, JobSpec, Once, RunStage
from tests.integration.silo_proc import LongOnFirstAttempt, Record, WaitsForCancel

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class Silo:
    """A real silo process on a shared store."""

    def __init__(
        self, url: str, markers: Path, lease_ttl: float = 2.0, dead_after: float = 1.0
    ) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.silo_proc",
                url,
                str(markers),
                str(lease_ttl),
                str(dead_after),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "ANU_TEST_LONG_SECONDS": "60"},
        )

    @property
    def pid(self) -> str:
        return str(self.proc.pid)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err.decode()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[list[Silo]]:
    silos: list[Silo] = []
    yield silos
    for silo in silos:
        if silo.proc.poll() is None:
            silo.kill()


def ledger(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def until(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_three_silos_run_every_fire_once(
    pg_url: str, tmp_path: Path, cluster: list[Silo]
) -> None:
    cluster.extend(Silo(pg_url, tmp_path) for _ in range(3))
    async with JobClient.connect(pg_url, jobs=[Record]) as client:
        await until(lambda: _alive(client, 3), "three silos to join")
        specs = [
            JobSpec(Record, job_id=f"once-{i}", trigger=Once(delay=timedelta(seconds=1 + i % 5)))
            for i in range(300)
        ]
        specs += [
            JobSpec(Record, job_id=f"every-{i}", trigger=Every(timedelta(seconds=2)))
            for i in range(150)
        ]
        specs += [
            JobSpec(Record, job_id=f"cron-{i}", trigger=Cron("*/3 * * * * *")) for i in range(50)
        ]
        await client.schedule_many(specs)
        await until(
            lambda: _finished(client, "once-", 300), "every one-time job to run", timeout=40
        )
        await asyncio.sleep(6)  # a few rounds of the recurring ones
        for silo in cluster:
            silo.stop()
        entries = ledger(tmp_path / "record.log")
        executions = Counter(e[1] for e in entries)
        assert max(executions.values()) == 1, "a fire was executed twice"
        by_silo = Counter(e[3] for e in entries)
        assert len(by_silo) >= 2, f"work did not spread over the silos: {by_silo}"
        for job_id in ("every-0", "every-149", "cron-7"):
            runs = sorted(await client.runs(job_id), key=lambda r: r.scheduled_for)
            done = [r for r in runs if r.stage is RunStage.COMPLETED]
            assert len(done) >= 2
            step = timedelta(seconds=2 if job_id.startswith("every") else 3)
            gaps = {b.scheduled_for - a.scheduled_for for a, b in itertools.pairwise(runs)}
            assert gaps == {step}, f"{job_id}: a fire was missed: {gaps}"
        assert len({e[1] for e in entries if e[0].startswith("once-")}) == 300


async def test_kill_9_moves_the_run_to_another_silo(
    pg_url: str, tmp_path: Path, cluster: list[Silo]
) -> None:
    cluster.extend(Silo(pg_url, tmp_path) for _ in range(2))
    async with JobClient.connect(pg_url, jobs=[LongOnFirstAttempt]) as client:
        await until(lambda: _alive(client, 2), "two silos to join")
        await client.schedule(LongOnFirstAttempt, job_id="long", trigger=Once(delay=timedelta(0)))
        await until(lambda: ledger(tmp_path / "long.log"), "the first attempt")
        first_pid = ledger(tmp_path / "long.log")[0][3]
        victim = next(s for s in cluster if s.pid == first_pid)
        victim.kill()
        killed = time.monotonic()
        run = await client.wait("long", timeout=30)
        took = time.monotonic() - killed
    assert run.stage is RunStage.COMPLETED and run.attempt == 2
    done = ledger(tmp_path / "long.log")[-1]
    assert done[0] == "done" and done[3] != first_pid
    assert [r.run_id for r in await _runs(pg_url, "long")] == [run.run_id]
    assert took < 10


async def test_a_frozen_silo_is_fenced_off(
    pg_url: str, tmp_path: Path, cluster: list[Silo]
) -> None:
    cluster.extend(Silo(pg_url, tmp_path) for _ in range(2))
    async with JobClient.connect(pg_url, jobs=[LongOnFirstAttempt]) as client:
        await until(lambda: _alive(client, 2), "two silos to join")
        await client.schedule(LongOnFirstAttempt, job_id="frozen", trigger=Once(delay=timedelta(0)))
        await until(lambda: ledger(tmp_path / "long.log"), "the first attempt")
        first_pid = ledger(tmp_path / "long.log")[0][3]
        frozen = next(s for s in cluster if s.pid == first_pid)
        frozen.proc.send_signal(signal.SIGSTOP)
        run = await client.wait("frozen", timeout=30)  # another silo took the lease over
        assert run.attempt == 2 and run.stage is RunStage.COMPLETED
        frozen.proc.send_signal(signal.SIGCONT)  # it wakes up believing it still runs attempt 1
        await asyncio.sleep(3)
        after = await client.runs("frozen")
        status = await client.get("frozen")
        silos = {s.silo_id: s.status for s in await client.silos()}
    assert [(r.run_id, r.stage, r.attempt) for r in after] == [(run.run_id, RunStage.COMPLETED, 2)]
    assert status.last_run is not None and status.last_run.attempt == 2
    assert "dead" in silos.values()  # the frozen silo was declared dead and stays so


async def test_cancel_from_another_process_reaches_the_running_silo(
    pg_url: str, tmp_path: Path, cluster: list[Silo]
) -> None:
    cluster.extend(Silo(pg_url, tmp_path) for _ in range(2))
    async with JobClient.connect(pg_url, jobs=[WaitsForCancel]) as client:
        await until(lambda: _alive(client, 2), "two silos to join")
        await client.schedule(WaitsForCancel, job_id="w", trigger=Once(delay=timedelta(0)))
        await until(lambda: ledger(tmp_path / "cancel.log"), "the attempt to start")
        script = (
            "import asyncio,sys\n"
            "from anu_jobs import JobClient\n"
            "async def main():\n"
            "    async with JobClient.connect(sys.argv[1]) as c:\n"
            "        await c.cancel('w', reason='from another process')\n"
            "asyncio.run(main())\n"
        )
        sent = time.monotonic()
        other = await asyncio.create_subprocess_exec(sys.executable, "-c", script, pg_url, cwd=ROOT)
        assert await asyncio.wait_for(other.wait(), 30) == 0
        await until(lambda: len(ledger(tmp_path / "cancel.log")) >= 2, "the token to trip")
        took = time.monotonic() - sent
        run = await client.wait("w", timeout=10)
    assert run.stage is RunStage.CANCELLED
    assert ledger(tmp_path / "cancel.log")[-1][-1] == "cancelled=True"
    assert took < 3.0  # includes starting a Python process; the notice itself is immediate


async def _alive(client: JobClient, n: int) -> bool:
    return len([s for s in await client.silos() if s.status == "active"]) >= n


async def _finished(client: JobClient, prefix: str, n: int) -> bool:
    jobs = await client.list(text=prefix, stage="finished", limit=n + 1)
    return len(jobs) >= n


async def _runs(url: str, job_id: str) -> list[object]:
    async with JobClient.connect(url) as client:
        return list(await client.runs(job_id))
