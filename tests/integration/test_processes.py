"""Durability and crashes with real silo processes on one SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from anu_jobs import Cron, Every, JobClient, Once, RunStage
from tests.conftest import eventually
from tests.integration.silo_proc import LongOnFirstAttempt, Record, WaitsForCancel

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class SiloProcess:
    def __init__(self, db: Path, markers: Path, concurrency: int = 100, poll: float = 1.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.silo_proc", str(db), str(markers)],
            cwd=ROOT,
            env={
                **os.environ,
                "ANU_TEST_CONCURRENCY": str(concurrency),
                "ANU_TEST_POLL_SECONDS": str(poll),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=15)
        assert self.proc.returncode == 0, err.decode()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)  # reaps it and closes its pipe


@pytest.fixture
def procs() -> Iterator[list[SiloProcess]]:
    started: list[SiloProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.kill()


def wait_for(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_schedules_survive_a_restart(tmp_path: Path, procs: list[SiloProcess]) -> None:
    db = tmp_path / "jobs.db"
    procs.append(SiloProcess(db, tmp_path))
    async with JobClient.connect(f"sqlite:///{db}", jobs=[Record]) as client:
        await client.schedule(Record, job_id="every", trigger=Every(timedelta(seconds=1)))
        await client.schedule(Record, job_id="cron", trigger=Cron("*/2 * * * * *"))
        await client.schedule(Record, job_id="once", trigger=Once(delay=timedelta(seconds=4)))
        wait_for(
            lambda: any(line.startswith("every ") for line in lines(tmp_path / "record.log")),
            "a first run",
        )
        procs[0].terminate()
        before = len(await client.runs("every"))
        assert before >= 1
        procs.append(SiloProcess(db, tmp_path))  # a new silo, a new process, the same file
        pids = {str(procs[0].proc.pid), str(procs[1].proc.pid)}
        wait_for(
            lambda: (
                {
                    line.split()[0]
                    for line in lines(tmp_path / "record.log")
                    if line.split()[3] == str(procs[1].proc.pid)
                }
                >= {"every", "cron", "once"}
            ),
            "every schedule to fire in the second silo",
        )
        procs[1].terminate()
        runs = await client.runs("every")
        assert len(runs) > before  # history kept, new runs added
        assert {r.stage for r in runs} <= {RunStage.COMPLETED, RunStage.SKIPPED}
        # silo ids are host-pid-nonce: both processes recorded runs of the job
        assert {r.silo_id.split("-")[-2] for r in runs if r.silo_id} == pids
        ids = [r.run_id for r in runs]
        assert len(ids) == len(set(ids))


async def test_a_run_cut_off_by_sigkill_is_retried_as_its_next_attempt(
    tmp_path: Path, procs: list[SiloProcess]
) -> None:
    db = tmp_path / "jobs.db"
    procs.append(SiloProcess(db, tmp_path))
    async with JobClient.connect(f"sqlite:///{db}", jobs=[LongOnFirstAttempt]) as client:
        await client.schedule(LongOnFirstAttempt, job_id="long", trigger=Once(delay=timedelta(0)))
        wait_for(
            lambda: any(line.startswith("start") for line in lines(tmp_path / "long.log")),
            "the first attempt",
        )

        async def recorded_running() -> bool:
            # Its code may start a group commit ahead of its record: kill it once on record.
            run = (await client.get("long")).current_run
            return run is not None and run.stage is RunStage.RUNNING

        await eventually(recorded_running, "the first attempt on record", timeout=10)
        procs[0].kill()  # SIGKILL mid-run: no chance to record anything more
        killed_at = time.monotonic()
        procs.append(SiloProcess(db, tmp_path))
        run = await client.wait("long", timeout=30)
        failover = time.monotonic() - killed_at
        procs[1].terminate()
        assert run.stage is RunStage.COMPLETED
        assert run.attempt == 2
        stages = [t.stage for t in run.transitions]
        assert stages == [
            RunStage.SCHEDULED,
            RunStage.RUNNING,
            RunStage.RETRYING,
            RunStage.RUNNING,
            RunStage.COMPLETED,
        ]
        assert (
            run.transitions[2].reason is not None
            and "AttemptInterrupted" in run.transitions[2].reason
        )
        records = await client.runs("long")
        assert [r.run_id for r in records] == [run.run_id]  # one record for the run, written once
        log = lines(tmp_path / "long.log")
        assert log[0].split()[2] == "1" and log[-1].startswith("done") and log[-1].split()[2] == "2"
        assert log[-1].split()[3] == str(procs[1].proc.pid)
        assert failover < 15


async def test_cancel_from_another_process_reaches_the_running_attempt(
    tmp_path: Path, procs: list[SiloProcess]
) -> None:
    db = tmp_path / "jobs.db"
    procs.append(SiloProcess(db, tmp_path))
    async with JobClient.connect(f"sqlite:///{db}", jobs=[WaitsForCancel]) as client:
        await client.schedule(WaitsForCancel, job_id="w", trigger=Once(delay=timedelta(0)))
        wait_for(lambda: lines(tmp_path / "cancel.log"), "the attempt to start")
        sent = time.monotonic()
        await client.cancel("w", reason="from the test process")
        run = await client.wait("w", timeout=10)
        took = time.monotonic() - sent
        procs[0].terminate()
    assert run.stage is RunStage.CANCELLED
    assert run.transitions[-1].reason == "from the test process"
    assert lines(tmp_path / "cancel.log")[-1].endswith("cancelled=True")  # the token tripped
    assert took < 3.0  # the silo polls its inbox every second on SQLite


async def test_runs_waiting_for_a_slot_survive_sigkill(
    tmp_path: Path, procs: list[SiloProcess]
) -> None:
    """A run claimed but still waiting for one of the silo's slots when it dies is not lost."""
    db = tmp_path / "jobs.db"
    procs.append(SiloProcess(db, tmp_path, concurrency=1))
    async with JobClient.connect(f"sqlite:///{db}", jobs=[LongOnFirstAttempt, Record]) as client:
        await client.schedule(LongOnFirstAttempt, job_id="long", trigger=Once(delay=timedelta(0)))
        wait_for(lambda: lines(tmp_path / "long.log"), "the long job to take the only slot")
        for i in range(3):
            await client.schedule(Record, job_id=f"queued-{i}", trigger=Once(delay=timedelta(0)))
        waiting = 0
        for _ in range(100):  # until the silo has claimed one, still waiting for the slot
            # (a claimed job's activation writes nothing until its attempt begins: the
            # lease is what shows the claim)
            holders = [await client.storage.lease_holder(f"queued-{i}") for i in range(3)]
            waiting = sum(1 for h in holders if h is not None)
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting, "the silo never claimed a queued job"
        procs[0].kill()
        procs.append(SiloProcess(db, tmp_path))
        for i in range(3):
            run = await client.wait(f"queued-{i}", timeout=20)
            assert run.stage is RunStage.COMPLETED
        assert (await client.wait("long", timeout=20)).attempt == 2
        procs[1].terminate()


