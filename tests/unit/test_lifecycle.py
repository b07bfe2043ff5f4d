"""A job's lifecycle on an embedded silo, driven by a FakeClock (no sleeping)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

import anu_jobs._json
from anu_jobs import (
    Every,
    Job,
    JobContext,
    JobStage,
    JobStateError,
    Manual,
    Once,
    RetryPolicy,
    RunStage,
    SiloBuilder,
)
from anu_jobs.errors import InvalidParamsError, StorageError
from anu_jobs.storage import LeaseToken
from anu_jobs.testing import FakeClock
from tests.conftest import SiloFactory, drive, eventually, settle


class Noop(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


class Failing(Job):
    retry = RetryPolicy(max_retries=2, initial_delay=timedelta(seconds=10), backoff=2.0)

    async def execute(self, ctx: JobContext) -> None:
        raise RuntimeError(f"boom {ctx.attempt}")


class Compensated(Failing):
    name = "Compensated"
    compensated: list[str] = []

    async def compensate(self, ctx: JobContext) -> None:
        assert ctx.error is not None
        Compensated.compensated.append(f"{ctx.run_id}:{ctx.error.message}")


class CompensationFails(Failing):
    name = "CompensationFails"

    async def compensate(self, ctx: JobContext) -> None:
        raise ValueError("cannot undo")


class Blocking(Job):
    """Runs until released or cancelled; counts its starts."""

    release = asyncio.Event()
    started: list[str] = []

    async def execute(self, ctx: JobContext) -> None:
        Blocking.started.append(ctx.run_id)
        await ctx.report_progress(0.25, "waiting")
        await asyncio.wait(
            [
                asyncio.ensure_future(Blocking.release.wait()),
                asyncio.ensure_future(ctx.cancellation.wait()),
            ],
            return_when=asyncio.FIRST_COMPLETED,
        )
        ctx.cancellation.raise_if_cancelled()


class Stubborn(Job):
    """Ignores its cancellation token."""

    async def execute(self, ctx: JobContext) -> None:
        await asyncio.Event().wait()


class Slow(Job):
    timeout = timedelta(seconds=5)

    async def execute(self, ctx: JobContext) -> None:
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def _reset() -> None:
    Blocking.release = asyncio.Event()
    Blocking.started = []
    Compensated.compensated = []


async def test_once_fires_exactly_at_its_time(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(Noop) as silo:
        status = await silo.client.schedule(
            Noop, job_id="j", trigger=Once(delay=timedelta(seconds=10))
        )
        assert status.next_fire_at == clock.now() + timedelta(seconds=10)
        await clock.advance(9.9)
        await settle()
        assert await silo.storage.read_runs("j") == []
        await clock.advance(0.1)
        run = await silo.client.wait("j", timeout=2)
        assert run.stage is RunStage.COMPLETED
        assert run.attempt == 1
        assert run.started_at == run.scheduled_for  # the fake clock did not move: zero lateness
        assert [t.stage for t in run.transitions] == [
            RunStage.SCHEDULED,
            RunStage.RUNNING,
            RunStage.COMPLETED,
        ]
        status = await silo.client.get("j")
        assert status.stage is JobStage.FINISHED
        assert status.next_fire_at is None
        assert status.last_run is not None and status.last_run.run_id == run.run_id


async def test_retries_back_off_then_fail(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(Failing) as silo:
        await silo.client.schedule(Failing, job_id="f", trigger=Once(delay=timedelta(0)))
        start = clock.now()
        await eventually(lambda: _stage(silo, "f", "retrying"), "the first failure")
        await drive(clock, lambda: _done(silo, "f"), "the retries to be spent", step=1)
        run = await silo.client.wait("f", timeout=2)
    assert run.stage is RunStage.FAILED
    assert run.attempt == 3
    assert (
        run.error is not None and run.error.type == "RuntimeError" and run.error.message == "boom 3"
    )
    running = [t.at for t in run.transitions if t.stage is RunStage.RUNNING]
    retrying = [t.at for t in run.transitions if t.stage is RunStage.RETRYING]
    assert running[0] == start
    # Each retry waits initial_delay * backoff ** (n - 1) after the failure it follows
    # (give or take the clock's step: on a real store the attempt starts once its
    # write lands, which may be after the test moved the clock on).
    waits = [nxt - failed for failed, nxt in zip(retrying, running[1:], strict=True)]
    assert timedelta(seconds=10) <= waits[0] <= timedelta(seconds=11)
    assert timedelta(seconds=20) <= waits[1] <= timedelta(seconds=21)


async def test_compensation_runs_once_retries_are_spent(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Compensated) as silo:
        await silo.client.schedule(Compensated, job_id="c", trigger=Once(delay=timedelta(0)))
        await drive(clock, lambda: _done(silo, "c"), "the run to end", step=2)
        run = await silo.client.wait("c", timeout=2)
    assert run.stage is RunStage.COMPENSATED
    assert [t.stage for t in run.transitions][-2:] == [RunStage.COMPENSATING, RunStage.COMPENSATED]
    assert Compensated.compensated == [f"{run.run_id}:boom 3"]


async def test_failed_compensation_is_recorded(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(CompensationFails) as silo:
        await silo.client.schedule(CompensationFails, job_id="c", trigger=Once(delay=timedelta(0)))
        await drive(clock, lambda: _done(silo, "c"), "the run to end", step=2)
        run = await silo.client.wait("c", timeout=2)
    assert run.stage is RunStage.FAILED
    assert run.error is not None and run.error.message == "boom 3"
    assert run.compensation_error is not None
    assert run.compensation_error.type == "ValueError"


async def test_every_fires_each_interval_with_deterministic_run_ids(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Noop) as silo:
        start = clock.now()
        await silo.client.schedule(Noop, job_id="e", trigger=Every(timedelta(seconds=5)))
        for k in range(1, 5):
            await clock.advance(5)
            # each fire ends before the clock moves on: a store slower than the test
            # (SQLite's thread on a busy machine) must not turn fires into misfires
            await eventually(lambda k=k: _count_runs(silo, "e", k), f"run {k}")
        runs = await silo.client.runs("e")
    assert sorted(r.scheduled_for - start for r in runs) == [
        timedelta(seconds=s) for s in (5, 10, 15, 20)
    ]
    assert all(r.stage is RunStage.COMPLETED for r in runs)
    assert (
        runs[0].run_id == f"e@{(start + timedelta(seconds=20)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    )


async def test_overlap_skip_records_skipped_fires(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(Blocking) as silo:
        await silo.client.schedule(Blocking, job_id="b", trigger=Every(timedelta(seconds=1)))
        await clock.advance(1)
        await eventually(lambda: len(Blocking.started) == 1, "the first run to start")
        await clock.advance(2)
        await settle()
        Blocking.release.set()
        await eventually(lambda: _count_runs(silo, "b", 3), "three run records")
        runs = {r.run_id: r for r in await silo.client.runs("b")}
    stages = sorted(r.stage.value for r in runs.values())
    assert stages[:3] == ["completed", "skipped", "skipped"] or stages.count("skipped") == 2
    skipped = [r for r in runs.values() if r.stage is RunStage.SKIPPED]
    assert all("overlap policy skip" in (r.transitions[-1].reason or "") for r in skipped)
    assert len(Blocking.started) == 1


async def test_overlap_queue_one_runs_one_queued_fire(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Blocking) as silo:
        await silo.client.schedule(
            Blocking, job_id="q", trigger=Every(timedelta(seconds=1)), overlap="queue_one"
        )
        await clock.advance(1)
        await eventually(lambda: len(Blocking.started) == 1, "the first run to start")
        await clock.advance(1)
        await clock.advance(1)
        await settle()
        Blocking.release.set()
        await eventually(lambda: len(Blocking.started) == 2, "the queued run to start")
    assert Blocking.started[1].endswith(
        "02.000000Z"
    )  # the first queued fire ran; the next was skipped


async def test_a_silo_that_cannot_renew_gives_its_job_up_before_the_lease_lapses(
    make_silo: SiloFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store lets a lease lapse lease_ttl after it was last set, by the store's clock,
    and another silo may then take the job. While renewals fail, the silo drops the
    activation (its attempt is cut off) once the next renewal might come too late."""

    async def unreachable(*args: object) -> list[LeaseToken]:
        raise StorageError("the store is unreachable")

    def ttl(builder: SiloBuilder) -> SiloBuilder:
        return builder.use_options(lease_ttl=timedelta(seconds=9))

    async with make_silo(Blocking, configure=ttl) as silo:
        await silo.client.schedule(Blocking, job_id="r", trigger=Once(delay=timedelta(0)))
        await eventually(lambda: len(Blocking.started) == 1, "the run to start")
        token = silo.runtime.activations["r"].lease
        monkeypatch.setattr(silo.storage, "renew_leases", unreachable)
        await clock.advance(3)  # a renewal fails: 6 s of the lease are left
        await settle()
        assert "r" in silo.runtime.activations
        await clock.advance(3)  # another: the next one, 3 s on, might come too late
        await eventually(lambda: "r" not in silo.runtime.activations, "the job to be given up")
        assert await silo.storage.lease_holder("r") == token  # the store has not let it go


