"""Due times years away, up to the last day a datetime can hold, fire when their time
comes, on every provider; a schedule that runs past the year 9999 simply ends.

The fake clock jumps most of the way (``set`` would walk every heartbeat of the years
between) and then steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from anu_jobs import Every, Job, JobContext, JobStage, Once, RunStage
from anu_jobs.testing import FakeClock
from tests.conftest import SiloFactory, drive


class Stamp(Job):
    fired: list[datetime] = []

    async def execute(self, ctx: JobContext) -> None:
        Stamp.fired.append(ctx.scheduled_for)


async def test_a_once_170_years_away_fires_on_time(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    Stamp.fired.clear()
    at = datetime(2200, 3, 1, 12, tzinfo=UTC)
    async with make_silo(Stamp) as silo:
        status = await silo.client.schedule(Stamp, job_id="far", trigger=Once(at=at))
        assert status.next_fire_at == at
        clock.jump(at - timedelta(seconds=2))
        await clock.advance(1)
        assert Stamp.fired == []
        await drive(clock, lambda: Stamp.fired, "the fire in 2200", step=0.5)
        run = await silo.client.wait("far", timeout=5)
    assert run.stage is RunStage.COMPLETED and run.scheduled_for == at
    assert Stamp.fired == [at]


async def test_an_every_at_the_end_of_time_fires_then_finishes(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    Stamp.fired.clear()
    start = datetime(9999, 12, 30, tzinfo=UTC)
    async with make_silo(Stamp) as silo:
        await silo.client.schedule(
            Stamp, job_id="last", trigger=Every(timedelta(days=1), start=start)
        )
        clock.jump(start - timedelta(seconds=1))
        await drive(clock, lambda: len(Stamp.fired) >= 1, "the fire on 9999-12-30", step=1)
        clock.jump(start + timedelta(days=1) - timedelta(seconds=1))

        async def finished() -> bool:
            return (await silo.client.get("last")).stage is JobStage.FINISHED

        await drive(clock, finished, "the schedule to run out", step=1)
    assert Stamp.fired == [start, start + timedelta(days=1)]
