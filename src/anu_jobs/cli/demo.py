"""``anu-jobs demo``: an embedded silo with sample jobs, and a live view of them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from rich.console import Console
from rich.live import Live

from anu_jobs.cli.demo_jobs import CANCEL_ID, MANUAL_JOBS, demo_builder
from anu_jobs.cli.render import live_table, snapshot_lines
from anu_jobs.grain import JobStage, JobStatus
from anu_jobs.hosting import JobClient, Silo

__all__ = ["run_demo"]

#: how often the live view refreshes, and how often plain snapshots print (seconds)
REFRESH = 0.25
SNAPSHOT_EVERY = 2.0


def run_demo(url: str, seconds: float, console: Console) -> None:
    """Run the demo silo on ``url`` for ``seconds`` (or until Ctrl+C), showing its jobs."""
    asyncio.run(_demo(demo_builder(url).build(), seconds, console))


async def _demo(silo: Silo, seconds: float, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with _stop_on_signals(loop, stop):
        async with silo:
            client = silo.client
            await _fire_manual_jobs(client)
            ids = [decl.job_id for decl in silo.declared]
            cancel_at = loop.time() + min(3.0, seconds / 2)
            deadline = loop.time() + seconds
            if console.is_terminal:
                await _live(client, ids, console, stop, cancel_at, deadline)
            else:
                await _snapshots(client, ids, console, stop, cancel_at, deadline)
            console.print("stopping the silo (running attempts get 2s to finish)...")
    # async with stopped the silo gracefully: leases handed back, the store closed


@contextlib.contextmanager
def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _fire_manual_jobs(client: JobClient) -> None:
    """Fire the one-off jobs now; revive the one a previous demo cancelled."""
    for job_id, cls in MANUAL_JOBS.items():
        status = await client.get(job_id)
        if status.stage is JobStage.CANCELLED:
            status = await client.schedule(cls, job_id=job_id, replace=True)
        if status.current_run is None:  # else a previous demo's run is still being finished
            await client.trigger(job_id)


async def _tick(
    client: JobClient, ids: list[str], cancel_at: float | None
) -> tuple[list[JobStatus], dict[str, int], float | None]:
    """Cancel the long job once its time came; read every job's status and run count."""
    if cancel_at is not None and asyncio.get_running_loop().time() >= cancel_at:
        await client.cancel(CANCEL_ID, reason="cancelled by the demo")
        cancel_at = None
    jobs = [await client.get(job_id) for job_id in ids]
    counts = {job_id: len(await client.runs(job_id)) for job_id in ids}
    return jobs, counts, cancel_at


async def _sleep_until(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(delay, 0.0))


async def _live(
    client: JobClient,
    ids: list[str],
    console: Console,
    stop: asyncio.Event,
    cancel_at: float | None,
    deadline: float,
) -> None:
    loop = asyncio.get_running_loop()
    jobs, counts, cancel_at = await _tick(client, ids, cancel_at)
    with Live(
        live_table(jobs, counts, client.clock.now()),
        console=console,
        auto_refresh=False,
    ) as live:
        while not stop.is_set() and loop.time() < deadline:
            await _sleep_until(stop, min(REFRESH, deadline - loop.time()))
            jobs, counts, cancel_at = await _tick(client, ids, cancel_at)
            live.update(live_table(jobs, counts, client.clock.now()), refresh=True)


async def _snapshots(
    client: JobClient,
    ids: list[str],
    console: Console,
    stop: asyncio.Event,
    cancel_at: float | None,
    deadline: float,
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    next_print = start + SNAPSHOT_EVERY
    while not stop.is_set() and loop.time() < deadline:
        await _sleep_until(stop, min(REFRESH, deadline - loop.time()))
        jobs, counts, cancel_at = await _tick(client, ids, cancel_at)
        now = loop.time()
        if now >= next_print or now >= deadline or stop.is_set():
            next_print = now + SNAPSHOT_EVERY
            console.print(f"[{now - start:4.1f}s]", highlight=False, markup=False)
            for line in snapshot_lines(jobs, counts, client.clock.now()):
                console.print(line, highlight=False, markup=False, soft_wrap=True)
