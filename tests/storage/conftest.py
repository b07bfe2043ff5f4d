"""One parametrized fixture over every provider this repository ships."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from anu_jobs.storage import Storage, open_storage


@pytest.fixture(params=["memory", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a fresh, empty store; both ``storage`` and ``twin`` open it."""
    if request.param == "memory":
        return f"memory://conformance-{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    store = open_storage(storage_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
