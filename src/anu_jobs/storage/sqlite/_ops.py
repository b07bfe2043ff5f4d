"""The SQLite provider's transactions, one function per contract method.

Each runs in the provider's writer thread on its one connection, inside the
transaction that :func:`run` opens; none may await or touch the event loop. Rows
become objects through ``anu_jobs.storage._common``, as in the memory provider.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from anu_jobs import _json
from anu_jobs.errors import (
    DuplicateJobError,
    EtagConflictError,
    JobNotFoundError,
    LeaseLostError,
    StorageError,
)
from anu_jobs.storage._common import (
    TERMINAL_RUN_STAGES,
    RunRow,
    SiloRow,
    control_from_row,
    encode_write,
    envelope_from_row,
    from_us,
    new_etag,
    run_from_row,
    run_to_row,
    silo_from_row,
    to_us,
)
from anu_jobs.storage.base import (
    Claim,
    ControlMessage,
    GrainWrite,
    JobQuery,
    LeaseToken,
    NewJobRow,
    RunRecord,
    SiloInfo,
    StateEnvelope,
    WriteResult,
)
from anu_jobs.storage.sqlite._sql import QUERIES as Q

R = TypeVar("R")
Conn = sqlite3.Connection
_TERMINAL = _json.dumps(sorted(TERMINAL_RUN_STAGES))
_DELETE_JOB = (
    "delete_job",
    "delete_job_reminder",
    "delete_job_lease",
    "delete_job_control",
    "delete_job_runs",
)


def run(conn: Conn, write: bool, fn: Callable[[], R]) -> R:
    """Run ``fn`` in one transaction: ``BEGIN IMMEDIATE`` for writes, so the write lock
    is taken up front (no deadlock upgrading a read lock); a deferred ``BEGIN`` for
    reads, so that a read of several statements sees one snapshot."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        result = fn()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _ids(values: Sequence[Any]) -> tuple[str]:
    return (_json.dumps(list(values)),)


# -- grain state -----------------------------------------------------------------------


def insert_job(
    conn: Conn, job_id: str, job_type: str, stage: str, state: str, due_us: int | None
) -> int:
    etag = new_etag()
    try:
        conn.execute(Q["insert_job"], (job_id, job_type, stage, state, etag))
    except sqlite3.IntegrityError:
        raise DuplicateJobError(job_id) from None
    if due_us is not None:
        conn.execute(Q["set_reminder"], (job_id, due_us))
    return etag


_ROWS_PER_INSERT = 500


def insert_jobs(conn: Conn, rows: Sequence[NewJobRow]) -> None:
    # Many rows a statement: a statement is one step of SQLite, which runs without the
    # interpreter lock (executemany takes the lock back after every row). Each part is
    # bound once as it comes, for both tables. 500 rows, not as many as the bound
    # parameters allow: the connection caches its statements with their last values, and
    # 1,000,000 jobs scheduled 6,553 a statement left the process 20 MB larger, no faster.
    per = min(_ROWS_PER_INSERT, max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 5))
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        values = list(itertools.chain.from_iterable(part))
        try:
            conn.execute(_many_sql("insert_jobs", len(part)), values)
        except sqlite3.IntegrityError:
            _name_duplicate(conn, rows, start)
            raise
        conn.execute(_many_sql("insert_reminders", len(part)), values)


def _name_duplicate(conn: Conn, rows: Sequence[NewJobRow], start: int) -> None:
    """Raise DuplicateJobError for the first id that existed or comes twice; the insert
    of ``rows[start:]`` failed. The rows before ``start`` are in the store now, put there
    by this call: each id there is new and comes once, so the first duplicate is at or
    after ``start``, and an id found in the store is one that was there before only if
    it is not among them."""
    ids = [r[0] for r in rows]
    seen = set(ids[:start])
    existing = {row[0] for row in conn.execute(Q["existing_ids"], _ids(ids[start:]))}
    for job_id in ids[start:]:
        if job_id in seen or job_id in existing:
            raise DuplicateJobError(job_id) from None
        seen.add(job_id)


