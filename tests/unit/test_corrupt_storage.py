"""Corrupted storage: a state row that is not JSON (or not an object, or not a state), a
job type gone from the code, a schema migrated by a newer anu-jobs. The affected job is
quarantined (or fails its runs) with a clear reason, every other job carries on, and
``anu-jobs show`` explains it; a newer schema is refused at open, before anything is
written, with a typed error and exit code 3 from the CLI."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest
from typer.testing import CliRunner

from anu_jobs import AnuJobsError, Every, Job, JobContext, RunStage, SiloBuilder
from anu_jobs.cli import app
from anu_jobs.errors import StorageUnavailableError
from anu_jobs.hosting import JobClient
from anu_jobs.storage import open_storage
from anu_jobs.testing import FakeClock
from tests.conftest import drive

CORRUPT = {
    "not-json": "{not json",
    "json-array": "[1, 2]",
    "json-null": "null",
    "not-a-state": '{"v": 1, "updated_at": "yesterday"}',
    "newer-state": '{"v": 99, "params": {}}',
}


class Tick(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


class Gone(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def _pg(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = query.pop("schema")[0]
    return parts._replace(query=urlencode(query, doseq=True)).geturl(), schema


def execute(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the store behind anu-jobs' back (``?`` placeholders)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            with conn:
                return conn.execute(statement, args).fetchall()
        finally:
            conn.close()
    server, schema = _pg(url)
    with psycopg.connect(server, autocommit=True) as pg:
        pg.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
        cur = pg.execute(statement.replace("?", "%s"), args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def show(url: str, job_id: str, *extra: str) -> Any:
    return CliRunner().invoke(app, ["--url", url, "show", job_id, *extra], env={"COLUMNS": "200"})


async def test_corrupt_state_rows_are_quarantined_and_the_rest_run(sql_url: str) -> None:
    async with JobClient.connect(sql_url, jobs=[Tick]) as client:
        for job_id in (*CORRUPT, "good"):
            await client.schedule(Tick, job_id=job_id, trigger=Every(timedelta(seconds=1)))
    for job_id, text in CORRUPT.items():
        execute(sql_url, "UPDATE jobs SET state = ? WHERE job_id = ?", text, job_id)

    clock = FakeClock()
    silo = SiloBuilder().use_storage(sql_url).use_jobs(Tick).use_clock(clock).build()
    async with silo:

        async def good_ran() -> bool:
            runs = await silo.client.runs("good")
            return len([r for r in runs if r.stage is RunStage.COMPLETED]) >= 3

        await drive(clock, good_ran, "the good job to run three times", step=1)
        due = await silo.storage.read_due_at(list(CORRUPT))
        assert due == {}, "a quarantined job keeps no reminder"
        for job_id in CORRUPT:
            status = await silo.client.get(job_id)
            assert status.quarantined, job_id
            assert status.reason is not None and status.reason.startswith("quarantined:")
            assert status.next_fire_at is None and await silo.client.runs(job_id) == []
        assert "not JSON" in str((await silo.client.get("not-json")).reason)
        assert "not a JSON object" in str((await silo.client.get("json-array")).reason)
        assert "newer release" in str((await silo.client.get("newer-state")).reason)
        listed = {j.job_id: j for j in await silo.client.list()}
        assert set(listed) == {*CORRUPT, "good"} and listed["not-json"].quarantined
    # The original text is kept beside the reason, for whoever repairs it.
    [(stored,)] = execute(sql_url, "SELECT state FROM jobs WHERE job_id = ?", "not-json")
    assert "{not json" in stored

    shown = await asyncio.to_thread(show, sql_url, "not-json")
    assert shown.exit_code == 0, shown.output
    assert "quarantined" in shown.output and "not JSON" in shown.output
    assert "delete it and schedule it again" in shown.output
    as_json = await asyncio.to_thread(show, sql_url, "json-null", "--json")
    assert '"quarantined": true' in as_json.output


async def test_a_job_type_gone_from_the_code_fails_its_runs_and_show_says_why(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    async with JobClient.connect(url, jobs=[Gone, Tick]) as client:
        await client.schedule(Gone, job_id="orphan")
        await client.schedule(Tick, job_id="fine")
    silo = SiloBuilder().use_storage(url).use_jobs(Tick).build()  # Gone is not registered
    async with silo:
        orphan = await silo.client.wait("orphan", await silo.client.trigger("orphan"), 10)
        fine = await silo.client.wait("fine", await silo.client.trigger("fine"), 10)
    assert orphan.stage is RunStage.FAILED
    assert orphan.error is not None and orphan.error.type == "UnknownJobTypeError"
    assert fine.stage is RunStage.COMPLETED
    shown = await asyncio.to_thread(show, url, "orphan")
    assert shown.exit_code == 0, shown.output
    assert "problem" in shown.output and "'Gone' registered" in shown.output


async def test_a_schema_from_a_newer_anu_jobs_is_refused_before_anything_is_written(
    sql_url: str,
) -> None:
    async with JobClient.connect(sql_url, jobs=[Tick]) as client:
        await client.schedule(Tick, job_id="kept")
    execute(sql_url, "INSERT INTO schema_migrations (version, applied_us) VALUES (999, 0)")
    before = [
        execute(sql_url, f"SELECT * FROM {table} ORDER BY 1")
        for table in ("schema_migrations", "jobs", "reminders", "leases", "silos", "meta")
    ]

    with pytest.raises(StorageUnavailableError) as raised:
        await open_storage(sql_url).open()
    assert isinstance(raised.value, AnuJobsError)
    assert "999" in str(raised.value) and "upgrade anu-jobs" in str(raised.value)
    silo = SiloBuilder().use_storage(sql_url).use_jobs(Tick).build()
    with pytest.raises(StorageUnavailableError, match="upgrade anu-jobs"):
        await silo.start()

    done = await asyncio.to_thread(
        CliRunner().invoke, app, ["--url", sql_url, "jobs"], env={"COLUMNS": "200"}
    )
    assert done.exit_code == 3
    assert "upgrade anu-jobs" in done.output and "Traceback" not in done.output
    after = [
        execute(sql_url, f"SELECT * FROM {table} ORDER BY 1")
        for table in ("schema_migrations", "jobs", "reminders", "leases", "silos", "meta")
    ]
    assert after == before, "refusing a newer schema wrote nothing"
