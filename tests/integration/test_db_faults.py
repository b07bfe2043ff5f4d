"""Database faults under real silo processes: a PostgreSQL restart under load, a server
that cannot be reached at start, and a graceful stop that hands its leases over at once.

The restart test owns its server (``pgserver_ctl.OwnedPostgres``, in ``tmp_path``) and
never touches the machine's shared one. The jobs keep an independent ledger of their
executions in marker files (``silo_proc``), checked against the store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from anu_jobs import Every, JobClient, JobSpec, Once, RunStage, SiloBuilder
from anu_jobs.errors import StorageError, StorageUnavailableError
from tests.integration.pgserver_ctl import OwnedPostgres
from tests.integration.silo_proc import LongOnFirstAttempt, Record

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TERMINAL = {s for s in RunStage if s.terminal}


class SiloProcess:
    """``python -m tests.integration.silo_proc URL MARKERS LEASE_TTL DEAD_AFTER``, with its
    stderr in a file (a pipe nobody reads would block a silo that logs a lot)."""

    def __init__(self, url: str, markers: Path, lease_ttl: float, dead_after: float) -> None:
        self.stderr_path = markers / f"silo-{id(self)}.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.silo_proc",
                    url,
                    str(markers),
                    str(lease_ttl),
                    str(dead_after),
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "ANU_TEST_LONG_SECONDS": "60"},
            )

    @property
    def pid(self) -> str:
        return str(self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int:
        self.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def silos() -> Iterator[list[SiloProcess]]:
    started: list[SiloProcess] = []
    yield started
    for silo in started:
        silo.kill()


@pytest.fixture
def owned_pg(tmp_path: Path) -> Iterator[OwnedPostgres]:
    """A PostgreSQL server of this test's own, in ``tmp_path``: the test may restart it."""
    server = OwnedPostgres(tmp_path / "pg")
    yield server
    server.cleanup()


