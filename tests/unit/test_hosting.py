"""Builder, declared jobs, bad input, misfires and quarantine, on an embedded silo."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pydantic
import pytest

import anu_jobs._json
from anu_jobs import (
    ConfigurationError,
    Cron,
    DuplicateJobError,
    Every,
    InvalidParamsError,
    InvalidScheduleError,
    Job,
    JobContext,
    JobNotFoundError,
    JobSpec,
    JobStage,
    MisfirePolicy,
    Once,
    RunStage,
    SiloBuilder,
    UnknownJobTypeError,
)
from anu_jobs._time import to_us
from anu_jobs.testing import FakeClock
from tests.conftest import SiloFactory, eventually, settle

seen: list[Any] = []


class Noop(Job):
    async def execute(self, ctx: JobContext) -> None:
        seen.append(ctx.run_id)


class DigestParams(pydantic.BaseModel):
    users: list[int]
    subject: str = "digest"


class Digest(Job):
    Params = DigestParams

    async def execute(self, ctx: JobContext) -> None:
        assert isinstance(ctx.params, DigestParams)
        seen.append(ctx.params.users)


@dataclasses.dataclass
class ResizeParams:
    width: int
    height: int


class Resize(Job):
    Params = ResizeParams

    async def execute(self, ctx: JobContext) -> None:
        assert isinstance(ctx.params, ResizeParams)
        seen.append((ctx.params.width, ctx.params.height))


@pytest.fixture(autouse=True)
def _reset() -> None:
    seen.clear()


async def test_params_are_validated_by_pydantic_and_dataclasses(make_silo: SiloFactory) -> None:
    async with make_silo(Digest, Resize) as silo:
        c = silo.client
        with pytest.raises(InvalidParamsError, match="users"):
            await c.schedule(Digest, params={"users": "nope"})
        with pytest.raises(InvalidParamsError):
            await c.schedule(Resize, params={"width": 1})
        await c.schedule(Digest, job_id="d", params={"users": [1, 2]})
        await c.schedule(Resize, job_id="r", params=ResizeParams(3, 4))
        assert (await c.get("d")).params == {"users": [1, 2], "subject": "digest"}
        await c.wait("d", run_id=await c.trigger("d"), timeout=2)
        await c.wait("r", run_id=await c.trigger("r"), timeout=2)
    assert [1, 2] in seen and (3, 4) in seen


@pytest.mark.parametrize(
    "params",
    [{"when": object()}, {"x": float("nan")}, {1: "int key"}, ["not", "a", "dict"], {"s": {1, 2}}],
)
async def test_params_that_are_not_json_are_refused(make_silo: SiloFactory, params: Any) -> None:
    async with make_silo(Noop) as silo:
        with pytest.raises(InvalidParamsError):
            await silo.client.schedule(Noop, job_id="x", params=params)
        assert await silo.storage.read_state("x") is None


async def test_params_past_the_document_limit_are_refused_and_nothing_is_stored(
    make_silo: SiloFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anu_jobs._json, "MAX_DOCUMENT", 1000)
    fits, too_big = {"s": "x" * 992}, {"s": "x" * 993}  # 1,000 and 1,001 characters of JSON
    async with make_silo(Noop) as silo:
        c = silo.client
        with pytest.raises(InvalidParamsError, match="at least 1,001 characters"):
            await c.schedule(Noop, job_id="big", params=too_big)
        specs = [JobSpec(Noop, job_id="a"), JobSpec(Noop, job_id="b", params=too_big)]
        with pytest.raises(InvalidParamsError, match="at most 1,000"):
            await c.schedule_many(specs)
        for job_id in ("big", "a", "b"):
            assert await silo.storage.read_state(job_id) is None
        await c.schedule(Noop, job_id="fits", params=fits)
        assert (await c.get("fits")).params == fits


async def test_bad_input_raises_typed_errors(make_silo: SiloFactory) -> None:
    async with make_silo(Noop) as silo:
        c = silo.client
        with pytest.raises(UnknownJobTypeError, match="Nope"):
            await c.schedule("Nope")
        with pytest.raises(JobNotFoundError):
            await c.get("missing")
        for call in (c.trigger, c.cancel, c.pause, c.resume, c.delete, c.runs):
            with pytest.raises(JobNotFoundError):
                await call("missing")
        with pytest.raises(ConfigurationError):
            await c.schedule(Noop, job_id="")
        await c.schedule(Noop, job_id="dup")
        with pytest.raises(DuplicateJobError):
            await c.schedule(Noop, job_id="dup")
        status = await c.schedule(
            Noop, job_id="dup", trigger=Every(timedelta(hours=1)), replace=True
        )
        assert status.triggers == (Every(timedelta(hours=1), start=status.triggers[0].start),)  # type: ignore[attr-defined]
        assert (await c.get("dup")).next_fire_at is not None
    with pytest.raises(InvalidScheduleError):
        Cron("61 * * * *")
    with pytest.raises(InvalidScheduleError):
        Cron("* * * * *", tz="Mars/Olympus")
    with pytest.raises(InvalidScheduleError):
        Every(timedelta(0))
    with pytest.raises(ConfigurationError):
        SiloBuilder().use_storage("ftp://x")
    with pytest.raises(ConfigurationError):
        SiloBuilder().use_options(not_an_option=1)


async def test_declared_jobs_are_upserted_without_reset_and_retired_when_removed(
    make_silo: SiloFactory, clock: FakeClock, memory_url: str
) -> None:
    def declare(b: SiloBuilder) -> SiloBuilder:
        return b.use_recurring_job(Noop, timedelta(minutes=10), job_id="ten").use_cron_job(
            Noop, "0 3 * * *", tz="Europe/Zurich", job_id="nightly"
        )

    async with make_silo(configure=declare) as silo:
        first = await silo.client.get("ten")
        await silo.client.wait("ten", run_id=await silo.client.trigger("ten"), timeout=2)
    await clock.advance(60)
    async with make_silo(configure=declare) as silo:
        again = await silo.client.get("ten")
        assert again.next_fire_at == first.next_fire_at  # a restart does not reset the schedule
        assert len(await silo.client.runs("ten")) == 1  # nor lose history
    async with make_silo(
        configure=lambda b: b.use_recurring_job(Noop, timedelta(minutes=10), job_id="ten")
    ) as silo:
        nightly = await silo.client.get("nightly")
        assert nightly.stage is JobStage.CANCELLED
        assert "removed" in (nightly.reason or "")
        assert (await silo.client.get("ten")).stage is JobStage.ACTIVE


async def test_changed_declaration_updates_the_schedule(make_silo: SiloFactory) -> None:
    async with make_silo(
        configure=lambda b: b.use_recurring_job(Noop, timedelta(minutes=10))
    ) as silo:
        assert (await silo.client.get("Noop")).triggers[0].interval == timedelta(minutes=10)  # type: ignore[attr-defined]
    async with make_silo(
        configure=lambda b: b.use_recurring_job(Noop, timedelta(minutes=5))
    ) as silo:
        assert (await silo.client.get("Noop")).triggers[0].interval == timedelta(minutes=5)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("policy", "runs", "skipped"),
    [("run_once", 1, 1), ("skip", 0, 1), ("catch_up", 6, 0)],
)
async def test_misfire_policy_after_downtime(
    make_silo: SiloFactory, clock: FakeClock, policy: str, runs: int, skipped: int
) -> None:
    async with make_silo(Noop) as silo:
        await silo.client.schedule(
            Noop,
            job_id="m",
            trigger=Every(timedelta(minutes=1)),
            misfire=MisfirePolicy(policy),  # type: ignore[arg-type]
        )
    clock.jump(clock.now() + timedelta(minutes=6, seconds=45))  # the silo was down for 6 fires
    async with make_silo(Noop) as silo:
        await eventually(
            lambda: _terminal(silo, "m", runs + skipped), f"{runs} runs and {skipped} skip records"
        )
        await settle()
        records = await silo.storage.read_runs("m")
    assert len([r for r in records if r.stage == "completed"]) == runs
    assert len([r for r in records if r.stage == "skipped"]) == skipped


async def test_unknown_job_type_fails_that_job_only(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    class Gone(Job):
        async def execute(self, ctx: JobContext) -> None:
            return None

    async with make_silo(Gone) as silo:
        await silo.client.schedule(Gone, job_id="gone", trigger=Every(timedelta(seconds=1)))
    async with make_silo(Noop) as silo:  # the class is no longer in this silo's code
        await silo.client.schedule(Noop, job_id="ok")
        await clock.advance(1)
        ok = await silo.client.wait("ok", run_id=await silo.client.trigger("ok"), timeout=2)
        assert ok.stage is RunStage.COMPLETED
        await eventually(
            lambda: _terminal_stage(silo, "gone", "failed"), "the orphaned job's run to fail"
        )
        (run, *_) = await silo.client.runs("gone")
    assert run.stage is RunStage.FAILED
    assert run.error is not None and run.error.type == "UnknownJobTypeError"


async def test_corrupt_state_is_quarantined_and_the_rest_run(make_silo: SiloFactory) -> None:
    async with make_silo(Noop) as silo:
        await silo.storage.insert_job(
            "bad", "Noop", "active", {"v": 1, "garbage": True}, silo.clock.now()
        )
        await silo.client.schedule(Noop, job_id="good")
        run = await silo.client.wait("good", run_id=await silo.client.trigger("good"), timeout=2)
        assert run.stage is RunStage.COMPLETED
        status = await silo.client.get("bad")
        assert status.reason is not None and "unreadable state" in status.reason
        assert await eventually(
            lambda: _no_reminder(silo, "bad"), "the quarantined job to lose its reminder"
        )


async def test_once_in_the_past_runs_at_once(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(Noop) as silo:
        await silo.client.schedule(
            Noop, job_id="late", trigger=Once(at=clock.now() - timedelta(hours=1))
        )
        run = await silo.client.wait("late", timeout=2)
    assert run.stage is RunStage.COMPLETED
    assert run.scheduled_for == clock.now() - timedelta(hours=1)


async def _terminal(silo: Any, job_id: str, n: int) -> bool:
    runs = await silo.storage.read_runs(job_id)
    return len([r for r in runs if r.stage in ("completed", "skipped")]) >= n


async def _no_reminder(silo: Any, job_id: str) -> bool:
    return job_id not in await silo.storage.read_due_at([job_id])


async def _terminal_stage(silo: Any, job_id: str, stage: str) -> bool:
    return any(r.stage == stage for r in await silo.storage.read_runs(job_id))


async def test_history_keeps_the_last_n_runs(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(Noop, configure=lambda b: b.use_history(3)) as silo:
        await silo.client.schedule(Noop, job_id="h", trigger=Every(timedelta(seconds=1)))
        for _ in range(6):
            await clock.advance(1)
            await settle()
        await eventually(lambda: _terminal(silo, "h", 6), "six runs")
        await silo.client.pause("h")
        newest = [r.scheduled_for for r in await silo.client.runs("h")][:3]
        await clock.advance(60)  # the maintenance interval: pruning runs in the background
        await eventually(lambda: _at_most(silo, "h", 3), "old runs to be pruned")
        runs = await silo.client.runs("h")
    assert [r.scheduled_for for r in runs] == newest


async def test_an_unusable_store_fails_start_with_a_clear_error(tmp_path: Any) -> None:
    from anu_jobs import StorageUnavailableError

    silo = (
        SiloBuilder()
        .use_storage(f"sqlite:///{tmp_path}/missing/dir/jobs.db")
        .use_jobs(Noop)
        .build()
    )
    with pytest.raises(StorageUnavailableError, match="missing"):
        await silo.start()


async def _at_most(silo: Any, job_id: str, n: int) -> bool:
    return len(await silo.storage.read_runs(job_id)) <= n


async def test_a_run_taken_over_before_its_time_waits_for_it(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    """A silo whose clock ran ahead made the run (then stopped before starting it); this
    silo claims the job ahead of the fire (lookahead) and starts it on the dot of its own
    clock, not at once."""
    from anu_jobs.grain.state import RunState, new_job_state, run_id_for
    from anu_jobs.grain.status import RunStage as Stage
    from anu_jobs.triggers import MisfirePolicy

    due = clock.now() + timedelta(milliseconds=300)
    state = new_job_state({}, [Once(at=due)], clock.now(), MisfirePolicy(), "skip")
    run = RunState(run_id=run_id_for("early", due), scheduled_for=to_us(due), trigger="once")
    run.move(Stage.SCHEDULED, to_us(due))
    state.run, state.next = run, [None]
    async with make_silo(Noop) as silo:
        await silo.storage.insert_job("early", "Noop", "active", state.to_json(), due)
        await eventually(lambda: "early" in silo.runtime.activations, "the claim ahead")
        await settle()
        assert run.run_id not in seen  # claimed, but not due on this silo's clock
        await clock.advance(0.3)
        done = await silo.client.wait("early", timeout=2)
    assert done.run_id == run.run_id and done.stage is RunStage.COMPLETED
    assert done.started_at is not None and done.started_at >= due
