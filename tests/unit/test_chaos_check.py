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
