"""``anu-jobs next``: a job's (or a cron expression's) next fire times, computed by the
triggers' own ``next_fire``, in the trigger's zone and in UTC. It registers on the
``anu-jobs`` app when imported."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer

from anu_jobs.cli import render
from anu_jobs.cli.app import (
    EPILOG,
    EXIT_BAD_INPUT,
    JsonOption,
    UrlOption,
    _print_json,
    _read,
    _settings,
    app,
    errors,
    fail,
    out,
)
from anu_jobs.clock import SystemClock
from anu_jobs.grain import JobStage, JobStatus
from anu_jobs.hosting import JobClient
from anu_jobs.triggers import Cron, Trigger

__all__ = ["upcoming"]


def _fires(trigger: Trigger, after: datetime, rank: int) -> Iterator[tuple[datetime, int, Trigger]]:
    # ``rank`` orders equal times by trigger, so the merge never compares two triggers.
    at = trigger.next_fire(after)
    while at is not None:
        yield at, rank, trigger
        at = trigger.next_fire(at)


def upcoming(
    triggers: Sequence[Trigger], after: datetime, count: int
) -> list[tuple[datetime, Trigger]]:
    """The first ``count`` fire times strictly after ``after`` of all ``triggers``
    together, in time order, each with the trigger that makes it."""
    merged = heapq.merge(*(_fires(t, after, rank) for rank, t in enumerate(triggers)))
    found: list[tuple[datetime, Trigger]] = []
    for at, _, trigger in merged:
        found.append((at, trigger))
        if len(found) >= count:
            break
    return found


def _parse_after(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(
            f"--after {text!r} is not an ISO 8601 time, such as 2030-03-30T00:00:00Z",
            EXIT_BAD_INPUT,
        )
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@app.command("next", epilog=EPILOG)
def next_cmd(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(help="The job's id (or use --cron).")] = None,
    cron: Annotated[
        str | None,
        typer.Option(help="A cron expression to try instead of a job's triggers."),
    ] = None,
    tz: Annotated[
        str | None, typer.Option(help="With --cron: its time zone (default UTC).")
    ] = None,
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many fire times.")] = 10,
    after: Annotated[
        str | None,
        typer.Option(
            help="Start after this time (ISO 8601; UTC unless it has an offset). Default: now."
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """The next fire times of a job, or of --cron, in its zone and in UTC.

    Each time is computed by the trigger itself and shown in its zone
    (a cron's --tz, else UTC) and in UTC: check a cron expression and
    daylight saving before trusting it. For example
    anu-jobs next --cron "30 2 * * *" --tz Europe/Zurich
    --after 2030-03-30T00:00:00Z shows 03:00 on the spring-forward day.
    """
    if (job_id is None) == (cron is None):
        fail("give a job id or --cron EXPR (one of them)", EXIT_BAD_INPUT)
    if tz is not None and cron is None:
        fail("--tz goes with --cron; a job's cron triggers carry their own zone", EXIT_BAD_INPUT)
    start = _parse_after(after) if after is not None else None
    note = None
    if cron is not None:
        with errors():
            triggers: list[Trigger] = [Cron(cron, tz=tz or "UTC")]
        start = start or SystemClock().now()
    else:
        assert job_id is not None
        settings = _settings(ctx, url)

        async def fetch(client: JobClient) -> tuple[JobStatus, datetime]:
            return await client.get(job_id), client.clock.now()

        status, now = _read(settings.url, fetch)
        triggers = list(status.triggers)
        start = start or now
        if status.stage is not JobStage.ACTIVE:
            note = f"{job_id} is {status.stage.value}: these are its triggers' times, not plans"
    with errors():
        fires = upcoming(triggers, start, count)
    if as_json:
        _print_json([render.fire_json(at, trigger) for at, trigger in fires])
        return
    if note is not None:
        out.print(render.safe(note), style="yellow", highlight=False, markup=False)
    if not fires:
        described = ", ".join(t.describe() for t in triggers) or "no trigger"
        out.print(f"no fire after {render.iso(start)} ({described})", highlight=False, markup=False)
        return
    out.print(render.fires_table(fires))
