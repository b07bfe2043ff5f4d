"""Attempts launched on the dot: when an armed attempt's time comes, its code starts at
once and the turn that records it follows, so that the attempts due at one instant all
start before any of them is recorded (1,000 fires at one instant cost each other the
recording of the others otherwise). The record is the same as an attempt started the
usual way, and no other request to the grain comes between the launch and its record."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from anu_jobs import Job, JobContext, Once, RetryPolicy, RunStage, SiloBuilder
from anu_jobs.grain.state import run_id_for
from anu_jobs.runtime.runtime import _Slots
from anu_jobs.testing import FakeClock
from tests.conftest import SiloFactory, eventually, settle
from tests.unit.test_armed import Holds
from tests.unit.test_lifecycle import _stage


class Together(Job):
    """Notes, as its code starts, how many of the jobs' runs are recorded in memory."""

    silo: Any = None
    seen: list[tuple[str, int]] = []

    async def execute(self, ctx: JobContext) -> None:
        acts = Together.silo.runtime.activations.values()
        recorded = sum(
            1 for act in acts if act.logic.state is not None and act.logic.state.run is not None
        )
        Together.seen.append((ctx.job_id, recorded))


class Waits(Job):
    """Runs until its run is cancelled; notes its context."""

    contexts: list[JobContext] = []

    async def execute(self, ctx: JobContext) -> None:
        Waits.contexts.append(ctx)
        await ctx.cancellation.wait()
        ctx.cancellation.raise_if_cancelled()


class Echo(Job):
    params_seen: list[Any] = []

    async def execute(self, ctx: JobContext) -> None:
        Echo.params_seen.append(ctx.params)


def setup_function() -> None:
    Together.seen = []
    Waits.contexts = []
    Echo.params_seen = []


async def _armed(silo: Any, job_ids: list[str]) -> None:
    """Wait until every job's armed mark is in the store, and the silo knows it landed."""

    async def all_armed() -> bool:
        for job_id in job_ids:
            env = await silo.storage.read_state(job_id)
            if env is None or not env.state.get("armed"):
                return False
        return True

    await eventually(all_armed, "the attempts to be armed in the store")
    await settle()


async def _armed_once(
    silo: Any, clock: FakeClock, job: type[Job], job_id: str, **kwargs: Any
) -> datetime:
    """Schedule ``job_id`` once, 300 ms from now (within the lookahead), and wait for its
    attempt to be armed; return its time."""
    at = clock.now() + timedelta(milliseconds=300)
    await silo.client.schedule(job, job_id=job_id, trigger=Once(at=at), **kwargs)
    await _armed(silo, [job_id])
    return at


def _one_slot(builder: SiloBuilder) -> SiloBuilder:
    return builder.use_concurrency(1)


