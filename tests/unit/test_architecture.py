"""The public surface is what was meant, and imports point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import anu_jobs

PACKAGE = Path(anu_jobs.__file__).parent

# Each layer may import only from the layers listed for it (and from the shared leaves:
# errors, clock, _json, _time, _gc).
ALLOWED = {
    "triggers": set(),
    "model": {"triggers"},
    "storage": set(),
    "runtime": {"storage"},
    "grain": {"model", "triggers", "runtime", "storage"},
    "hosting": {"grain", "model", "triggers", "runtime", "storage"},
    "testing": {"storage"},
    # the operator surface: above hosting, never below it
    "metrics": {"hosting", "grain", "model", "runtime", "storage"},
    "dashboard": {"hosting", "grain", "model", "triggers", "storage"},
    "cli": {"hosting", "grain", "model", "triggers", "storage", "dashboard", "metrics"},
}
LEAVES = {"errors", "clock", "_json", "_time", "_gc"}


def test_public_api_is_the_intended_one() -> None:
    assert anu_jobs.__all__ == sorted(anu_jobs.__all__)
    assert set(anu_jobs.__all__) == {
        "AnuJobsError", "CancellationToken", "Clock", "ConfigurationError", "Cron",
        "DuplicateJobError", "ErrorInfo", "EtagConflictError", "Every", "InvalidParamsError",
        "InvalidScheduleError", "Job", "JobCancelledError", "JobClient", "JobContext",
        "JobDefinitionError", "JobNotFoundError", "JobSpec", "JobStage", "JobStateError",
        "JobStatus", "JobTimeoutError", "LeaseLostError", "Manual", "MisfirePolicy", "Once",
        "Progress", "RetryPolicy", "RunInfo", "RunStage", "Silo", "SiloBuilder", "StorageError",
        "StorageUnavailableError", "SyncJobClient", "SystemClock", "Transition", "Trigger",
        "UnknownJobTypeError", "WaitTimeoutError", "__version__",
    }  # fmt: skip
    for name in anu_jobs.__all__:
        assert hasattr(anu_jobs, name), name


def test_every_error_derives_from_the_root() -> None:
    from anu_jobs import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), anu_jobs.AnuJobsError), name


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            continue  # relative imports stay inside their own package
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m.split(".")[1] for m in found if m.startswith("anu_jobs.")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_down_the_layers(layer: str) -> None:
    allowed = ALLOWED[layer] | LEAVES | {layer}
    for path in (PACKAGE / layer).rglob("*.py"):
        wrong = _imports(path) - allowed
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)} above its layer"
