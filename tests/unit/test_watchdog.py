"""Jobs that misbehave on a real clock: one that blocks the event loop, one that never
returns, a plain-``def`` one that outlives its timeout in its thread. The per-attempt
timeout fails each of them, the watchdog names the job that held the loop, and the silo
goes on running other jobs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from anu_jobs import ConfigurationError, Job, JobContext, RunStage, Silo, SiloBuilder
from anu_jobs.hosting.watchdog import LoopWatchdog
from tests.conftest import eventually

TIMEOUT = timedelta(seconds=0.3)


class LoopBlocker(Job):
    """Calls blocking code from ``async def``: the whole silo stands still meanwhile."""

    timeout = TIMEOUT

    async def execute(self, ctx: JobContext) -> None:
        time.sleep(0.8)  # noqa: ASYNC251  (the misbehaviour under test)


class NeverReturns(Job):
    timeout = TIMEOUT

    async def execute(self, ctx: JobContext) -> None:
        await asyncio.Event().wait()


class SlowThread(Job):
    """A plain ``def``: it runs in a worker thread, which nothing can stop."""

    timeout = TIMEOUT
    finished = threading.Event()
    release = threading.Event()

    def execute(self, ctx: JobContext) -> None:
        SlowThread.release.wait(10)
        SlowThread.finished.set()


class Quick(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


@pytest.fixture
async def silo() -> AsyncIterator[Silo]:
    silo = (
        SiloBuilder()
        .use_storage("memory://")
        .use_jobs(LoopBlocker, NeverReturns, SlowThread, Quick)
        .use_watchdog(timedelta(seconds=0.2))
        .use_options(drain_timeout=0.5)
        .build()
    )
    async with silo:
        yield silo


async def _run(silo: Silo, job: type[Job], job_id: str) -> RunStage:
    await silo.client.schedule(job, job_id=job_id, replace=True)
    run = await silo.client.wait(job_id, await silo.client.trigger(job_id), timeout=10)
    return run.stage


async def test_a_job_that_blocks_the_loop_is_named_and_timed_out(
    silo: Silo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="anu_jobs.watchdog")
    await silo.client.schedule(LoopBlocker, job_id="blocker")
    run = await silo.client.wait("blocker", await silo.client.trigger("blocker"), timeout=10)
    # It returned on its own, but only after holding the loop past its timeout.
    assert run.stage is RunStage.FAILED
    assert run.error is not None and run.error.type == "JobTimeoutError"
    warnings = [r.getMessage() for r in caplog.records if r.name == "anu_jobs.watchdog"]
    blocked = [m for m in warnings if "event loop has been blocked" in m]
    assert blocked, warnings
    assert "'blocker'" in blocked[0]  # the running job
    assert "task 'blocker:execute'" in blocked[0]  # the task that held the loop
    assert "time.sleep(0.8)" in blocked[0]  # and the line it was on
    await eventually(
        lambda: any("answers again" in r.getMessage() for r in caplog.records),
        "the watchdog to see the loop answer again",
    )
    assert silo.watchdog is not None
    assert silo.watchdog.stalls >= 1 and silo.watchdog.max_lag >= 0.5
    assert await _run(silo, Quick, "after") is RunStage.COMPLETED


async def test_a_job_that_never_returns_is_stopped_by_its_timeout(silo: Silo) -> None:
    await silo.client.schedule(NeverReturns, job_id="forever")
    began = time.monotonic()
    run = await silo.client.wait("forever", await silo.client.trigger("forever"), timeout=10)
    assert run.stage is RunStage.FAILED
    assert run.error is not None and run.error.type == "JobTimeoutError"
    assert time.monotonic() - began < 5
    assert await _run(silo, Quick, "after") is RunStage.COMPLETED


async def test_a_thread_job_past_its_timeout_fails_but_runs_on_unstopped(silo: Silo) -> None:
    SlowThread.finished.clear()
    SlowThread.release.clear()
    await silo.client.schedule(SlowThread, job_id="thread")
    run = await silo.client.wait("thread", await silo.client.trigger("thread"), timeout=10)
    assert run.stage is RunStage.FAILED
    assert run.error is not None and run.error.type == "JobTimeoutError"
    assert not SlowThread.finished.is_set(), "the thread cannot be interrupted"
    assert await _run(silo, Quick, "meanwhile") is RunStage.COMPLETED  # the loop is free
    SlowThread.release.set()
    assert await asyncio.to_thread(SlowThread.finished.wait, 5)
    await asyncio.sleep(0.1)
    # Its late return is ignored: the run stays failed.
    assert (await silo.client.runs("thread"))[0].stage is RunStage.FAILED


async def test_the_watchdog_measures_lag_and_stops_promptly() -> None:
    dog = LoopWatchdog(0.1, interval=0.02)
    dog.start()
    await asyncio.sleep(0.1)
    assert dog.stalls == 0 and dog.lag < 0.1
    time.sleep(0.3)  # noqa: ASYNC251  (blocking on purpose)
    assert dog.lag >= 0.25  # seen from the thread while the loop is held
    await asyncio.sleep(0.1)
    assert dog.stalls == 1 and dog.max_lag >= 0.25
    began = time.monotonic()
    dog.stop()
    assert time.monotonic() - began < 1.0
    assert not any(t.name == "anu-jobs-watchdog" for t in threading.enumerate())


def test_watchdog_options() -> None:
    with pytest.raises(ConfigurationError):
        SiloBuilder().use_watchdog(timedelta(0))
    assert SiloBuilder().use_storage("memory://").use_watchdog(None).build().watchdog is None
    built = SiloBuilder().use_storage("memory://").build().watchdog
    assert built is not None and built.threshold == 1.0
    with pytest.raises(ValueError, match="positive"):
        LoopWatchdog(0)
