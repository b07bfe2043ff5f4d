"""The in-memory provider: the SQL schema's tables as dicts, with the same semantics.

It is a faithful provider, not a mock: etags, lease fencing, the due-time order and
every tie-break follow the SQLite provider exactly, and both pass the same conformance
suite (``anu_jobs.testing.storage_suite``). Values are stored as the SQL rows are (JSON
text, integer microseconds) and built back by the same functions, so what comes out of
one provider is what comes out of the other.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from anu_jobs import _json
from anu_jobs.clock import Clock, SystemClock
from anu_jobs.errors import (
    DuplicateJobError,
    EtagConflictError,
    JobNotFoundError,
    LeaseLostError,
    StorageError,
)
from anu_jobs.storage._common import (
    FREEING_STATUSES,
    MAX_US,
    TERMINAL_RUN_STAGES,
    ControlRow,
    JobRow,
    NoticeHub,
    RunRow,
    SiloRow,
    control_from_row,
    envelope_from_row,
    from_us,
    id_matches,
    new_etag,
    new_job_rows,
    run_from_row,
    run_to_row,
    silo_from_row,
    silo_to_row,
    to_us,
)
from anu_jobs.storage.base import (
    Claim,
    ControlMessage,
    GrainWrite,
    JobQuery,
    LeaseToken,
    NewJob,
    NewJobRow,
    Notice,
    NoticeListener,
    RunRecord,
    SiloInfo,
    SiloStatus,
    StateEnvelope,
    Storage,
    WriteResult,
)

__all__ = ["MemoryStorage"]

LeaseRow = tuple[str | None, int, int]  # silo_id (None: released), epoch, expires_us


_MICRO = timedelta(microseconds=1)


class _Store:
    """One in-memory database. Every access holds ``lock``: a store may be shared by
    storage objects used from several threads (a sync client beside a silo)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hub = NoticeHub()
        self.jobs: dict[str, JobRow] = {}
        self.reminders: dict[str, int] = {}
        self.due_index: list[tuple[int, str]] = []  # sorted (due_us, job_id): the due index
        self.leases: dict[str, LeaseRow] = {}
        self.silos: dict[str, SiloRow] = {}
        self.control: dict[int, ControlRow] = {}  # insertion order is msg_id order
        self.control_by_job: dict[str, list[int]] = {}
        self.last_msg_id = 0
        self.runs: dict[str, RunRow] = {}
        self.runs_by_job: dict[str, set[str]] = {}
        self.meta: dict[str, str] = {}

    def set_reminder(self, job_id: str, due_us: int | None) -> None:
        old = self.reminders.pop(job_id, None)
        if old is not None:
            index = bisect.bisect_left(self.due_index, (old, job_id))
            del self.due_index[index]
        if due_us is not None:
            self.reminders[job_id] = due_us
            bisect.insort(self.due_index, (due_us, job_id))

    def is_free(self, job_id: str, now_us: int) -> bool:
        lease = self.leases.get(job_id)
        if lease is None or lease[0] is None or lease[2] <= now_us:
            return True
        silo = self.silos.get(lease[0])
        return silo is not None and silo[5] in FREEING_STATUSES

    def take_lease(self, job_id: str, silo_id: str, expires_us: int) -> LeaseToken:
        old = self.leases.get(job_id)
        epoch = 1 if old is None else old[1] + 1
        self.leases[job_id] = (silo_id, epoch, expires_us)
        return LeaseToken(job_id, silo_id, epoch)

    def free_leases_of(self, silo_ids: set[str]) -> None:
        for job_id, (holder, epoch, expires) in list(self.leases.items()):
            if holder in silo_ids:
                self.leases[job_id] = (None, epoch, expires)

    def control_of(self, job_id: str) -> tuple[ControlMessage, ...]:
        return tuple(control_from_row(self.control[i]) for i in self.control_by_job.get(job_id, ()))

    def ack(self, job_id: str, msg_id: int) -> None:
        row = self.control.get(msg_id)
        if row is None or row[1] != job_id:
            return
        del self.control[msg_id]
        ids = self.control_by_job[job_id]
        ids.remove(msg_id)
        if not ids:
            del self.control_by_job[job_id]

    def put_run(self, row: RunRow) -> None:
        old = self.runs.get(row[0])
        if old is not None and old[1] != row[1]:
            self.runs_by_job[old[1]].discard(row[0])
        self.runs[row[0]] = row
        self.runs_by_job.setdefault(row[1], set()).add(row[0])

    def delete_job(self, job_id: str) -> None:
        del self.jobs[job_id]
        self.set_reminder(job_id, None)
        self.leases.pop(job_id, None)
        for msg_id in self.control_by_job.pop(job_id, ()):
            del self.control[msg_id]
        for run_id in self.runs_by_job.pop(job_id, ()):
            del self.runs[run_id]


