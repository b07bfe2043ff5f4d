"""A password in a store URL never shows: not in logs (at DEBUG, over a silo's whole life
and over failures to connect), not in exceptions, not in the CLI's output, not on the
dashboard's pages. And the operator surface takes hostile text: the CLI and the
dashboard's job search treat SQL and LIKE metacharacters as plain text."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from markupsafe import escape

from anu_jobs import AnuJobsError, ConfigurationError, JobClient, SiloBuilder
from anu_jobs.dashboard import create_app
from anu_jobs.errors import StorageUnavailableError
from anu_jobs.storage import open_storage
from tests.acceptance.conftest import Quick, http
from tests.acceptance.test_cli import cli

SECRET = "s3cret-Pw9"
UNREACHABLE = f"postgresql://someone:{SECRET}@127.0.0.1:1/db?connect_timeout=1"
MALFORMED = [
    f"postgresql://someone:{SECRET}@[bad/db",  # urllib cannot parse it
    f"postgresql://someone:{SECRET}@127.0.0.1:1/db?bogus=1",  # libpq refuses it
    f"postgresql://someone@127.0.0.1:1/db?password={SECRET}&connect_timeout=1",
    f"postgresql://someone:{SECRET}@127.0.0.1:notaport/db?connect_timeout=1",
    f"host=127.0.0.1 password={SECRET}",  # a libpq keyword string: not a URL here
]


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(vars(exc))


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    text = caplog.text + "".join(
        _full_text(r.exc_info[1]) for r in caplog.records if r.exc_info and r.exc_info[1]
    )
    assert SECRET not in text, "the password reached the logs"


async def test_a_silos_life_at_debug_never_logs_the_password(
    pg_url: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    url = _with_password(pg_url, SECRET)  # the test server trusts local connections
    silo = SiloBuilder().use_storage(url).use_jobs(Quick).build()
    async with silo:
        await silo.client.schedule(Quick, job_id="q")
        await silo.client.wait("q", await silo.client.trigger("q"), timeout=10)
        assert SECRET not in repr(silo.storage) + repr(getattr(silo.storage, "_config", ""))
    assert len(debug_logs.records) > 0


async def test_failing_to_connect_never_shows_the_password(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(StorageUnavailableError) as raised:
        async with JobClient.connect(UNREACHABLE):
            pass
    assert "someone:***@127.0.0.1:1" in str(raised.value)
    assert SECRET not in _full_text(raised.value)
    silo = SiloBuilder().use_storage(UNREACHABLE).build()
    with pytest.raises(StorageUnavailableError) as again:
        await silo.start()
    assert SECRET not in _full_text(again.value)


@pytest.mark.parametrize("url", MALFORMED, ids=range(len(MALFORMED)))
async def test_a_malformed_url_is_a_typed_error_without_the_password(
    url: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(AnuJobsError) as raised:
        await open_storage(url).open()
    assert isinstance(raised.value, ConfigurationError | StorageUnavailableError)
    assert SECRET not in _full_text(raised.value)


@pytest.mark.parametrize(
    ("url", "args"),
    [
        (UNREACHABLE, ["silos"]),
        (UNREACHABLE, ["show", "x"]),
        (UNREACHABLE, ["db", "migrate"]),
        *((url, ["jobs"]) for url in MALFORMED),
    ],
    ids=range(3 + len(MALFORMED)),
)
def test_the_cli_never_prints_the_password(tmp_path: Path, url: str, args: list[str]) -> None:
    done = cli("--url", url, *args, cwd=tmp_path)
    assert done.returncode in (2, 3), (args, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr, (args, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_cli_running_a_silo_never_prints_the_password(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        f"from anu_jobs import SiloBuilder\nbuilder = SiloBuilder().use_storage({UNREACHABLE!r})\n"
    )
    done = cli("run", "app:builder", "--log-level", "debug", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert SECRET not in done.stdout + done.stderr


async def test_dashboard_pages_never_show_the_password(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    app = create_app(UNREACHABLE, token="t0ken-for-actions")
    async with http(app) as h:
        for path in ("/", "/jobs", "/jobs/x", "/silos", "/login"):
            page = await h.get(path)
            assert SECRET not in page.text, path
            assert "someone:" not in page.text, path


# -- hostile text through the operator surface ------------------------------------------

SEARCHABLE = ["100%", "a_b", "axb", "a\\b", "it's", "'; DROP TABLE jobs; --", "plain"]


@pytest.fixture
async def searchable(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/search.db"
    async with JobClient.connect(url, jobs=[Quick]) as client:
        for job_id in SEARCHABLE:
            await client.schedule(Quick, job_id=job_id)
    return url


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("%", {"100%"}),
        ("_", {"a_b"}),
        ("\\", {"a\\b"}),
        ("'", {"it's", "'; DROP TABLE jobs; --"}),
        ("DROP TABLE", {"'; DROP TABLE jobs; --"}),
        ("%s", set()),
        ("$1", set()),
    ],
)
async def test_the_dashboard_search_takes_metacharacters_literally(
    searchable: str, search: str, found: set[str]
) -> None:
    async with JobClient.connect(searchable) as client:
        async with http(create_app(client)) as h:
            page = await h.get("/jobs", params={"q": search})
        assert page.status_code == 200
        listed = {j.job_id for j in await client.list()}
    assert listed == set(SEARCHABLE), "the tables are intact"
    for job_id in SEARCHABLE:
        listed_here = f"<code>{escape(job_id)}</code>" in page.text
        assert listed_here == (job_id in found), job_id


@pytest.mark.parametrize(("search", "found"), [("%", {"100%"}), ("_", {"a_b"})])
def test_the_cli_search_takes_wildcards_literally(
    searchable: str, tmp_path: Path, search: str, found: set[str]
) -> None:
    done = cli("--url", searchable, "jobs", "--search", search, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {j["job_id"] for j in json.loads(done.stdout)} == found


def test_cli_tables_show_markup_and_control_characters_as_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/markup.db"

    async def seed() -> None:
        async with JobClient.connect(url, jobs=[Quick]) as client:
            await client.schedule(Quick, job_id="[/oops]")
            await client.schedule(Quick, job_id="[bold red]x\x1b[31m")
            await client.cancel("[/oops]", reason="[/why]\x07")

    asyncio.run(seed())
    listed = cli("--url", url, "jobs", cwd=tmp_path, env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    assert "[/oops]" in listed.stdout and "[bold red]x\\x1b[31m" in listed.stdout
    assert "\x1b" not in listed.stdout
    shown = cli("--url", url, "show", "[/oops]", cwd=tmp_path, env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "[/why]\\x07" in shown.stdout and "\x07" not in shown.stdout