@functools.lru_cache(maxsize=64)
def _many_sql(name: str, count: int) -> str:
    return Q[name].replace("{rows}", ", ".join(["(?, ?, ?, ?, ?)"] * count))


def read_state(conn: Conn, job_id: str) -> StateEnvelope | None:
    row = conn.execute(Q["read_state"], (job_id,)).fetchone()
    return None if row is None else envelope_from_row(row)


def read_due_at(conn: Conn, job_ids: Sequence[str]) -> dict[str, datetime]:
    return {j: from_us(d) for j, d in conn.execute(Q["read_due_at"], _ids(job_ids))}


def _where(query: JobQuery, paged: bool) -> tuple[str, list[Any]]:
    # Built from fixed fragments only; every value is a parameter.
    clauses, params = [], []
    for clause, value in (
        ("stage = ?", query.stage),
        ("job_type = ?", query.job_type),
        ("anu_id_matches(job_id, ?)", query.text),
        ("job_id > ?", query.after if paged else None),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def list_jobs(conn: Conn, query: JobQuery) -> list[StateEnvelope]:
    if query.limit <= 0:
        return []
    where, params = _where(query, paged=True)
    sql = f"SELECT job_id, job_type, stage, state, etag FROM jobs{where} ORDER BY job_id LIMIT ?"
    return [envelope_from_row(r) for r in conn.execute(sql, (*params, query.limit))]


def count_jobs(conn: Conn, query: JobQuery) -> int:
    where, params = _where(query, paged=False)
    count: int = conn.execute(f"SELECT count(*) FROM jobs{where}", params).fetchone()[0]
    return count


def stage_counts(conn: Conn) -> dict[str, int]:
    return dict(conn.execute(Q["stage_counts"]).fetchall())


# -- leases and reminders -------------------------------------------------------------


def _mail_of(conn: Conn, job_ids: Sequence[str]) -> dict[str, list[ControlMessage]]:
    mail: dict[str, list[ControlMessage]] = {}
    if job_ids:
        for row in conn.execute(Q["control_of_jobs"], _ids(job_ids)):
            mail.setdefault(row[1], []).append(control_from_row(row))
    return mail


def claim_due(
    conn: Conn, silo_id: str, now_us: int, until_us: int, limit: int, expires_us: int,
    store_us: int,
) -> list[Claim]:  # fmt: skip
    if limit <= 0:
        return []
    rows = conn.execute(
        Q["claim_due"], {"now": store_us, "mail_at": now_us, "until": until_us, "limit": limit}
    ).fetchall()
    if not rows:
        return []
    conn.executemany(Q["take_lease"], [(r[0], silo_id, (r[6] or 0) + 1, expires_us) for r in rows])
    mail = _mail_of(conn, [r[0] for r in rows if r[7]])
    return [
        Claim(
            lease=LeaseToken(r[0], silo_id, (r[6] or 0) + 1),
            envelope=envelope_from_row(r[:5]),
            due_at=None if r[5] is None else from_us(r[5]),
            control=tuple(mail.get(r[0], ())),
        )
        for r in rows
    ]


def acquire_lease(
    conn: Conn, job_id: str, silo_id: str, now_us: int, expires_us: int
) -> tuple[LeaseToken, StateEnvelope, tuple[ControlMessage, ...]] | None:
    row = conn.execute(Q["acquire_lease"], {"job_id": job_id, "now": now_us}).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    if not row[6]:
        return None
    epoch = (row[5] or 0) + 1
    conn.execute(Q["take_lease"], (job_id, silo_id, epoch, expires_us))
    mail = _mail_of(conn, [job_id])
    return (
        LeaseToken(job_id, silo_id, epoch),
        envelope_from_row(row[:5]),
        tuple(mail.get(job_id, ())),
    )


def renew_leases(conn: Conn, tokens: Sequence[LeaseToken], expires_us: int) -> list[LeaseToken]:
    # One statement per token: its row count says whether that token still held.
    sql = Q["renew_lease"]
    return [
        t
        for t in tokens
        if conn.execute(sql, (expires_us, t.job_id, t.silo_id, t.epoch)).rowcount == 0
    ]


def release_leases(conn: Conn, tokens: Sequence[LeaseToken]) -> None:
    conn.executemany(Q["release_lease"], [(t.job_id, t.silo_id, t.epoch) for t in tokens])


def lease_holder(conn: Conn, job_id: str, now_us: int) -> LeaseToken | None:
    row = conn.execute(Q["lease_holder"], {"job_id": job_id, "now": now_us}).fetchone()
    return None if row is None else LeaseToken(job_id, row[0], row[1])


def overdue(
    conn: Conn, now_us: int, before_us: int, limit: int
) -> tuple[int, list[tuple[str, int]]]:
    args = {"now": now_us, "before": before_us, "limit": limit}
    (count,) = conn.execute(Q["overdue_count"], args).fetchone()
    return count, [(j, d) for j, d in conn.execute(Q["overdue_list"], args)]


def run_counts(conn: Conn, since_us: int, bucket_us: int) -> list[tuple[int, str, int]]:
    args = {"since": since_us, "bucket": bucket_us}
    return [(b, s, n) for b, s, n in conn.execute(Q["run_counts"], args)]


def next_due(conn: Conn, now_us: int, store_us: int) -> int | None:
    row = conn.execute(Q["next_due_reminder"], {"now": store_us}).fetchone()
    best: int | None = None if row is None else row[0]
    if conn.execute(Q["next_due_mail"], {"now": store_us}).fetchone() is not None:
        best = now_us if best is None else min(best, now_us)
    return best


# -- the write path -----------------------------------------------------------------


def _prepare(w: GrainWrite) -> tuple[GrainWrite, str | None, list[RunRow], int | None]:
    """A write's state text, run rows and reminder; what cannot be encoded raises in
    that order (state, reminder, runs)."""
    if w.state is None:
        due_us = None if w.due_at is None else to_us(w.due_at)
        return w, None, [run_to_row(r) for r in w.runs], due_us
    try:
        due_us = None if w.due_at is None else to_us(w.due_at)
    except Exception:
        _json.dumps(w.state)  # a state that cannot be encoded is named first
        raise
    text, rows = encode_write(w.state, w.runs)
    return w, text, rows, due_us


def commit(conn: Conn, writes: Sequence[GrainWrite]) -> list[WriteResult]:
    """Check every write against one read of the batch's etags and leases, decide in
    Python (in order, so two writes to one job see each other), then apply what passed
    with one ``executemany`` per statement."""
    prepared = [_prepare(w) for w in writes]
    # job_id -> [etag, lease holder, lease epoch, reminder]; a job missing here is gone
    current: dict[str, list[Any]] = {
        r[0]: [r[1], r[2], r[3], r[4]]
        for r in conn.execute(Q["commit_check"], _ids(list({w.lease.job_id for w in writes})))
    }
    updates: dict[str, tuple[str, str, str, int, str]] = {}
    reminders: dict[str, int | None] = {}
    runs: dict[str, RunRow] = {}
    acks: list[tuple[int, str]] = []
    releases: list[tuple[str]] = []
    deletes: list[tuple[str]] = []
    results = []
    for w, text, run_rows, due_us in prepared:
        job_id, token = w.lease.job_id, w.lease
        cur = current.get(job_id)
        error: EtagConflictError | LeaseLostError
        if cur is None:
            error = EtagConflictError(job_id, w.expected_etag, None)
        elif cur[1] != token.silo_id or cur[2] != token.epoch:
            error = LeaseLostError(job_id, token.silo_id, token.epoch)
        elif cur[0] != w.expected_etag:
            error = EtagConflictError(job_id, w.expected_etag, cur[0])
        elif text is None:
            del current[job_id]
            deletes.append((job_id,))
            results.append(WriteResult(job_id, None))
            continue
        else:
            cur[0] = etag = new_etag(cur[0])
            updates[job_id] = (w.job_type, w.stage, text, etag, job_id)
            if due_us != cur[3]:  # a reminder that stays as it is costs no statement
                cur[3] = reminders[job_id] = due_us
            runs.update((r[0], r) for r in run_rows)
            acks.extend((m, job_id) for m in w.ack_control)
            if w.release:
                cur[1] = None
                releases.append((job_id,))
            results.append(WriteResult(job_id, etag))
            continue
        results.append(WriteResult(job_id, None, error))
    conn.executemany(Q["update_job"], updates.values())
    conn.executemany(Q["set_reminder"], [(j, d) for j, d in reminders.items() if d is not None])
    conn.executemany(Q["delete_reminder"], [(j,) for j, d in reminders.items() if d is None])
    conn.executemany(Q["upsert_run"], runs.values())
    conn.executemany(Q["ack_control"], acks)
    conn.executemany(Q["release_job_lease"], releases)
    if deletes:  # last, so that nothing written earlier in the batch outlives its job
        for name in _DELETE_JOB:
            conn.executemany(Q[name], deletes)
    return results


# -- control inbox ----------------------------------------------------------------


def post_control(conn: Conn, job_id: str, body: str, now_us: int) -> int:
    if conn.execute(Q["job_exists"], (job_id,)).fetchone() is None:
        raise JobNotFoundError(job_id)
    msg_id = conn.execute(Q["post_control"], (job_id, body, now_us)).lastrowid
    assert msg_id is not None
    return msg_id


def pending_control(conn: Conn, silo_id: str) -> list[ControlMessage]:
    return [control_from_row(r) for r in conn.execute(Q["pending_control"], (silo_id,))]


def control_pending(conn: Conn, msg_ids: Sequence[int]) -> set[int]:
    return {r[0] for r in conn.execute(Q["control_pending"], _ids(msg_ids))}


# -- run history ----------------------------------------------------------------------


def read_runs(conn: Conn, job_id: str, limit: int, before_us: int) -> list[RunRecord]:
    if limit <= 0:
        return []
    return [run_from_row(r) for r in conn.execute(Q["read_runs"], (job_id, before_us, limit))]


def read_run(conn: Conn, run_id: str) -> RunRecord | None:
    row = conn.execute(Q["read_run"], (run_id,)).fetchone()
    return None if row is None else run_from_row(row)


def prune_runs(conn: Conn, keep: int) -> int:
    cursor = conn.execute(Q["prune_runs"], {"keep": max(keep, 0), "terminal": _TERMINAL})
    return cursor.rowcount


# -- membership -------------------------------------------------------------------


def register_silo(conn: Conn, row: SiloRow) -> None:
    try:
        conn.execute(Q["register_silo"], row)
    except sqlite3.IntegrityError:
        raise StorageError(f"silo {row[0]!r} is registered already; use a new id") from None


def heartbeat(conn: Conn, silo_id: str, now_us: int) -> bool:
    return conn.execute(Q["heartbeat"], (now_us, silo_id)).rowcount == 1


def set_silo_status(conn: Conn, silo_id: str, status: str, frees: bool) -> None:
    if conn.execute(Q["set_silo_status"], (status, silo_id)).rowcount and frees:
        conn.execute(Q["free_silo_leases"], (silo_id,))


def declare_dead(conn: Conn, missed_us: int, by: str | None) -> list[str]:
    dead = [r[0] for r in conn.execute(Q["missing_silos"], (missed_us,)) if r[0] != by]
    conn.executemany(Q["set_silo_status"], [("dead", s) for s in dead])
    conn.executemany(Q["free_silo_leases"], [(s,) for s in dead])
    return dead


def list_silos(conn: Conn) -> list[SiloInfo]:
    return [silo_from_row(r) for r in conn.execute(Q["list_silos"])]


# -- store metadata -------------------------------------------------------------------


def schema_versions(conn: Conn) -> list[tuple[int, int]]:
    return [(int(v), int(at)) for v, at in conn.execute(Q["schema_versions"])]


def read_meta(conn: Conn, key: str) -> dict[str, Any] | None:
    row = conn.execute(Q["read_meta"], (key,)).fetchone()
    return None if row is None else cast(dict[str, Any], _json.loads(row[0]))


def write_meta(conn: Conn, key: str, value: str) -> None:
    conn.execute(Q["write_meta"], (key, value))
