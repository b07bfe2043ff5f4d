"""The conformance suite against the memory and SQLite providers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from anu_jobs.storage import Storage, open_storage
from anu_jobs.testing.storage_suite import StorageConformance


class TestProviders(StorageConformance):
    @pytest.fixture
    async def twin(self, storage: Storage, storage_url: str) -> AsyncIterator[Storage]:
        """A second storage object on the same store: the same memory name, or another
        connection (and writer thread) on the same SQLite file."""
        other = open_storage(storage_url)
        await other.open()
        try:
            yield other
        finally:
            await other.close()