async def test_cancel_trips_the_token_and_stops_future_fires(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Blocking) as silo:
        await silo.client.schedule(Blocking, job_id="x", trigger=Every(timedelta(seconds=1)))
        await clock.advance(1)
        await eventually(lambda: len(Blocking.started) == 1, "the run to start")
        status = await silo.client.get("x")
        assert status.current_run is not None and status.current_run.stage is RunStage.RUNNING
        assert (
            status.current_run.progress is not None and status.current_run.progress.fraction == 0.25
        )
        await silo.client.cancel("x", reason="user left")
        run = await silo.client.wait("x", run_id=Blocking.started[0], timeout=2)
        assert run.stage is RunStage.CANCELLED
        assert run.transitions[-1].reason == "user left"
        status = await silo.client.get("x")
        assert status.stage is JobStage.CANCELLED and status.next_fire_at is None
        await clock.advance(5)
        await settle()
        assert len(Blocking.started) == 1
        with pytest.raises(JobStateError):
            await silo.client.resume("x")


async def test_cancel_cancels_a_stubborn_attempt_after_the_grace_period(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Stubborn) as silo:
        await silo.client.schedule(Stubborn, job_id="s", trigger=Once(delay=timedelta(0)))
        await eventually(lambda: _stage(silo, "s", "running"), "the attempt to run")
        await silo.client.cancel("s")
        await settle()
        assert (await silo.client.get("s")).current_run is not None  # still inside its grace period
        await clock.advance(5)
        run = await silo.client.wait("s", timeout=2)
    assert run.stage is RunStage.CANCELLED