# memory://NAME stores live as long as the process, like a file would.
_NAMED: dict[str, _Store] = {}
_NAMED_LOCK = threading.Lock()


class MemoryStorage(Storage):
    """A store in this process's memory: ``memory://`` is private to this object,
    ``memory://NAME`` is shared by every ``MemoryStorage`` of that name in the process
    (so a client and a silo in one process see the same jobs). Nothing survives the
    process. Notices reach every listener of the same store.

    Store time (lease expiries, heartbeats) is ``clock``'s, the system clock unless given:
    the silo's clock, which a silo passes through :func:`~anu_jobs.storage.open_storage`.
    """

    def __init__(self, name: str | None = None, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        if name is None:
            self._store = _Store()
            self.url = "memory://"
        else:
            with _NAMED_LOCK:
                self._store = _NAMED.setdefault(name, _Store())
            self.url = f"memory://{name}"
        self._opened = False

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> MemoryStorage:
        """``memory://`` or ``memory://NAME``; ``clock`` keeps the store's time."""
        name = url.partition("://")[2].rstrip("/")
        return cls(name or None, clock=clock)

    def _now_us(self) -> int:
        return to_us(self.clock.now())

    def _db(self) -> _Store:
        if not self._opened:
            raise StorageError(f"the store {self.url} is not open; call open() first")
        return self._store

    async def open(self) -> None:
        self._opened = True

    async def close(self) -> None:
        self._opened = False

    # -- grain state ------------------------------------------------------------------

    async def insert_job(
        self, job_id: str, job_type: str, stage: str, state: dict[str, Any], due_at: datetime | None
    ) -> int:
        db = self._db()
        text = _json.dumps(state)
        with db.lock:
            if job_id in db.jobs:
                raise DuplicateJobError(job_id)
            etag = new_etag()
            db.jobs[job_id] = (job_id, job_type, stage, text, etag)
            db.set_reminder(job_id, None if due_at is None else to_us(due_at))
        return etag

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> None:
        await self.insert_encoded_jobs(new_job_rows(jobs))  # refuses bad JSON before any change

    async def insert_encoded_jobs(self, rows: Sequence[NewJobRow]) -> None:
        db = self._db()
        with db.lock:
            seen: set[str] = set()
            for row in rows:
                if row[0] in db.jobs or row[0] in seen:
                    raise DuplicateJobError(row[0])
                seen.add(row[0])
            for job_id, job_type, stage, text, due_us in rows:
                db.jobs[job_id] = (job_id, job_type, stage, text, new_etag())
                db.set_reminder(job_id, due_us)

    async def read_state(self, job_id: str) -> StateEnvelope | None:
        db = self._db()
        with db.lock:
            row = db.jobs.get(job_id)
        return None if row is None else envelope_from_row(row)

    async def read_due_at(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        db = self._db()
        with db.lock:
            return {j: from_us(db.reminders[j]) for j in job_ids if j in db.reminders}

    def _matching(self, db: _Store, query: JobQuery) -> list[JobRow]:
        return [
            row
            for row in db.jobs.values()
            if (query.stage is None or row[2] == query.stage)
            and (query.job_type is None or row[1] == query.job_type)
            and (query.text is None or id_matches(row[0], query.text))
        ]

    async def list_jobs(self, query: JobQuery) -> list[StateEnvelope]:
        db = self._db()
        if query.limit <= 0:
            return []
        with db.lock:
            rows = self._matching(db, query)
        if query.after is not None:
            rows = [r for r in rows if r[0] > query.after]
        rows.sort(key=lambda r: r[0])
        return [envelope_from_row(r) for r in rows[: query.limit]]

    async def count_jobs(self, query: JobQuery) -> int:
        db = self._db()
        with db.lock:
            return len(self._matching(db, query))

    async def stage_counts(self) -> dict[str, int]:
        db = self._db()
        counts: dict[str, int] = {}
        with db.lock:
            for row in db.jobs.values():
                counts[row[2]] = counts.get(row[2], 0) + 1
        return counts

    # -- leases and reminders ---------------------------------------------------------

    async def claim_due(
        self, silo_id: str, now: datetime, until: datetime, limit: int, lease_for: timedelta
    ) -> list[Claim]:
        db = self._db()
        if limit <= 0:
            return []
        now_us, until_us, store_us = to_us(now), to_us(until), self._now_us()
        expires_us = store_us + lease_for // _MICRO
        with db.lock:
            # The same two sources as the SQL: the first `limit` free reminders in due
            # order, and every free job with mail (due now); then the earliest `limit`.
            keys: dict[str, int] = {}
            for due_us, job_id in db.due_index:
                if due_us > until_us or len(keys) >= limit:
                    break
                if db.is_free(job_id, store_us):
                    keys[job_id] = due_us
            with_mail = [j for j in db.control_by_job if db.is_free(j, store_us)]
            for job_id in with_mail:
                keys[job_id] = min(keys.get(job_id, now_us), now_us)
            chosen = sorted(keys, key=lambda j: (keys[j], j))[:limit]
            claims = []
            for job_id in chosen:
                token = db.take_lease(job_id, silo_id, expires_us)
                reminder = db.reminders.get(job_id)
                claims.append(
                    Claim(
                        lease=token,
                        envelope=envelope_from_row(db.jobs[job_id]),
                        due_at=None if reminder is None else from_us(reminder),
                        control=db.control_of(job_id),
                    )
                )
        return claims

    async def acquire_lease(
        self, job_id: str, silo_id: str, lease_for: timedelta
    ) -> tuple[LeaseToken, StateEnvelope, tuple[ControlMessage, ...]] | None:
        db = self._db()
        store_us = self._now_us()
        with db.lock:
            row = db.jobs.get(job_id)
            if row is None:
                raise JobNotFoundError(job_id)
            if not db.is_free(job_id, store_us):
                return None
            token = db.take_lease(job_id, silo_id, store_us + lease_for // _MICRO)
            return token, envelope_from_row(row), db.control_of(job_id)

    async def renew_leases(
        self, tokens: Sequence[LeaseToken], lease_for: timedelta
    ) -> list[LeaseToken]:
        db = self._db()
        expires_us = self._now_us() + lease_for // _MICRO
        lost = []
        with db.lock:
            for token in tokens:
                lease = db.leases.get(token.job_id)
                if lease is not None and lease[0] == token.silo_id and lease[1] == token.epoch:
                    db.leases[token.job_id] = (token.silo_id, token.epoch, expires_us)
                else:
                    lost.append(token)
        return lost

    async def release_leases(self, tokens: Sequence[LeaseToken]) -> None:
        db = self._db()
        with db.lock:
            for token in tokens:
                lease = db.leases.get(token.job_id)
                if lease is not None and lease[0] == token.silo_id and lease[1] == token.epoch:
                    db.leases[token.job_id] = (None, lease[1], lease[2])

    async def lease_holder(self, job_id: str) -> LeaseToken | None:
        db = self._db()
        store_us = self._now_us()
        with db.lock:
            lease = db.leases.get(job_id)
            if lease is None or lease[0] is None or db.is_free(job_id, store_us):
                return None
            return LeaseToken(job_id, lease[0], lease[1])

    async def overdue(
        self, due_before: datetime, limit: int = 100
    ) -> tuple[int, list[tuple[str, datetime]]]:
        db = self._db()
        store_us, before_us = self._now_us(), to_us(due_before)
        with db.lock:
            late = [(j, d) for d, j in db.due_index if d < before_us and db.is_free(j, store_us)]
        return len(late), [(j, from_us(d)) for j, d in late[:limit]]

    async def run_counts(
        self, since: datetime, bucket: timedelta
    ) -> list[tuple[datetime, str, int]]:
        db = self._db()
        since_us, bucket_us = to_us(since), bucket // _MICRO
        counts: dict[tuple[int, str], int] = {}
        with db.lock:
            for row in db.runs.values():
                finished = row[7]
                if finished is not None and finished >= since_us:
                    key = (finished // bucket_us * bucket_us, row[3])
                    counts[key] = counts.get(key, 0) + 1
        return [(from_us(b), s, n) for (b, s), n in sorted(counts.items())]

    async def next_due(self, now: datetime) -> datetime | None:
        db = self._db()
        now_us, store_us = to_us(now), self._now_us()
        with db.lock:
            best = next((d for d, j in db.due_index if db.is_free(j, store_us)), None)
            if any(db.is_free(j, store_us) for j in db.control_by_job):
                best = now_us if best is None else min(best, now_us)
        return None if best is None else from_us(best)

    # -- the write path -----------------------------------------------------------------

    async def commit(self, writes: Sequence[GrainWrite]) -> list[WriteResult]:
        db = self._db()
        # Encode everything first: a value that is not JSON fails the call before any
        # write is applied, as the SQL transaction's rollback does.
        encoded = [
            (
                None if w.state is None else _json.dumps(w.state),
                None if w.due_at is None else to_us(w.due_at),
                [run_to_row(r) for r in w.runs],
            )
            for w in writes
        ]
        results = []
        with db.lock:
            for w, (text, due_us, runs) in zip(writes, encoded, strict=True):
                job_id = w.lease.job_id
                row = db.jobs.get(job_id)
                lease = db.leases.get(job_id)
                if row is None:
                    error: EtagConflictError | LeaseLostError = EtagConflictError(
                        job_id, w.expected_etag, None
                    )
                elif lease is None or lease[0] != w.lease.silo_id or lease[1] != w.lease.epoch:
                    error = LeaseLostError(job_id, w.lease.silo_id, w.lease.epoch)
                elif row[4] != w.expected_etag:
                    error = EtagConflictError(job_id, w.expected_etag, row[4])
                else:
                    results.append(WriteResult(job_id, self._apply(db, w, row, text, due_us, runs)))
                    continue
                results.append(WriteResult(job_id, None, error))
        return results

    @staticmethod
    def _apply(
        db: _Store,
        w: GrainWrite,
        row: JobRow,
        text: str | None,
        due_us: int | None,
        runs: list[RunRow],
    ) -> int | None:
        job_id = row[0]
        if text is None:
            db.delete_job(job_id)
            return None
        etag = new_etag(row[4])
        db.jobs[job_id] = (job_id, w.job_type, w.stage, text, etag)
        db.set_reminder(job_id, due_us)
        for run in runs:
            db.put_run(run)
        for msg_id in w.ack_control:
            db.ack(job_id, msg_id)
        if w.release:
            _, epoch, expires = db.leases[job_id]
            db.leases[job_id] = (None, epoch, expires)
        return etag

    # -- control inbox -----------------------------------------------------------------

    async def post_control(self, job_id: str, body: dict[str, Any], now: datetime) -> int:
        db = self._db()
        text = _json.dumps(body)
        with db.lock:
            if job_id not in db.jobs:
                raise JobNotFoundError(job_id)
            db.last_msg_id += 1
            msg_id = db.last_msg_id
            db.control[msg_id] = (msg_id, job_id, text, to_us(now))
            db.control_by_job.setdefault(job_id, []).append(msg_id)
        return msg_id

    async def pending_control(self, silo_id: str) -> list[ControlMessage]:
        db = self._db()
        with db.lock:
            return [
                control_from_row(row)
                for row in db.control.values()
                if (lease := db.leases.get(row[1])) is not None and lease[0] == silo_id
            ]

    async def control_pending(self, msg_ids: Sequence[int]) -> set[int]:
        db = self._db()
        with db.lock:
            return {i for i in msg_ids if i in db.control}

    # -- run history -------------------------------------------------------------------

    async def read_runs(
        self, job_id: str, limit: int = 100, before: datetime | None = None
    ) -> list[RunRecord]:
        db = self._db()
        if limit <= 0:
            return []
        before_us = MAX_US if before is None else to_us(before)
        with db.lock:
            rows = [db.runs[r] for r in db.runs_by_job.get(job_id, ())]
        rows = [r for r in rows if r[5] < before_us]
        rows.sort(key=lambda r: (r[5], r[0]), reverse=True)
        return [run_from_row(r) for r in rows[:limit]]

    async def read_run(self, run_id: str) -> RunRecord | None:
        db = self._db()
        with db.lock:
            row = db.runs.get(run_id)
        return None if row is None else run_from_row(row)

    async def prune_runs(self, keep: int) -> int:
        db = self._db()
        gone = 0
        with db.lock:
            for job_id, run_ids in list(db.runs_by_job.items()):
                terminal = [db.runs[r] for r in run_ids if db.runs[r][3] in TERMINAL_RUN_STAGES]
                terminal.sort(key=lambda r: (r[5], r[0]), reverse=True)
                for row in terminal[max(keep, 0) :]:
                    del db.runs[row[0]]
                    run_ids.discard(row[0])
                    gone += 1
                if not run_ids:
                    del db.runs_by_job[job_id]
        return gone

    # -- membership --------------------------------------------------------------------

    async def register_silo(self, info: SiloInfo) -> None:
        db = self._db()
        with db.lock:
            if info.silo_id in db.silos:
                raise StorageError(f"silo {info.silo_id!r} is registered already; use a new id")
            row = silo_to_row(info)
            db.silos[info.silo_id] = (*row[:4], self._now_us(), *row[5:])

    async def heartbeat(self, silo_id: str) -> bool:
        db = self._db()
        store_us = self._now_us()
        with db.lock:
            row = db.silos.get(silo_id)
            if row is None or row[5] not in ("active", "stopping"):
                return False
            db.silos[silo_id] = (*row[:4], store_us, *row[5:])
            return True

    async def set_silo_status(self, silo_id: str, status: SiloStatus, now: datetime) -> None:
        db = self._db()
        with db.lock:
            row = db.silos.get(silo_id)
            if row is None:
                return
            db.silos[silo_id] = (*row[:5], status, row[6])
            if status in FREEING_STATUSES:
                db.free_leases_of({silo_id})

    async def declare_dead(self, dead_after: timedelta, by: str | None = None) -> list[str]:
        db = self._db()
        limit_us = self._now_us() - dead_after // _MICRO
        with db.lock:
            dead = sorted(
                silo_id
                for silo_id, row in db.silos.items()
                if row[5] in ("active", "stopping") and row[4] < limit_us and silo_id != by
            )
            for silo_id in dead:
                row = db.silos[silo_id]
                db.silos[silo_id] = (*row[:5], "dead", row[6])
            db.free_leases_of(set(dead))
        return dead

    async def list_silos(self) -> list[SiloInfo]:
        db = self._db()
        with db.lock:
            rows = sorted(db.silos.values(), key=lambda r: (r[3], r[0]), reverse=True)
        return [silo_from_row(r) for r in rows]

    async def now(self) -> datetime:
        self._db()
        return from_us(self._now_us())

    # -- store metadata ------------------------------------------------------------------

    async def schema_versions(self) -> list[tuple[int, datetime]]:
        return []  # nothing persists, so nothing migrates

    async def read_meta(self, key: str) -> dict[str, Any] | None:
        db = self._db()
        with db.lock:
            text = db.meta.get(key)
        return None if text is None else cast(dict[str, Any], _json.loads(text))

    async def write_meta(self, key: str, value: dict[str, Any]) -> None:
        db = self._db()
        text = _json.dumps(value)
        with db.lock:
            db.meta[key] = text

    # -- notices -----------------------------------------------------------------------

    async def notify(self, notices: Sequence[Notice]) -> None:
        self._store.hub.publish(notices)

    def add_listener(self, listener: NoticeListener) -> Callable[[], None]:
        return self._store.hub.add(listener)
