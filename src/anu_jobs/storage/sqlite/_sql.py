"""The SQL files of the SQLite provider: named query blocks, migrations, the schema."""

from __future__ import annotations

import sqlite3

from anu_jobs.storage._sqlfiles import load_queries, numbered_migrations, read_text

__all__ = ["QUERIES", "migrations", "schema_sql", "split_statements"]

_PACKAGE = "anu_jobs.storage.sqlite"

QUERIES = load_queries(read_text(_PACKAGE, "queries.sql"))


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements, so that a migration can run inside the
    caller's transaction (``executescript`` would commit first)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        not part.strip() or part.strip().startswith("--") for part in buffer.splitlines()
    ):
        raise ValueError(f"an unterminated SQL statement: {buffer.strip()[:80]!r}")
    return statements


def migrations() -> list[tuple[int, str]]:
    """Every migration as (version, script), in order."""
    return numbered_migrations(_PACKAGE)


def schema_sql() -> str:
    """The whole current schema, as ``schema.sql`` holds it."""
    return read_text(_PACKAGE, "schema.sql")
