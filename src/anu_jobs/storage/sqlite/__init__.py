"""The SQLite provider (stdlib ``sqlite3``; no extra dependency)."""

from __future__ import annotations

from anu_jobs.storage.sqlite.provider import SqliteStorage

__all__ = ["SqliteStorage"]