async def test_attempts_due_at_one_instant_all_start_before_any_is_recorded(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    ids = [f"t{i}" for i in range(20)]
    async with make_silo(Together) as silo:
        Together.silo = silo
        at = clock.now() + timedelta(milliseconds=300)
        for job_id in ids:
            await silo.client.schedule(Together, job_id=job_id, trigger=Once(at=at))
        await _armed(silo, ids)
        await clock.advance(0.3)
        await eventually(lambda: len(Together.seen) == len(ids), "every job to start")
        # Each job's code started while no run of the twenty was recorded yet.
        assert sorted(Together.seen) == sorted((job_id, 0) for job_id in ids)
        for job_id in ids:
            run = await silo.client.wait(job_id, timeout=5)
            assert run.stage is RunStage.COMPLETED and run.attempt == 1
            assert run.run_id == run_id_for(job_id, at)
            assert run.started_at == at
            assert [(t.stage, t.at) for t in run.transitions][:2] == [
                (RunStage.SCHEDULED, at),
                (RunStage.RUNNING, at),
            ]
            env = await silo.storage.read_state(job_id)
            assert env is not None and "armed" not in env.state


async def test_a_launched_attempt_is_recorded_running_and_can_be_cancelled(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Waits) as silo:
        at = await _armed_once(silo, clock, Waits, "w")
        await clock.advance(0.3)
        await eventually(lambda: Waits.contexts, "the job's code to start")

        async def running() -> Any:
            status = await silo.client.get("w")
            run = status.current_run
            return run is not None and run.stage is RunStage.RUNNING and run

        run = await eventually(running, "the attempt to be recorded running")
        assert run.attempt == 1 and run.started_at == at
        [ctx] = Waits.contexts
        assert (ctx.run_id, ctx.attempt, ctx.scheduled_for, ctx.started_at) == (
            run.run_id,
            1,
            at,
            at,
        )
        await silo.client.cancel("w", reason="enough")
        done = await silo.client.wait("w", timeout=5)
        assert done.stage is RunStage.CANCELLED and done.attempt == 1
        assert ctx.cancellation.is_cancelled


async def test_with_no_slot_free_at_its_time_the_attempt_starts_the_usual_way(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    Holds.release = asyncio.Event()
    async with make_silo(Holds, Echo, configure=_one_slot) as silo:
        await silo.client.schedule(Holds, job_id="hold", trigger=Once(at=clock.now()))
        await eventually(lambda: "hold" in silo.runtime._busy, "the hold to run")
        await _armed_once(silo, clock, Echo, "e", params={"n": 1})
        await clock.advance(0.3)
        await settle()
        assert Echo.params_seen == []  # waiting for the slot, not started
        Holds.release.set()
        run = await silo.client.wait("e", timeout=5)
    assert Echo.params_seen == [{"n": 1}]
    assert run.stage is RunStage.COMPLETED and run.attempt == 1
    assert [t.stage for t in run.transitions] == [
        RunStage.SCHEDULED,
        RunStage.RUNNING,
        RunStage.COMPLETED,
    ]


async def test_params_replaced_after_the_arm_are_the_ones_the_attempt_sees(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Echo) as silo:
        at = await _armed_once(silo, clock, Echo, "e", params={"n": 1})
        await silo.client.schedule(
            Echo, job_id="e", trigger=Once(at=at), params={"n": 2}, replace=True
        )
        await _armed(silo, ["e"])
        await clock.advance(0.3)
        run = await silo.client.wait("e", timeout=5)
    assert Echo.params_seen == [{"n": 2}]
    assert run.stage is RunStage.COMPLETED and run.attempt == 1


async def test_a_silo_stopping_as_it_launches_records_the_attempt_interrupted(
    make_silo: SiloFactory, clock: FakeClock, store_url: str
) -> None:
    at: datetime
    async with make_silo(Waits) as silo:
        at = await _armed_once(silo, clock, Waits, "w")
        await clock.advance(0.3)
        await eventually(lambda: Waits.contexts, "the job's code to start")
    # The silo stopped with the attempt running: on record as interrupted, to run again.
    async with make_silo(Waits) as again:
        status = await again.client.get("w")
        assert status.current_run is not None
        first = status.current_run.transitions
        assert [t.stage for t in first[:2]] == [RunStage.SCHEDULED, RunStage.RUNNING]
        assert first[1].at == at
        assert any(
            t.stage is RunStage.RETRYING and "interrupted" in (t.reason or "") for t in first
        )
        await eventually(lambda: len(Waits.contexts) == 2, "the run to start again")
        assert Waits.contexts[1].attempt == 2
        await again.client.cancel("w")
        run = await again.client.wait("w", timeout=5)
    assert run.stage is RunStage.CANCELLED


async def _enter(slots: _Slots, name: str, entered: list[str]) -> None:
    async with slots:
        entered.append(name)


async def test_the_silos_slots_are_taken_at_once_or_waited_for_in_order() -> None:
    slots = _Slots(1)
    assert slots.try_take() and not slots.try_take()
    order: list[str] = []
    first = asyncio.create_task(_enter(slots, "first", order))
    cancelled = asyncio.create_task(_enter(slots, "cancelled", order))
    second = asyncio.create_task(_enter(slots, "second", order))
    await settle()
    cancelled.cancel()
    await settle()
    assert order == [] and not slots.try_take()  # all waiting behind the taken slot
    slots.give()
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and cancelled.cancelled()
    assert slots.try_take() and not slots.try_take()  # one slot, given back once


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_passes_on() -> None:
    slots = _Slots(1)
    assert slots.try_take()
    got: list[str] = []
    handed = asyncio.create_task(_enter(slots, "handed", got))
    after = asyncio.create_task(_enter(slots, "after", got))
    await settle()
    slots.give()  # to `handed`, which is cancelled before it can run
    handed.cancel()
    await asyncio.gather(handed, after, return_exceptions=True)
    assert got == ["after"] and handed.cancelled()
    assert slots.try_take() and not slots.try_take()


class FailsOnce(Job):
    retry = RetryPolicy(max_retries=2, initial_delay=timedelta(seconds=1))
    attempts: list[int] = []

    async def execute(self, ctx: JobContext) -> None:
        FailsOnce.attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")


class Blocking(Job):
    """A plain ``def`` job: it runs in the silo's executor."""

    threads: list[str] = []

    def execute(self, ctx: JobContext) -> None:
        Blocking.threads.append(threading.current_thread().name)


async def test_a_launched_attempt_that_fails_is_retried_the_usual_way(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    FailsOnce.attempts = []
    async with make_silo(FailsOnce) as silo:
        at = await _armed_once(silo, clock, FailsOnce, "f")
        await clock.advance(0.3)
        await eventually(lambda: FailsOnce.attempts == [1], "the first attempt")
        await eventually(lambda: _stage(silo, "f", "retrying"), "the retry to be planned")
        await clock.advance(1)
        run = await silo.client.wait("f", timeout=5)
    assert FailsOnce.attempts == [1, 2]
    assert run.stage is RunStage.COMPLETED and run.attempt == 2 and run.started_at == at


async def test_a_plain_def_job_is_launched_on_the_dot_in_the_executor(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    Blocking.threads = []
    async with make_silo(Blocking) as silo:
        at = await _armed_once(silo, clock, Blocking, "b")
        await clock.advance(0.3)
        run = await silo.client.wait("b", timeout=5)
    assert len(Blocking.threads) == 1 and Blocking.threads[0] != "MainThread"
    assert run.stage is RunStage.COMPLETED and run.attempt == 1 and run.started_at == at


class StepsBack(Job):
    """Steps the silo's clock back as its code starts: a clock set back (by NTP, say)
    between the launch on the dot and the turn that records it."""

    clock: FakeClock | None = None
    started: list[int] = []

    async def execute(self, ctx: JobContext) -> None:
        StepsBack.started.append(ctx.attempt)
        if StepsBack.clock is not None and len(StepsBack.started) == 1:
            StepsBack.clock.jump(StepsBack.clock.now() - timedelta(milliseconds=380))


async def test_a_clock_set_back_after_the_launch_still_records_the_launched_attempt(
    make_silo: SiloFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    StepsBack.clock, StepsBack.started = clock, []
    async with make_silo(StepsBack) as silo:
        at = await _armed_once(silo, clock, StepsBack, "s")
        await clock.advance(0.3)
        run = await silo.client.wait("s", timeout=5)
        await clock.advance(1)  # past the fire's time again on the stepped-back clock
        await settle()
        runs = await silo.client.runs("s")
    # The attempt whose code began is the one on record; it is not cancelled and run again.
    assert StepsBack.started == [1]
    assert run.stage is RunStage.COMPLETED and run.attempt == 1
    assert run.run_id == run_id_for("s", at)
    assert [r.run_id for r in runs] == [run.run_id]
    assert "did not record it" not in caplog.text
