"""A request applied to a job that no silo holds: a short-lived passive activation.

The client takes the job's lease, rebuilds its grain without timers or tasks, applies the
request, and writes the result back in one commit that also releases the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from anu_jobs.clock import Clock
from anu_jobs.grain import JobGrain
from anu_jobs.model import JobRegistry
from anu_jobs.runtime.grain import GrainHost
from anu_jobs.storage.base import (
    ControlMessage,
    GrainWrite,
    LeaseToken,
    Notice,
    StateEnvelope,
    Storage,
)

__all__ = ["apply_passive"]


class _PassiveHost(GrainHost):
    """The host of a grain that a client activates for one request: no timers, no tasks."""

    def __init__(self, job_id: str, silo_id: str, clock: Clock, epoch: int) -> None:
        self.job_id = job_id
        self.silo_id = silo_id
        self.clock = clock
        self.epoch = epoch

    @property
    def accepting(self) -> bool:
        return False

    def save(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def reschedule(self) -> None:
        return None

    def spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        coro.close()
        raise RuntimeError("a passive grain runs no job code")

    def run_slot(self) -> Any:
        raise RuntimeError("a passive grain runs no job code")

    def turn(self, fn: Callable[[], None]) -> None:
        fn()


async def apply_passive(
    storage: Storage,
    registry: JobRegistry,
    clock: Clock,
    token: LeaseToken,
    env: StateEnvelope,
    msgs: Sequence[ControlMessage],
    body: dict[str, Any],
) -> list[Notice]:
    """Apply ``body`` (and the pending ``msgs``) to the job whose lease ``token`` holds,
    write the result and release the lease; return the notices to send. A refused write
    raises its error; a failed commit hands the lease back before it raises."""
    host = _PassiveHost(env.job_id, token.silo_id, clock, token.epoch)
    grain = JobGrain(host, env, registry, passive=True)
    grain.on_activate(msgs)
    grain.on_control(body)
    snap = grain.snapshot()
    write = GrainWrite(
        lease=token,
        expected_etag=env.etag,
        job_type=env.job_type,
        stage=snap.stage,
        state=snap.state,
        due_at=snap.due_at,
        runs=snap.runs,
        ack_control=tuple(m.msg_id for m in msgs),
        release=True,
    )
    try:
        (result,) = await storage.commit([write])
    except BaseException:
        # Hand the lease back rather than leave the job stuck until it expires.
        with contextlib.suppress(Exception):
            await storage.release_leases([token])
        raise
    if result.error is not None:
        raise result.error
    notices = [Notice("due", env.job_id, snap.due_at)]
    notices.extend(Notice("run", env.job_id) for _ in snap.finished_runs[:1])
    return notices
