"""The PostgreSQL provider's statements, one function per contract method.

Each takes a pooled connection in autocommit mode and runs one statement (one round trip,
one implicit transaction) unless it says otherwise. Array parameters (``%(name)b`` in
``queries.sql``) and results travel in binary, which saves quoting and parsing every
element of a batch in Python. Rows become objects through
``anu_jobs.storage._common``, exactly as in the other providers. The write path
(:func:`commit`) lives in ``_commit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg import sql

from anu_jobs import _json
from anu_jobs.errors import DuplicateJobError, JobNotFoundError, StorageError
from anu_jobs.storage._common import (
    TERMINAL_RUN_STAGES,
    SiloRow,
    control_from_row,
    envelope_from_row,
    from_us,
    new_etag,
    run_from_row,
    silo_from_row,
)
from anu_jobs.storage.base import (
    Claim,
    ControlMessage,
    JobQuery,
    LeaseToken,
    NewJobRow,
    RunRecord,
    SiloInfo,
    StateEnvelope,
)
from anu_jobs.storage.postgres._sql import QUERIES as Q

Conn = psycopg.AsyncConnection[Any]
Row = tuple[Any, ...]
_TERMINAL = sorted(TERMINAL_RUN_STAGES)


async def fetch(conn: Conn, query: str | sql.Composed, **params: Any) -> list[Row]:
    """The rows of a statement: a named block of ``queries.sql``, or composed SQL."""
    cur = await conn.execute(Q[query] if isinstance(query, str) else query, params, binary=True)
    return await cur.fetchall()


async def run(conn: Conn, name: str, **params: Any) -> int:
    """Run a statement that returns no rows; its row count."""
    cur = await conn.execute(Q[name], params, binary=True)
    return cur.rowcount


# -- grain state -----------------------------------------------------------------------


async def insert_job(
    conn: Conn, job_id: str, job_type: str, stage: str, state: str, due_us: int | None
) -> int:
    etag = new_etag()
    [(count,)] = await fetch(
        conn, "insert_job", job_id=job_id, folded=job_id.lower(), job_type=job_type,
        stage=stage, state=state, etag=etag, due=due_us,
    )  # fmt: skip
    if not count:
        raise DuplicateJobError(job_id)
    return etag


async def insert_jobs(conn: Conn, rows: Sequence[NewJobRow]) -> None:
    # COPY, in binary, into both tables in one transaction: the fastest way in, and all or
    # nothing (a duplicate id fails the copy, and so the transaction).
    try:
        async with conn.transaction():
            cur = conn.cursor()
            async with cur.copy(Q["copy_jobs"]) as copy:
                copy.set_types(_JOB_TYPES)
                for job_id, job_type, stage, state, _ in rows:
                    await copy.write_row(
                        (job_id, job_id.lower(), job_type, stage, state, new_etag())
                    )
            async with cur.copy(Q["copy_reminders"]) as copy:
                copy.set_types(_REMINDER_TYPES)
                for row in rows:
                    if row[4] is not None:
                        await copy.write_row((row[0], row[4]))
        return
    except psycopg.errors.UniqueViolation:
        pass  # nothing was inserted; find which id to name
    ids = [r[0] for r in rows]
    existing = {r[0] for r in await fetch(conn, "existing_ids", job_ids=ids)}
    seen: set[str] = set()
    for job_id in ids:
        if job_id in existing or job_id in seen:
            raise DuplicateJobError(job_id)
        seen.add(job_id)
    # The id that collided is gone again (deleted meanwhile): the caller may retry.
    raise StorageError("inserting jobs collided with a concurrent change; try again")


_JOB_TYPES = ["text", "text", "text", "text", "text", "int8"]
_REMINDER_TYPES = ["text", "int8"]


async def read_state(conn: Conn, job_id: str) -> StateEnvelope | None:
    rows = await fetch(conn, "read_state", job_id=job_id)
    return envelope_from_row(rows[0]) if rows else None


async def read_due_at(conn: Conn, job_ids: Sequence[str]) -> dict[str, datetime]:
    rows = await fetch(conn, "read_due_at", job_ids=list(job_ids))
    return {j: from_us(d) for j, d in rows}


def _where(query: JobQuery, paged: bool) -> tuple[sql.Composed, dict[str, Any]]:
    # Built from fixed fragments only; every value is a parameter.
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for clause, key, value in (
        ("stage = %(stage)s", "stage", query.stage),
        ("job_type = %(job_type)s", "job_type", query.job_type),
        ("strpos(job_id_folded, %(text)s) > 0", "text", query.text),
        ("job_id > %(after)s", "after", query.after if paged else None),
    ):
        if value is not None:
            clauses.append(sql.SQL(clause))
            params[key] = value.lower() if key == "text" else value
    if not clauses:
        return sql.Composed([]), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params


async def list_jobs(conn: Conn, query: JobQuery) -> list[StateEnvelope]:
    if query.limit <= 0:
        return []
    where, params = _where(query, paged=True)
    statement = sql.SQL(
        "SELECT job_id, job_type, stage, state, etag FROM jobs{} ORDER BY job_id LIMIT %(limit)s"
    ).format(where)
    return [envelope_from_row(r) for r in await fetch(conn, statement, **params, limit=query.limit)]


async def count_jobs(conn: Conn, query: JobQuery) -> int:
    where, params = _where(query, paged=False)
    [(count,)] = await fetch(conn, sql.SQL("SELECT count(*) FROM jobs{}").format(where), **params)
    return int(count)


async def stage_counts(conn: Conn) -> dict[str, int]:
    return {stage: int(n) for stage, n in await fetch(conn, "stage_counts")}


async def overdue(
    conn: Conn, pinned: int | None, before_us: int, limit: int
) -> tuple[int, list[tuple[str, datetime]]]:
    [(count, ids, due)] = await fetch(
        conn, "overdue", pinned=pinned, before=before_us, limit=max(limit, 0)
    )
    return int(count), [(j, from_us(d)) for j, d in zip(ids, due, strict=True)]


async def run_counts(conn: Conn, since_us: int, bucket_us: int) -> list[tuple[datetime, str, int]]:
    rows = await fetch(conn, "run_counts", since=since_us, bucket=bucket_us)
    return [(from_us(b), stage, int(n)) for b, stage, n in rows]


# -- leases and reminders -------------------------------------------------------------


def _mail(job_id: str, ids: list[int] | None, bodies: list[str], posted: list[int]) -> Any:
    if not ids:
        return ()
    return tuple(
        control_from_row(m) for m in zip(ids, [job_id] * len(ids), bodies, posted, strict=True)
    )


async def claim_due(
    conn: Conn, silo_id: str, now_us: int, until_us: int, limit: int, lease_us: int,
    pinned: int | None,
) -> list[Claim]:  # fmt: skip
    if limit <= 0:
        return []
    rows = await fetch(
        conn, "claim_due", silo_id=silo_id, now=now_us, until=until_us, limit=limit,
        lease_us=lease_us, pinned=pinned,
    )  # fmt: skip
    return [
        Claim(
            lease=LeaseToken(r[0], silo_id, r[6]),
            envelope=envelope_from_row(r[:5]),
            due_at=None if r[5] is None else from_us(r[5]),
            control=_mail(r[0], r[7], r[8], r[9]),
        )
        for r in rows
    ]


async def acquire_lease(
    conn: Conn, job_id: str, silo_id: str, lease_us: int, pinned: int | None
) -> tuple[LeaseToken, StateEnvelope, tuple[ControlMessage, ...]] | None:
    rows = await fetch(
        conn, "acquire_lease", job_id=job_id, silo_id=silo_id, lease_us=lease_us, pinned=pinned
    )
    if not rows:
        raise JobNotFoundError(job_id)
    r = rows[0]
    if r[5] is None:  # a live holder has it
        return None
    return LeaseToken(job_id, silo_id, r[5]), envelope_from_row(r[:5]), _mail(job_id, *r[6:9])


def _token_arrays(tokens: Sequence[LeaseToken]) -> dict[str, list[Any]]:
    return {
        "job_ids": [t.job_id for t in tokens],
        "silo_ids": [t.silo_id for t in tokens],
        "epochs": [t.epoch for t in tokens],
    }


async def renew_leases(
    conn: Conn, tokens: Sequence[LeaseToken], lease_us: int, pinned: int | None
) -> list[LeaseToken]:
    if not tokens:
        return []
    rows = await fetch(
        conn, "renew_leases", **_token_arrays(tokens), lease_us=lease_us, pinned=pinned
    )
    held = {LeaseToken(*r) for r in rows}
    return [t for t in tokens if t not in held]


async def release_leases(conn: Conn, tokens: Sequence[LeaseToken]) -> None:
    if tokens:
        await run(conn, "release_leases", **_token_arrays(tokens))


async def lease_holder(conn: Conn, job_id: str, pinned: int | None) -> LeaseToken | None:
    rows = await fetch(conn, "lease_holder", job_id=job_id, pinned=pinned)
    return LeaseToken(job_id, rows[0][0], rows[0][1]) if rows else None


async def next_due(conn: Conn, now_us: int, pinned: int | None) -> int | None:
    [(due,)] = await fetch(conn, "next_due", now=now_us, pinned=pinned)
    return cast(int | None, due)


# -- control inbox ----------------------------------------------------------------


async def post_control(conn: Conn, job_id: str, body: str, now_us: int) -> int:
    rows = await fetch(conn, "post_control", job_id=job_id, body=body, posted=now_us)
    if not rows:
        raise JobNotFoundError(job_id)
    return int(rows[0][0])


async def pending_control(conn: Conn, silo_id: str) -> list[ControlMessage]:
    return [control_from_row(r) for r in await fetch(conn, "pending_control", silo_id=silo_id)]


async def control_pending(conn: Conn, msg_ids: Sequence[int]) -> set[int]:
    if not msg_ids:
        return set()
    return {r[0] for r in await fetch(conn, "control_pending", msg_ids=list(msg_ids))}


# -- run history ----------------------------------------------------------------------


async def read_runs(conn: Conn, job_id: str, limit: int, before_us: int) -> list[RunRecord]:
    if limit <= 0:
        return []
    rows = await fetch(conn, "read_runs", job_id=job_id, before=before_us, limit=limit)
    return [run_from_row(r) for r in rows]


async def read_run(conn: Conn, run_id: str) -> RunRecord | None:
    rows = await fetch(conn, "read_run", run_id=run_id)
    return run_from_row(rows[0]) if rows else None


async def prune_runs(conn: Conn, keep: int) -> int:
    return await run(conn, "prune_runs", keep=max(keep, 0), terminal=_TERMINAL)


# -- membership -------------------------------------------------------------------


async def register_silo(conn: Conn, row: SiloRow, pinned: int | None) -> None:
    keys = ("silo_id", "host", "pid", "started", "heartbeat", "status", "generation")
    params = dict(zip(keys, row, strict=True))
    del params["heartbeat"]  # the store's time, not the silo's
    if not await fetch(conn, "register_silo", **params, pinned=pinned):
        raise StorageError(f"silo {row[0]!r} is registered already; use a new id")


async def heartbeat(conn: Conn, silo_id: str, pinned: int | None) -> bool:
    return bool(await fetch(conn, "heartbeat", silo_id=silo_id, pinned=pinned))


async def set_silo_status(conn: Conn, silo_id: str, status: str, frees: bool) -> None:
    await run(conn, "set_silo_status", silo_id=silo_id, status=status, frees=frees)


async def declare_dead(
    conn: Conn, dead_after_us: int, by: str | None, pinned: int | None
) -> list[str]:
    rows = await fetch(conn, "declare_dead", dead_after_us=dead_after_us, by=by, pinned=pinned)
    return [r[0] for r in rows]


async def list_silos(conn: Conn) -> list[SiloInfo]:
    return [silo_from_row(r) for r in await fetch(conn, "list_silos")]


async def store_now(conn: Conn, pinned: int | None) -> int:
    [(now_us,)] = await fetch(conn, "store_now", pinned=pinned)
    return int(now_us)


# -- store metadata and notices ----------------------------------------------------------


async def schema_versions(conn: Conn) -> list[tuple[int, int]]:
    return [(int(v), int(at)) for v, at in await fetch(conn, "schema_versions")]


async def read_meta(conn: Conn, key: str) -> dict[str, Any] | None:
    rows = await fetch(conn, "read_meta", key=key)
    return cast(dict[str, Any], _json.loads(rows[0][0])) if rows else None


async def write_meta(conn: Conn, key: str, value: str) -> None:
    await run(conn, "write_meta", key=key, value=value)


async def notify(conn: Conn, channel: str, payloads: list[str]) -> None:
    await fetch(conn, "notify", channel=channel, payloads=payloads)
