"""Open a store: reach the server (retrying for a bounded time) and bring the schema
up to date."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from anu_jobs.errors import StorageError, StorageUnavailableError
from anu_jobs.storage.postgres._sql import migrations

__all__ = ["SchemaTooNewError", "connect_and_migrate", "migrate", "reason"]

Conn = psycopg.AsyncConnection[Any]


class SchemaTooNewError(StorageError):
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


async def connect_and_migrate(
    connect: Callable[[], Awaitable[Conn]], schema: str, deadline: float, url: str, total: float
) -> Conn:
    """A connection to a store whose schema is up to date, retrying with backoff until
    ``deadline`` (loop time): a server that is starting or restarting gets a few
    seconds, a dead one is reported then as :class:`StorageUnavailableError` naming
    ``url`` (already redacted). Errors that waiting cannot cure fail at once."""
    loop = asyncio.get_running_loop()
    delay, attempts = 0.25, 0
    while True:
        attempts += 1
        try:
            conn = await asyncio.wait_for(connect(), timeout=max(deadline - loop.time(), 0.05))
        except (psycopg.OperationalError, OSError, TimeoutError) as exc:
            why = reason(exc)
        else:
            try:
                # Never hang: generous, as it may wait for another silo's migration.
                await asyncio.wait_for(migrate(conn, schema), deadline - loop.time() + 30)
                return conn
            except BaseException as exc:
                await conn.close()
                if isinstance(exc, SchemaTooNewError):
                    raise StorageUnavailableError(url, str(exc)) from None
                if not isinstance(exc, psycopg.OperationalError | TimeoutError):
                    if isinstance(exc, psycopg.Error):
                        raise StorageUnavailableError(url, reason(exc)) from None
                    raise
                why = reason(exc)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise StorageUnavailableError(
                url, f"{why} (gave up after {attempts} attempts in {total:g}s)"
            )
        await asyncio.sleep(min(delay, remaining))  # the last try is at the deadline
        delay *= 2


def reason(exc: BaseException) -> str:
    """An error's message on one line (libpq's span several; none carry the password)."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return text or type(exc).__name__
