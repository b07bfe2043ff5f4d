"""Small, deterministic reproductions of what the soak found; each exits 1 while the bug is
there and 0 once it is fixed.

    python chaos/repros.py torn-write          # a write's state changes while it is in flight
    python chaos/repros.py self-reclaim        # a silo takes its own job again: two activations
    python chaos/repros.py stop-spin           # a stopping silo spins on a due retry
    python chaos/repros.py save-before-write   # an attempt's code runs before its record
    python chaos/repros.py wedged-run          # a run left 'scheduled' by a crash never runs
    python chaos/repros.py clock-skew          # one silo's clock 2.5 s ahead: the others die
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``chaos`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anu_jobs import Every, Job, JobClient, JobContext, Once, RetryPolicy, SiloBuilder
from anu_jobs.storage.base import GrainWrite, Storage, WriteResult
from chaos.config import ROOT, child_env

# -- save-before-write -------------------------------------------------------------------

HOG_RELEASE: asyncio.Event | None = None
STORE: Storage | None = None
SEEN: list[str] = []


class Hog(Job):
    """Holds the silo's only slot until the repro lets it go."""

    async def execute(self, ctx: JobContext) -> None:
        assert HOG_RELEASE is not None
        await HOG_RELEASE.wait()


class Probe(Job):
    """Looks in the store for the record of the attempt it is."""

    async def execute(self, ctx: JobContext) -> None:
        assert STORE is not None
        env = await STORE.read_state(ctx.job_id)
        assert env is not None
        run = env.state["run"] or {}
        SEEN.append(
            f"attempt {ctx.attempt} of {ctx.run_id} began; the store has that run as "
            f"{run.get('stage')!r}, attempt {run.get('attempt')}"
        )


async def save_before_write() -> int:
    """``JobGrain._attempt`` awaits ``host.save()`` so that "the attempt is on record before
    the job's code runs". ``Activation.save()`` adds its future to ``_waiters``, and
    ``write_done`` resolves every waiter when the write in flight returns, including the
    waiters added after that write was built: a save made while an older write is in
    flight returns before its own changes are written. Here the probe is activated while
    the only slot is busy (its activation writes nothing: the attempt's own write will
    carry its run) and a manual trigger makes it write (write 1, held in flight); the slot
    frees, the attempt begins and saves; write 1 returns, the save is "done", and the
    job's code runs while its attempt is still unrecorded (write 2 is only then sent)."""
    global HOG_RELEASE, STORE
    HOG_RELEASE = asyncio.Event()
    in_flight, gate = asyncio.Event(), asyncio.Event()
    silo = (
        SiloBuilder()
        .use_storage(f"memory://chaos-repro-{uuid.uuid4().hex[:8]}")
        .use_jobs(Hog, Probe)
        .use_concurrency(1)
        .build()
    )
    STORE = silo.storage
    commit = silo.storage.commit

    async def slow_commit(writes: Sequence[GrainWrite]) -> list[WriteResult]:
        if any(w.lease.job_id == "probe" for w in writes):
            if not gate.is_set():
                in_flight.set()
                await gate.wait()  # the probe's first write stays in flight
            else:
                await asyncio.sleep(0.3)  # later ones take a little while
        return list(await commit(writes))

    silo.storage.commit = slow_commit  # type: ignore[method-assign]
    async with silo:
        client = silo.client
        await client.schedule(Hog, job_id="hog", trigger=Once(delay=timedelta(0)))
        await _until(lambda: _stage(client, "hog", "running"), "the hog to run")
        await client.schedule(Probe, job_id="probe", trigger=Once(delay=timedelta(0)))
        await _until(lambda: "probe" in silo.runtime.activations, "the probe's activation")
        # trigger() returns once its control message is written: write 1 is held.
        trigger = asyncio.ensure_future(client.trigger("probe"))
        await asyncio.wait_for(in_flight.wait(), 10)  # write 1: the run, 'scheduled'
        HOG_RELEASE.set()  # the slot frees; the probe's attempt begins and saves
        await asyncio.sleep(0.2)
        gate.set()  # write 1 returns
        await trigger
        await client.wait("probe", timeout=10)
    print("\n".join(SEEN))
    bad = not SEEN or any("'running'" not in s for s in SEEN)
    print("BUG: the job's code ran before its attempt was written" if bad else "ok")
    return 1 if bad else 0


