"""Values as the dashboard shows them (times, durations, stages), and its links.

Everything here is pure and returns plain strings; the templates escape them. Links are
built from the app's ``root_path``, so the dashboard works when mounted under a prefix.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from anu_jobs import JobStage, Progress, RunInfo, RunStage

__all__ = [
    "DASH",
    "Links",
    "compensation_outcome",
    "duration",
    "iso",
    "parse_time",
    "percent",
    "pretty_json",
    "relative",
    "stage_class",
    "stamp",
    "time_key",
]

DASH = "\u2013"  # an en dash


def iso(value: datetime | None) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second; empty for None."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_key(value: datetime) -> str:
    """A time exact to the microsecond, for pagination keys (``before=``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time; naive means UTC. Raises ValueError on anything else."""
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def duration(delta: timedelta | None) -> str:
    """A short human duration: ``0.4s``, ``12s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    if delta is None:
        return DASH
    seconds = abs(delta.total_seconds())
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def stamp(value: datetime | None, now: datetime, *, ms: bool = False) -> str:
    """``11:09:16`` today (``11:09:16.042`` with ``ms``), else with the date; UTC."""
    if value is None:
        return DASH
    value = value.astimezone(UTC)
    text = value.strftime("%H:%M:%S" if value.date() == now.date() else "%Y-%m-%d %H:%M:%S")
    return f"{text}.{value.microsecond // 1000:03d}" if ms else text


def relative(value: datetime | None, now: datetime) -> str:
    """``in 2.0s`` or ``3m05s ago``; empty for None."""
    if value is None:
        return ""
    delta = value - now
    return f"in {duration(delta)}" if delta >= timedelta(0) else f"{duration(delta)} ago"


def percent(progress: Progress | None) -> int:
    """A run's progress as a whole percentage, clamped to 0..100."""
    if progress is None:
        return 0
    return round(min(max(progress.fraction, 0.0), 1.0) * 100)


def pretty_json(value: Any) -> str:
    """Params as indented JSON (the template escapes it)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compensation_outcome(run: RunInfo) -> str | None:
    """What compensation did for this run, or None when it never compensated."""
    if not any(t.stage is RunStage.COMPENSATING for t in run.transitions):
        return None
    if run.stage is RunStage.COMPENSATED:
        return "the job's compensate() completed"
    if run.compensation_error is not None:
        return "compensate() failed too (see the compensation error)"
    if run.stage is RunStage.COMPENSATING:
        return "compensate() is running"
    return f"ended {run.stage.value}"


def stage_class(stage: RunStage | JobStage | str | None) -> str:
    """The CSS class of a stage badge."""
    if stage is None:
        return "stage stage-none"
    value = stage.value if isinstance(stage, RunStage | JobStage) else str(stage)
    return f"stage stage-{value}"


class Links:
    """Every URL the dashboard renders, relative to where the app is mounted."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.home = self.prefix + "/"
        self.silos = self.prefix + "/silos"
        self.login = self.prefix + "/login"
        self.logout = self.prefix + "/logout"

    def overview(self, **query: str | int | None) -> str:
        return self._with(self.home, query)

    def static(self, name: str) -> str:
        return f"{self.prefix}/static/{quote(name)}"

    def jobs(self, **query: str | int | None) -> str:
        return self._with(self.prefix + "/jobs", query)

    def job(self, job_id: str, **query: str | int | None) -> str:
        # One path segment, slashes and all escaped. A segment of only dots would be
        # resolved away by the browser, so such ids go in the query string.
        if job_id.strip(".") == "":
            return self._with(self.prefix + "/job", {"id": job_id, **query})
        return self._with(f"{self.prefix}/jobs/{quote(job_id, safe='')}", query)

    def action(self, action: str, job_id: str | None = None) -> str:
        return self._with(f"{self.prefix}/action/{quote(action)}", {"job": job_id})

    def login_then(self, next_path: str) -> str:
        return self._with(self.login, {"next": next_path})

    @staticmethod
    def _with(path: str, query: dict[str, str | int | None]) -> str:
        items = {k: v for k, v in query.items() if v is not None and v != ""}
        return f"{path}?{urlencode(items)}" if items else path