async def test_timeout_fails_the_attempt(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(Slow) as silo:
        await silo.client.schedule(Slow, job_id="t", trigger=Once(delay=timedelta(0)))
        await eventually(lambda: _stage(silo, "t", "running"), "the attempt to run")
        await drive(clock, lambda: _done(silo, "t"), "the attempt to time out", step=1)
        run = await silo.client.wait("t", timeout=2)
    assert run.stage is RunStage.FAILED
    assert run.error is not None and run.error.type == "JobTimeoutError"


async def test_manual_trigger_and_wait(make_silo: SiloFactory) -> None:
    async with make_silo(Noop) as silo:
        status = await silo.client.schedule(Noop, job_id="m")
        assert status.triggers == (Manual(),) and status.next_fire_at is None
        run_id = await silo.client.trigger("m")
        run = await silo.client.wait("m", run_id=run_id, timeout=2)
        assert run.stage is RunStage.COMPLETED and run.trigger == "manual"
        assert (await silo.client.get("m")).stage is JobStage.ACTIVE  # a manual job stays active


async def test_pause_and_resume(make_silo: SiloFactory, clock: FakeClock) -> None:
    async with make_silo(Noop) as silo:
        await silo.client.schedule(Noop, job_id="p", trigger=Every(timedelta(seconds=1)))
        await silo.client.pause("p")
        assert (await silo.client.get("p")).stage is JobStage.PAUSED
        await clock.advance(3)
        await settle()
        assert await silo.client.runs("p") == []
        await silo.client.resume("p")
        status = await silo.client.get("p")
        assert status.stage is JobStage.ACTIVE
        assert status.next_fire_at is not None and status.next_fire_at > clock.now()
        await clock.advance(1)
        await eventually(lambda: _count_runs(silo, "p", 1), "a run after resuming")


async def test_delete_removes_job_and_history(make_silo: SiloFactory) -> None:
    async with make_silo(Noop) as silo:
        await silo.client.schedule(Noop, job_id="d")
        await silo.client.wait("d", run_id=await silo.client.trigger("d"), timeout=2)
        await silo.client.delete("d")
        assert await silo.storage.read_state("d") is None
        assert await silo.storage.read_runs("d") == []


async def test_checkpoint_survives_across_attempts(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    seen: list[Any] = []

    class Checkpointing(Job):
        retry = RetryPolicy(max_retries=1, initial_delay=timedelta(seconds=1))

        async def execute(self, ctx: JobContext) -> None:
            seen.append(ctx.checkpoint)
            await ctx.save_checkpoint({"done": ctx.attempt})
            if ctx.attempt == 1:
                raise RuntimeError("first attempt fails")

    async with make_silo(Checkpointing) as silo:
        await silo.client.schedule(Checkpointing, job_id="k", trigger=Once(delay=timedelta(0)))
        await eventually(lambda: _stage(silo, "k", "retrying"), "the retry")
        await clock.advance(1)
        run = await silo.client.wait("k", timeout=2)
    assert run.stage is RunStage.COMPLETED
    assert seen == [None, {"done": 1}]


async def test_a_checkpoint_past_the_document_limit_is_refused_to_the_job(
    make_silo: SiloFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anu_jobs._json, "MAX_DOCUMENT", 1000)
    refused: list[str] = []

    class Checkpointing(Job):
        async def execute(self, ctx: JobContext) -> None:
            await ctx.save_checkpoint({"kept": 1})
            try:
                await ctx.save_checkpoint({"s": "x" * 2000})
            except InvalidParamsError as exc:
                refused.append(str(exc))

    async with make_silo(Checkpointing) as silo:
        await silo.client.schedule(Checkpointing, job_id="k")
        run = await silo.client.wait("k", run_id=await silo.client.trigger("k"), timeout=5)
    assert run.stage is RunStage.COMPLETED
    assert len(refused) == 1 and "checkpoint takes at least 2,008 characters" in refused[0]


async def test_plain_def_job_runs_in_a_worker_thread(make_silo: SiloFactory) -> None:
    threads: list[str] = []

    class Sync(Job):
        def execute(self, ctx: JobContext) -> None:  # type: ignore[override]
            threads.append(threading.current_thread().name)
            ctx.blocking(ctx.report_progress(1.0, "done"))

    async with make_silo(Sync) as silo:
        await silo.client.schedule(Sync, job_id="s")
        run = await silo.client.wait("s", run_id=await silo.client.trigger("s"), timeout=5)
    assert run.stage is RunStage.COMPLETED
    assert run.progress is not None and run.progress.fraction == 1.0
    assert threads and threads[0].startswith("anu-jobs-sync")


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit(), MemoryError("x")]
)
async def test_a_job_raising_base_exceptions_never_kills_the_silo(
    make_silo: SiloFactory, exc: BaseException
) -> None:
    class Rude(Job):
        async def execute(self, ctx: JobContext) -> None:
            raise exc

    async with make_silo(Rude, Noop) as silo:
        await silo.client.schedule(Rude, job_id="r")
        run = await silo.client.wait("r", run_id=await silo.client.trigger("r"), timeout=2)
        assert run.stage is RunStage.FAILED
        assert run.error is not None and run.error.type == type(exc).__qualname__
        await silo.client.schedule(Noop, job_id="n")
        after = await silo.client.wait("n", run_id=await silo.client.trigger("n"), timeout=2)
        assert after.stage is RunStage.COMPLETED


