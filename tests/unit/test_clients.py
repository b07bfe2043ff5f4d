"""Clients without a silo (acting under the job's lease) and the synchronous client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from anu_jobs import (
    ConfigurationError,
    DuplicateJobError,
    Every,
    Job,
    JobClient,
    JobContext,
    JobNotFoundError,
    JobSpec,
    JobStage,
    Once,
    RunStage,
    SyncJobClient,
)
from tests.conftest import SiloFactory


class Noop(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


async def test_a_client_without_a_silo_controls_idle_jobs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    async with JobClient.connect(url, jobs=[Noop]) as client:
        await client.schedule(Noop, job_id="a", trigger=Every(timedelta(hours=1)))
        await client.pause("a")
        assert (await client.get("a")).stage is JobStage.PAUSED
        await client.resume("a")
        assert (await client.get("a")).stage is JobStage.ACTIVE
        run_id = await client.trigger("a")
        status = await client.get("a")
        assert status.current_run is not None and status.current_run.run_id == run_id
        assert status.current_run.stage is RunStage.SCHEDULED
        await client.cancel("a", reason="no longer needed")
        status = await client.get("a")
        assert status.stage is JobStage.CANCELLED and status.next_fire_at is None
        assert status.reason == "no longer needed"
        assert await client.storage.lease_holder("a") is None  # handed back


async def test_work_scheduled_by_another_client_runs_on_the_silo(
    make_silo: SiloFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    async with make_silo(Noop, url=url, use_clock=False) as silo:
        async with JobClient.connect(url, jobs=[Noop]) as other:
            ids = await other.schedule_many(
                JobSpec(Noop, job_id=f"m{i}", trigger=Once(delay=timedelta(0))) for i in range(50)
            )
            assert ids == [f"m{i}" for i in range(50)]
            runs = await asyncio.gather(*(other.wait(i, timeout=10) for i in ids))
        assert {r.stage for r in runs} == {RunStage.COMPLETED}
        assert {r.silo_id for r in runs} == {silo.silo_id}


def test_sync_client(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    with SyncJobClient(url, jobs=[Noop]) as client:
        status = client.schedule(Noop, job_id="s", trigger=Every(timedelta(minutes=5)))
        assert status.next_fire_at is not None
        assert [j.job_id for j in client.list()] == ["s"]
        client.cancel("s")
        assert client.get("s").stage is JobStage.CANCELLED
        with pytest.raises(JobNotFoundError):
            client.get("nope")


async def test_schedule_many_writes_chunk_by_chunk(tmp_path: Path) -> None:
    """A generator of specs is consumed a chunk at a time; a bad spec stops the call before
    its chunk is written, and the chunks before it stay written."""
    url = f"sqlite:///{tmp_path}/jobs.db"

    def specs() -> Iterator[JobSpec]:
        for i in range(25):
            yield JobSpec(Noop, job_id=f"c{i}", trigger=Once(delay=timedelta(hours=1)))
        yield JobSpec(Noop, job_id="c3", trigger=Once(delay=timedelta(hours=1)))  # again

    async with JobClient.connect(url, jobs=[Noop]) as client:
        with pytest.raises(DuplicateJobError):
            await client.schedule_many(specs(), chunk=10)
        stored = sorted(j.job_id for j in await client.list(limit=100))
        assert stored == sorted(f"c{i}" for i in range(20))
        with pytest.raises(ConfigurationError):
            await client.schedule_many([], chunk=0)
        ids = await client.schedule_many(
            (
                JobSpec(Noop, job_id=f"d{i}", trigger=Once(delay=timedelta(hours=1)))
                for i in range(7)
            ),
            chunk=3,
        )
        assert ids == [f"d{i}" for i in range(7)]
        assert len(await client.list(limit=100)) == 27
