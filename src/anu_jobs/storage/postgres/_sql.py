"""The SQL files of the PostgreSQL provider: named query blocks, migrations, the schema.

Their text is trusted (it ships with the package), so it is typed as ``LiteralString``
for psycopg; values always travel as parameters, never in the text.
"""

from __future__ import annotations

from typing import LiteralString

from anu_jobs.storage._sqlfiles import load_queries, numbered_migrations, read_text

__all__ = ["QUERIES", "migrations", "schema_sql"]

_PACKAGE = "anu_jobs.storage.postgres"


def _trusted(text: str) -> LiteralString:
    # The text ships with the package; psycopg wants to know it is not built from input.
    trusted: LiteralString = text  # type: ignore[assignment,unused-ignore]
    return trusted


QUERIES: dict[str, LiteralString] = {
    name: _trusted(query.rstrip(";"))
    for name, query in load_queries(read_text(_PACKAGE, "queries.sql")).items()
}


def migrations() -> list[tuple[int, LiteralString]]:
    """Every migration as (version, script), in order."""
    return [(version, _trusted(script)) for version, script in numbered_migrations(_PACKAGE)]


def schema_sql() -> LiteralString:
    """The whole current schema, as ``schema.sql`` holds it."""
    return _trusted(read_text(_PACKAGE, "schema.sql"))
