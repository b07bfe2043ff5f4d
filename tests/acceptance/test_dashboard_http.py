"""The dashboard over HTTP (in process, through httpx), against a real silo on SQLite."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from anu_jobs import (
    ConfigurationError,
    Every,
    JobClient,
    JobNotFoundError,
    JobStage,
    Once,
    RunStage,
    Silo,
)
from anu_jobs.dashboard import create_app
from anu_jobs.dashboard.charts import run_buckets, runs_chart
from tests.acceptance.conftest import (
    TOKEN,
    XSS,
    XSS_ESCAPED,
    Failing,
    Quick,
    act,
    assert_no_traceback,
    csrf_of,
    http,
    login,
)
from tests.conftest import eventually

# -- pages -------------------------------------------------------------------------------


async def test_every_page_renders_what_the_store_holds(dashboard_silo: Silo) -> None:
    silo = dashboard_silo
    async with http(create_app(silo.client, token=TOKEN)) as h:
        page = await h.get("/")
        assert page.status_code == 200
        assert "Overview" in page.text and '<svg class="chart"' in page.text
        assert "2 runs ended" in page.text  # quick completed, failing compensated
        assert "1<small>/1</small>" in page.text  # one silo, alive
        assert "bar bar-completed" in page.text and "bar bar-compensated" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]

        page = await h.get("/jobs")
        assert page.status_code == 200
        for job_id, job_type in (("quick", "Quick"), ("failing", "Failing"), ("slow", "Slow")):
            assert f'href="/jobs/{job_id}"' in page.text and job_type in page.text

        page = await h.get("/jobs/quick")
        assert page.status_code == 200
        assert "manual" in page.text  # the trigger, described
        assert "&#34;n&#34;: 1" in page.text  # params, as escaped JSON
        assert "stage-completed" in page.text and "attempt 1 on silo" in page.text
        assert 'http-equiv="refresh"' not in page.text  # nothing in flight

        page = await h.get("/jobs/failing")
        assert page.status_code == 200
        assert '<details class="error">' in page.text and "<pre>Traceback" in page.text
        assert "Compensation: the job&#39;s compensate() completed" in page.text
        assert "retries spent, compensating" in page.text  # the timeline's reasons

        page = await h.get("/silos")
        assert page.status_code == 200 and silo.silo_id in page.text
        assert '<span class="ok">yes</span>' in page.text

        health = await h.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"ok": True, "store": True, "silos_alive": 1, "silos": 1}

        css = await h.get("/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_unknown_pages_and_bad_queries_get_error_pages(dashboard_silo: Silo) -> None:
    async with http(create_app(dashboard_silo.client)) as h:
        missing = await h.get("/jobs/no-such-job")
        assert missing.status_code == 404 and "No such job" in missing.text
        assert_no_traceback(missing)
        nowhere = await h.get("/no/such/page")
        assert nowhere.status_code == 404
        assert_no_traceback(nowhere)
        for path in ("/jobs?stage=bogus", "/jobs?limit=x", "/jobs/quick?before=yesterday"):
            bad = await h.get(path)
            assert bad.status_code == 400, path
            assert_no_traceback(bad)


async def test_an_unreachable_store_is_a_503_page(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path}/missing/dir/jobs.db")
    async with app.router.lifespan_context(app), http(app) as h:
        for path in ("/", "/jobs", "/jobs/x", "/silos"):
            page = await h.get(path)
            assert page.status_code == 503, path
            assert "Store unavailable" in page.text
            assert_no_traceback(page)
        health = await h.get("/healthz")
        assert health.status_code == 503
        assert health.json()["store"] is False


async def test_a_storage_url_is_opened_by_the_app(dashboard_silo: Silo, dashboard_url: str) -> None:
    app = create_app(dashboard_url)
    async with app.router.lifespan_context(app), http(app) as h:
        page = await h.get("/jobs/quick")
        assert page.status_code == 200 and "stage-completed" in page.text
    # Mounted apps get no lifespan: the client is opened at the first request instead.
    async with http(create_app(dashboard_url)) as h:
        assert (await h.get("/jobs")).status_code == 200


async def test_overview_shows_late_schedules_and_no_silo(dashboard_url: str) -> None:
    async with JobClient.connect(dashboard_url, jobs=[Quick]) as client:
        due = client.clock.now() - timedelta(minutes=5)
        await client.schedule(Quick, job_id="overdue-1", trigger=Once(at=due))
        app = create_app(client, late_threshold=timedelta(seconds=60))
        async with http(app) as h:
            page = await h.get("/")
        assert page.status_code == 200
        assert "1 job due more than 1m00s ago" in page.text
        assert 'href="/jobs/overdue-1"' in page.text and "5m0" in page.text
        assert "0<small>/0</small>" in page.text


async def test_jobs_are_filtered_searched_and_paged(dashboard_silo: Silo) -> None:
    client = dashboard_silo.client
    for i in range(7):
        await client.schedule(Quick, job_id=f"page-{i}", trigger=Every(timedelta(hours=1)))
    await client.cancel("page-3")
    async with http(create_app(client)) as h:
        seen: list[str] = []
        url = "/jobs?q=page-&limit=3"
        while url:
            page = await h.get(url)
            assert page.status_code == 200
            ids = [f"page-{i}" for i in range(7) if f'href="/jobs/page-{i}"' in page.text]
            assert len(ids) <= 3
            seen += ids
            marker = 'rel="next" href="'
            url = (
                page.text.split(marker)[1].split('"')[0].replace("&amp;", "&")
                if marker in page.text
                else ""
            )
        assert seen == [f"page-{i}" for i in range(7)]

        cancelled = await h.get("/jobs?stage=cancelled")
        assert (
            'href="/jobs/page-3"' in cancelled.text and 'href="/jobs/page-4"' not in cancelled.text
        )
        typed = await h.get("/jobs?type=Failing")
        assert 'href="/jobs/failing"' in typed.text and 'href="/jobs/quick"' not in typed.text
        nothing = await h.get("/jobs?q=zzz")
        assert "No jobs match" in nothing.text


async def test_run_history_pages_back_with_before(dashboard_silo: Silo) -> None:
    client = dashboard_silo.client
    for _ in range(24):
        await client.wait("quick", await client.trigger("quick"), timeout=10)
    everything = {r.run_id for r in await client.runs("quick", limit=100)}
    assert len(everything) == 25
    async with http(create_app(client)) as h:
        first = await h.get("/jobs/quick")
        older = first.text.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
        second = await h.get(older)
    assert second.status_code == 200 and "newest runs" in second.text
    shown = [{r for r in everything if r in page.text} for page in (first, second)]
    assert len(shown[0]) == 20 and len(shown[1]) == 5
    assert shown[0] | shown[1] == everything


def test_the_runs_chart_stacks_stages_per_bucket() -> None:
    first = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        (first + timedelta(minutes=3), "completed", 5),
        (first + timedelta(minutes=3), "failed", 1),
        (first + timedelta(minutes=9), "completed", 2),
        (first - timedelta(minutes=1), "failed", 9),  # before the window: left out
    ]
    data = run_buckets(rows, first, 60, timedelta(minutes=1))
    assert data.total == 8 and data.stage_total("failed") == 1
    svg = str(runs_chart(data))
    assert "<title>12:03 UTC: 5 completed, 1 failed</title>" in svg
    assert svg.count('class="bar bar-') == 3
    assert "<title>12:04 UTC: no runs ended</title>" in svg


async def test_awkward_job_ids_have_working_links(dashboard_silo: Silo) -> None:
    client = dashboard_silo.client
    awkward = ["a/b c?d#e&f", "..", ".", "100%", "ünï/cödé"]
    for job_id in awkward:
        await client.schedule(Quick, job_id=job_id)
    async with http(create_app(client)) as h:
        listing = (await h.get("/jobs")).text
        hrefs = re.findall(r'<td><a href="([^"]+)"><code>', listing)
        assert len(hrefs) == len(awkward) + 3
        for href in hrefs:
            page = await h.get(html.unescape(href))
            assert page.status_code == 200, href
        for job_id in awkward:
            assert f"<code>{html.escape(job_id, quote=False)}</code>" in listing, job_id
        assert 'href="/job?id=.."' in listing


# -- limits --------------------------------------------------------------------------------


async def test_oversized_posts_are_refused(dashboard_silo: Silo) -> None:
    async with http(create_app(dashboard_silo.client, token=TOKEN)) as h:
        data = {"csrf_token": csrf_of((await h.get("/login")).text), "token": "x" * 100_000}
        refused = await h.post("/login", data=data)
    assert refused.status_code == 413
    assert_no_traceback(refused)


# -- untrusted text ----------------------------------------------------------------------


async def test_untrusted_text_is_escaped_everywhere(dashboard_silo: Silo) -> None:
    client = dashboard_silo.client
    await client.schedule(Failing, job_id=XSS, params={XSS: XSS})
    run = await client.wait(XSS, await client.trigger(XSS), timeout=10)
    assert run.error is not None and XSS in run.error.message and XSS in run.error.traceback
    job_path = f"/jobs/{quote(XSS, safe='')}"
    async with http(create_app(client, token=TOKEN)) as h:
        await login(h)
        pages = {
            "job": await h.get(job_path),
            "jobs": await h.get("/jobs"),
            "search": await h.get("/jobs", params={"q": XSS}),
            "after": await h.get("/jobs", params={"after": XSS}),
            "flash": await h.get(job_path, params={"done": "trigger", "run": XSS}),
            "confirm": await h.get("/action/cancel", params={"job": XSS}),
            "missing": await h.get(f"/jobs/{quote(XSS + 'x', safe='')}"),
        }
        pages["unconfirmed"] = await act(h, "cancel", XSS, reason=XSS, confirm=False)
    for name, page in pages.items():
        assert XSS not in page.text, name
        assert XSS_ESCAPED in page.text, name
    assert pages["job"].text.count(XSS_ESCAPED) >= 5  # id, params, error, traceback, reasons
    tag = "<img src=x onerror=alert(1)>"
    async with http(create_app(client, token=TOKEN)) as h:
        not_an_action = await h.get(f"/action/{quote(tag, safe='')}", params={"job": "x"})
    assert not_an_action.status_code == 404
    assert tag not in not_an_action.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in not_an_action.text


# -- actions -------------------------------------------------------------------------------


async def test_actions_trigger_cancel_pause_resume_and_delete(dashboard_silo: Silo) -> None:
    client = dashboard_silo.client
    await client.schedule(Quick, job_id="hourly", trigger=Every(timedelta(hours=1)))
    async with http(create_app(client, token=TOKEN)) as h:
        assert (await login(h)).status_code == 303

        runs_before = len(await client.runs("quick"))
        unconfirmed = await act(h, "trigger", "quick", confirm=False)
        assert unconfirmed.status_code == 200 and "Yes, trigger quick" in unconfirmed.text
        assert len(await client.runs("quick")) == runs_before

        done = await act(h, "trigger", "quick")
        assert done.status_code == 303
        page = await h.get(done.headers["location"])
        assert "Triggered run quick@" in page.text
        await eventually(lambda: _count_runs(client, "quick", runs_before + 1), "the triggered run")

        await client.trigger("slow")
        await eventually(lambda: _running(client, "slow"), "slow to be running")
        running = await h.get("/jobs/slow")
        assert 'http-equiv="refresh"' in running.text and "<progress" in running.text
        assert (await act(h, "cancel", "slow", reason="enough")).status_code == 303
        status = await client.get("slow")
        assert status.stage is JobStage.CANCELLED
        run = await client.wait("slow", timeout=10)
        assert run.stage is RunStage.CANCELLED
        page = await h.get("/jobs/slow")
        assert "stage-cancelled" in page.text and "enough" in page.text
        assert 'action="/action/trigger"' not in page.text  # a cancelled job cannot run

        assert (await act(h, "pause", "hourly", reason="maintenance")).status_code == 303
        assert (await client.get("hourly")).stage is JobStage.PAUSED
        assert (await act(h, "resume", "hourly")).status_code == 303
        assert (await client.get("hourly")).stage is JobStage.ACTIVE

        refused = await act(h, "resume", "slow")
        assert refused.status_code == 409 and "cancelled" in refused.text

        deleted = await act(h, "delete", "hourly")
        assert deleted.status_code == 303
        assert deleted.headers["location"] == "/jobs?done=delete&job=hourly"
        with pytest.raises(JobNotFoundError):
            await client.get("hourly")
        assert (await h.get("/jobs/hourly")).status_code == 404


async def _count_runs(client: JobClient, job_id: str, n: int) -> bool:
    runs = await client.runs(job_id)
    return len(runs) >= n and all(r.done for r in runs)


async def _running(client: JobClient, job_id: str) -> bool:
    run = (await client.get(job_id)).current_run
    return run is not None and run.stage is RunStage.RUNNING and run.progress is not None


# -- embedding -----------------------------------------------------------------------------


async def test_mounted_under_a_prefix(dashboard_silo: Silo) -> None:
    parent = Starlette(routes=[Mount("/ops", app=create_app(dashboard_silo.client, token=TOKEN))])
    async with http(parent) as h:
        page = await h.get("/ops/")
        assert page.status_code == 200
        assert 'href="/ops/jobs"' in page.text and 'href="/ops/static/dashboard.css"' in page.text
        assert (await h.get("/ops/static/dashboard.css")).status_code == 200
        assert "Path=/ops" in page.headers["set-cookie"]
        job = await h.get("/ops/jobs/quick")
        assert job.status_code == 200 and 'href="/ops/login?next=%2Fops%2Fjobs%2Fquick"' in job.text
        form = await h.get("/ops/login")
        data = {"csrf_token": csrf_of(form.text), "token": TOKEN, "next": "/ops/jobs/quick"}
        done = await h.post("/ops/login", data=data)
        assert done.headers["location"] == "/ops/jobs/quick"
        job = await h.get("/ops/jobs/quick")
        data = {"csrf_token": csrf_of(job.text), "job": "quick", "confirm": "yes"}
        triggered = await h.post("/ops/action/trigger", data=data)
        assert triggered.status_code == 303
        assert triggered.headers["location"].startswith("/ops/jobs/quick?done=trigger")


async def test_a_metrics_app_is_served_at_metrics(dashboard_silo: Silo) -> None:
    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        body = b"anu_jobs_up 1\n"
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with http(create_app(dashboard_silo.client, metrics_app=metrics)) as h:
        for path in ("/metrics", "/metrics/"):
            response = await h.get(path)
            assert response.status_code == 200 and response.text == "anu_jobs_up 1\n", path


def test_bad_configuration_is_refused() -> None:
    for kwargs in (
        {"token": ""},
        {"basic_auth": ("", "pw")},
        {"basic_auth": ("a:b", "pw")},
        {"late_threshold": timedelta(0)},
    ):
        with pytest.raises(ConfigurationError):
            create_app("memory://x", **kwargs)
    with pytest.raises(ConfigurationError):
        create_app(42)  # type: ignore[arg-type]
