"""The storage conformance suite: what every :class:`~anu_jobs.storage.base.Storage`
provider must pass, unchanged (Orleans' storage test kit, ``trio.testing``'s checkers).

A provider's tests subclass :class:`StorageConformance` and supply a ``storage``
fixture: an opened, empty store, closed after the test, whose store time (the clock that
stamps and judges lease expiries and heartbeats) is the suite's ``store_clock``. Override
the ``twin`` fixture with a second storage object opened on the same store, on the same
clock, where the provider can (it defaults to ``storage`` itself), so that concurrent
claims and notices are checked across objects::

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        async def storage(self, tmp_path, store_clock):
            store = MyStorage(tmp_path / "db", clock=store_clock)
            await store.open()
            yield store
            await store.close()

It needs pytest and pytest-asyncio; nothing in ``anu_jobs`` imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from anu_jobs._time import to_us
from anu_jobs.errors import (
    DuplicateJobError,
    EtagConflictError,
    JobNotFoundError,
    LeaseLostError,
    StorageError,
)
from anu_jobs.storage.base import (
    Claim,
    GrainWrite,
    JobQuery,
    LeaseToken,
    NewJob,
    NewJobRow,
    Notice,
    RunRecord,
    SiloInfo,
    Storage,
)
from anu_jobs.testing.clock import FakeClock

__all__ = ["StorageConformance"]

T0 = datetime(2030, 1, 1, tzinfo=UTC)

# The running test's store clock (the ``store_clock`` fixture), for the helpers below.
_store_clock: FakeClock | None = None


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``: every time in the suite is relative to one instant."""
    return T0 + timedelta(seconds=seconds)


