from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from anu_jobs import Job, Silo, SiloBuilder
from anu_jobs.testing import FakeClock
from tests.pg import pg_url, postgres_url

__all__ = ["SiloFactory", "drive", "eventually", "pg_url", "postgres_url", "settle"]

_names = itertools.count()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def memory_url() -> str:
    return f"memory://test-{next(_names)}"


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same lifecycle on every provider: a fresh store of each kind."""
    if request.param == "memory":
        return f"memory://test-{next(_names)}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    url: str = request.getfixturevalue("pg_url")
    return url


SiloFactory = Callable[..., Any]


@pytest.fixture
def make_silo(clock: FakeClock, store_url: str) -> SiloFactory:
    """``async with make_silo(JobA, JobB, url=..., configure=lambda b: b...) as silo``."""

    @asynccontextmanager
    async def factory(
        *jobs: type[Job],
        url: str | None = None,
        use_clock: bool = True,
        configure: Callable[[SiloBuilder], SiloBuilder] | None = None,
    ) -> AsyncIterator[Silo]:
        builder = SiloBuilder().use_storage(url or store_url).use_jobs(*jobs)
        if use_clock:
            builder.use_clock(clock)
        if configure is not None:
            builder = configure(builder)
        silo = builder.use_options(drain_timeout=2.0).build()
        async with silo:
            yield silo

    return factory


async def settle(turns: int = 50) -> None:
    """Let the event loop run pending callbacks (no time passes on a FakeClock)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def eventually(predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll an async or sync predicate until it returns a truthy value; name what it waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def drive(
    clock: FakeClock, predicate: Callable[[], Any], what: str, step: float, timeout: float = 10.0
) -> Any:
    """Move the fake clock forward ``step`` seconds at a time until ``predicate`` holds.

    For waits whose timers are set by work that crosses real I/O (a store's thread or
    socket), so the test cannot know when to move the clock by exactly the right amount.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s of driving the clock waiting for {what}"
            )
        await clock.advance(step)
        await asyncio.sleep(0.005)
