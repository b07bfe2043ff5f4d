"""The SQL files that ship with the SQL providers: named query blocks and numbered
migrations, read from a provider's package."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["load_queries", "numbered_migrations", "read_text"]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def read_text(package: str, *parts: str) -> str:
    """A file that ships in ``package`` (``queries.sql``, ``migrations/0001_….sql``)."""
    return resources.files(package).joinpath(*parts).read_text(encoding="utf-8")


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


def numbered_migrations(package: str) -> list[tuple[int, str]]:
    """Every migration in ``package/migrations`` as (version, script), in order; the
    versions must run 1, 2, 3… with no gap."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the migrations of {package} are not numbered 1..n: {versions}")
    return found
