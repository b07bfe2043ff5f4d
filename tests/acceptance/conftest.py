"""Shared by the dashboard's acceptance tests: sample jobs and a real silo on SQLite."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from starlette.types import ASGIApp

from anu_jobs import Job, JobContext, RetryPolicy, RunStage, Silo, SiloBuilder

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
TOKEN = "dashboard-test-token"


class Quick(Job):
    """Completes at once, after reporting progress."""

    async def execute(self, ctx: JobContext) -> None:
        await ctx.report_progress(1.0, "done")


class Failing(Job):
    """Fails with untrusted-looking text, is retried once, then compensated."""

    retry = RetryPolicy(max_retries=1, initial_delay=timedelta(seconds=0.02))

    async def execute(self, ctx: JobContext) -> None:
        raise ValueError(f"bad input {XSS}")

    async def compensate(self, ctx: JobContext) -> None:
        return None


class Slow(Job):
    """Runs for 20 s, reporting progress, unless it is cancelled."""

    async def execute(self, ctx: JobContext) -> None:
        for step in range(400):
            ctx.cancellation.raise_if_cancelled()
            await ctx.report_progress(step / 400, f"step {step} of 400")
            await asyncio.sleep(0.05)


DASHBOARD_JOBS = (Quick, Failing, Slow)


@pytest.fixture
def dashboard_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/dashboard.db"


@pytest.fixture
async def dashboard_silo(dashboard_url: str) -> AsyncIterator[Silo]:
    """A silo on a SQLite file with ``quick`` and ``failing`` run once each, and ``slow``
    scheduled (manual, not run)."""
    silo = (
        SiloBuilder()
        .use_storage(dashboard_url)
        .use_jobs(*DASHBOARD_JOBS)
        .use_options(drain_timeout=0.5, cancel_grace=timedelta(seconds=1))
        .build()
    )
    async with silo:
        client = silo.client
        await client.schedule(Quick, job_id="quick", params={"n": 1})
        await client.schedule(Failing, job_id="failing")
        await client.schedule(Slow, job_id="slow")
        for job_id in ("quick", "failing"):
            run = await client.wait(job_id, await client.trigger(job_id), timeout=10)
            assert run.stage in (RunStage.COMPLETED, RunStage.COMPENSATED), run
        yield silo


def http(app: ASGIApp, base_url: str = "http://dash.test") -> httpx.AsyncClient:
    """An HTTP client that calls the app in process (and keeps its cookies)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def login(h: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    page = await h.get("/login")
    return await h.post(
        "/login", data={"csrf_token": csrf_of(page.text), "token": token, "next": "/"}
    )


async def act(
    h: httpx.AsyncClient, action: str, job_id: str, reason: str = "", confirm: bool = True
) -> httpx.Response:
    """Post an action the way the job page's form and its confirmation page do."""
    page = await h.get(f"/jobs/{quote(job_id, safe='')}")
    data = {"csrf_token": csrf_of(page.text), "job": job_id, "reason": reason}
    if confirm:
        data["confirm"] = "yes"
    return await h.post(f"/action/{action}", data=data)


def assert_no_traceback(response: httpx.Response) -> None:
    assert "Traceback" not in response.text
    assert response.headers["content-type"].startswith("text/html")
