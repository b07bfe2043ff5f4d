"""The machine's ceiling: a plain SQL claim-and-acknowledge loop, no scheduler around it.

    python benchmarks/ceiling.py [--store sqlite|postgres] [--jobs 20000] [--batch 100]
                                 [--work ack|record|schedule] [--url postgresql://…]

What the hardware allows for the work every durable scheduler must do per job: mark it
taken in one transaction, mark it done in another, batch by batch, with the same
durability as anu-jobs' defaults (SQLite in WAL mode with ``synchronous=FULL``;
PostgreSQL with ``synchronous_commit=on``). It prints one JSON line:
``{"store", "jobs", "batch", "seconds", "per_s"}``. ``core.py`` and ``cluster.py`` divide
their throughput by this to report the share of the ceiling reached, and the CI smoke
test compares that share, not a time, against ``baseline.json``.

``--work record`` measures the same loop for a scheduler that keeps a history, as
anu-jobs does: the acknowledgement also rewrites the job's state document (900 bytes, the
size of a finished one-time job's) and inserts its run record (500 bytes of JSON, indexed
by job and by finish time), the tables indexed as anu-jobs' are. The texts are constants
bound as parameters: no Python work per job beyond binding, so this is the floor of the
store's own work per recorded run on the machine.

``--work schedule`` measures the store's side of scheduling: new jobs (a 350-byte state
each) and their due times inserted into tables laid out and indexed as anu-jobs' are
(SQLite: multi-row inserts of 500 rows, 10,000 jobs a transaction; PostgreSQL: binary
``COPY`` into both tables, 10,000 a transaction).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

# What ``--work record`` writes per job: a state document and a run record of the sizes a
# finished one-time job's have in anu-jobs.
STATE_TEXT = '{"v":1,"pad":"' + "s" * 880 + '"}'
RUN_TEXT = '{"run":1,"pad":"' + "r" * 480 + '"}'

NEW_STATE_TEXT = '{"v":1,"pad":"' + "n" * 330 + '"}'
SCHEDULE_CHUNK = 10_000

_SCHEDULE_SCHEMA = (
    "CREATE TABLE {p}jobs (job_id TEXT PRIMARY KEY, job_type TEXT NOT NULL, stage TEXT NOT NULL,"
    " state TEXT NOT NULL, etag BIGINT NOT NULL)",
    "CREATE INDEX {p}jobs_stage ON {p}jobs (stage, job_id)",
    "CREATE INDEX {p}jobs_job_type ON {p}jobs (job_type, job_id)",
    "CREATE TABLE {p}reminders (job_id TEXT PRIMARY KEY, due_us BIGINT NOT NULL){rowid}",
    "CREATE INDEX {p}reminders_due ON {p}reminders (due_us, job_id)",
)

# A job the record loops may claim: not taken, and due.
_FREE_JOB = "taken IS NULL AND due IS NOT NULL"

_SQLITE_RECORD_SCHEMA = (
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, stage TEXT, state TEXT, due INTEGER,"
    " taken INTEGER)",
    "CREATE INDEX jobs_due ON jobs (due) WHERE taken IS NULL AND due IS NOT NULL",
    "CREATE INDEX jobs_stage ON jobs (stage, id)",
    "CREATE TABLE runs (run_id TEXT PRIMARY KEY, job_id INTEGER, stage TEXT,"
    " scheduled INTEGER, finished INTEGER, data TEXT)",
    "CREATE INDEX runs_job ON runs (job_id, scheduled, run_id)",
    "CREATE INDEX runs_finished ON runs (finished, stage)",
)


@contextmanager
def _sqlite_file() -> Iterator[sqlite3.Connection]:
    """A connection to a fresh SQLite file with anu-jobs' durability (WAL, full sync)."""
    with tempfile.TemporaryDirectory(prefix="anu-ceiling-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "ceiling.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()


def _sqlite_claim(conn: sqlite3.Connection, table: str, free: str, batch: int) -> list[int]:
    """Mark the next ``batch`` free rows of ``table`` taken, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    ids = [
        r[0]
        for r in conn.execute(f"SELECT id FROM {table} WHERE {free} ORDER BY due LIMIT ?", (batch,))
    ]
    conn.executemany(f"UPDATE {table} SET taken = 1 WHERE id = ?", ((i,) for i in ids))
    conn.execute("COMMIT")
    return ids


def sqlite_ceiling(jobs: int, batch: int) -> float:
    """Jobs per second through claim + ack transactions on a fresh SQLite file."""
    with _sqlite_file() as conn:
        conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, due INTEGER, taken INTEGER)")
        conn.execute("CREATE INDEX q_due ON q (due) WHERE taken IS NULL")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO q (id, due) VALUES (?, ?)", ((i, i) for i in range(jobs)))
        conn.execute("COMMIT")
        t0 = time.perf_counter()
        done = 0
        while done < jobs:
            ids = _sqlite_claim(conn, "q", "taken IS NULL", batch)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM q WHERE id = ?", ((i,) for i in ids))
            conn.execute("COMMIT")
            done += len(ids)
        seconds = time.perf_counter() - t0
        _check_counts(jobs - _count(conn, "SELECT count(*) FROM q"), done, jobs)
    return jobs / seconds


def sqlite_record_ceiling(jobs: int, batch: int) -> float:
    """Jobs per second through claim + record transactions on a fresh SQLite file: the
    claim marks the batch taken; the record rewrites each job's state, clears its due
    time and inserts its run."""
    with _sqlite_file() as conn:
        for statement in _SQLITE_RECORD_SCHEMA:
            conn.execute(statement)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO jobs (id, stage, state, due) VALUES (?, 'active', ?, ?)",
            ((i, STATE_TEXT, i) for i in range(jobs)),
        )
        conn.execute("COMMIT")
        t0 = time.perf_counter()
        done = 0
        while done < jobs:
            ids = _sqlite_claim(conn, "jobs", _FREE_JOB, batch)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "UPDATE jobs SET stage = 'finished', state = ?, due = NULL, taken = NULL"
                " WHERE id = ?",
                ((STATE_TEXT, i) for i in ids),
            )
            conn.executemany(
                "INSERT INTO runs VALUES (?, ?, 'completed', ?, ?, ?)",
                ((f"{i}@run", i, i, i, RUN_TEXT) for i in ids),
            )
            conn.execute("COMMIT")
            done += len(ids)
        seconds = time.perf_counter() - t0
        _check_counts(
            _count(conn, "SELECT count(*) FROM runs"),
            _count(conn, "SELECT count(*) FROM jobs WHERE stage = 'finished'"),
            jobs,
        )
    return jobs / seconds


def _count(conn: Any, query: str) -> int:
    """The one number a ``count(*)`` query gives, on either store's connection."""
    return int(conn.execute(query).fetchone()[0])


def _check_counts(first: int, second: int, jobs: int) -> None:
    """A ceiling counts its work for real: the rows it wrote, not the loop's turns."""
    if first != jobs or second != jobs:
        raise RuntimeError(f"the loop wrote {first} and {second} rows for {jobs} jobs")


def sqlite_schedule_ceiling(jobs: int) -> float:
    """Jobs per second inserted with their due times on a fresh SQLite file."""
    per = 500
    with _sqlite_file() as conn:
        for statement in _SCHEDULE_SCHEMA:
            conn.execute(statement.format(p="", rowid=" WITHOUT ROWID"))
        values = "(?, ?, ?, ?, ?)"
        t0 = time.perf_counter()
        for start in range(0, jobs, SCHEDULE_CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            for first in range(start, min(jobs, start + SCHEDULE_CHUNK), per):
                part = range(first, min(jobs, start + SCHEDULE_CHUNK, first + per))
                rows = [(f"s-{i}", "Job", "active", NEW_STATE_TEXT, i) for i in part]
                params = [v for row in rows for v in row]
                many = ", ".join([values] * len(rows))
                conn.execute(
                    "INSERT INTO jobs (job_id, job_type, stage, state, etag) SELECT column1,"
                    f" column2, column3, column4, random() FROM (VALUES {many})",
                    params,
                )
                conn.execute(
                    "INSERT INTO reminders (job_id, due_us) SELECT column1, column5"
                    f" FROM (VALUES {many})",
                    params,
                )
            conn.execute("COMMIT")
        seconds = time.perf_counter() - t0
        _check_counts(
            _count(conn, "SELECT count(*) FROM jobs"),
            _count(conn, "SELECT count(*) FROM reminders"),
            jobs,
        )
    return jobs / seconds


def postgres_schedule_ceiling(url: str, jobs: int) -> float:
    """Jobs per second copied in with their due times on PostgreSQL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("DROP TABLE IF EXISTS anu_ceiling_jobs, anu_ceiling_reminders")
        for statement in _SCHEDULE_SCHEMA:
            conn.execute(statement.format(p="anu_ceiling_", rowid=""))
        t0 = time.perf_counter()
        try:
            for start in range(0, jobs, SCHEDULE_CHUNK):
                ids = range(start, min(jobs, start + SCHEDULE_CHUNK))
                with conn.transaction(), conn.cursor() as cur:
                    with cur.copy(
                        "COPY anu_ceiling_jobs (job_id, job_type, stage, state, etag)"
                        " FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(["text", "text", "text", "text", "int8"])
                        for i in ids:
                            copy.write_row((f"s-{i}", "Job", "active", NEW_STATE_TEXT, i))
                    with cur.copy(
                        "COPY anu_ceiling_reminders (job_id, due_us) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(["text", "int8"])
                        for i in ids:
                            copy.write_row((f"s-{i}", i))
            seconds = time.perf_counter() - t0
            _check_counts(
                _count(conn, "SELECT count(*) FROM anu_ceiling_jobs"),
                _count(conn, "SELECT count(*) FROM anu_ceiling_reminders"),
                jobs,
            )
        finally:
            conn.execute("DROP TABLE IF EXISTS anu_ceiling_jobs, anu_ceiling_reminders")
    return jobs / seconds


def postgres_ceiling(url: str, jobs: int, batch: int) -> float:
    """Jobs per second through claim + ack statements on PostgreSQL (autocommit)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("DROP TABLE IF EXISTS anu_ceiling")
        conn.execute("CREATE TABLE anu_ceiling (id bigint PRIMARY KEY, due bigint, taken int)")
        conn.execute("CREATE INDEX ON anu_ceiling (due) WHERE taken IS NULL")
        conn.execute(
            "INSERT INTO anu_ceiling (id, due) SELECT i, i FROM generate_series(0, %s - 1) i",
            (jobs,),
        )
        conn.execute("VACUUM ANALYZE anu_ceiling")
        t0 = time.perf_counter()
        done = 0
        try:
            while done < jobs:
                ids = _pg_claim(conn, "anu_ceiling", "taken IS NULL", batch)
                conn.execute("DELETE FROM anu_ceiling WHERE id = ANY(%s)", (ids,))
                done += len(ids)
            seconds = time.perf_counter() - t0
            _check_counts(jobs - _count(conn, "SELECT count(*) FROM anu_ceiling"), done, jobs)
        finally:
            conn.execute("DROP TABLE IF EXISTS anu_ceiling")
    return jobs / seconds


def postgres_record_ceiling(url: str, jobs: int, batch: int) -> float:
    """Jobs per second through claim + record statements on PostgreSQL: the claim marks
    the batch taken; the record rewrites each job's state, clears its due time and
    inserts its run, in one transaction."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("DROP TABLE IF EXISTS anu_ceiling_runs, anu_ceiling_jobs")
        conn.execute(
            "CREATE TABLE anu_ceiling_jobs (id bigint PRIMARY KEY, stage text, state text,"
            " due bigint, taken int)"
        )
        conn.execute(
            "CREATE INDEX ON anu_ceiling_jobs (due) WHERE taken IS NULL AND due IS NOT NULL"
        )
        conn.execute("CREATE INDEX ON anu_ceiling_jobs (stage, id)")
        conn.execute(
            "CREATE TABLE anu_ceiling_runs (run_id text PRIMARY KEY, job_id bigint, stage text,"
            " scheduled bigint, finished bigint, data text)"
        )
        conn.execute("CREATE INDEX ON anu_ceiling_runs (job_id, scheduled, run_id)")
        conn.execute("CREATE INDEX ON anu_ceiling_runs (finished, stage)")
        conn.execute(
            "INSERT INTO anu_ceiling_jobs (id, stage, state, due)"
            " SELECT i, 'active', %s, i FROM generate_series(0, %s - 1) i",
            (STATE_TEXT, jobs),
        )
        conn.execute("VACUUM ANALYZE anu_ceiling_jobs")
        t0 = time.perf_counter()
        done = 0
        try:
            while done < jobs:
                ids = _pg_claim(conn, "anu_ceiling_jobs", _FREE_JOB, batch)
                with conn.transaction():
                    conn.execute(
                        "UPDATE anu_ceiling_jobs SET stage = 'finished', state = %s,"
                        " due = NULL, taken = NULL WHERE id = ANY(%s)",
                        (STATE_TEXT, ids),
                    )
                    conn.execute(
                        "INSERT INTO anu_ceiling_runs SELECT i::text || '@run', i,"
                        " 'completed', i, i, %s FROM unnest(%s::bigint[]) i",
                        (RUN_TEXT, ids),
                    )
                done += len(ids)
            seconds = time.perf_counter() - t0
            _check_counts(
                _count(conn, "SELECT count(*) FROM anu_ceiling_runs"),
                _count(conn, "SELECT count(*) FROM anu_ceiling_jobs WHERE stage = 'finished'"),
                jobs,
            )
        finally:
            conn.execute("DROP TABLE IF EXISTS anu_ceiling_runs, anu_ceiling_jobs")
    return jobs / seconds


def _pg_claim(conn: Any, table: str, free: str, batch: int) -> list[int]:
    """Mark the next ``batch`` free rows of ``table`` taken, in one statement."""
    return [
        r[0]
        for r in conn.execute(
            f"UPDATE {table} SET taken = 1 WHERE id IN (SELECT id FROM {table} WHERE {free}"
            " ORDER BY due LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
            (batch,),
        )
    ]


def measure(
    store: str, jobs: int, batch: int, url: str = DEFAULT_PG, work: str = "ack"
) -> dict[str, Any]:
    t0 = time.perf_counter()
    if work == "schedule":
        rate = (
            sqlite_schedule_ceiling(jobs)
            if store == "sqlite"
            else postgres_schedule_ceiling(url, jobs)
        )
    elif work == "record":
        rate = (
            sqlite_record_ceiling(jobs, batch)
            if store == "sqlite"
            else postgres_record_ceiling(url, jobs, batch)
        )
    else:
        rate = (
            sqlite_ceiling(jobs, batch) if store == "sqlite" else postgres_ceiling(url, jobs, batch)
        )
    return {
        "store": store,
        "work": work,
        "jobs": jobs,
        "batch": SCHEDULE_CHUNK if work == "schedule" else batch,
        "seconds": time.perf_counter() - t0,
        "per_s": rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--work", choices=["ack", "record", "schedule"], default="ack")
    p.add_argument("--url", default=DEFAULT_PG, help="PostgreSQL server for --store postgres")
    args = p.parse_args()
    result = measure(args.store, args.jobs, args.batch, args.url, args.work)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
