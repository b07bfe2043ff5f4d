"""The storage conformance suite's tests of grain state and commits (part of
:class:`~anu_jobs.testing.storage_suite.StorageConformance`)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from anu_jobs._time import to_us
from anu_jobs.errors import (
    DuplicateJobError,
    EtagConflictError,
    LeaseLostError,
)
from anu_jobs.storage.base import (
    GrainWrite,
    JobQuery,
    LeaseToken,
    NewJob,
    NewJobRow,
    RunRecord,
    SiloInfo,
    Storage,
)
from anu_jobs.testing._suite_support import (
    at,
    claim,
    holder,
    new_job,
    next_due,
    run,
    secs,
    store_time,
    take,
    write,
)

__all__ = ["StateConformance"]


class StateConformance:
    """Grain state (insert, read, list) and commits (writes, fencing, run records)."""

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
