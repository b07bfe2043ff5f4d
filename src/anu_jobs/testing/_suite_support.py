"""Helpers of the storage conformance suite (:mod:`anu_jobs.testing.storage_suite`):
times on the suite's store clock, and short forms of the contract's calls."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from anu_jobs.storage.base import (
    Claim,
    GrainWrite,
    LeaseToken,
    RunRecord,
    SiloInfo,
    Storage,
)
from anu_jobs.testing.clock import FakeClock

__all__ = [
    "T0",
    "at",
    "beat",
    "claim",
    "holder",
    "ids",
    "new_job",
    "next_due",
    "renew",
    "run",
    "secs",
    "silo",
    "store_time",
    "take",
    "write",
]

T0 = datetime(2030, 1, 1, tzinfo=UTC)

# The running test's store clock (the ``store_clock`` fixture), for the helpers below.
_store_clock: FakeClock | None = None


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``: every time in the suite is relative to one instant."""
    return T0 + timedelta(seconds=seconds)


def secs(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def store_time(seconds: float) -> None:
    """Set the store's clock to ``at(seconds)``, forwards or back."""
    assert _store_clock is not None, "the storage fixture must open the store on store_clock"
    _store_clock.jump(at(seconds))


async def new_job(
    storage: Storage,
    job_id: str,
    due: float | None = 0,
    *,
    stage: str = "active",
    job_type: str = "demo",
    state: dict[str, Any] | None = None,
) -> int:
    due_at = None if due is None else at(due)
    return await storage.insert_job(job_id, job_type, stage, state or {"n": 0}, due_at)


async def claim(
    storage: Storage,
    silo: str = "s1",
    now: float = 0,
    until: float = 0,
    limit: int = 100,
    lease: float = 30,
) -> list[Claim]:
    """``claim_due`` at store time ``now`` (the caller's too): leases for ``lease`` s."""
    store_time(now)
    return await storage.claim_due(silo, at(now), at(until), limit, secs(lease))


async def take(storage: Storage, job_id: str, silo: str = "s1", now: float = 0) -> Claim:
    """Take one job's lease (for 30 s from store time ``now``) whether it is due or not,
    as a :class:`Claim`."""
    store_time(now)
    taken = await storage.acquire_lease(job_id, silo, secs(30))
    assert taken is not None, f"the lease of {job_id} was not free at {now}"
    token, envelope, control = taken
    return Claim(token, envelope, None, control)


async def holder(storage: Storage, job_id: str, now: float = 0) -> LeaseToken | None:
    """``lease_holder`` at store time ``now``."""
    store_time(now)
    return await storage.lease_holder(job_id)


async def renew(
    storage: Storage, tokens: Sequence[LeaseToken], now: float = 0, lease: float = 30
) -> list[LeaseToken]:
    """``renew_leases`` at store time ``now``, for ``lease`` seconds."""
    store_time(now)
    return await storage.renew_leases(tokens, secs(lease))


async def next_due(storage: Storage, now: float = 0) -> datetime | None:
    """``next_due`` at store time ``now`` (the caller's too)."""
    store_time(now)
    return await storage.next_due(at(now))


async def beat(storage: Storage, silo_id: str, now: float = 0) -> bool:
    """``heartbeat`` at store time ``now``."""
    store_time(now)
    return await storage.heartbeat(silo_id)


def write(
    c: Claim | tuple[LeaseToken, int],
    state: dict[str, Any] | None = None,
    *,
    due: float | None = None,
    stage: str = "active",
    runs: tuple[RunRecord, ...] = (),
    ack: tuple[int, ...] = (),
    release: bool = False,
    delete: bool = False,
) -> GrainWrite:
    lease, etag = (c.lease, c.envelope.etag) if isinstance(c, Claim) else c
    return GrainWrite(
        lease=lease,
        expected_etag=etag,
        job_type="demo",
        stage=stage,
        state=None if delete else (state if state is not None else {"n": 1}),
        due_at=None if due is None else at(due),
        runs=runs,
        ack_control=ack,
        release=release,
    )


def run(
    run_id: str, job_id: str, scheduled: float, stage: str = "completed", **data: Any
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        job_id=job_id,
        job_type="demo",
        stage=stage,
        attempt=1,
        scheduled_for=at(scheduled),
        started_at=at(scheduled + 1),
        finished_at=None if stage == "running" else at(scheduled + 2),
        silo_id="s1",
        data=dict(data),
    )


def silo(silo_id: str, started: float = 0, heartbeat: float = 0) -> SiloInfo:
    return SiloInfo(silo_id, "host-a", 4242, at(started), at(heartbeat))


def ids(claims: list[Claim]) -> list[str]:
    return [c.envelope.job_id for c in claims]