async def _stage(client: JobClient, job_id: str, stage: str) -> bool:
    status = await client.get(job_id)
    return status.current_run is not None and status.current_run.stage.value == stage


async def _until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- torn-write ---------------------------------------------------------------------------


class Quick(Job):
    overlap = "queue_one"

    async def execute(self, ctx: JobContext) -> None:
        await asyncio.sleep(0.05)


async def torn_write() -> int:
    """``Activation.build_write`` puts ``JobState.to_json()`` in the write, and that
    document shares its lists with the live state (``next``, ``pending``, each run's
    ``transitions``): ``to_json`` does not copy them. The store serializes the write later,
    SQLite in its worker thread while the event loop runs on, PostgreSQL after it has a
    pooled connection; turns that run meanwhile (a fire, an attempt that ends) change the
    document in flight, and the store keeps a state the grain never had. Here commits
    take 0.3 s (a slow disk, a busy pool) and a job fires every 0.1 s: the repro compares
    each write's state when it reaches the store and when the store would encode it."""
    silo = (
        SiloBuilder()
        .use_storage(f"memory://chaos-repro-{uuid.uuid4().hex[:8]}")
        .use_jobs(Quick)
        .build()
    )
    commit = silo.storage.commit
    torn: list[str] = []

    async def slow_commit(writes: Sequence[GrainWrite]) -> list[WriteResult]:
        sent = [(w, json.dumps(w.state, sort_keys=True)) for w in writes if w.state]
        await asyncio.sleep(0.3)
        for w, text in sent:
            now = json.dumps(w.state, sort_keys=True)
            if now != text and len(torn) < 3:
                before, after = json.loads(text), json.loads(now)
                changed = sorted(k for k in before if before[k] != after.get(k))
                torn.append(f"{w.lease.job_id}: changed in flight: {', '.join(changed)}")
        return list(await commit(writes))

    silo.storage.commit = slow_commit  # type: ignore[method-assign]
    async with silo:
        await silo.client.schedule(
            Quick, job_id="quick", trigger=Every(timedelta(milliseconds=100))
        )
        await asyncio.sleep(2)
    print("\n".join(torn) or "no write changed in flight")
    print("BUG: a write's state changed after it was built" if torn else "ok")
    return 1 if torn else 0


# -- self-reclaim ---------------------------------------------------------------------------


class Noop(Job):
    overlap = "queue_one"

    async def execute(self, ctx: JobContext) -> None:
        pass


class Other(Job):
    async def execute(self, ctx: JobContext) -> None:
        pass


async def self_reclaim() -> int:
    """A silo that was paused past its leases (SIGSTOP, a long GC or swap stall, a VM
    migration) claims its own jobs again when it resumes: the leases have expired, so the
    claim takes them, under a new epoch. ``SiloRuntime.activate`` then overwrites
    ``activations[job_id]``, and the old activation is never told: it stays alive, keeps
    its timers and its running attempt (its token untripped), until a write of its own is
    refused. Meanwhile both activations share the write batcher's queue, which is keyed
    by job id: one can overwrite the other's queued write, leaving that one with
    ``_queued`` set and no write coming, its ``save()`` waiters hanging for good (in the
    soak: "Task was destroyed but it is pending! ... JobGrain._attempt() ... await
    self.host.save()"). Here a FakeClock jumps 5 s (the pause) and a new job wakes the
    claim loop before the renew loop runs."""
    from anu_jobs.testing import FakeClock

    clock = FakeClock()
    silo = (
        SiloBuilder()
        .use_storage(f"memory://chaos-repro-{uuid.uuid4().hex[:8]}")
        .use_jobs(Noop, Other)
        .use_clock(clock)
        .use_options(lease_ttl=timedelta(seconds=3), dead_after=timedelta(seconds=60))
        .build()
    )
    async with silo:
        client = silo.client
        await client.schedule(Noop, job_id="tick", trigger=Every(timedelta(seconds=1)))
        for _ in range(30):
            await clock.advance(0.1)
            await asyncio.sleep(0.01)
        old = silo.runtime.activations["tick"]
        clock.jump(clock.now() + timedelta(seconds=5))  # the process was paused for 5 s
        await client.schedule(Other, job_id="other", trigger=Once(delay=timedelta(0)))
        for _ in range(50):
            await asyncio.sleep(0.01)
        new = silo.runtime.activations.get("tick")
        bad = new is not None and new is not old and old.alive
        print(
            f"after the claim: activation of epoch {new.lease.epoch if new else None} "
            f"registered; the one of epoch {old.lease.epoch} is "
            f"{'still alive, not told' if old.alive else 'gone'}"
        )
        for _ in range(20):  # let the old one run into its refused write
            await clock.advance(0.1)
            await asyncio.sleep(0.01)
    print("BUG: two live activations of one job in one silo" if bad else "ok")
    return 1 if bad else 0


