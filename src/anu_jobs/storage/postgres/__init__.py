"""The PostgreSQL provider (psycopg 3 and psycopg_pool: ``pip install anu-jobs[postgres]``)."""

from __future__ import annotations

from anu_jobs.storage.postgres.provider import PostgresStorage

__all__ = ["PostgresStorage"]