async def _eventually(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_another_processs_schedule_and_cancel_reach_the_silo_without_a_poll(
    tmp_path: Path, procs: list[SiloProcess]
) -> None:
    """The silo polls once a minute here: only its watch of the file can tell it that a
    job was scheduled, or a cancel posted, by another process."""
    db = tmp_path / "jobs.db"
    procs.append(SiloProcess(db, tmp_path, poll=60.0))
    async with JobClient.connect(f"sqlite:///{db}", jobs=[Record, WaitsForCancel]) as client:
        silos: list[Any] = []

        async def joined() -> bool:
            silos[:] = await client.silos()
            return bool(silos)

        deadline = time.monotonic() + 20
        while not await joined():
            assert time.monotonic() < deadline, "the silo did not join"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # its first claims are done: it sleeps for the poll now

        await client.schedule(Record, job_id="now", trigger=Once(delay=timedelta(0)))
        record = tmp_path / "record.log"
        await _eventually(
            lambda: any(line.startswith("now ") for line in lines(record)), "the job to run"
        )

        await client.schedule(WaitsForCancel, job_id="w", trigger=Once(delay=timedelta(0)))
        log = tmp_path / "cancel.log"
        await _eventually(lambda: any("start" in line for line in lines(log)), "w to start")
        await client.cancel("w", reason="from another process")
        await _eventually(
            lambda: any("cancelled=True" in line for line in lines(log)), "the cancel to land"
        )
        run = await client.wait("w", timeout=10)
    assert run.stage is RunStage.CANCELLED
    procs[0].terminate()