def ledger(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def fire_time(run_id: str) -> datetime:
    """The fire time in a deterministic run id, ``job@2030-01-01T02:00:00.000000Z``."""
    stamp = run_id.rsplit("@", 1)[1]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Poll until ``predicate`` (sync or async) holds; a store error counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
        except StorageError:
            value = False
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def active_silos(client: JobClient) -> int:
    return len([s for s in await client.silos() if s.status == "active"])


async def finished(client: JobClient, prefix: str, n: int) -> bool:
    return len(await client.list(text=prefix, stage="finished", limit=n + 1)) >= n


# -- 1. a PostgreSQL restart under load ------------------------------------------------

ONCE = 100
EVERY = 100


async def test_postgres_restart_under_load(
    owned_pg: OwnedPostgres, tmp_path: Path, silos: list[SiloProcess]
) -> None:
    url = owned_pg.url
    silos.extend(SiloProcess(url, tmp_path, lease_ttl=2, dead_after=1) for _ in range(2))
    async with JobClient.connect(url, jobs=[Record]) as client:
        await until(lambda: _gte(active_silos(client), 2), "two silos to join", 15)
        specs = [
            JobSpec(Record, job_id=f"once-{i}", trigger=Once(delay=timedelta(seconds=i * 8 / ONCE)))
            for i in range(ONCE)
        ]
        specs += [
            JobSpec(Record, job_id=f"every-{i}", trigger=Every(timedelta(seconds=1)))
            for i in range(EVERY)
        ]
        await client.schedule_many(specs)
        await asyncio.sleep(2.5)  # under way: recurring fires and the first one-time jobs
        before = len(ledger(tmp_path / "record.log"))
        assert before > 0, "nothing ran before the restart"

        await asyncio.to_thread(owned_pg.restart)
        restarted = datetime.now(UTC)

        await until(lambda: finished(client, "once-", ONCE), "every one-time job to run", 25)
        # Recurring jobs go on: every one of them fires again, well after the restart.
        after = restarted + timedelta(seconds=2)
        await until(
            lambda: _every_fired_since(tmp_path / "record.log", after),
            "every recurring job to fire after the restart",
            15,
        )
        assert all(s.running for s in silos), "a silo process died: " + _tails(silos)
        statuses = {s.silo_id: s.status for s in await client.silos()}

        # The store: one terminal record per run, and the ledger agrees with it.
        once_runs = {}
        for i in range(ONCE):
            runs = await client.runs(f"once-{i}")
            assert [r.stage for r in runs] == [RunStage.COMPLETED], f"once-{i}: {runs}"
            once_runs[runs[0].run_id] = runs[0]
        recorded = [r for i in range(0, EVERY, 7) for r in await client.runs(f"every-{i}")]
        for run in [*once_runs.values(), *recorded]:
            ends = [t.stage for t in run.transitions if t.stage in TERMINAL]
            assert len(ends) <= 1, f"{run.run_id} ended twice: {ends}"

    codes = [s.stop() for s in silos]
    entries = ledger(tmp_path / "record.log")
    executions = Counter(e[1] for e in entries)
    attempts: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        attempts[e[1]].append(int(e[2]))
    # A fire runs twice only when its first attempt was cut off: then as the next attempt.
    same_attempt_twice = {r: a for r, a in attempts.items() if len(a) != len(set(a))}
    assert not same_attempt_twice, f"an attempt was executed twice: {same_attempt_twice}"
    rerun = {r: a for r, a in attempts.items() if len(a) > 1}
    for run_id, seen in rerun.items():
        if run_id in once_runs:
            assert once_runs[run_id].attempt == max(seen), (run_id, seen, once_runs[run_id])
    assert {e[1] for e in entries if e[0].startswith("once-")} == set(once_runs)
    print(
        f"\n{len(entries)} executions of {len(executions)} fires; "
        f"{len(rerun)} fire(s) re-run after a cut-off attempt; silo statuses {statuses}"
    )

    assert codes == [0, 0], _tails(silos)
    for silo in silos:
        err = silo.stderr()
        assert "Traceback" not in err, err
        assert "failed" in err, f"silo {silo.pid} logged nothing about the outage:\n{err}"
    # Both silos came through: neither was declared dead by the other because of the outage.
    assert sorted(statuses.values()) == ["active", "active"], (statuses, _tails(silos))


def _every_fired_since(path: Path, since: datetime) -> bool:
    fired = {e[0] for e in ledger(path) if e[0].startswith("every-") and fire_time(e[1]) > since}
    return len(fired) == EVERY


async def _gte(count: Any, n: int) -> bool:
    return bool(await count >= n)


def _tails(silos: list[SiloProcess]) -> str:
    return "\n".join(f"--- silo {s.pid}:\n{s.stderr()[-3000:]}" for s in silos)


# -- 2. a server that cannot be reached at start -----------------------------------------


async def test_unreachable_at_start_fails_fast_and_names_the_redacted_url() -> None:
    url = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2"
    silo = SiloBuilder().use_storage(url).build()
    began = time.monotonic()
    with pytest.raises(StorageUnavailableError) as caught:
        await silo.start()
    assert time.monotonic() - began < 5
    assert "postgresql://postgres@127.0.0.1:1/test" in str(caught.value)


async def test_unreachable_at_start_never_shows_the_password() -> None:
    url = "postgresql://u:secret@127.0.0.1:1/test?connect_timeout=1"
    silo = SiloBuilder().use_storage(url).build()
    began = time.monotonic()
    with pytest.raises(StorageUnavailableError) as caught:
        await silo.start()
    assert time.monotonic() - began < 5
    message = str(caught.value)
    assert "secret" not in message
    assert "secret" not in repr(caught.value)
    assert "postgresql://u:***@127.0.0.1:1/test" in message


# -- 3. a graceful stop hands the lease over at once -------------------------------------


async def test_graceful_stop_hands_the_lease_over_at_once(
    pg_url: str, tmp_path: Path, silos: list[SiloProcess]
) -> None:
    silos.extend(SiloProcess(pg_url, tmp_path, lease_ttl=10, dead_after=5) for _ in range(2))
    async with JobClient.connect(pg_url, jobs=[LongOnFirstAttempt]) as client:
        await until(lambda: _gte(active_silos(client), 2), "two silos to join", 15)
        await client.schedule(LongOnFirstAttempt, job_id="long", trigger=Once(delay=timedelta(0)))
        await until(lambda: ledger(tmp_path / "long.log"), "the first attempt", 15)
        first_pid = ledger(tmp_path / "long.log")[0][3]
        stopping = next(s for s in silos if s.pid == first_pid)
        stopping.terminate()
        sent = time.monotonic()
        await until(
            lambda: any(e[0] == "done" for e in ledger(tmp_path / "long.log")),
            "the run to finish on the other silo",
            15,
        )
        took = time.monotonic() - sent
        run = await client.wait("long", timeout=10)
        assert stopping.proc.wait(10) == 0, stopping.stderr()
        statuses = {s.pid: s.status for s in await client.silos()}
    assert run.stage is RunStage.COMPLETED and run.attempt == 2
    done = ledger(tmp_path / "long.log")[-1]
    assert done[:3] == ["done", run.run_id, "2"] and done[3] != first_pid
    assert took < 5, f"the run moved {took:.1f}s after SIGTERM (lease_ttl is 10s)"
    assert statuses[int(first_pid)] == "stopped", statuses
