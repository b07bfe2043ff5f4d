"""The read pages: overview, jobs, one job, silos, and ``/healthz``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from anu_jobs import JobStage
from anu_jobs.dashboard import charts
from anu_jobs.dashboard.core import dashboard_of
from anu_jobs.dashboard.display import parse_time
from anu_jobs.errors import StorageError
from anu_jobs.storage import SiloInfo

__all__ = ["ALIVE_WITHIN", "healthz", "is_alive", "job", "jobs", "overview", "silos"]

#: A silo is alive when its status is active and it heartbeat this recently (silos
#: heartbeat every second and are declared dead after 5 s by default).
ALIVE_WITHIN = timedelta(seconds=10)
CHART_BUCKET = timedelta(minutes=1)
CHART_BUCKETS = 60
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
RUNS_PER_PAGE = 20
LATE_SHOWN = 10
REFRESH_SECONDS = 2
_JOB_STAGES = tuple(s.value for s in JobStage)


def is_alive(silo: SiloInfo, now: datetime) -> bool:
    """``now``: the store's time, which heartbeats are stamped with."""
    return silo.status == "active" and now - silo.heartbeat_at <= ALIVE_WITHIN


def _bad(request: Request, message: str) -> Response:
    return dashboard_of(request).error(request, 400, "Bad request", message)


def _flash(request: Request) -> str | None:
    """The notice after an action's redirect (fixed texts; the ids are escaped)."""
    done, q = request.query_params.get("done"), request.query_params
    if done == "trigger":
        return f"Triggered run {q.get('run', '')}."
    if done in ("cancel", "pause", "resume"):
        return {"cancel": "Cancelled.", "pause": "Paused.", "resume": "Resumed."}[done]
    if done == "delete":
        return f"Deleted job {q.get('job', '')!r}."
    if done == "logout":
        return "Logged out."
    return None


async def overview(request: Request) -> Response:
    dash = dashboard_of(request)
    client = await dash.client()
    now = client.clock.now()
    counts = await client.stage_counts()
    first = charts.bucket_floor(now, CHART_BUCKET) - (CHART_BUCKETS - 1) * CHART_BUCKET
    rows = await client.run_counts(first, CHART_BUCKET)
    buckets = charts.run_buckets(rows, first, CHART_BUCKETS, CHART_BUCKET)
    silo_list = await client.silos()
    store_now = await client.store_now()
    late_count, late = await client.overdue(dash.late_threshold, limit=LATE_SHOWN)
    context: dict[str, Any] = {
        "now": now,
        "stage_counts": [(s, counts.get(s, 0)) for s in _JOB_STAGES],
        "other_counts": sorted((s, n) for s, n in counts.items() if s not in _JOB_STAGES),
        "job_total": sum(counts.values()),
        "buckets": buckets,
        "silos_alive": sum(is_alive(s, store_now) for s in silo_list),
        "silos_total": len(silo_list),
        "late_count": late_count,
        "late": [(job_id, due, now - due) for job_id, due in late],
        "late_threshold": dash.late_threshold,
        "flash": _flash(request),
    }
    context["nav"] = "overview"
    return dash.render(request, "overview.html", context)


async def jobs(request: Request) -> Response:
    dash = dashboard_of(request)
    q = request.query_params
    stage = q.get("stage") or None
    if stage is not None and stage not in _JOB_STAGES:
        return _bad(request, f"stage must be one of {', '.join(_JOB_STAGES)}.")
    job_type = (q.get("type") or "").strip() or None
    text = (q.get("q") or "").strip() or None
    after = q.get("after") or None
    try:
        limit = min(max(int(q.get("limit", PAGE_SIZE)), 1), MAX_PAGE_SIZE)
    except ValueError:
        return _bad(request, "limit must be a whole number.")
    client = await dash.client()
    now = client.clock.now()
    found = await client.list(
        stage=stage, job_type=job_type, text=text, after=after, limit=limit + 1
    )
    page = found[:limit]
    filters = {"stage": stage, "type": job_type, "q": text}
    context: dict[str, Any] = {
        "now": now,
        "jobs": page,
        "filters": filters,
        "stages": _JOB_STAGES,
        "after": after,
        "next_after": page[-1].job_id if len(found) > limit else None,
        "limit": limit if limit != PAGE_SIZE else None,
        "flash": _flash(request),
    }
    context["nav"] = "jobs"
    return dash.render(request, "jobs.html", context)


async def job(request: Request) -> Response:
    dash = dashboard_of(request)
    links = dash.links(request)
    if "job_id" in request.path_params:
        job_id: str = request.path_params["job_id"]
    else:
        job_id = request.query_params.get("id", "")
    if not job_id:
        return RedirectResponse(links.jobs(), status_code=303)
    before_text = request.query_params.get("before")
    try:
        before = parse_time(before_text) if before_text else None
    except ValueError:
        return _bad(request, "before must be an ISO 8601 time, such as 2030-01-01T00:00:00Z.")
    client = await dash.client()
    now = client.clock.now()
    status = await client.get(job_id)
    found = await client.runs(job_id, limit=RUNS_PER_PAGE + 1, before=before)
    runs = found[:RUNS_PER_PAGE]
    current = status.current_run
    in_flight = current is not None and not current.done
    context: dict[str, Any] = {
        "now": now,
        "job": status,
        "runs": runs,
        "before": before,
        "older": runs[-1].scheduled_for if len(found) > RUNS_PER_PAGE else None,
        "refresh": REFRESH_SECONDS if in_flight and before is None else None,
        "available": _available_actions(status.stage, in_flight),
        "flash": _flash(request),
    }
    context["nav"] = "jobs"
    return dash.render(request, "job.html", context)


def _available_actions(stage: JobStage, in_flight: bool) -> list[str]:
    """The actions that make sense for a job in this stage, in button order."""
    names = []
    if stage is not JobStage.CANCELLED:
        names.append("trigger")
    if stage is JobStage.ACTIVE:
        names.append("pause")
    if stage is JobStage.PAUSED:
        names.append("resume")
    if stage in (JobStage.ACTIVE, JobStage.PAUSED) or in_flight:
        names.append("cancel")
    names.append("delete")
    return names


async def silos(request: Request) -> Response:
    dash = dashboard_of(request)
    client = await dash.client()
    known = await client.silos()
    now = await client.store_now()  # heartbeats are the store's times
    rows = [(s, is_alive(s, now)) for s in known]
    context: dict[str, Any] = {
        "now": now,
        "silos": rows,
        "alive": sum(alive for _, alive in rows),
        "alive_within": ALIVE_WITHIN,
    }
    context["nav"] = "silos"
    return dash.render(request, "silos.html", context)


async def healthz(request: Request) -> Response:
    """``{"ok", "store", "silos_alive", "silos"}``; 503 when the store is unreachable."""
    dash = dashboard_of(request)
    try:
        client = await dash.client()
        known = await client.silos()
        now = await client.store_now()
    except StorageError:
        body: dict[str, bool | int | None] = {
            "ok": False,
            "store": False,
            "silos_alive": None,
            "silos": None,
        }
        return JSONResponse(body, status_code=503, headers={"Cache-Control": "no-store"})
    alive = sum(is_alive(s, now) for s in known)
    body = {"ok": True, "store": True, "silos_alive": alive, "silos": len(known)}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
