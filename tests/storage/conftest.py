"""One parametrized fixture over every provider this repository ships."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from tests.pg import drop_schema, fresh_schema, postgres_url, with_schema

from anu_jobs.storage import Storage, open_storage
from anu_jobs.storage.postgres import PostgresStorage
from anu_jobs.testing import FakeClock

__all__ = ["postgres_url"]  # the session fixture, for the tests here


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty store; both ``storage`` and ``twin`` open it. PostgreSQL
    stores are a new schema each, dropped after the test."""
    if request.param == "memory":
        yield f"memory://conformance-{uuid.uuid4().hex}"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        server: str = request.getfixturevalue("postgres_url")
        schema = fresh_schema()
        yield with_schema(server, schema)
        drop_schema(server, schema)


@pytest.fixture
def new_storage(storage_url: str, store_clock: FakeClock) -> Callable[[], Storage]:
    """Makes storage objects (not yet opened) on the test's store, whose time is the
    conformance suite's ``store_clock``: as a silo opens memory and SQLite stores, on its
    clock; pinned to it on PostgreSQL, whose time is otherwise the server's clock."""

    def new() -> Storage:
        if storage_url.startswith("postgresql://"):
            return PostgresStorage.from_url(storage_url, clock=store_clock)
        return open_storage(storage_url, clock=store_clock)

    return new


@pytest.fixture
async def storage(new_storage: Callable[[], Storage]) -> AsyncIterator[Storage]:
    store = new_storage()
    await store.open()
    try:
        yield store
    finally:
        await store.close()
