"""Bring a SQLite database's schema up to date at open()."""

from __future__ import annotations

import sqlite3

from anu_jobs.errors import StorageError
from anu_jobs.storage.sqlite._sql import migrations, split_statements

__all__ = ["SchemaTooNewError", "migrate"]

_NOW_US = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"


class SchemaTooNewError(StorageError):
    """The database was migrated by a newer anu-jobs than this one."""


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply the migrations this database lacks, in order, in one write transaction;
    record each in ``schema_migrations``; return the versions applied.

    ``BEGIN IMMEDIATE`` makes processes that open a new file at once take turns: the
    second one finds the work done.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        applied: set[int] = set()
        if exists:
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        known = migrations()
        newest = known[-1][0] if known else 0
        if applied and max(applied) > newest:
            raise SchemaTooNewError(
                f"its schema is at version {max(applied)} but this anu-jobs knows only "
                f"up to {newest}; upgrade anu-jobs"
            )
        done = []
        for version, script in known:
            if version in applied:
                continue
            for statement in split_statements(script):
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO schema_migrations (version, applied_us) VALUES (?, {_NOW_US})",
                (version,),
            )
            done.append(version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done
