"""The SQL files of the PostgreSQL provider: named query blocks, migrations, the schema.

Their text is trusted (it ships with the package), so it is typed as ``LiteralString``
for psycopg; values always travel as parameters, never in the text.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

__all__ = ["QUERIES", "load_queries", "migrations", "schema_sql"]

_PACKAGE = "anu_jobs.storage.postgres"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def _read(*parts: str) -> LiteralString:
    # Trusted text: it ships with the package.
    text: LiteralString = resources.files(_PACKAGE).joinpath(*parts).read_text(encoding="utf-8")
    return text


def load_queries(text: str) -> dict[str, LiteralString]:
    """Parse ``-- name: NAME`` blocks; each block runs to the next name line."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            name = match.group(1)
            if name in blocks:
                raise ValueError(f"queries.sql names {name!r} twice")
            current = blocks[name] = []
        elif current is not None:
            current.append(line)
    queries: dict[str, LiteralString] = {}
    for name, lines in blocks.items():
        query: LiteralString = "\n".join(lines).strip().rstrip(";")
        queries[name] = query
    return queries


QUERIES = load_queries(_read("queries.sql"))


def migrations() -> list[tuple[int, LiteralString]]:
    """Every migration as (version, script), in order; versions run 1, 2, 3… with no gap."""
    found: list[tuple[int, LiteralString]] = []
    for entry in resources.files(_PACKAGE).joinpath("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), _read("migrations", entry.name)))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the PostgreSQL migrations are not numbered 1..n: {versions}")
    return found


def schema_sql() -> LiteralString:
    """The whole current schema, as ``schema.sql`` holds it."""
    return _read("schema.sql")
