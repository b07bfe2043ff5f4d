"""Rendering of job status and run history: rich tables for people, dicts for ``--json``.

Every function here is pure: it takes :class:`~anu_jobs.JobStatus` / :class:`~anu_jobs.RunInfo`
values and the time to render them against, and returns a renderable, a string or a dict.

Text that users or jobs wrote (ids, type names, reasons, error messages) is never read as
rich markup, and its control characters are shown escaped (``\x1b``), so a job id cannot
break a table or send escape sequences to the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from anu_jobs.grain import JobStage, JobStatus, Progress, RunInfo, RunStage
from anu_jobs.model import ErrorInfo
from anu_jobs.storage import SiloInfo
from anu_jobs.triggers import Cron, Trigger

__all__ = [
    "duration",
    "fire_json",
    "fires_table",
    "iso",
    "job_json",
    "job_view",
    "jobs_table",
    "live_table",
    "progress_bar",
    "run_json",
    "runs_view",
    "safe",
    "silo_json",
    "silos_table",
    "snapshot_lines",
    "stamp",
    "when",
    "zone_of",
]

DASH = "-"

# C0 and C1 controls, DEL, and the bidirectional overrides and isolates that can make a
# line read other than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_RUN_STYLES: dict[RunStage, str] = {
    RunStage.SCHEDULED: "cyan",
    RunStage.RUNNING: "bold blue",
    RunStage.RETRYING: "yellow",
    RunStage.COMPENSATING: "magenta",
    RunStage.COMPLETED: "green",
    RunStage.FAILED: "bold red",
    RunStage.COMPENSATED: "magenta",
    RunStage.CANCELLED: "red",
    RunStage.SKIPPED: "dim",
}
_JOB_STYLES: dict[JobStage, str] = {
    JobStage.ACTIVE: "green",
    JobStage.PAUSED: "yellow",
    JobStage.FINISHED: "dim",
    JobStage.CANCELLED: "red",
}


# -- values ----------------------------------------------------------------------------


def safe(text: str) -> str:
    """``text`` with control and bidi-override characters escaped (``\\x1b``)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _plain(text: str, style: str = "") -> Text:
    """User or job text as a cell: escaped (see :func:`safe`), never parsed as markup."""
    return Text(safe(text), style=style)


