"""``benchmarks/python_floors.py``: every figure measured, every ledger line read."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import python_floors  # benchmarks/ is not a package


def test_every_per_job_cost_is_measured() -> None:
    result = python_floors.measure(300, 2)
    assert set(result) == {"task_us", "json_loads_us", "json_encode_us", "ledger_record_cpu_us"}
    assert all(0 < v < 10_000 for v in result.values()), result
