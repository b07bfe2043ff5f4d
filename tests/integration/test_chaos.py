"""The chaos soak, short (``chaos/soak.py``; the README's "Chaos soak" runs it long).

Real silo processes under seeded faults, a mixed load, and the verdict of
``chaos.check``: no fire lost, one terminal record per run, fencing held (the store's
record is the attempt the ledger shows last), spent retries compensated once, cancels
honoured, re-executions only after faults and always as a new attempt, lateness within
the bound. Below, reproductions of what the soak found (``chaos/repros.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos import repros
from chaos.soak import SoakConfig, run_soak

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
async def test_chaos_soak_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """Three silos (up to five) on the shared server, in a schema of their own: kill -9,
    SIGSTOP past the lease, SIGTERM and restart, joins, clock jumps (the server is shared,
    so it is not restarted: ``python chaos/soak.py`` does that on a server of its own)."""
    cfg = SoakConfig(
        backend="postgres",
        url=pg_url,
        silos=3,
        jobs=400,
        duration=45.0,
        quiet=8.0,
        seed=11,
        faults=("kill", "freeze", "term", "join", "clock"),
        fault_gap=(3.0, 5.0),
        workdir=tmp_path / "soak",
        log=print,
    )
    report = await run_soak(cfg)
    print(report.text())
    assert report.ok, report.text()
    assert int(report.figures["faults"]) >= 6
    assert int(report.figures["fires_executed"]) > 1000


@pytest.mark.timeout(120)
async def test_chaos_soak_on_sqlite_one_silo_killed_and_restarted(tmp_path: Path) -> None:
    """One silo on SQLite, killed (-9) and restarted again and again, also stopped
    gracefully, frozen and its clock jumped; nothing runs while it is down, and all of it
    runs once it is back."""
    cfg = SoakConfig(
        backend="sqlite",
        silos=1,
        max_silos=1,
        jobs=200,
        duration=22.0,
        quiet=6.0,
        seed=5,
        faults=("kill", "kill", "term", "freeze", "clock"),
        fault_gap=(2.0, 4.0),
        workdir=tmp_path / "soak",
        log=print,
    )
    report = await run_soak(cfg)
    print(report.text())
    assert report.ok, report.text()
    assert int(report.figures["faults"]) >= 5


# -- what the soak found -------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_an_attempt_is_on_record_before_its_code_runs() -> None:
    """Found by the soak (then fixed in b1c037e): a save made while an older write of the
    grain was in flight returned with that write, so the job's code ran before its
    attempt was on record, and ran unrecorded when the lease was lost meanwhile."""
    assert await repros.save_before_write() == 0


@pytest.mark.timeout(30)
async def test_a_write_is_the_state_as_it_was_built() -> None:
    assert await repros.torn_write() == 0


@pytest.mark.timeout(30)
async def test_a_silo_that_takes_its_own_job_again_drops_the_old_activation() -> None:
    assert await repros.self_reclaim() == 0


@pytest.mark.timeout(30)
async def test_a_stopping_silo_does_not_spin_on_a_due_retry() -> None:
    assert await repros.stop_spin() == 0


@pytest.mark.timeout(60)
async def test_a_silo_with_a_fast_clock_does_not_kill_the_others(pg_url: str) -> None:
    """Found by the soak: membership compared heartbeats written with each silo's own
    clock, so a silo whose clock ran more than dead_after - heartbeat ahead declared every
    other silo dead at every heartbeat. The store's clock decides now."""
    assert await repros.clock_skew(pg_url) == 0