def iso(value: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 with a ``Z`` for UTC; None stays None."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def duration(delta: timedelta) -> str:
    """A short human duration: ``0.4s``, ``12s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    seconds = abs(delta.total_seconds())
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def stamp(value: datetime | None, now: datetime, *, ms: bool = False) -> str:
    """``11:09:16`` (``11:09:16.042`` with ``ms``) today, else with the date, in UTC."""
    if value is None:
        return DASH
    text = value.strftime("%H:%M:%S" if value.date() == now.date() else "%Y-%m-%d %H:%M:%S")
    return f"{text}.{value.microsecond // 1000:03d}" if ms else text


def when(value: datetime | None, now: datetime) -> str:
    """``11:09:16 (in 2.0s)`` or ``2026-11-27 08:00:00 (1d3h ago)``, in UTC."""
    if value is None:
        return DASH
    delta = value - now
    rel = f"in {duration(delta)}" if delta >= timedelta(0) else f"{duration(delta)} ago"
    return f"{stamp(value, now)} ({rel})"


def progress_bar(progress: Progress | None, width: int = 12) -> Text:
    """``██████░░░░░░  50% half way`` (empty when there is no progress)."""
    if progress is None:
        return Text("")
    fraction = min(max(progress.fraction, 0.0), 1.0)
    full = round(fraction * width)
    bar = Text("█" * full, style="blue") + Text("░" * (width - full), style="dim")
    bar.append(f" {fraction:4.0%}")
    if progress.message:
        bar.append(f" {safe(progress.message)}", style="dim")
    return bar


def _stage(stage: RunStage | JobStage | None) -> Text:
    if stage is None:
        return Text(DASH, style="dim")
    if isinstance(stage, RunStage):
        return Text(stage.value, style=_RUN_STYLES[stage])
    return Text(stage.value, style=_JOB_STYLES[stage])


def _run_cell(run: RunInfo | None) -> Text:
    if run is None:
        return Text(DASH, style="dim")
    text = _stage(run.stage)
    if run.attempt > 1:
        text.append(f" #{run.attempt}")
    if run.progress is not None and not run.done:
        text.append(" ")
        text.append_text(progress_bar(run.progress))
    return text


def _error(error: ErrorInfo | None) -> str:
    return safe(f"{error.type}: {error.message}") if error is not None else ""


# -- tables ----------------------------------------------------------------------------


def jobs_table(jobs: Sequence[JobStatus], now: datetime) -> Table:
    """The ``anu-jobs jobs`` table: id, type, stage, next fire, last run and when it ended."""
    table = Table(title=f"{len(jobs)} job(s)", title_justify="left", expand=False)
    for name in ("job id", "type", "stage", "next fire (UTC)", "last run", "finished (UTC)"):
        table.add_column(name, no_wrap=name in ("job id", "type", "stage", "last run"))
    for job in jobs:
        last = job.last_run
        table.add_row(
            _plain(job.job_id),
            _plain(job.job_type),
            _stage(job.stage),
            when(job.next_fire_at, now),
            _stage(last.stage if last else None),
            when(last.finished_at if last else None, now),
        )
    return table


def live_table(jobs: Sequence[JobStatus], run_counts: Mapping[str, int], now: datetime) -> Table:
    """The demo's live table: the jobs table with the current run and a run count."""
    table = Table(expand=False)
    for name in ("job id", "type", "stage", "next fire", "current run", "last run", "runs"):
        table.add_column(name, no_wrap=name != "current run")
    for job in jobs:
        table.add_row(
            _plain(job.job_id),
            _plain(job.job_type),
            _stage(job.stage),
            f"in {duration(job.next_fire_at - now)}" if job.next_fire_at else DASH,
            _run_cell(job.current_run),
            _stage(job.last_run.stage if job.last_run else None),
            str(run_counts.get(job.job_id, 0)),
        )
    return table


def snapshot_lines(
    jobs: Sequence[JobStatus], run_counts: Mapping[str, int], now: datetime
) -> list[str]:
    """The demo's status as plain lines, for output that is not a terminal."""
    lines = []
    for job in jobs:
        cur = job.current_run
        current = DASH
        if cur is not None:
            current = cur.stage.value
            if cur.progress is not None and not cur.done:
                current += f" {cur.progress.fraction:.0%}"
        nxt = f"in {duration(job.next_fire_at - now)}" if job.next_fire_at else DASH
        last = job.last_run.stage.value if job.last_run else DASH
        lines.append(
            f"  {safe(job.job_id):<14} {job.stage.value:<9} next={nxt:<8} current={current:<12} "
            f"last={last:<11} runs={run_counts.get(job.job_id, 0)}"
        )
    return lines


def job_view(job: JobStatus, runs: Sequence[RunInfo], now: datetime) -> RenderableType:
    """``anu-jobs show``: triggers, stage and reason, next fire, current run, recent runs."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("job", _plain(f"{job.job_id} ({job.job_type})"))
    stage = _stage(job.stage)
    if job.reason and not job.quarantined:
        stage.append(f"  {safe(job.reason)}", style="dim")
    head.add_row("stage", stage)
    if job.quarantined:
        head.add_row("quarantined", _plain(job.reason or "its stored state cannot be read", "red"))
        head.add_row("", _plain("no silo runs it; delete it and schedule it again", "dim"))
    gone = job.last_run.error if job.last_run is not None else None
    if gone is not None and gone.type == "UnknownJobTypeError":
        head.add_row(
            "problem",
            _plain(
                f"no silo that ran it has the job type {job.job_type!r} registered, so its "
                "runs fail: register the class with the silo, or delete the job",
                "red",
            ),
        )
    head.add_row("triggers", ", ".join(t.describe() for t in job.triggers) or DASH)
    head.add_row("next fire", when(job.next_fire_at, now))
    cur = job.current_run
    if cur is not None:
        line = _stage(cur.stage)
        line.append(f"  attempt {cur.attempt}  {safe(cur.run_id)}  ")
        line.append_text(progress_bar(cur.progress, width=20))
        head.add_row("current run", line)
    else:
        head.add_row("current run", DASH)
    head.add_row("created", when(job.created_at, now))
    head.add_row("updated", when(job.updated_at, now))
    if not runs:
        return Group(head, Text("no runs yet", style="dim"))
    return Group(head, Text(""), _runs_table(runs, now))


def _runs_table(runs: Sequence[RunInfo], now: datetime) -> Table:
    table = Table(title=f"last {len(runs)} run(s), newest first", title_justify="left")
    for name in ("run id", "stage", "att.", "scheduled", "started", "finished", "error"):
        table.add_column(name, no_wrap=name != "error", overflow="fold")
    for run in runs:
        table.add_row(
            _plain(run.run_id),
            _stage(run.stage),
            str(run.attempt),
            stamp(run.scheduled_for, now),
            stamp(run.started_at, now),
            stamp(run.finished_at, now),
            Text(_error(run.error), style="red"),
        )
    return table


def runs_view(runs: Sequence[RunInfo], now: datetime) -> RenderableType:
    """``anu-jobs runs``: each run with its stage timeline and errors, newest first."""
    if not runs:
        return Text("no runs yet", style="dim")
    parts: list[RenderableType] = []
    for run in runs:
        title = Text(f"{safe(run.run_id)}  ", style="bold")
        title.append_text(_stage(run.stage))
        title.append(f"  attempt {run.attempt}  ({safe(run.trigger) or DASH})", style="dim")
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("at (UTC)", no_wrap=True)
        table.add_column("stage", no_wrap=True)
        table.add_column("reason", overflow="fold")
        for tr in run.transitions:
            table.add_row(stamp(tr.at, now, ms=True), _stage(tr.stage), _plain(tr.reason or ""))
        parts.append(table)
        if run.error is not None:
            parts.append(Text(f"  error: {_error(run.error)}", style="red"))
        if run.compensation_error is not None:
            parts.append(
                Text(f"  compensation error: {_error(run.compensation_error)}", style="red")
            )
        parts.append(Text(""))
    return Group(*parts)


def silos_table(silos: Sequence[SiloInfo], now: datetime) -> Table:
    """``anu-jobs silos``: each silo with its host, pid, status and last heartbeat."""
    table = Table(title=f"{len(silos)} silo(s)", title_justify="left", expand=False)
    for name in ("silo id", "host", "pid", "status", "started (UTC)", "heartbeat (UTC)"):
        table.add_column(name, no_wrap=True)
    styles = {"active": "green", "stopping": "yellow", "stopped": "dim", "dead": "bold red"}
    for silo in silos:
        table.add_row(
            _plain(silo.silo_id),
            _plain(silo.host),
            str(silo.pid),
            Text(silo.status, style=styles.get(silo.status, "")),
            stamp(silo.started_at, now),
            when(silo.heartbeat_at, now),
        )
    return table


def zone_of(trigger: Trigger) -> str:
    """The zone a trigger's fire times are best read in: a cron's own, else UTC."""
    return trigger.tz if isinstance(trigger, Cron) else "UTC"


def _local(at: datetime, trigger: Trigger) -> datetime:
    return at.astimezone(trigger.zone) if isinstance(trigger, Cron) else at


def fires_table(fires: Sequence[tuple[datetime, Trigger]]) -> Table:
    """``anu-jobs next``: each fire time in its trigger's zone (with the UTC offset and
    the zone's abbreviation, so a daylight-saving change shows) and in UTC."""
    table = Table(title=f"next {len(fires)} fire(s)", title_justify="left", expand=False)
    for name in ("#", "local time", "zone", "UTC", "trigger"):
        table.add_column(name, no_wrap=name != "trigger")
    for n, (at, trigger) in enumerate(fires, 1):
        local = _local(at, trigger)
        table.add_row(
            str(n),
            local.strftime("%a %Y-%m-%d %H:%M:%S %Z (%z)"),
            zone_of(trigger),
            at.strftime("%Y-%m-%d %H:%M:%SZ"),
            trigger.describe(),
        )
    return table


# -- JSON ------------------------------------------------------------------------------


def _error_json(error: ErrorInfo | None) -> dict[str, str] | None:
    return None if error is None else {"type": error.type, "message": error.message}


def run_json(run: RunInfo, *, transitions: bool = True) -> dict[str, Any]:
    """A run as JSON-ready data (times as ISO strings)."""
    data: dict[str, Any] = {
        "run_id": run.run_id,
        "job_id": run.job_id,
        "stage": run.stage.value,
        "attempt": run.attempt,
        "trigger": run.trigger,
        "scheduled_for": iso(run.scheduled_for),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "progress": None
        if run.progress is None
        else {"fraction": run.progress.fraction, "message": run.progress.message},
        "error": _error_json(run.error),
        "compensation_error": _error_json(run.compensation_error),
        "silo_id": run.silo_id,
    }
    if transitions:
        data["transitions"] = [
            {"stage": t.stage.value, "at": iso(t.at), "reason": t.reason} for t in run.transitions
        ]
    return data


def job_json(job: JobStatus, *, transitions: bool = True) -> dict[str, Any]:
    """A job's status as JSON-ready data (times as ISO strings); without ``transitions``
    its runs leave out their stage timelines."""
    cur, last = job.current_run, job.last_run
    return {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "stage": job.stage.value,
        "reason": job.reason,
        "quarantined": job.quarantined,
        "triggers": [t.describe() for t in job.triggers],
        "next_fire_at": iso(job.next_fire_at),
        "current_run": None if cur is None else run_json(cur, transitions=transitions),
        "last_run": None if last is None else run_json(last, transitions=transitions),
        "params": job.params,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
    }


def fire_json(at: datetime, trigger: Trigger) -> dict[str, Any]:
    """A fire time as JSON-ready data: UTC, local (ISO with offset), zone, trigger."""
    return {
        "at": iso(at),
        "local": _local(at, trigger).isoformat(),
        "zone": zone_of(trigger),
        "trigger": trigger.describe(),
    }


def silo_json(silo: SiloInfo) -> dict[str, Any]:
    """A silo as JSON-ready data."""
    return {
        "silo_id": silo.silo_id,
        "host": silo.host,
        "pid": silo.pid,
        "status": silo.status,
        "started_at": iso(silo.started_at),
        "heartbeat_at": iso(silo.heartbeat_at),
        "generation": silo.generation,
    }
