"""Bring a store's PostgreSQL schema up to date at open()."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from anu_jobs.storage.postgres._sql import migrations

__all__ = ["SchemaTooNewError", "migrate"]


class SchemaTooNewError(Exception):
    """The schema was migrated by a newer anu-jobs than this one."""


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    """Create the schema if needed and apply the migrations it lacks, in order, in one
    transaction; record each in ``schema_migrations``; return the versions applied.

    A transaction-level advisory lock, keyed by the schema name, makes silos that start
    at once take turns: the first migrates, the others find the work done. DDL is
    transactional in PostgreSQL, so a failed migration leaves nothing half-applied.
    """
    name = sql.Identifier(schema)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"anu_jobs:{schema}"]
        )
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
        if await cur.fetchone() is None:
            # Checked first, not IF NOT EXISTS: that still needs CREATE on the database,
            # which a role given only an existing schema may lack.
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        cur = await conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_migrations'",
            [schema],
        )
        applied: set[int] = set()
        if await cur.fetchone() is not None:
            cur = await conn.execute("SELECT version FROM schema_migrations")
            applied = {v for (v,) in await cur.fetchall()}
        known = migrations()
        newest = known[-1][0] if known else 0
        if applied and max(applied) > newest:
            raise SchemaTooNewError(
                f"its schema {schema!r} is at version {max(applied)} but this anu-jobs knows "
                f"only up to {newest}; upgrade anu-jobs"
            )
        done = []
        for version, script in known:
            if version in applied:
                continue
            await conn.execute(script)  # no parameters: sent whole, every statement in it
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_us)"
                " VALUES (%s, (extract(epoch FROM now()) * 1000000)::bigint)",
                [version],
            )
            done.append(version)
    return done