def secs(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def store_time(seconds: float) -> None:
    """Set the store's clock to ``at(seconds)``, forwards or back."""
    assert _store_clock is not None, "the storage fixture must open the store on store_clock"
    _store_clock.jump(at(seconds))


async def new_job(
    storage: Storage,
    job_id: str,
    due: float | None = 0,
    *,
    stage: str = "active",
    job_type: str = "demo",
    state: dict[str, Any] | None = None,
) -> int:
    due_at = None if due is None else at(due)
    return await storage.insert_job(job_id, job_type, stage, state or {"n": 0}, due_at)


async def claim(
    storage: Storage,
    silo: str = "s1",
    now: float = 0,
    until: float = 0,
    limit: int = 100,
    lease: float = 30,
) -> list[Claim]:
    """``claim_due`` at store time ``now`` (the caller's too): leases for ``lease`` s."""
    store_time(now)
    return await storage.claim_due(silo, at(now), at(until), limit, secs(lease))


async def take(storage: Storage, job_id: str, silo: str = "s1", now: float = 0) -> Claim:
    """Take one job's lease (for 30 s from store time ``now``) whether it is due or not,
    as a :class:`Claim`."""
    store_time(now)
    taken = await storage.acquire_lease(job_id, silo, secs(30))
    assert taken is not None, f"the lease of {job_id} was not free at {now}"
    token, envelope, control = taken
    return Claim(token, envelope, None, control)


async def holder(storage: Storage, job_id: str, now: float = 0) -> LeaseToken | None:
    """``lease_holder`` at store time ``now``."""
    store_time(now)
    return await storage.lease_holder(job_id)


async def renew(
    storage: Storage, tokens: Sequence[LeaseToken], now: float = 0, lease: float = 30
) -> list[LeaseToken]:
    """``renew_leases`` at store time ``now``, for ``lease`` seconds."""
    store_time(now)
    return await storage.renew_leases(tokens, secs(lease))


async def next_due(storage: Storage, now: float = 0) -> datetime | None:
    """``next_due`` at store time ``now`` (the caller's too)."""
    store_time(now)
    return await storage.next_due(at(now))


async def beat(storage: Storage, silo_id: str, now: float = 0) -> bool:
    """``heartbeat`` at store time ``now``."""
    store_time(now)
    return await storage.heartbeat(silo_id)


def write(
    c: Claim | tuple[LeaseToken, int],
    state: dict[str, Any] | None = None,
    *,
    due: float | None = None,
    stage: str = "active",
    runs: tuple[RunRecord, ...] = (),
    ack: tuple[int, ...] = (),
    release: bool = False,
    delete: bool = False,
) -> GrainWrite:
    lease, etag = (c.lease, c.envelope.etag) if isinstance(c, Claim) else c
    return GrainWrite(
        lease=lease,
        expected_etag=etag,
        job_type="demo",
        stage=stage,
        state=None if delete else (state if state is not None else {"n": 1}),
        due_at=None if due is None else at(due),
        runs=runs,
        ack_control=ack,
        release=release,
    )


def run(
    run_id: str, job_id: str, scheduled: float, stage: str = "completed", **data: Any
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        job_id=job_id,
        job_type="demo",
        stage=stage,
        attempt=1,
        scheduled_for=at(scheduled),
        started_at=at(scheduled + 1),
        finished_at=None if stage == "running" else at(scheduled + 2),
        silo_id="s1",
        data=dict(data),
    )


def silo(silo_id: str, started: float = 0, heartbeat: float = 0) -> SiloInfo:
    return SiloInfo(silo_id, "host-a", 4242, at(started), at(heartbeat))


def ids(claims: list[Claim]) -> list[str]:
    return [c.envelope.job_id for c in claims]


@pytest.mark.asyncio
class StorageConformance:
    """Every contract method, against the ``storage`` fixture the subclass provides."""

    @pytest.fixture(autouse=True)
    def store_clock(self) -> Iterator[FakeClock]:
        """The store's clock, at ``T0``: the ``storage`` fixture opens the store on it,
        and the tests move it to say what time it is for the store."""
        global _store_clock
        _store_clock = FakeClock(T0)
        try:
            yield _store_clock
        finally:
            _store_clock = None

    @pytest.fixture
    def twin(self, storage: Storage) -> Storage:
        """A second storage object on ``storage``'s store; override where possible."""
        return storage

    # -- grain state ----------------------------------------------------------------

    async def test_insert_then_read_state(self, storage: Storage) -> None:
        etag = await new_job(storage, "a", due=5, state={"x": [1, 2]}, stage="paused")
        env = await storage.read_state("a")
        assert env is not None
        assert (env.job_id, env.job_type, env.stage, env.state, env.etag) == (
            "a", "demo", "paused", {"x": [1, 2]}, etag,
        )  # fmt: skip
        assert await storage.read_state("nope") is None
        assert await storage.read_due_at(["a", "nope"]) == {"a": at(5)}
        assert await holder(storage, "a") is None

    async def test_insert_jobs_creates_all_in_one_go(self, storage: Storage) -> None:
        jobs = [
            NewJob(f"b{i}", "demo", "active", {"i": i}, at(i) if i % 2 else None) for i in range(50)
        ]
        await storage.insert_jobs(jobs)
        env = await storage.read_state("b7")
        assert env is not None and env.state == {"i": 7}
        due = await storage.read_due_at([j.job_id for j in jobs])
        assert due == {f"b{i}": at(i) for i in range(1, 50, 2)}
        assert await storage.count_jobs(JobQuery()) == 50

    async def test_insert_jobs_is_all_or_nothing(self, storage: Storage) -> None:
        await new_job(storage, "taken", due=1)
        batch = [NewJob(i, "demo", "active", {}, at(1)) for i in ("n1", "taken", "n2")]
        with pytest.raises(DuplicateJobError) as info:
            await storage.insert_jobs(batch)
        assert info.value.job_id == "taken"
        twice = [NewJob(i, "demo", "active", {}, at(1)) for i in ("n3", "n3")]
        with pytest.raises(DuplicateJobError):
            await storage.insert_jobs(twice)
        assert await storage.count_jobs(JobQuery()) == 1

    async def test_insert_encoded_jobs_creates_all_in_one_go(self, storage: Storage) -> None:
        # More jobs than one SQLite statement binds (32,766 parameters, 5 a job).
        texts = [f'{{"i":{i},"s":"caf\u00e9 \\\\ \\"q\\""}}' for i in range(7000)]
        rows: list[NewJobRow] = [
            (f"e{i:05}", "demo", "active", texts[i], to_us(at(i)) if i % 3 else None)
            for i in range(7000)
        ]
        await storage.insert_encoded_jobs(rows)
        assert await storage.count_jobs(JobQuery()) == 7000
        env = await storage.read_state("e06999")
        assert env is not None and env.state == {"i": 6999, "s": 'caf\u00e9 \\ "q"'}
        assert (env.job_type, env.stage) == ("demo", "active")
        due = await storage.read_due_at([r[0] for r in rows])
        assert due == {f"e{i:05}": at(i) for i in range(7000) if i % 3}
        etags = {e.etag for e in await storage.list_jobs(JobQuery(limit=7000))}
        assert len(etags) == 7000 and all(0 <= e < 2**62 for e in etags)

    @pytest.mark.parametrize("where", [0, 6999])
    async def test_insert_encoded_jobs_is_all_or_nothing(
        self, storage: Storage, where: int
    ) -> None:
        """A duplicate anywhere (in the first or last SQLite statement of the call) names
        the first id, in the caller's order, that exists or came before, and inserts none."""
        await new_job(storage, "taken", due=1)
        rows: list[NewJobRow] = [(f"x{i:05}", "demo", "active", "{}", None) for i in range(7000)]
        rows[6998] = ("x00003", "demo", "active", "{}", None)  # twice
        rows[where] = ("taken", "demo", "active", "{}", to_us(at(2)))
        with pytest.raises(DuplicateJobError) as info:
            await storage.insert_encoded_jobs(rows)
        assert info.value.job_id == ("taken" if where == 0 else "x00003")
        assert await storage.count_jobs(JobQuery()) == 1
        assert await storage.read_due_at(["taken"]) == {"taken": at(1)}
        twice = [("y", "demo", "active", "{}", None), ("y", "demo", "active", "{}", None)]
        with pytest.raises(DuplicateJobError) as info:
            await storage.insert_encoded_jobs(twice)
        assert info.value.job_id == "y"
        assert await storage.count_jobs(JobQuery()) == 1

    async def test_overdue_lists_due_jobs_no_silo_holds(self, storage: Storage) -> None:
        for i in range(5):
            await new_job(storage, f"o{i}", due=i)
        await new_job(storage, "later", due=100)
        await storage.register_silo(SiloInfo("s1", "h", 1, at(0), at(0)))
        await claim(storage, now=10, until=10, limit=1, lease=50)  # s1 takes o0 until 60
        count, oldest = await storage.overdue(at(4), limit=2)
        assert count == 3  # o1, o2, o3: due before 4 and free
        assert oldest == [("o1", at(1)), ("o2", at(2))]
        assert (await storage.overdue(at(0)))[0] == 0
        store_time(60)  # s1's lease has lapsed: o0 is overdue too
        assert (await storage.overdue(at(4)))[0] == 4

    async def test_run_counts_by_bucket_and_stage(self, storage: Storage) -> None:
        await new_job(storage, "r", due=None)
        claim = await take(storage, "r")
        ended = [
            RunRecord(f"r{i}", "r", "demo", stage, 1, at(i), at(i), at(i * 20), "s", {})
            for i, stage in enumerate(["completed", "failed", "completed", "completed"])
        ]
        runs = (*ended, RunRecord("open", "r", "demo", "running", 1, at(0), at(0), None, "s", {}))
        change = GrainWrite(claim.lease, claim.envelope.etag, "demo", "active", {}, None, runs)
        assert (await storage.commit([change]))[0].ok
        counts = await storage.run_counts(at(10), timedelta(seconds=60))
        assert counts == [(at(0), "completed", 1), (at(0), "failed", 1), (at(60), "completed", 1)]

    async def test_schema_versions_are_increasing(self, storage: Storage) -> None:
        versions = [v for v, _ in await storage.schema_versions()]
        assert versions == sorted(set(versions))
        assert all(v >= 1 for v in versions)

    async def test_insert_without_reminder_has_no_due_at(self, storage: Storage) -> None:
        await new_job(storage, "a", due=None)
        assert await storage.read_due_at(["a"]) == {}
        assert await next_due(storage) is None

    async def test_duplicate_insert_is_refused_and_keeps_the_original(
        self, storage: Storage
    ) -> None:
        etag = await new_job(storage, "a", due=5, state={"v": "first"})
        with pytest.raises(DuplicateJobError) as info:
            await new_job(storage, "a", due=1, state={"v": "second"})
        assert info.value.job_id == "a"
        env = await storage.read_state("a")
        assert env is not None
        assert env.state == {"v": "first"}
        assert env.etag == etag
        assert await storage.read_due_at(["a"]) == {"a": at(5)}

    async def test_etags_are_new_on_every_write_and_after_recreation(
        self, storage: Storage
    ) -> None:
        seen = {await new_job(storage, "a")}
        c = await take(storage, "a")
        token, etag = c.lease, c.envelope.etag
        for i in range(5):
            [result] = await storage.commit([write((token, etag), {"i": i})])
            assert result.ok
            assert result.etag is not None
            etag = result.etag
            seen.add(etag)
        [gone] = await storage.commit([write((token, etag), delete=True)])
        assert gone.ok
        seen.add(await new_job(storage, "a"))
        assert len(seen) == 7

    # -- commit ---------------------------------------------------------------------

    async def test_commit_replaces_state_stage_and_reminder(self, storage: Storage) -> None:
        await new_job(storage, "a", due=0)
        c = await take(storage, "a")
        [result] = await storage.commit([write(c, {"n": 7}, due=60, stage="paused")])
        assert result.ok
        assert result.job_id == "a"
        assert result.etag != c.envelope.etag
        env = await storage.read_state("a")
        assert env is not None
        assert (env.state, env.stage, env.etag) == (
            {"n": 7},
            "paused",
            result.etag,
        )
        assert await storage.read_due_at(["a"]) == {"a": at(60)}
        [cleared] = await storage.commit([write((c.lease, result.etag or 0), due=None)])
        assert cleared.ok
        assert await storage.read_due_at(["a"]) == {}
        assert await holder(storage, "a", 1) == c.lease  # no release asked

    async def test_commit_with_a_stale_etag_conflicts_carrying_both_etags(
        self, storage: Storage
    ) -> None:
        etag = await new_job(storage, "a", state={"n": 0})
        c = await take(storage, "a")
        [result] = await storage.commit([write((c.lease, etag + 1), {"n": 9}, due=99)])
        assert not result.ok
        assert result.etag is None
        assert isinstance(result.error, EtagConflictError)
        assert (result.error.job_id, result.error.expected, result.error.actual) == (
            "a", etag + 1, etag,
        )  # fmt: skip
        env = await storage.read_state("a")
        assert env is not None
        assert env.state == {"n": 0}
        assert env.etag == etag
        assert await storage.read_due_at(["a"]) == {"a": at(0)}

    async def test_a_write_under_an_old_epoch_is_fenced_off(self, storage: Storage) -> None:
        etag = await new_job(storage, "a", state={"n": 0})
        old = await take(storage, "a", silo="s1", now=0)  # lease until 30
        new = await take(storage, "a", silo="s2", now=30)
        assert (old.lease.epoch, new.lease.epoch) == (1, 2)
        [refused] = await storage.commit(
            [write(old, {"n": 666}, due=5, runs=(run("r1", "a", 0),), release=True)]
        )
        assert isinstance(refused.error, LeaseLostError)
        assert (refused.error.job_id, refused.error.silo_id, refused.error.epoch) == ("a", "s1", 1)
        env = await storage.read_state("a")
        assert env is not None
        assert env.state == {"n": 0}
        assert env.etag == etag
        assert await storage.read_run("r1") is None
        assert await holder(storage, "a", 31) == new.lease
        [ok] = await storage.commit([write(new, {"n": 1})])
        assert ok.ok

    async def test_a_write_by_another_silo_with_the_right_epoch_is_fenced_off(
        self, storage: Storage
    ) -> None:
        await new_job(storage, "a")
        c = await take(storage, "a", silo="s1")
        forged = LeaseToken("a", "s2", c.lease.epoch)
        [result] = await storage.commit([write((forged, c.envelope.etag))])
        assert isinstance(result.error, LeaseLostError)

    async def test_commit_to_a_deleted_job_conflicts_with_actual_none(
        self, storage: Storage
    ) -> None:
        await new_job(storage, "a")
        c = await take(storage, "a")
        [deleted] = await storage.commit([write(c, delete=True)])
        assert deleted.ok
        [late] = await storage.commit([write(c)])
        assert isinstance(late.error, EtagConflictError)
        assert (late.error.expected, late.error.actual) == (c.envelope.etag, None)
        assert await storage.read_state("a") is None

    async def test_one_refused_write_does_not_stop_the_others(self, storage: Storage) -> None:
        for job_id in ("a", "b", "c"):
            await new_job(storage, job_id)
        claims = {c.envelope.job_id: c for c in await claim(storage)}
        stale = (claims["b"].lease, claims["b"].envelope.etag ^ 1)
        results = await storage.commit(
            [
                write(claims["a"], {"n": "a"}),
                write(stale, {"n": "b"}),
                write(claims["c"], {"n": "c"}),
            ]
        )
        assert [r.job_id for r in results] == ["a", "b", "c"]
        assert [r.ok for r in results] == [True, False, True]
        assert isinstance(results[1].error, EtagConflictError)
        states = {j: (await storage.read_state(j)) for j in "abc"}
        assert {j: e.state for j, e in states.items() if e} == {
            "a": {"n": "a"}, "b": {"n": 0}, "c": {"n": "c"},
        }  # fmt: skip

    async def test_two_writes_to_one_job_in_a_batch_apply_in_order(self, storage: Storage) -> None:
        await new_job(storage, "a")
        c = await take(storage, "a")
        first, second = await storage.commit([write(c, {"n": 1}), write(c, {"n": 2})])
        assert first.ok
        assert isinstance(second.error, EtagConflictError)
        assert second.error.actual == first.etag
        env = await storage.read_state("a")
        assert env is not None
        assert env.state == {"n": 1}
        released, late = await storage.commit(
            [write((c.lease, env.etag), {"n": 3}, release=True), write((c.lease, env.etag))]
        )
        assert released.ok
        assert isinstance(late.error, LeaseLostError)  # the first write let the lease go

    async def test_a_value_that_is_not_json_fails_the_whole_call(self, storage: Storage) -> None:
        await new_job(storage, "a")
        await new_job(storage, "b")
        ca, cb = await claim(storage)
        with pytest.raises(ValueError, match=r"JSON|json|serializable"):
            await storage.commit([write(ca, {"n": 5}), write(cb, {"bad": {1, 2}})])
        env = await storage.read_state("a")
        assert env is not None
        assert env.state == {"n": 0}
        assert env.etag == ca.envelope.etag

    async def test_commit_with_delete_removes_everything_of_the_job(self, storage: Storage) -> None:
        await new_job(storage, "a", due=0)
        await new_job(storage, "b", due=0)
        msg = await storage.post_control("a", {"op": "cancel"}, at(0))
        ca, cb = sorted(await claim(storage), key=lambda c: c.envelope.job_id)
        assert (ca.envelope.job_id, cb.envelope.job_id) == ("a", "b")
        [kept] = await storage.commit([write(ca, due=50, runs=(run("ra", "a", 0),))])
        await storage.commit([write(cb, runs=(run("rb", "b", 0),))])
        [gone] = await storage.commit([write((ca.lease, kept.etag or 0), delete=True)])
        assert gone.ok
        assert gone.etag is None
        assert await storage.read_state("a") is None
        assert await storage.read_due_at(["a"]) == {}
        assert await holder(storage, "a", 1) is None
        assert await storage.control_pending([msg]) == set()
        assert await storage.read_runs("a") == []
        assert await storage.read_run("ra") is None
        assert await storage.count_jobs(JobQuery()) == 1
        assert await storage.read_run("rb") is not None  # the other job is untouched
        await new_job(storage, "a", due=1)  # the id is free again
        assert [c.envelope.job_id for c in await claim(storage, until=1)] == ["a"]

    async def test_commit_can_release_the_lease(self, storage: Storage) -> None:
        await new_job(storage, "a")
        c = await take(storage, "a", silo="s1")
        [result] = await storage.commit([write(c, due=100, release=True)])
        assert result.ok
        assert await holder(storage, "a", 1) is None
        taken = await storage.acquire_lease("a", "s2", secs(30))
        assert taken is not None
        assert taken[0] == LeaseToken("a", "s2", 2)
        assert taken[1].etag == result.etag

    async def test_commit_acks_only_the_named_messages_of_the_job(self, storage: Storage) -> None:
        await new_job(storage, "a", due=None)
        await new_job(storage, "b", due=None)
        m1 = await storage.post_control("a", {"op": "pause"}, at(0))
        m2 = await storage.post_control("a", {"op": "resume"}, at(0))
        mb = await storage.post_control("b", {"op": "cancel"}, at(0))
        c = await take(storage, "a")
        assert [m.msg_id for m in c.control] == [m1, m2]
        [result] = await storage.commit([write(c, ack=(m1, mb))])
        assert result.ok
        assert await storage.control_pending([m1, m2, mb]) == {m2, mb}

    async def test_an_empty_commit_returns_nothing(self, storage: Storage) -> None:
        assert await storage.commit([]) == []

    # -- claim_due ------------------------------------------------------------------

    async def test_claim_due_takes_the_earliest_first_up_to_the_limit(
        self, storage: Storage
    ) -> None:
        for job_id, due in (("c", 3), ("b", 1), ("a", 1), ("d", 2), ("e", 4)):
            await new_job(storage, job_id, due=due)
        first = await claim(storage, now=5, until=5, limit=3)
        assert ids(first) == ["a", "b", "d"]
        assert [c.due_at for c in first] == [at(1), at(1), at(2)]
        assert all(c.lease.silo_id == "s1" and c.lease.epoch == 1 for c in first)
        assert ids(await claim(storage, now=5, until=5, limit=3)) == ["c", "e"]
        assert await claim(storage, now=5, until=5, limit=3) == []

    async def test_claim_due_stops_at_the_horizon(self, storage: Storage) -> None:
        for job_id, due in (("past", -10), ("edge", 5), ("later", 5.000001)):
            await new_job(storage, job_id, due=due)
        assert ids(await claim(storage, now=0, until=5)) == ["past", "edge"]
        assert await claim(storage, silo="s2", now=0, until=5) == []

    async def test_claim_due_with_no_room_claims_nothing(self, storage: Storage) -> None:
        await new_job(storage, "a")
        assert await claim(storage, limit=0) == []
        assert await holder(storage, "a") is None

    async def test_claim_carries_the_envelope_due_time_and_lease(self, storage: Storage) -> None:
        etag = await new_job(storage, "a", due=2, state={"k": "v"}, stage="active")
        [c] = await claim(storage, silo="s9", now=3, until=3, lease=60)
        assert c.lease == LeaseToken("a", "s9", 1)
        assert c.envelope.state == {"k": "v"}
        assert c.envelope.etag == etag
        assert c.due_at == at(2)
        assert c.control == ()
        assert await holder(storage, "a", 62.999999) == c.lease
        assert await holder(storage, "a", 63) is None

    async def test_claim_due_skips_live_leases_and_takes_expired_ones(
        self, storage: Storage
    ) -> None:
        await new_job(storage, "a")
        first = await take(storage, "a", silo="s1", now=0)  # lease until 30
        assert await claim(storage, silo="s2", now=29.999999, until=30) == []
        [second] = await claim(storage, silo="s2", now=30, until=30)
        assert second.lease == LeaseToken("a", "s2", first.lease.epoch + 1)
        assert await holder(storage, "a", 31) == second.lease

    async def test_claim_due_takes_leases_of_dead_and_stopped_silos(self, storage: Storage) -> None:
        for silo_id in ("s1", "s2", "s3"):
            await storage.register_silo(silo(silo_id))
        await new_job(storage, "a")
        await new_job(storage, "b")
        held = {c.envelope.job_id: c for c in await claim(storage, silo="s1", lease=3600)}
        await storage.set_silo_status("s1", "stopping", at(1))
        assert await claim(storage, silo="s2", now=1) == []  # stopping still holds
        await storage.set_silo_status("s1", "stopped", at(2))
        retaken = await claim(storage, silo="s2", now=2)
        assert {c.lease for c in retaken} == {
            LeaseToken(j, "s2", held[j].lease.epoch + 1) for j in ("a", "b")
        }
        # A zombie (dead, but still claiming) holds nothing: its fresh lease is free.
        await storage.set_silo_status("s3", "dead", at(3))
        await storage.release_leases([c.lease for c in retaken])
        zombie = await claim(storage, silo="s3", now=3, lease=3600)
        assert ids(zombie) == ["a", "b"]
        assert await holder(storage, "a", 4) is None
        assert ids(await claim(storage, silo="s2", now=4)) == ["a", "b"]

    async def test_jobs_with_pending_control_are_due_now(self, storage: Storage) -> None:
        await new_job(storage, "early", due=-5)
        await new_job(storage, "idle", due=None)
        await new_job(storage, "future", due=500)
        await new_job(storage, "soon", due=5)
        await new_job(storage, "within", due=8)
        m1 = await storage.post_control("idle", {"op": "trigger"}, at(0))
        m2 = await storage.post_control("future", {"op": "cancel", "reason": "x"}, at(0))
        m3 = await storage.post_control("idle", {"op": "pause"}, at(0.5))
        await storage.post_control("within", {"op": "trigger"}, at(0.5))
        claims = await claim(storage, now=1, until=10)
        # mail makes a job due now (1), even one whose reminder is due within the horizon
        assert ids(claims) == ["early", "future", "idle", "within", "soon"]
        by_id = {c.envelope.job_id: c for c in claims}
        assert [m.msg_id for m in by_id["idle"].control] == [m1, m3]
        assert by_id["idle"].control[0].body == {"op": "trigger"}
        assert by_id["idle"].control[1].posted_at == at(0.5)
        assert by_id["idle"].due_at is None
        assert by_id["future"].due_at == at(500)
        assert [m.msg_id for m in by_id["future"].control] == [m2]
        assert by_id["early"].control == ()
        assert m1 < m2 < m3

    async def test_mail_does_not_make_a_leased_job_claimable(self, storage: Storage) -> None:
        await new_job(storage, "a", due=None)
        await storage.post_control("a", {"op": "trigger"}, at(0))
        await take(storage, "a", silo="s1")
        await storage.post_control("a", {"op": "cancel"}, at(1))
        assert await claim(storage, silo="s2", now=1, until=100) == []

    async def test_concurrent_claimers_never_claim_one_job_twice(
        self, storage: Storage, twin: Storage
    ) -> None:
        for i in range(60):
            await new_job(storage, f"job-{i:03}", due=i % 7)
        await storage.post_control("job-059", {"op": "trigger"}, at(0))
        seen: list[str] = []
        for _ in range(3):
            batches = await asyncio.gather(
                *(claim(s, silo=f"s{n}", now=10, until=10, limit=7) for n, s in
                  enumerate((storage, twin, storage, twin)))
            )  # fmt: skip
            for batch in batches:
                seen += ids(batch)
        assert len(seen) == len(set(seen)) == 60
        assert await claim(storage, silo="late", now=10, until=10) == []

    async def test_epochs_only_grow(self, storage: Storage) -> None:
        await new_job(storage, "a")
        epochs = []
        for n in range(3):
            c = await take(storage, "a", silo=f"s{n}", now=n * 100)
            epochs.append(c.lease.epoch)
            await storage.release_leases([c.lease])
        store_time(400)
        token = await storage.acquire_lease("a", "s9", secs(30))
        assert token is not None
        assert [*epochs, token[0].epoch] == [1, 2, 3, 4]

    # -- acquire, renew, release, holder ----------------------------------------------

    async def test_acquire_lease_takes_a_free_job_due_or_not(self, storage: Storage) -> None:
        etag = await new_job(storage, "a", due=None, state={"q": 1})
        msg = await storage.post_control("a", {"op": "pause"}, at(0))
        taken = await storage.acquire_lease("a", "client", secs(5))
        assert taken is not None
        token, env, control = taken
        assert token == LeaseToken("a", "client", 1)
        assert (env.state, env.etag) == ({"q": 1}, etag)
        assert [m.msg_id for m in control] == [msg]
        store_time(4.999999)
        assert await storage.acquire_lease("a", "other", secs(4)) is None
        store_time(5)
        again = await storage.acquire_lease("a", "other", secs(4))
        assert again is not None
        assert again[0] == LeaseToken("a", "other", 2)
        with pytest.raises(JobNotFoundError) as info:
            await storage.acquire_lease("nope", "client", secs(5))
        assert info.value.job_id == "nope"

    async def test_renew_extends_held_leases_and_returns_the_lost(self, storage: Storage) -> None:
        for job_id in ("a", "b", "c"):
            await new_job(storage, job_id)
        claims = {c.envelope.job_id: c for c in await claim(storage, silo="s1", lease=10)}
        stolen = await take(storage, "b", silo="s2", now=10)
        [deleted] = await storage.commit([write(claims["c"], delete=True)])
        assert deleted.ok
        tokens = [claims[j].lease for j in "abc"]
        lost = await renew(storage, tokens, now=10, lease=90)  # "a" expired, nobody took it
        assert lost == [claims["b"].lease, claims["c"].lease]
        assert await holder(storage, "a", 99) == claims["a"].lease
        assert await holder(storage, "a", 100) is None
        assert await holder(storage, "b", 11) == stolen.lease
        assert await renew(storage, [], now=10) == []

    async def test_release_frees_only_matching_leases_and_keeps_the_epoch(
        self, storage: Storage
    ) -> None:
        await new_job(storage, "a")
        c = await take(storage, "a", silo="s1")
        await storage.release_leases([LeaseToken("a", "s1", 7), LeaseToken("a", "s2", 1)])
        assert await holder(storage, "a", 1) == c.lease
        await storage.release_leases([c.lease])
        assert await holder(storage, "a", 1) is None
        assert await renew(storage, [c.lease], now=1) == [c.lease]
        [again] = await claim(storage, silo="s2", now=1, until=1)
        assert again.lease.epoch == 2

    async def test_lease_holder_sees_only_live_leases(self, storage: Storage) -> None:
        await storage.register_silo(silo("s1"))
        await new_job(storage, "a")
        assert await holder(storage, "nope") is None
        c = await take(storage, "a", silo="s1")  # until 30
        assert await holder(storage, "a", 29) == c.lease
        assert await holder(storage, "a", 30) is None
        await storage.set_silo_status("s1", "dead", at(1))
        assert await holder(storage, "a", 1) is None

    # -- next_due ---------------------------------------------------------------------

    async def test_next_due_is_the_earliest_free_reminder(self, storage: Storage) -> None:
        assert await next_due(storage) is None
        await new_job(storage, "a", due=10)
        await new_job(storage, "b", due=20)
        await new_job(storage, "c", due=None)
        assert await next_due(storage) == at(10)
        await take(storage, "a", now=0)  # leased until 30
        assert await next_due(storage) == at(20)
        await take(storage, "b", silo="s2", now=0)
        assert await next_due(storage) is None
        assert await next_due(storage, 30) == at(10)  # both leases expired

    async def test_next_due_is_now_for_a_free_job_with_mail(self, storage: Storage) -> None:
        await new_job(storage, "a", due=100)
        await new_job(storage, "b", due=None)
        await storage.post_control("b", {"op": "trigger"}, at(0))
        assert await next_due(storage, 3) == at(3)
        await take(storage, "b", now=3)
        assert await next_due(storage, 3) == at(100)

    # -- control inbox ----------------------------------------------------------------

    async def test_post_control_to_an_unknown_job_raises(self, storage: Storage) -> None:
        with pytest.raises(JobNotFoundError) as info:
            await storage.post_control("ghost", {"op": "cancel"}, at(0))
        assert info.value.job_id == "ghost"

    async def test_message_ids_grow_and_pending_tracks_consumption(self, storage: Storage) -> None:
        await new_job(storage, "a", due=None)
        m1 = await storage.post_control("a", {"op": "x"}, at(0))
        c = await take(storage, "a")
        await storage.commit([write(c, ack=(m1,))])
        m2 = await storage.post_control("a", {"op": "y"}, at(1))
        assert m2 > m1
        assert await storage.control_pending([m1, m2, m2 + 1000]) == {m2}
        assert await storage.control_pending([]) == set()

    async def test_pending_control_lists_the_mail_of_jobs_the_silo_holds(
        self, storage: Storage
    ) -> None:
        for job_id in ("a", "b", "c"):
            await new_job(storage, job_id, due=100)
        await take(storage, "a", silo="s1")
        await take(storage, "b", silo="s1")
        mb = await storage.post_control("b", {"op": 1}, at(0))
        await storage.post_control("c", {"op": 2}, at(0))
        ma = await storage.post_control("a", {"op": 3}, at(1))
        pending = await storage.pending_control("s1")
        assert [(m.msg_id, m.job_id, m.body) for m in pending] == [
            (mb, "b", {"op": 1}), (ma, "a", {"op": 3}),
        ]  # fmt: skip
        assert pending[1].posted_at == at(1)
        assert await storage.pending_control("s2") == []

    # -- run history --------------------------------------------------------------------

    async def test_runs_are_upserted_and_read_newest_first(self, storage: Storage) -> None:
        await new_job(storage, "a")
        c = await take(storage, "a")
        first = run("r1", "a", 10, stage="running")
        [res] = await storage.commit([write(c, runs=(first, run("r2", "a", 20, stage="running")))])
        done = run("r1", "a", 10, stage="completed", transitions=["running", "completed"])
        [res] = await storage.commit([write((c.lease, res.etag or 0), runs=(done,))])
        assert res.ok
        assert await storage.read_run("r1") == done
        assert await storage.read_run("nope") is None
        more = tuple(run(f"r{i}", "a", i * 10) for i in range(3, 6))
        await storage.commit([write((c.lease, res.etag or 0), runs=more)])
        newest = await storage.read_runs("a")
        assert [r.run_id for r in newest] == ["r5", "r4", "r3", "r2", "r1"]
        assert [r.run_id for r in await storage.read_runs("a", limit=2)] == ["r5", "r4"]
        assert [r.run_id for r in await storage.read_runs("a", before=at(40))] == ["r3", "r2", "r1"]
        assert [r.run_id for r in await storage.read_runs("a", 1, at(30))] == ["r2"]
        assert await storage.read_runs("b") == []

    async def test_prune_keeps_the_newest_terminal_runs_and_every_open_one(
        self, storage: Storage
    ) -> None:
        await new_job(storage, "a")
        await new_job(storage, "b")
        ca, cb = await claim(storage)
        runs_a = (
            run("a0", "a", 0, stage="running"),  # the oldest, but open: never pruned
            run("a1", "a", 1, stage="completed"),
            run("a2", "a", 2, stage="failed"),
            run("a3", "a", 3, stage="cancelled"),
            run("a4", "a", 4, stage="compensated"),
            run("a5", "a", 5, stage="retrying"),
            run("a6", "a", 6, stage="skipped"),
        )
        runs_b = (run("b1", "b", 1), run("b2", "b", 2))
        await storage.commit([write(ca, runs=runs_a), write(cb, runs=runs_b)])
        assert await storage.prune_runs(keep=2) == 3
        assert [r.run_id for r in await storage.read_runs("a")] == ["a6", "a5", "a4", "a0"]
        assert [r.run_id for r in await storage.read_runs("b")] == ["b2", "b1"]
        assert await storage.prune_runs(keep=2) == 0
        assert await storage.prune_runs(keep=0) == 4
        assert [r.run_id for r in await storage.read_runs("a")] == ["a5", "a0"]

    # -- membership -------------------------------------------------------------------

    async def test_silos_register_once_and_list_newest_first(self, storage: Storage) -> None:
        await storage.register_silo(silo("old", started=0))
        await storage.register_silo(silo("new", started=10))
        await storage.register_silo(silo("mid", started=5))
        listed = await storage.list_silos()
        assert [s.silo_id for s in listed] == ["new", "mid", "old"]
        assert listed[0] == silo("new", started=10)
        with pytest.raises(StorageError):
            await storage.register_silo(silo("old", started=20))
        assert len(await storage.list_silos()) == 3

    async def test_heartbeat_is_refused_once_dead_or_stopped(self, storage: Storage) -> None:
        await storage.register_silo(silo("s1"))
        await storage.register_silo(silo("s2"))
        assert await beat(storage, "s1", 7)
        assert {s.silo_id: s.heartbeat_at for s in await storage.list_silos()}["s1"] == at(7)
        await storage.set_silo_status("s1", "dead", at(8))
        assert not await beat(storage, "s1", 9)
        await storage.set_silo_status("s2", "stopped", at(8))
        assert not await beat(storage, "s2", 9)
        assert not await beat(storage, "never-registered", 9)
        statuses = {s.silo_id: (s.status, s.heartbeat_at) for s in await storage.list_silos()}
        assert statuses == {"s1": ("dead", at(7)), "s2": ("stopped", at(0))}

    async def test_stopping_keeps_leases_and_stopped_frees_them(self, storage: Storage) -> None:
        await storage.register_silo(silo("s1"))
        await new_job(storage, "a")
        c = await take(storage, "a", silo="s1")
        await storage.set_silo_status("s1", "stopping", at(1))
        assert await beat(storage, "s1", 1)
        assert await holder(storage, "a", 1) == c.lease
        await storage.set_silo_status("s1", "stopped", at(2))
        assert await holder(storage, "a", 2) is None
        assert await renew(storage, [c.lease], now=2) == [c.lease]

    async def test_declare_dead_takes_silos_that_missed_heartbeats(self, storage: Storage) -> None:
        for silo_id in ("quiet", "alive", "gone", "draining"):
            await storage.register_silo(silo(silo_id))  # a first heartbeat at 0
        await storage.set_silo_status("gone", "stopped", at(2))
        await storage.set_silo_status("draining", "stopping", at(2))
        assert await beat(storage, "draining", 1)
        assert await beat(storage, "alive", 10)
        await new_job(storage, "q")
        await new_job(storage, "l")
        q = await take(storage, "q", silo="quiet")
        live = await take(storage, "l", silo="alive")
        store_time(12)
        dead = await storage.declare_dead(secs(10))  # no heartbeat since 2: 0 and 1 are out
        assert sorted(dead) == ["draining", "quiet"]
        statuses = {s.silo_id: s.status for s in await storage.list_silos()}
        assert statuses == {
            "quiet": "dead",
            "alive": "active",
            "gone": "stopped",
            "draining": "dead",
        }
        assert await holder(storage, "q", 12) is None
        assert await holder(storage, "l", 12) == live.lease
        assert await renew(storage, [q.lease], now=12) == [q.lease]
        store_time(20)
        assert await storage.declare_dead(secs(10)) == []  # "alive" beat at 10: not before

    # -- store time -------------------------------------------------------------------

    async def test_the_store_clock_decides_leases_and_liveness(self, storage: Storage) -> None:
        """Callers send durations; the store stamps and judges lease expiries and
        heartbeats with its own clock, so silos whose clocks disagree agree on who holds
        a job and who is alive. Due times stay the callers'. Here the clock of silo "fast"
        runs 10 minutes ahead of the store's, that of "slow" 10 minutes behind."""
        fast, slow = 600, -600
        await storage.register_silo(SiloInfo("fast", "h", 1, at(fast), at(fast)))
        await storage.register_silo(SiloInfo("slow", "h", 2, at(slow), at(slow - 3600)))
        beats = {s.silo_id: s.heartbeat_at for s in await storage.list_silos()}
        assert beats == {"fast": at(0), "slow": at(0)}  # the store's time, not theirs
        assert await storage.now() == at(0)
        await new_job(storage, "a", due=-900)
        await new_job(storage, "b", due=0)
        [a] = await storage.claim_due("slow", at(slow), at(slow), 10, secs(10))
        assert a.envelope.job_id == "a"  # "b" is not due yet by slow's clock
        # At store time 5 fast's clock says 605: by it slow's lease ran out long ago, but
        # the store's clock is the one that counts, and by it "a" is slow's until 10.
        store_time(5)
        [b] = await storage.claim_due("fast", at(fast + 5), at(fast + 5), 10, secs(10))
        assert b.envelope.job_id == "b"
        assert await storage.lease_holder("a") == a.lease
        assert await storage.heartbeat("slow")
        store_time(8)
        assert await storage.renew_leases([a.lease], secs(10)) == []  # now until 18
        assert await storage.heartbeat("fast")
        beats = {s.silo_id: s.heartbeat_at for s in await storage.list_silos()}
        assert beats == {"fast": at(8), "slow": at(5)}
        store_time(13)
        assert await storage.declare_dead(secs(8)) == []  # slow's last beat was 8 s ago
        assert await storage.lease_holder("a") == a.lease
        store_time(13.000001)
        assert await storage.declare_dead(secs(8), by="slow") == []  # never by itself
        assert await storage.declare_dead(secs(8), by="fast") == ["slow"]
        assert await storage.lease_holder("a") is None  # freed with its holder
        store_time(14.999999)
        assert await storage.lease_holder("b") == b.lease
        store_time(15)
        assert await storage.lease_holder("b") is None
        assert await storage.heartbeat("fast")
        assert not await storage.heartbeat("slow")

    # -- queries -----------------------------------------------------------------------

    async def test_list_jobs_filters_and_pages_by_job_id(self, storage: Storage) -> None:
        jobs = {
            "Report-Ünïcode-1": ("report", "active"),
            "report-2": ("report", "paused"),
            "mail-1": ("mail", "active"),
            "mail-2": ("mail", "finished"),
            "mail-3": ("mail", "active"),
        }
        for job_id, (job_type, stage) in jobs.items():
            await storage.insert_job(job_id, job_type, stage, {}, None)
        everything = await storage.list_jobs(JobQuery())
        assert [e.job_id for e in everything] == sorted(jobs)
        page = await storage.list_jobs(JobQuery(limit=2))
        assert [e.job_id for e in page] == ["Report-Ünïcode-1", "mail-1"]
        rest = await storage.list_jobs(JobQuery(after=page[-1].job_id, limit=2))
        assert [e.job_id for e in rest] == ["mail-2", "mail-3"]
        active_mail = JobQuery(stage="active", job_type="mail")
        assert [e.job_id for e in await storage.list_jobs(active_mail)] == ["mail-1", "mail-3"]
        text = JobQuery(text="üNÏ")
        assert [e.job_id for e in await storage.list_jobs(text)] == ["Report-Ünïcode-1"]
        assert [e.job_id for e in await storage.list_jobs(JobQuery(text="REPORT"))] == [
            "Report-Ünïcode-1", "report-2",
        ]  # fmt: skip
        assert await storage.list_jobs(JobQuery(text="%")) == []
        assert await storage.count_jobs(JobQuery()) == 5
        assert await storage.count_jobs(JobQuery(job_type="mail", after="mail-2", limit=1)) == 3
        assert await storage.count_jobs(JobQuery(stage="gone")) == 0
        assert await storage.stage_counts() == {"active": 3, "paused": 1, "finished": 1}

    # -- store metadata ---------------------------------------------------------------

    async def test_meta_documents_are_stored_by_key(self, storage: Storage, twin: Storage) -> None:
        assert await storage.read_meta("builder-jobs") is None
        await storage.write_meta("builder-jobs", {"job_ids": ["a", "ü"]})
        await storage.write_meta("other", {"n": 1})
        assert await twin.read_meta("builder-jobs") == {"job_ids": ["a", "ü"]}
        await twin.write_meta("builder-jobs", {"job_ids": []})
        assert await storage.read_meta("builder-jobs") == {"job_ids": []}
        assert await storage.read_meta("other") == {"n": 1}

    # -- notices -----------------------------------------------------------------------

    async def test_notices_reach_every_listener_of_the_store(
        self, storage: Storage, twin: Storage
    ) -> None:
        got: list[Notice] = []
        arrived = asyncio.Event()

        def listener(notice: Notice) -> None:
            got.append(notice)
            if len(got) == 2:
                arrived.set()

        remove = storage.add_listener(listener)
        sent = [Notice("due", "a", at(5)), Notice("control", "b")]
        await twin.notify(sent)
        try:
            await asyncio.wait_for(arrived.wait(), timeout=5)
        except TimeoutError:
            pytest.fail(f"two notices were sent, the listener got {got}")
        assert got == sent
        remove()
        await twin.notify([Notice("run", "c")])
        for _ in range(5):
            await asyncio.sleep(0)
        assert got == sent

    # -- encoding -----------------------------------------------------------------------

    async def test_times_round_trip_to_the_microsecond_in_utc(self, storage: Storage) -> None:
        zone = timezone(timedelta(hours=5, minutes=30))
        due = datetime(2031, 7, 4, 12, 30, 15, 123457, tzinfo=zone)
        await storage.insert_job("a", "demo", "active", {}, due)
        [got] = (await storage.read_due_at(["a"])).values()
        assert got == due
        assert got.utcoffset() == timedelta(0)
        assert got.microsecond == 123457
        await storage.insert_job(
            "old", "demo", "active", {}, datetime(1969, 12, 31, 23, 59, 59, 1, UTC)
        )
        assert (await storage.read_due_at(["old"]))["old"].microsecond == 1
        c = await take(storage, "a", now=10**9)
        record = RunRecord(
            "r", "a", "demo", "running", 2, due, due + timedelta(microseconds=1), None, None
        )
        await storage.commit([write(c, runs=(record,))])
        back = await storage.read_run("r")
        assert back == record
        assert back.scheduled_for.tzinfo == UTC

    async def test_json_state_and_unicode_ids_round_trip(self, storage: Storage) -> None:
        job_id = "ジョブ/✓ 𝄞\"'%_"
        state = {
            "text": "naïve — 東京 🎉",
            "nested": {"list": [1, 2.5, -3, None, True, False, "x"], "empty": {}},
            "big": 2**62,
            "quote": "'; DROP TABLE jobs; --",
        }
        etag = await storage.insert_job(job_id, "typé", "active", state, at(1))
        env = await storage.read_state(job_id)
        assert env is not None
        assert env.state == state
        assert env.job_type == "typé"
        assert env.etag == etag
        body = {"op": "cancel", "reason": "user left 👋"}
        msg = await storage.post_control(job_id, body, at(0))
        [c] = await claim(storage, until=1)
        assert c.envelope.job_id == job_id
        assert c.control[0].body == body
        assert c.control[0].msg_id == msg
        assert [e.job_id for e in await storage.list_jobs(JobQuery(text="✓ 𝄞"))] == [job_id]
