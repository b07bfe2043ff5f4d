"""The machine's ceiling: a plain SQL claim-and-acknowledge loop, no scheduler around it.

    python benchmarks/ceiling.py [--store sqlite|postgres] [--jobs 20000] [--batch 100]
                                 [--url postgresql://…]

What the hardware allows for the work every durable scheduler must do per job: mark it
taken in one transaction, mark it done in another, batch by batch, with the same
durability as anu-jobs' defaults (SQLite in WAL mode with ``synchronous=FULL``;
PostgreSQL with ``synchronous_commit=on``). It prints one JSON line:
``{"store", "jobs", "batch", "seconds", "per_s"}``. ``core.py`` and ``cluster.py`` divide
their throughput by this to report the share of the ceiling reached, and the CI smoke
test compares that share, not a time, against ``baseline.json``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def sqlite_ceiling(jobs: int, batch: int) -> float:
    """Jobs per second through claim + ack transactions on a fresh SQLite file."""
    with tempfile.TemporaryDirectory(prefix="anu-ceiling-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "ceiling.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, due INTEGER, taken INTEGER)")
        conn.execute("CREATE INDEX q_due ON q (due) WHERE taken IS NULL")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO q (id, due) VALUES (?, ?)", ((i, i) for i in range(jobs)))
        conn.execute("COMMIT")
        t0 = time.perf_counter()
        done = 0
        while done < jobs:
            conn.execute("BEGIN IMMEDIATE")
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM q WHERE taken IS NULL ORDER BY due LIMIT ?", (batch,)
                )
            ]
            conn.executemany("UPDATE q SET taken = 1 WHERE id = ?", ((i,) for i in ids))
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM q WHERE id = ?", ((i,) for i in ids))
            conn.execute("COMMIT")
            done += len(ids)
        seconds = time.perf_counter() - t0
        conn.close()
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
                ids = [
                    r[0]
                    for r in conn.execute(
                        "UPDATE anu_ceiling SET taken = 1 WHERE id IN (SELECT id FROM anu_ceiling"
                        " WHERE taken IS NULL ORDER BY due LIMIT %s FOR UPDATE SKIP LOCKED)"
                        " RETURNING id",
                        (batch,),
                    )
                ]
                conn.execute("DELETE FROM anu_ceiling WHERE id = ANY(%s)", (ids,))
                done += len(ids)
            seconds = time.perf_counter() - t0
        finally:
            conn.execute("DROP TABLE IF EXISTS anu_ceiling")
    return jobs / seconds


def measure(store: str, jobs: int, batch: int, url: str = DEFAULT_PG) -> dict[str, Any]:
    t0 = time.perf_counter()
    rate = sqlite_ceiling(jobs, batch) if store == "sqlite" else postgres_ceiling(url, jobs, batch)
    return {
        "store": store,
        "jobs": jobs,
        "batch": batch,
        "seconds": time.perf_counter() - t0,
        "per_s": rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--url", default=DEFAULT_PG, help="PostgreSQL server for --store postgres")
    args = p.parse_args()
    print(json.dumps(measure(args.store, args.jobs, args.batch, args.url)), flush=True)


if __name__ == "__main__":
    main()
