"""What only the PostgreSQL provider has: schemas and migrations, the server going away,
LISTEN/NOTIFY between processes, and claimers on many connections."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from tests.pg import drop_schema, fresh_schema, with_schema

import anu_jobs
from anu_jobs.errors import ConfigurationError, StorageError, StorageUnavailableError
from anu_jobs.storage import open_storage
from anu_jobs.storage._common import to_us
from anu_jobs.storage.base import NewJob, Notice, SiloInfo
from anu_jobs.storage.postgres import PostgresStorage
from anu_jobs.storage.postgres._config import parse_url
from anu_jobs.storage.postgres._notices import decode, encode
from anu_jobs.storage.postgres._sql import QUERIES, migrations, schema_sql
from anu_jobs.testing import FakeClock
from anu_jobs.testing.storage_suite import at

Schema = tuple[str, str]  # the server's URL, a fresh schema on it
LEASE = timedelta(seconds=30)


@pytest.fixture
def schema(postgres_url: str) -> Iterator[Schema]:
    name = fresh_schema()
    yield postgres_url, name
    drop_schema(postgres_url, name)


@pytest.fixture
async def store(schema: Schema) -> AsyncIterator[PostgresStorage]:
    s = PostgresStorage.from_url(with_schema(*schema))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def query(url: str, statement: sql.Composable, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(statement, params or None)
        return await cur.fetchall() if cur.description else []


# -- schema and migrations --------------------------------------------------------------


async def catalog(url: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """The schema as PostgreSQL's catalogs record it, with the schema's name taken out."""
    parts = {
        "columns": """SELECT table_name, ordinal_position, column_name, data_type,
                             is_nullable, column_default, collation_name
                      FROM information_schema.columns WHERE table_schema = %s""",
        "indexes": """SELECT tablename, indexname, indexdef
                      FROM pg_indexes WHERE schemaname = %s""",
        "constraints": """SELECT table_name, constraint_name, constraint_type
                          FROM information_schema.table_constraints
                          WHERE constraint_schema = %s AND constraint_type <> 'CHECK'""",
        "options": """SELECT c.relname, c.relkind, coalesce(c.reloptions, '{}')
                      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                      WHERE n.nspname = %s""",
        "functions": """SELECT p.proname, pg_get_functiondef(p.oid)
                        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
                        WHERE n.nspname = %s""",
    }
    found = {}
    for name, text in parts.items():
        rows = await query(url, sql.SQL(text), schema)
        found[name] = sorted(tuple(str(v).replace(schema, "<schema>") for v in row) for row in rows)
    return found


async def test_applying_every_migration_yields_exactly_the_schema(
    store: PostgresStorage, schema: Schema
) -> None:
    server, migrated = schema
    reference = fresh_schema()
    try:
        async with await psycopg.AsyncConnection.connect(server) as conn:
            ident = sql.Identifier(reference)
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            await conn.execute(sql.SQL("SET search_path TO {}").format(ident))
            await conn.execute(schema_sql())
        want, got = await catalog(server, reference), await catalog(server, migrated)
    finally:
        drop_schema(server, reference)
    assert got == want
    tables = {row[0] for row in got["columns"]}
    assert tables == {
        "jobs", "reminders", "leases", "silos", "control", "runs", "meta", "schema_migrations",
    }  # fmt: skip
    versions = await query(
        server, sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
            sql.Identifier(migrated))
    )  # fmt: skip
    assert [v for (v,) in versions] == [v for v, _ in migrations()]


async def test_concurrent_opens_on_a_fresh_schema_migrate_once(schema: Schema) -> None:
    server, name = schema
    stores = [PostgresStorage.from_url(with_schema(server, name)) for _ in range(5)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].insert_job("a", "demo", "active", {}, at(0))
        assert await stores[4].read_state("a") is not None
    finally:
        for s in stores:
            await s.close()
    rows = await query(
        server, sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(name))
    )
    assert sorted(v for (v,) in rows) == [v for v, _ in migrations()]


async def test_reopening_keeps_data_and_a_newer_schema_is_refused(schema: Schema) -> None:
    server, name = schema
    url = with_schema(server, name)
    first = PostgresStorage.from_url(url)
    await first.open()
    etag = await first.insert_job("a", "demo", "active", {"n": 1}, at(5))
    await first.close()
    await first.close()  # twice is harmless
    second = PostgresStorage.from_url(url)
    await second.open()
    env = await second.read_state("a")
    await second.close()
    assert env is not None
    assert env.etag == etag
    await query(
        server,
        sql.SQL("INSERT INTO {}.schema_migrations VALUES (999, 0)").format(sql.Identifier(name)),
    )
    with pytest.raises(StorageUnavailableError, match=r"newer|upgrade"):
        await PostgresStorage.from_url(url).open()


async def test_a_closed_store_says_so(schema: Schema) -> None:
    s = PostgresStorage.from_url(with_schema(*schema))
    with pytest.raises(StorageError, match="not open"):
        await s.read_state("a")


def test_every_query_block_is_used() -> None:
    package = Path(anu_jobs.__path__[0]) / "storage" / "postgres"  # type: ignore[attr-defined]
    source = "".join((package / name).read_text() for name in ("_ops.py", "_commit.py"))
    assert [name for name in QUERIES if f'"{name}"' not in source] == []


# -- URLs ------------------------------------------------------------------------------------


def test_urls_keep_libpq_parameters_and_strip_their_own() -> None:
    config = parse_url(
        "postgres://u:pw@db:5433/jobs?sslmode=disable&schema=tenant_7&connect_timeout=2.5"
        "&pool_max_size=4&host=%2Ftmp"
    )
    assert config.conninfo == "postgresql://u:pw@db:5433/jobs?sslmode=disable&host=%2Ftmp"
    assert (config.schema, config.connect_timeout, config.pool_max_size) == ("tenant_7", 2.5, 4)
    store = open_storage("postgresql://u:pw@db/jobs?schema=x")
    assert isinstance(store, PostgresStorage)
    assert store.url == "postgresql://u:***@db/jobs?schema=x"
    for bad in ("Robert'); DROP TABLE jobs;--", "1abc", "a" * 49, ""):
        with pytest.raises(ConfigurationError, match="plain identifier"):
            PostgresStorage("postgresql://db/jobs", schema=bad)


# -- the server going away ---------------------------------------------------------------


async def test_an_unreachable_server_fails_open_within_the_bound() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/test?connect_timeout=1.5"
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        await open_storage(url).open()
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 2.5, f"gave up after {elapsed:.1f}s"
    assert "s3cret" not in str(info.value)
    assert info.value.url.startswith("postgresql://postgres:***@127.0.0.1:1/test")
    assert "attempts" in info.value.reason


async def test_calls_recover_after_the_server_kills_the_connections(schema: Schema) -> None:
    server, name = schema
    app = f"anu-test-{uuid.uuid4().hex[:8]}"
    s = PostgresStorage.from_url(with_schema(server, name, application_name=app))
    await s.open()
    try:
        got: list[Notice] = []
        s.add_listener(got.append)
        await s.insert_job("a", "demo", "active", {}, at(0))
        killed = await query(
            server,
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
            ),
            app,
        )
        assert len(killed) >= 2  # the pool's connection and the listener's
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append((await s.read_state("a")) is not None)
                break
            except StorageError as exc:
                outcomes.append(str(exc))
        assert outcomes[-1] is True, outcomes
        assert len(outcomes) <= 2, outcomes  # at most the one call that met the dead link
        # The listener reconnects by itself, says so, and hears notices again.
        await wait_for(lambda: Notice("due") in got, "the reconnect's wake-up notice")
        await s.notify([Notice("control", "a")])
        await wait_for(lambda: Notice("control", "a") in got, "a notice after reconnecting")
    finally:
        await s.close()


async def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# -- notices ---------------------------------------------------------------------------------


async def test_notices_cross_between_stores_as_between_processes(schema: Schema) -> None:
    url = with_schema(*schema)
    a, b = PostgresStorage.from_url(url), PostgresStorage.from_url(url)
    await a.open()
    await b.open()
    try:
        heard_a: list[Notice] = []
        heard_b: list[Notice] = []
        a.add_listener(heard_a.append)
        b.add_listener(heard_b.append)
        # Long ids, so the batch needs several payloads; order must survive the split.
        sent = [Notice("due", f"job-{i:04}-{'x' * 200}", at(i)) for i in range(300)]
        sent.append(Notice("run"))
        await b.notify(sent)
        await wait_for(lambda: len(heard_a) >= len(sent), "every notice on the other store")
        await wait_for(lambda: len(heard_b) >= len(sent), "every notice on the sender")
        assert heard_a == sent
        assert heard_b == sent
    finally:
        await a.close()
        await b.close()


def test_payloads_stay_under_the_limit_and_round_trip() -> None:
    notices = [Notice("control", "ü" * 2000), Notice("due", "v" * 3500, at(1.5)), Notice("run")]
    notices += [Notice("due", "y" * 9000)]  # too long to send: the bare kind goes instead
    payloads = encode(notices, limit=7000)
    assert all(len(p.encode()) <= 7000 for p in payloads)
    assert len(payloads) == 2
    assert [n for p in payloads for n in decode(p)] == [*notices[:3], Notice("due")]
    assert decode("not json") == []
    assert decode('[["nope","a"],["run",5],"x"]') == [Notice("run")]


# -- claimers on many connections ---------------------------------------------------------


async def test_many_claimers_on_two_stores_claim_every_job_exactly_once(schema: Schema) -> None:
    url = with_schema(*schema)
    a, b = PostgresStorage.from_url(url), PostgresStorage.from_url(url)
    await a.open()
    await b.open()
    try:
        await a.insert_jobs(
            [NewJob(f"j{i:04}", "demo", "active", {}, at(i % 13)) for i in range(1000)]
        )

        async def claimer(n: int) -> list[str]:
            store, mine = (a, b)[n % 2], []
            while batch := await store.claim_due(f"s{n}", at(20), at(20), 37, LEASE):
                mine += [c.envelope.job_id for c in batch]
                assert all(c.lease.epoch == 1 for c in batch)
            return mine

        claimed = await asyncio.gather(*(claimer(n) for n in range(10)))
        every = [job for mine in claimed for job in mine]
        assert len(every) == len(set(every)) == 1000
        assert sum(1 for mine in claimed if mine) > 1  # they really ran side by side
        holder = await b.lease_holder("j0500")
        assert holder is not None
        assert "j0500" in claimed[int(holder.silo_id[1:])]
    finally:
        await a.close()
        await b.close()


async def test_claims_skip_a_job_whose_row_another_transaction_holds(
    store: PostgresStorage, schema: Schema
) -> None:
    server, name = schema
    await store.insert_jobs([NewJob(j, "demo", "active", {}, at(0)) for j in ("a", "b")])
    async with await psycopg.AsyncConnection.connect(server) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(name)))
        # As a write in flight holds it: claimers pass it by rather than wait.
        await conn.execute("SELECT 1 FROM jobs WHERE job_id = 'a' FOR NO KEY UPDATE")
        first = await asyncio.wait_for(store.claim_due("s1", at(1), at(1), 10, LEASE), 5)
        assert [c.envelope.job_id for c in first] == ["b"]
        await conn.rollback()
    [late] = await store.claim_due("s2", at(1), at(1), 10, LEASE)
    assert late.envelope.job_id == "a"


# -- the store's clock ------------------------------------------------------------------------


async def test_the_servers_clock_stamps_and_judges_leases_and_heartbeats(
    store: PostgresStorage, schema: Schema
) -> None:
    """Unpinned, store time is the server's clock. The caller here says its clock is ten
    minutes ahead (its silo info) and ten minutes behind (its claim): neither counts."""
    server, _ = schema
    [(before,)] = await query(server, sql.SQL("SELECT now()"))
    skew = timedelta(minutes=10)
    await store.register_silo(SiloInfo("s1", "h", 1, before + skew, before + skew))
    await store.insert_jobs([NewJob("a", "demo", "active", {}, before - 2 * skew)])
    [c] = await store.claim_due("s1", before - skew, before - skew, 10, timedelta(seconds=1))
    [(after,)] = await query(server, sql.SQL("SELECT now()"))
    [info] = await store.list_silos()
    assert before <= info.heartbeat_at <= after
    assert info.started_at == before + skew  # the silo's own account, kept as given
    assert await store.lease_holder("a") == c.lease
    [(expires,)] = await query(
        server,
        sql.SQL("SELECT expires_us FROM {}.leases WHERE job_id = 'a'").format(
            sql.Identifier(schema[1])
        ),
    )
    assert to_us(before) + 1_000_000 <= expires <= to_us(after) + 1_000_000
    await asyncio.sleep(1.1)
    assert await store.lease_holder("a") is None
    assert await store.declare_dead(timedelta(seconds=30)) == []
    assert await store.heartbeat("s1")
    [info] = await store.list_silos()
    assert info.heartbeat_at > after
    await asyncio.sleep(0.3)
    assert await store.declare_dead(timedelta(seconds=0.2)) == ["s1"]


async def test_a_pinned_clock_is_the_store_time_instead(schema: Schema) -> None:
    """Only tests pin it: the conformance suite drives store time with a FakeClock."""
    clock = FakeClock(at(0))
    store = PostgresStorage.from_url(with_schema(*schema), clock=clock)
    await store.open()
    try:
        await store.register_silo(SiloInfo("s1", "h", 1, at(-5), at(-5)))
        await store.insert_job("a", "demo", "active", {}, at(0))
        [c] = await store.claim_due("s1", at(0), at(0), 10, timedelta(seconds=30))
        clock.jump(at(29))
        assert await store.lease_holder("a") == c.lease
        clock.jump(at(30))
        assert await store.lease_holder("a") is None
        assert [s.heartbeat_at for s in await store.list_silos()] == [at(0)]
    finally:
        await store.close()
