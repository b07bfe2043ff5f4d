"""SQL metacharacters through every input, on every provider: they are data, never SQL.

Every query is parameterized (the PostgreSQL provider composes its few dynamic queries
from fixed fragments with ``psycopg.sql``); these tests feed quotes, comment markers,
statement separators, placeholders of both drivers, backslashes and LIKE wildcards
through job ids, job type names, params, reasons and the id search, and check that
everything reads back as written and that the tables are still there.

NUL: PostgreSQL's text and its JSON functions refuse it (even as the escape ``\\u0000``),
so it is refused everywhere: in a job id (``ConfigurationError``), a type name
(``JobDefinitionError``) and params (``InvalidParamsError``); free text that anu-jobs
records (a reason, an error message) has it replaced by U+FFFD; a search for it finds
nothing.
"""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest

from anu_jobs import (
    ConfigurationError,
    InvalidParamsError,
    Job,
    JobContext,
    JobDefinitionError,
    RunStage,
)
from tests.conftest import SiloFactory

HOSTILE = [
    "'; DROP TABLE jobs; --",
    "x' OR '1'='1",
    '"quoted" id',
    "a; DELETE FROM reminders",
    "/* comment */ id",
    "%s",
    "%(job_id)s",
    "$1",
    "?",
    ":name",
    "back\\slash",
    "\\'",
    "100%",
    "a_b",
    "${HOME}",
    "\\x00",
]

TABLES = {"jobs", "reminders", "leases", "silos", "control", "runs", "meta", "schema_migrations"}


class Plain(Job):
    seen: list[tuple[str, Any]] = []

    async def execute(self, ctx: JobContext) -> None:
        Plain.seen.append((ctx.job_id, ctx.params))


class Raising(Job):
    async def execute(self, ctx: JobContext) -> None:
        raise ValueError("bad\x00byte")


class Dropper(Job):
    name = "'); DROP TABLE jobs; --"

    async def execute(self, ctx: JobContext) -> None:
        return None


class Percent(Job):
    name = "%s %(x)s $1 ? \\ %_"

    async def execute(self, ctx: JobContext) -> None:
        return None


def _tables(url: str) -> set[str]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        conn.close()
        return {name for (name,) in rows}
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = query.pop("schema")[0]
    server = parts._replace(query=urlencode(query, doseq=True)).geturl()
    with psycopg.connect(server) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema]
        ).fetchall()
    return {name for (name,) in rows}


async def test_metacharacters_are_data_everywhere(make_silo: SiloFactory, store_url: str) -> None:
    Plain.seen.clear()
    async with make_silo(Plain, Dropper, Percent) as silo:
        client = silo.client
        for i, text in enumerate(HOSTILE):
            params = {text: text, "nested": [text, {text: i}]}
            await client.schedule(Plain, job_id=text, params=params)
            assert (await client.get(text)).params == params
            run = await client.wait(text, run_id=await client.trigger(text), timeout=5)
            assert run.stage is RunStage.COMPLETED and run.run_id.startswith(text + "@")
            assert [r.run_id for r in await client.runs(text)] == [run.run_id]
        for cls in (Dropper, Percent):
            await client.schedule(cls, job_id=f"type-{cls.__name__}")
            run = await client.wait(
                f"type-{cls.__name__}", await client.trigger(f"type-{cls.__name__}"), timeout=5
            )
            assert run.job_type == cls.name and run.stage is RunStage.COMPLETED
            [found] = await client.list(job_type=cls.name)
            assert found.job_id == f"type-{cls.__name__}"
        await client.cancel(HOSTILE[0], reason=HOSTILE[1])
        assert (await client.get(HOSTILE[0])).reason == HOSTILE[1]
        await client.pause(HOSTILE[2], reason="%s $1 '")
        assert (await client.get(HOSTILE[2])).reason == "%s $1 '"

        listed = {j.job_id for j in await client.list(limit=1000)}
        assert set(HOSTILE) <= listed
        for text in HOSTILE:  # each finds itself by search, paging still works past it
            assert text in {j.job_id for j in await client.list(text=text, limit=1000)}
            after = [j.job_id for j in await client.list(after=text, limit=1000)]
            assert after == sorted(i for i in listed if i > text)
        # LIKE wildcards are literal: '%' finds only ids holding a '%', '_' only a '_'
        assert {j.job_id for j in await client.list(text="%")} == {i for i in listed if "%" in i}
        assert {j.job_id for j in await client.list(text="_")} == {i for i in listed if "_" in i}
        assert {j.job_id for j in await client.list(text="\\")} == {i for i in listed if "\\" in i}
        assert await client.list(text="'; DROP TABLE jobs; --x") == []
        assert sorted(Plain.seen) == sorted(
            (t, {t: t, "nested": [t, {t: i}]}) for i, t in enumerate(HOSTILE)
        )
    if not store_url.startswith("memory://"):
        assert _tables(store_url) >= TABLES


async def test_nul_is_refused_or_replaced_the_same_on_every_provider(
    make_silo: SiloFactory,
) -> None:
    with pytest.raises(JobDefinitionError):

        class Nul(Job):
            name = "nul\x00type"

            async def execute(self, ctx: JobContext) -> None:
                return None

    async with make_silo(Plain, Raising) as silo:
        client = silo.client
        with pytest.raises(ConfigurationError, match="NUL"):
            await client.schedule(Plain, job_id="a\x00b")
        for params in ({"a": "b\x00c"}, {"a\x00": 1}, {"list": ["\x00"]}):
            with pytest.raises(InvalidParamsError, match="NUL"):
                await client.schedule(Plain, job_id="nul-params", params=params)
        await client.schedule(Raising, job_id="nul-text")
        run = await client.wait("nul-text", await client.trigger("nul-text"), timeout=5)
        assert run.stage is RunStage.FAILED
        assert run.error is not None and run.error.message == "bad\ufffdbyte"
        await client.cancel("nul-text", reason="why\x00not")
        assert (await client.get("nul-text")).reason == "why\ufffdnot"
        assert await client.list(text="\x00") == []
        assert [j.job_id for j in await client.list(after="nul\x00")] == ["nul-text"]
