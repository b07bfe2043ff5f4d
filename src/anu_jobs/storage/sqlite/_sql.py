"""The SQL files of the SQLite provider: named query blocks, migrations, the schema."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

__all__ = ["QUERIES", "load_queries", "migrations", "schema_sql", "split_statements"]

_PACKAGE = "anu_jobs.storage.sqlite"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def _read(*parts: str) -> str:
    return resources.files(_PACKAGE).joinpath(*parts).read_text(encoding="utf-8")


def load_queries(text: str) -> dict[str, str]:
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
    return {name: "\n".join(lines).strip() for name, lines in blocks.items()}


QUERIES = load_queries(_read("queries.sql"))


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
    """Every migration as (version, script), in order; versions run 1, 2, 3… with no gap."""
    found = []
    for entry in resources.files(_PACKAGE).joinpath("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the SQLite migrations are not numbered 1..n: {versions}")
    return found


def schema_sql() -> str:
    """The whole current schema, as ``schema.sql`` holds it."""
    return _read("schema.sql")
