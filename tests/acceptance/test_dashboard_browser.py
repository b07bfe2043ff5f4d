"""The dashboard in a real headless Chromium, served by uvicorn, against a real silo.

Screenshots of each page land in ``artifacts/screenshots/`` (gitignored)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from anu_jobs import JobClient, JobStage, RunStage, Silo
from anu_jobs.dashboard import create_app
from tests.acceptance.conftest import TOKEN
from tests.conftest import eventually

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's `chromium` package to run the "
        "dashboard's browser tests",
        allow_module_level=True,
    )

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def served(dashboard_silo: Silo) -> AsyncIterator[str]:
    """The dashboard of ``dashboard_silo`` on a free port of 127.0.0.1, by uvicorn."""
    app = create_app(dashboard_silo.client, token=TOKEN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started, "uvicorn to start serving", timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def _running(client: JobClient, job_id: str) -> bool:
    run = (await client.get(job_id)).current_run
    if run is None or run.stage is not RunStage.RUNNING or run.progress is None:
        return False
    return run.progress.fraction >= 0.05  # far enough for the screenshot to show it


async def test_browse_log_in_trigger_and_cancel(
    served: str, browser: Browser, dashboard_silo: Silo
) -> None:
    client = dashboard_silo.client
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):  # CSP violations land here
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    # Overview, jobs, a job with a failure and its compensation, silos.
    await page.goto(served + "/")
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.locator("svg.chart")).to_be_visible()
    await expect(page.locator(".tile", has_text="silos alive")).to_contain_text("1/1")
    await shot(page, "overview")

    await page.get_by_role("link", name="Jobs", exact=True).click()
    await expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    await expect(page.locator("table.jobs tbody tr")).to_have_count(3)
    await shot(page, "jobs")

    await page.get_by_role("link", name="failing", exact=True).click()
    await expect(page.locator(".compensation")).to_have_text(
        "Compensation: the job's compensate() completed"
    )
    await page.locator("details.error summary").first.click()
    await expect(page.locator("details.error pre").first).to_contain_text("ValueError")
    await shot(page, "job")

    await page.get_by_role("link", name="Silos").click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await shot(page, "silos")

    # Log in from a job page and come back to it.
    await page.goto(served + "/jobs/quick")
    await page.locator(".actions").get_by_role("link", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await shot(page, "login")
    await page.get_by_label("Token").fill(TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(served + "/jobs/quick")
    await expect(page.get_by_text("signed in")).to_be_visible()

    # Trigger, confirm, and see the new run with its stage.
    await page.get_by_role("button", name="Trigger now…").click()
    await expect(page.get_by_role("heading", name="Trigger job quick?")).to_be_visible()
    await shot(page, "confirm")
    await page.get_by_role("button", name="Yes, trigger quick").click()
    flash = page.locator(".flash")
    await expect(flash).to_contain_text("Triggered run quick@")
    run_id = (await flash.inner_text()).strip().removeprefix("Triggered run ").removesuffix(".")
    newest = page.locator("article.run").first
    await expect(newest.locator(".run-id")).to_have_text(run_id)
    await expect(newest.locator("header .stage")).to_have_text("completed")
    await shot(page, "job-triggered")

    # Cancel a long job while it runs.
    await client.trigger("slow")
    await eventually(lambda: _running(client, "slow"), "the slow job to run")
    await page.goto(served + "/jobs/slow")
    await expect(page.locator("progress").first).to_be_visible()
    await shot(page, "job-running")
    await page.get_by_role("button", name="Cancel…").click()
    await expect(page.get_by_role("heading", name="Cancel job slow?")).to_be_visible()
    await page.get_by_label("Reason").fill("stopped from the browser test")
    await page.get_by_role("button", name="Yes, cancel slow").click()
    await expect(page.locator("h1 .stage")).to_have_text("cancelled")
    await expect(page.locator("article.run").first.locator("header .stage")).to_have_text(
        "cancelled"
    )
    await expect(page.locator(".reason")).to_have_text("stopped from the browser test")
    await shot(page, "job-cancelled")
    assert (await client.get("slow")).stage is JobStage.CANCELLED

    await context.close()
    assert problems == [], problems
