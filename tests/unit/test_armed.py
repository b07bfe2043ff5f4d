"""Armed attempts: an attempt due within the silo's lookahead is put on record ahead of
time, and its job's code starts on the dot with no write in between. A silo that dies
after an armed time without a later write has its attempt counted as cut off by the next
one, as if it had been recorded running."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from anu_jobs import Job, JobContext, MisfirePolicy, Once, RunStage, SiloBuilder
from anu_jobs._time import to_us
from anu_jobs.errors import StorageError
from anu_jobs.grain import JobState
from anu_jobs.grain.lifecycle import MAX_INTERRUPTIONS
from anu_jobs.grain.state import new_job_state, run_id_for
from anu_jobs.storage import open_storage
from anu_jobs.storage.base import LeaseToken
from anu_jobs.testing import FakeClock
from tests.conftest import SiloFactory, eventually, settle
from tests.unit.test_lifecycle import _stage


class Starts(Job):
    started: list[tuple[str, int, datetime]] = []

    async def execute(self, ctx: JobContext) -> None:
        Starts.started.append((ctx.run_id, ctx.attempt, ctx.started_at or ctx.scheduled_for))


def setup_function() -> None:
    Starts.started = []


async def test_an_attempt_due_soon_is_armed_ahead_and_starts_while_no_write_can_land(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Starts) as silo:
        at = clock.now() + timedelta(milliseconds=300)  # within the 500 ms lookahead
        await silo.client.schedule(Starts, job_id="a", trigger=Once(at=at))
        run_id = run_id_for("a", at)

        async def armed() -> Any:
            env = await silo.storage.read_state("a")
            return env is not None and env.state.get("armed")

        mark = await eventually(armed, "the attempt to be armed in the store")
        assert mark == [run_id, to_us(at), silo.silo_id]

        # From now on no write lands: the armed attempt must start all the same.
        gate = asyncio.Event()
        commit = silo.storage.commit

        async def held(writes: Any) -> Any:
            await gate.wait()
            return await commit(writes)

        silo.storage.commit = held
        try:
            await clock.advance(0.3)
            await eventually(lambda: Starts.started, "the job's code to start")
            assert Starts.started == [(run_id, 1, at)]  # on the dot of the fake clock
            env = await silo.storage.read_state("a")
            assert env is not None and env.state["armed"] == mark  # nothing written yet
        finally:
            gate.set()
            silo.storage.commit = commit
        run = await silo.client.wait("a", timeout=5)
        assert run.stage is RunStage.COMPLETED and run.attempt == 1
        assert [t.stage for t in run.transitions] == [
            RunStage.SCHEDULED,
            RunStage.RUNNING,
            RunStage.COMPLETED,
        ]
        assert run.transitions[1].at == at
        env = await silo.storage.read_state("a")
        assert env is not None and "armed" not in env.state


async def test_a_claimed_due_attempt_starts_before_its_first_write_lands(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    """The claim arms a due attempt: should this silo die in it, the lease epoch it took
    is past the last write's, and the next one counts the attempt as cut off."""
    async with make_silo(Starts) as silo:
        gate = asyncio.Event()
        commit = silo.storage.commit

        async def held(writes: Any) -> Any:
            await gate.wait()
            return await commit(writes)

        silo.storage.commit = held
        try:
            await silo.client.schedule(Starts, job_id="now", trigger=Once(at=clock.now()))
            await eventually(lambda: Starts.started, "the job's code to start")
            env = await silo.storage.read_state("now")
            assert env is not None and env.state["epoch"] == 0 and env.state["run"] is None
        finally:
            gate.set()
            silo.storage.commit = commit
        run = await silo.client.wait("now", timeout=5)
        assert run.attempt == 1 and [t.stage for t in run.transitions] == [
            RunStage.SCHEDULED,
            RunStage.RUNNING,
            RunStage.COMPLETED,
        ]
        env = await silo.storage.read_state("now")
        lease = await silo.storage.lease_holder("now")
        assert env is not None and env.state["epoch"] == 1 and lease is None


async def test_a_claim_with_no_write_since_counts_the_due_attempt_as_cut_off(
    make_silo: SiloFactory, clock: FakeClock, store_url: str
) -> None:
    at = clock.now() - timedelta(seconds=1)
    run_id = await _plant(store_url, clock, at, None)
    storage = open_storage(store_url, clock=clock)
    await storage.open()
    try:  # a silo claimed the job, then vanished without writing anything
        got = await storage.acquire_lease("p", "vanished-silo", timedelta(seconds=30))
        assert got is not None
        await storage.release_leases([got[0]])
    finally:
        await storage.close()
    async with make_silo(Starts, url=store_url) as silo:
        run = await silo.client.wait("p", timeout=5)
    assert run.stage is RunStage.COMPLETED and run.attempt == 2
    assert Starts.started == [(run_id, 2, clock.now())]
    stages = [t.stage for t in run.transitions]
    assert stages == [RunStage.SCHEDULED, RunStage.RETRYING, RunStage.RUNNING, RunStage.COMPLETED]
    assert "attempt 1 cut off" in (run.transitions[1].reason or "")


