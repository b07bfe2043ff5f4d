"""The conformance suite against every provider: memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from anu_jobs.storage import Storage
from anu_jobs.testing.storage_suite import StorageConformance


class TestProviders(StorageConformance):
    @pytest.fixture
    async def twin(
        self, storage: Storage, new_storage: Callable[[], Storage]
    ) -> AsyncIterator[Storage]:
        """A second storage object on the same store: the same memory name, another
        connection (and writer thread) on the same SQLite file, or another pool and
        listening connection on the same PostgreSQL schema (as a second process)."""
        other = new_storage()
        await other.open()
        try:
            yield other
        finally:
            await other.close()
