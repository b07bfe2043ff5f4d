"""The chaos soak's verdict on a run compensated twice: explained by a fault on the silo
that began compensating first, even when that silo (frozen mid-compensation) finished
after the silo that took the job over."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from chaos.check import FaultEvent, PlannedJob, SoakData, StoredRun, check, run_id
from chaos.ledger import Entry

AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
T = AT.timestamp()
RID = run_id("doomed-1", AT)


def _entry(wall: float, event: str, kind: str, attempt: int, pid: int, outcome: str) -> Entry:
    return Entry(wall, event, kind, RID, attempt, f"silo-{pid}", pid, outcome, 0.0, "-")


def _data(faults: list[FaultEvent]) -> SoakData:
    ledger = []
    for attempt in (1, 2, 3):  # every attempt fails: retries spent
        ledger.append(_entry(T + attempt, "begin", "execute", attempt, 100, "-"))
        ledger.append(_entry(T + attempt + 0.2, "end", "execute", attempt, 100, "error"))
    ledger += [
        _entry(T + 4.0, "begin", "compensate", 3, 100, "-"),  # then silo 100 is frozen
        _entry(T + 6.0, "begin", "compensate", 3, 200, "-"),  # silo 200 takes the job
        _entry(T + 6.2, "end", "compensate", 3, 200, "ok"),
        _entry(T + 9.0, "end", "compensate", 3, 100, "ok"),  # silo 100 thaws, finishes
    ]
    job = PlannedJob("doomed-1", "doomed", "Doomed", ("once", AT), max_retries=2)
    run = StoredRun(RID, "doomed-1", "compensated", 3, "silo-200", T, 1, ())
    return SoakData(
        planned={"doomed-1": job},
        scheduled_at=AT - timedelta(seconds=10),
        cutoff=AT + timedelta(seconds=30),
        horizon=AT + timedelta(seconds=40),
        job_stages={"doomed-1": "finished"},
        runs={RID: run},
        ledger=ledger,
        torn_lines=0,
        faults=faults,
        cancels=[],
        exits=[],
        log_findings=Counter(),
        recovery=6.0,
        late_bound=2.0,
    )


def test_a_freeze_of_the_first_compensating_silo_explains_a_second_compensation() -> None:
    freeze = FaultEvent("freeze", T + 4.1, T + 8.9, frozenset({100}))
    report = check(_data([freeze]))
    assert "compensated more than once without a fault" not in report.violations


def test_a_second_compensation_with_no_fault_is_a_violation() -> None:
    report = check(_data([]))
    assert "compensated more than once without a fault" in report.violations


ONCE = run_id("once-1", AT)


def _stepped(faults: list[FaultEvent]) -> SoakData:
    """A one-time job whose attempt began 10 ms after its time in real time, on a silo
    whose clock reads 0.38 s behind by then: 0.37 s early on that clock."""
    ledger = [
        Entry(T + 0.01, "begin", "execute", ONCE, 1, "silo-100", 100, "-", -0.38, "-"),
        Entry(T + 0.2, "end", "execute", ONCE, 1, "silo-100", 100, "ok", -0.38, "-"),
    ]
    data = _data(faults)
    data.planned = {"once-1": PlannedJob("once-1", "once", "Once", ("once", AT))}
    data.job_stages = {"once-1": "finished"}
    data.runs = {ONCE: StoredRun(ONCE, "once-1", "completed", 1, "silo-100", T, 1, ())}
    data.ledger = ledger
    return data


def test_a_begin_early_on_a_clock_set_back_a_moment_before_is_explained() -> None:
    step = FaultEvent("clock", T - 0.005, T - 0.005, None, "silo 1: +0.00s -> -0.38s")
    report = check(_stepped([step]))
    assert "fire executed before its due time" not in report.violations
    assert any("set back a moment before" in line and line.endswith(": 1") for line in report.lines)


def test_a_begin_early_on_its_silos_clock_with_no_step_is_a_violation() -> None:
    report = check(_stepped([]))
    [why] = report.violations["fire executed before its due time"]
    assert "0.37s early on its silo's clock" in why
    late_step = FaultEvent("clock", T + 5.0, T + 5.0, None, "silo 1: +0.00s -> -0.38s")
    assert "fire executed before its due time" in check(_stepped([late_step])).violations