async def _plant(url: str, clock: FakeClock, at: datetime, armed: list[Any] | None) -> str:
    """Store a job whose state says another silo armed its attempt at ``armed``."""
    storage = open_storage(url, clock=clock)
    await storage.open()
    try:
        st: JobState = new_job_state(
            {}, [Once(at=at)], clock.now(), MisfirePolicy("catch_up"), "skip"
        )
        st.armed = armed
        await storage.insert_job("p", Starts.name, st.stage.value, st.to_json(), at)
    finally:
        await storage.close()
    return run_id_for("p", at)


async def test_a_silo_gone_after_its_armed_time_has_the_attempt_counted_as_cut_off(
    make_silo: SiloFactory, clock: FakeClock, store_url: str
) -> None:
    at = clock.now() - timedelta(seconds=2)
    run_id = run_id_for("p", at)
    await _plant(store_url, clock, at, [run_id, to_us(at), "gone-silo"])
    async with make_silo(Starts, url=store_url) as silo:
        run = await silo.client.wait("p", timeout=5)
    assert run.stage is RunStage.COMPLETED
    assert run.attempt == 2  # the armed attempt may have run: its number is spent
    assert Starts.started == [(run_id, 2, clock.now())]
    stages = [t.stage for t in run.transitions]
    assert stages == [RunStage.SCHEDULED, RunStage.RETRYING, RunStage.RUNNING, RunStage.COMPLETED]
    reason = run.transitions[1].reason or ""
    assert "attempt 1 cut off" in reason and "AttemptInterrupted" in reason


async def test_a_silo_gone_before_its_armed_time_leaves_the_attempt_untouched(
    make_silo: SiloFactory, clock: FakeClock, store_url: str
) -> None:
    at = clock.now() + timedelta(seconds=2)
    run_id = run_id_for("p", at)
    await _plant(store_url, clock, at, [run_id, to_us(at), "gone-silo"])
    async with make_silo(Starts, url=store_url) as silo:
        await clock.advance(1.7)  # the job is claimed ahead, before the armed time
        await eventually(lambda: "p" in silo.runtime.activations, "the job to be claimed")
        await clock.advance(0.3)
        run = await silo.client.wait("p", timeout=5)
    assert run.stage is RunStage.COMPLETED and run.attempt == 1
    assert [t.stage for t in run.transitions] == [
        RunStage.SCHEDULED,
        RunStage.RUNNING,
        RunStage.COMPLETED,
    ]


async def test_an_armed_attempt_cut_off_too_often_fails_the_run(
    make_silo: SiloFactory, clock: FakeClock, store_url: str
) -> None:
    """A job that takes its silo down on the dot of an armed start must not do so forever."""
    at = clock.now() - timedelta(seconds=1)
    run_id = run_id_for("p", at)
    storage = open_storage(store_url, clock=clock)
    await storage.open()
    try:
        st = new_job_state({}, [Once(at=at)], clock.now(), MisfirePolicy("catch_up"), "skip")
        doc = st.to_json()
        doc["next"] = [None]
        doc["run"] = {
            "run_id": run_id,
            "scheduled_for": to_us(at),
            "trigger": "once",
            "stage": "retrying",
            "attempt": MAX_INTERRUPTIONS,
            "interruptions": MAX_INTERRUPTIONS,
            "next_attempt_at": to_us(at),
            "transitions": [["scheduled", to_us(at), None]],
        }
        doc["armed"] = [run_id, to_us(at), "gone-silo"]
        await storage.insert_job("p", Starts.name, "active", doc, at)
    finally:
        await storage.close()
    async with make_silo(Starts, url=store_url) as silo:
        run = await silo.client.wait("p", timeout=5)
    assert run.stage is RunStage.FAILED
    assert Starts.started == []
    assert f"cut off {MAX_INTERRUPTIONS + 1} times" in (run.transitions[-1].reason or "")


async def test_a_malformed_armed_mark_quarantines_the_job(
    make_silo: SiloFactory, clock: FakeClock, store_url: str
) -> None:
    at = clock.now() + timedelta(hours=1)
    await _plant(store_url, clock, at, ["x", "not-a-time", "s"])
    async with make_silo(Starts, url=store_url) as silo:
        status = await silo.client.get("p")
    assert status.quarantined and "armed" in (status.reason or "")