# -- stop-spin ------------------------------------------------------------------------------


class FailsOnce(Job):
    retry = RetryPolicy(max_retries=3, initial_delay=timedelta(milliseconds=300))

    async def execute(self, ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("fails once")


class Busy(Job):
    async def execute(self, ctx: JobContext) -> None:
        await asyncio.sleep(1.5)


async def stop_spin() -> int:
    """While a silo stops, ``JobGrain._start`` refuses to start attempts
    (``host.accepting`` is False), but ``next_wake`` still names the due retry (or fire),
    so ``Activation.reschedule`` arms a timer in the past, which fires at once, and
    ``on_wake`` saves: a busy loop of turns and writes until the activation is released.
    The loop runs at 100 % CPU, the write batcher never drains, and the stop is slow or,
    with the store in a thread (SQLite), never ends (in the soak: a silo still running
    27 s after SIGTERM). Here a job waits 0.3 s to retry when the silo begins to stop,
    and another keeps the drain busy for 1.5 s; the repro counts the writes meanwhile."""
    silo = (
        SiloBuilder()
        .use_storage(f"memory://chaos-repro-{uuid.uuid4().hex[:8]}")
        .use_jobs(FailsOnce, Busy)
        .use_options(drain_timeout=3.0)
        .build()
    )
    commit = silo.storage.commit
    count = 0

    async def counting_commit(writes: Sequence[GrainWrite]) -> list[WriteResult]:
        nonlocal count
        count += sum(1 for w in writes if w.lease.job_id == "fails")
        return list(await commit(writes))

    silo.storage.commit = counting_commit  # type: ignore[method-assign]
    await silo.start()
    client = silo.client
    await client.schedule(Busy, job_id="busy", trigger=Once(delay=timedelta(0)))
    await client.schedule(FailsOnce, job_id="fails", trigger=Once(delay=timedelta(0)))
    await _until(lambda: _stage(client, "fails", "retrying"), "the first attempt to fail")
    before = count
    began = time.monotonic()
    await silo.stop()
    during = count - before
    took = time.monotonic() - began
    print(f"writes of the retrying job while the silo stopped ({took:.1f}s): {during}")
    bad = during > 10
    print("BUG: the stopping silo spun on the due retry" if bad else "ok")
    return 1 if bad else 0


# -- wedged-run ------------------------------------------------------------------------


class Sleeper(Job):
    async def execute(self, ctx: JobContext) -> None:
        await asyncio.sleep(60)


class Victim(Job):
    overlap = "queue_one"

    async def execute(self, ctx: JobContext) -> None:
        pass


def _silo_process(url: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = child_env()
    return subprocess.Popen(
        [sys.executable, "-m", "chaos.repros", "silo", url, str(concurrency)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


async def wedged_run() -> int:
    """A fire's run is written as ``scheduled`` when the fire comes due, and as ``running``
    when its attempt starts; in between the attempt waits for a slot (or for the write).
    A silo that dies in between leaves the run ``scheduled`` in the job's state, and the
    next activation never starts it: ``on_activate`` recovers only ``running`` and
    ``compensating`` runs, and ``_advance`` starts a run only when there is none. The job
    is wedged for good: every later fire is skipped behind the dead run. Here one slot is
    held by a sleeper, so the victim's run waits for it; the silo is killed (-9)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/wedged.db"
        async with JobClient.connect(url, jobs=[Sleeper, Victim]) as client:
            first = _silo_process(url, 1)
            try:
                await _until(lambda: _active(client, 1), "the silo to start")
                await client.schedule(Sleeper, job_id="sleeper", trigger=Once(delay=timedelta(0)))
                await _until(lambda: _stage(client, "sleeper", "running"), "the sleeper to run")
                await client.schedule(Victim, job_id="victim", trigger=Every(timedelta(seconds=1)))
                await _until(lambda: _stage(client, "victim", "scheduled"), "the victim's run", 10)
            finally:
                first.kill()
                first.wait()
            second = _silo_process(url, 100)
            try:
                await asyncio.sleep(10)
                status = await client.get("victim")
                runs = await client.runs("victim", limit=100)
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait()
    current = status.current_run
    stages: dict[str, int] = {}
    for r in runs:
        stages[r.stage.value] = stages.get(r.stage.value, 0) + 1
    print(
        f"10 s after the restart, victim (every 1 s): current run "
        f"{current.run_id if current else None} is {current.stage.value if current else None!r}"
        f" (attempt {current.attempt if current else None}); its runs: {stages}"
    )
    bad = current is not None and current.stage.value == "scheduled" and not stages.get("completed")
    print("BUG: the run left 'scheduled' by the crash never runs" if bad else "ok")
    return 1 if bad else 0


async def _active(client: JobClient, n: int) -> bool:
    return sum(1 for s in await client.silos() if s.status == "active") >= n


def _run_silo(url: str, concurrency: int) -> None:
    (
        SiloBuilder()
        .use_storage(url)
        .use_jobs(Sleeper, Victim)
        .use_concurrency(concurrency)
        .use_options(
            lease_ttl=timedelta(seconds=2),
            dead_after=timedelta(seconds=1),
            heartbeat=timedelta(milliseconds=250),
            drain_timeout=1.0,
        )
        .build()
        .run()
    )


# -- clock-skew --------------------------------------------------------------------------


async def clock_skew(url: str | None) -> int:
    """Membership compared heartbeat times written by each silo's own clock with the
    reader's clock: ``declare_dead(now, now - dead_after)``. A silo whose clock ran more
    than ``dead_after - heartbeat`` ahead declared every other silo dead at its next
    heartbeat (they stop claiming for good); one running behind was declared dead by the
    others. (Fixed: the store's clock stamps and judges heartbeats and leases.) Here: two
    chaos silos, PostgreSQL, dead_after 2 s, heartbeat 0.5 s; silo A's clock is set 2.5 s
    ahead. No process is paused, killed or cut off."""
    owned: Any = None
    if url is None:
        import importlib

        ctl = importlib.import_module("tests.integration.pgserver_ctl")
        pg_parent = tempfile.TemporaryDirectory(prefix="anu-skew-pg-")
        owned = ctl.OwnedPostgres(Path(pg_parent.name) / "pg")
        url = str(owned.url)
    tmp = tempfile.TemporaryDirectory(prefix="anu-skew-")
    workdir = Path(tmp.name)
    for sub in ("clock", "silos", "ledger"):
        (workdir / sub).mkdir()
    procs = [_chaos_silo(url, workdir) for _ in range(2)]
    try:
        async with JobClient.connect(url) as client:
            await _until(lambda: _active(client, 2), "two silos")
            ahead = procs[0]
            (workdir / "clock" / f"{ahead.pid}.offset").write_text("2.5")
            ahead.send_signal(signal.SIGUSR1)
            await asyncio.sleep(3)
            deaths = {p.pid: 0 for p in procs}
            for info in await client.silos():  # a silo may join again under a new id
                if info.pid in deaths and info.status == "dead":
                    deaths[info.pid] += 1
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait()
        tmp.cleanup()
        if owned is not None:
            owned.cleanup()
            pg_parent.cleanup()
    print(
        f"in 3 s, silo {procs[0].pid} (clock +2.5 s) was declared dead {deaths[procs[0].pid]} "
        f"time(s); silo {procs[1].pid} (clock right) {deaths[procs[1].pid]} time(s)"
    )
    bad = deaths[procs[1].pid] > 0
    print("BUG: a healthy silo was declared dead by a skewed one" if bad else "ok")
    return 1 if bad else 0


def _chaos_silo(url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = child_env()
    cmd = [sys.executable, "-m", "chaos.silo", "--url", url, "--dir", str(workdir)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "silo":
        _run_silo(sys.argv[2], int(sys.argv[3]))
        return
    if what == "self-reclaim":
        sys.exit(asyncio.run(self_reclaim()))
    if what == "stop-spin":
        sys.exit(asyncio.run(stop_spin()))
    if what == "torn-write":
        sys.exit(asyncio.run(torn_write()))
    if what == "save-before-write":
        sys.exit(asyncio.run(save_before_write()))
    if what == "wedged-run":
        sys.exit(asyncio.run(wedged_run()))
    if what == "clock-skew":
        sys.exit(asyncio.run(clock_skew(sys.argv[2] if len(sys.argv) > 2 else None)))
    print(__doc__)
    sys.exit(2)


if __name__ == "__main__":
    main()