async def _stage(silo: Any, job_id: str, stage: str) -> bool:
    status = await silo.client.get(job_id)
    return status.current_run is not None and status.current_run.stage.value == stage


async def _attempt(silo: Any, job_id: str, attempt: int, stage: str) -> bool:
    status = await silo.client.get(job_id)
    run = status.current_run
    return run is not None and run.attempt == attempt and run.stage.value == stage


async def _count_runs(silo: Any, job_id: str, n: int) -> bool:
    runs = await silo.storage.read_runs(job_id)
    return len([r for r in runs if r.stage in ("completed", "skipped", "cancelled", "failed")]) >= n


async def test_events_report_attempts_and_runs(make_silo: SiloFactory, clock: FakeClock) -> None:
    heard: list[tuple[Any, ...]] = []

    class Recorder:
        def attempt_started(
            self,
            job_type: str,
            job_id: str,
            run_id: str,
            method: str,
            attempt: int,
            lateness: float,
        ) -> None:
            heard.append(("started", job_type, job_id, run_id, method, attempt, lateness))

        def attempt_finished(
            self,
            job_type: str,
            job_id: str,
            run_id: str,
            method: str,
            attempt: int,
            outcome: str,
            duration: float,
        ) -> None:
            heard.append(("finished", job_type, job_id, run_id, method, attempt, outcome))

        def run_finished(self, job_type: str, job_id: str, run_id: str, stage: str) -> None:
            heard.append(("run", job_type, job_id, run_id, stage))

    async with make_silo(Compensated, configure=lambda b: b.use_events(Recorder())) as silo:
        await silo.client.schedule(Compensated, job_id="c", trigger=Once(delay=timedelta(0)))
        await eventually(lambda: _stage(silo, "c", "retrying"), "the first failure")
        await drive(clock, lambda: _done(silo, "c"), "the run to end", step=2)
        run = await silo.client.wait("c", timeout=2)
    assert run.stage is RunStage.COMPENSATED
    # Every event names the job, its type and the one run they belong to.
    assert {h[1:4] for h in heard} == {("Compensated", "c", run.run_id)}
    assert heard[0] == ("started", "Compensated", "c", run.run_id, "execute", 1, 0.0)
    # Each attempt starts then finishes, numbered; the compensation follows attempt 3.
    assert [(h[0], h[4], h[5]) for h in heard[:-1]] == [
        (kind, method, attempt)
        for method, attempt in [("execute", 1), ("execute", 2), ("execute", 3), ("compensate", 3)]
        for kind in ("started", "finished")
    ]
    assert [h[6] for h in heard if h[0] == "finished"] == ["error", "error", "error", "ok"]
    assert heard[-1] == ("run", "Compensated", "c", run.run_id, "compensated")


async def _done(silo: Any, job_id: str) -> bool:
    status = await silo.client.get(job_id)
    return status.current_run is None and status.last_run is not None