class Holds(Job):
    release: asyncio.Event | None = None

    async def execute(self, ctx: JobContext) -> None:
        assert Holds.release is not None
        await Holds.release.wait()


async def test_a_lease_not_confirmed_for_half_its_time_is_not_fresh(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    """After a pause of the process (here: renewals that fail), an attempt may no longer
    start ahead of its record: the write the store fences must land first."""

    Holds.release = asyncio.Event()

    async def unreachable(*args: object) -> list[LeaseToken]:
        raise StorageError("the store is unreachable")

    def ttl(builder: SiloBuilder) -> SiloBuilder:
        return builder.use_options(lease_ttl=timedelta(seconds=9))

    async with make_silo(Holds, configure=ttl) as silo:
        await silo.client.schedule(Holds, job_id="h", trigger=Once(at=clock.now()))
        await eventually(lambda: "h" in silo.runtime.activations, "the job to be claimed")
        act = silo.runtime.activations["h"]
        assert act.lease_fresh()
        silo.storage.renew_leases = unreachable
        for _ in range(5):
            await clock.advance(0.92)
            await settle()
        assert act.alive and not act.lease_fresh()  # 4.6 s since its claim, none since
        Holds.release.set()


async def _armed_mark(silo: Any, job_id: str) -> Any:
    env = await silo.storage.read_state(job_id)
    assert env is not None
    return env.state.get("armed")


async def _schedule_armed(silo: Any, clock: FakeClock, job_id: str) -> datetime:
    """A job due in 2 s, then 1.7 s on: its attempt armed in the store. Its time."""
    at = clock.now() + timedelta(seconds=2)
    await silo.client.schedule(Starts, job_id=job_id, trigger=Once(at=at))
    await clock.advance(1.7)
    await eventually(lambda: _armed_mark(silo, job_id), "the attempt to be armed")
    return at


async def _past_its_time_nothing_started(silo: Any, clock: FakeClock, job_id: str) -> None:
    """After a request in the armed window: the mark is gone and the time passes idle."""
    assert await _armed_mark(silo, job_id) is None
    await clock.advance(1)
    await settle()
    assert Starts.started == []


async def test_a_pause_in_the_armed_window_starts_nothing_and_clears_the_mark(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Starts) as silo:
        at = await _schedule_armed(silo, clock, "p")
        await silo.client.pause("p")
        await _past_its_time_nothing_started(silo, clock, "p")
        await silo.client.resume("p")
        run = await silo.client.wait("p", timeout=5)
    assert run.stage is RunStage.COMPLETED and run.attempt == 1
    assert [rid for rid, _, _ in Starts.started] == [run_id_for("p", at)]


async def test_a_cancel_in_the_armed_window_starts_nothing_and_records_no_run(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    async with make_silo(Starts) as silo:
        await _schedule_armed(silo, clock, "c")
        await silo.client.cancel("c")
        await _past_its_time_nothing_started(silo, clock, "c")
        assert await silo.client.runs("c") == []


async def test_an_attempt_that_waited_for_a_slot_past_a_clock_step_back_waits_for_its_time(
    make_silo: SiloFactory, clock: FakeClock
) -> None:
    """A run came due, then waited for a concurrency slot while the silo's clock stepped
    back: it starts when it is due by the clock as it is now, never early by it."""
    Holds.release = asyncio.Event()

    def one_slot(builder: SiloBuilder) -> SiloBuilder:
        return builder.use_concurrency(1)

    async with make_silo(Holds, Starts, configure=one_slot) as silo:
        await silo.client.schedule(Holds, job_id="hold", trigger=Once(at=clock.now()))
        await eventually(lambda: "hold" in silo.runtime._busy, "the hold to run")
        at = clock.now() + timedelta(seconds=1)
        await silo.client.schedule(Starts, job_id="s", trigger=Once(at=at))
        await clock.advance(1)  # due: its run is made, its attempt waits for the slot
        await eventually(lambda: _stage(silo, "s", "scheduled"), "the run to be made")
        clock.jump(at - timedelta(seconds=2))
        Holds.release.set()
        await eventually(lambda: "hold" not in silo.runtime.activations, "the hold to end")
        await settle()
        assert Starts.started == []
        await clock.advance(2)
        await eventually(lambda: Starts.started, "the run to start at its time")
    [(run_id, attempt, started)] = Starts.started
    assert run_id == run_id_for("s", at) and attempt == 1 and started >= at
