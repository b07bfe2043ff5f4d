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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from anu_jobs.errors import (
    JobNotFoundError,
    StorageError,
)
from anu_jobs.storage.base import (
    JobQuery,
    LeaseToken,
    Notice,
    RunRecord,
    SiloInfo,
    Storage,
)
from anu_jobs.testing import _suite_support
from anu_jobs.testing._suite_state import StateConformance
from anu_jobs.testing._suite_support import (
    T0,
    at,
    beat,
    claim,
    holder,
    ids,
    new_job,
    next_due,
    renew,
    run,
    secs,
    silo,
    store_time,
    take,
    write,
)
from anu_jobs.testing.clock import FakeClock

__all__ = ["StorageConformance", "at"]


@pytest.mark.asyncio
class StorageConformance(StateConformance):
    """Every contract method, against the ``storage`` fixture the subclass provides."""

    @pytest.fixture(autouse=True)
    def store_clock(self) -> Iterator[FakeClock]:
        """The store's clock, at ``T0``: the ``storage`` fixture opens the store on it,
        and the tests move it to say what time it is for the store."""
        clock = _suite_support._store_clock = FakeClock(T0)
        try:
            yield clock
        finally:
            _suite_support._store_clock = None

    @pytest.fixture
    def twin(self, storage: Storage) -> Storage:
        """A second storage object on ``storage``'s store; override where possible."""
        return storage

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
