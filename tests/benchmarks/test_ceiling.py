"""The machine's ceilings (``benchmarks/ceiling.py``) on real stores: every kind of work
runs to the end and counts the rows it wrote."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from tests.pg import drop_schema, fresh_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ceiling  # benchmarks/ is not a package

WORKS = ["ack", "record", "schedule"]


@pytest.fixture
def pg_libpq_url(postgres_url: str) -> Iterator[str]:
    """A libpq URL whose tables land in a schema of their own (dropped afterwards)."""
    schema = fresh_schema()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options={quote(f'-csearch_path={schema}')}"
    drop_schema(postgres_url, schema)


def _check(result: dict[str, Any], store: str, work: str, jobs: int) -> None:
    assert result["store"] == store
    assert result["work"] == work
    assert result["jobs"] == jobs
    assert result["batch"] == (ceiling.SCHEDULE_CHUNK if work == "schedule" else 50)
    assert result["per_s"] > 0
    assert result["seconds"] > jobs / result["per_s"] * 0.99


@pytest.mark.parametrize("work", WORKS)
def test_sqlite_ceilings_run_every_job(work: str) -> None:
    _check(ceiling.measure("sqlite", 730, 50, work=work), "sqlite", work, 730)


@pytest.mark.parametrize("work", WORKS)
def test_postgres_ceilings_run_every_job(work: str, pg_libpq_url: str) -> None:
    _check(ceiling.measure("postgres", 730, 50, pg_libpq_url, work), "postgres", work, 730)
    with psycopg.connect(pg_libpq_url) as conn:  # what the run made, it dropped
        left = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'anu_ceiling%%'"
            " AND schemaname = current_schema()"
        ).fetchone()
    assert left == (0,)


def test_a_ceiling_that_wrote_too_few_rows_fails() -> None:
    with pytest.raises(RuntimeError, match="wrote 729 and 730 rows for 730 jobs"):
        ceiling._check_counts(729, 730, 730)
