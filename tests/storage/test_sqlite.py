"""What only the SQLite provider has: a schema on disk, files, pragmas, processes."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

import anu_jobs
from anu_jobs.errors import StorageError, StorageUnavailableError
from anu_jobs.storage import Storage, open_storage
from anu_jobs.storage.sqlite import SqliteStorage
from anu_jobs.storage.sqlite._sql import QUERIES, migrations, schema_sql, split_statements
from anu_jobs.testing.storage_suite import at

SRC = Path(anu_jobs.__path__[0]).parent  # type: ignore[attr-defined]


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    store = SqliteStorage(tmp_path / "jobs.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def master(path: Path) -> list[tuple[str, str, str, str]]:
    """The schema as SQLite itself records it, whitespace aside."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    conn.close()
    return [(t, n, tbl, re.sub(r"\s+", " ", sql).strip()) for t, n, tbl, sql in rows]


# -- schema and migrations --------------------------------------------------------------


async def test_applying_every_migration_yields_exactly_the_schema(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    reference = tmp_path / "schema.db"
    with sqlite3.connect(reference) as conn:
        conn.executescript(schema_sql())
    conn.close()
    await storage.close()
    migrated = master(tmp_path / "jobs.db")
    assert migrated == master(reference)
    assert {name for kind, name, _, _ in migrated if kind == "table"} >= {
        "jobs", "reminders", "leases", "silos", "control", "runs", "schema_migrations",
    }  # fmt: skip
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    conn.close()
    assert versions == [v for v, _ in migrations()] == list(range(1, len(versions) + 1))


async def test_reopening_keeps_data_and_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SqliteStorage(path)
    await first.open()
    etag = await first.insert_job("a", "demo", "active", {"n": 1}, at(5))
    await first.close()
    await first.close()  # twice is harmless
    second = SqliteStorage(path)
    await second.open()
    try:
        env = await second.read_state("a")
        assert env is not None
        assert (env.state, env.etag) == ({"n": 1}, etag)
        assert await second.read_due_at(["a"]) == {"a": at(5)}
    finally:
        await second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(
            migrations()
        )
    conn.close()


async def test_a_schema_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SqliteStorage(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    conn.close()
    with pytest.raises(StorageUnavailableError, match=r"newer|upgrade"):
        await SqliteStorage(path).open()


def test_every_query_block_is_used_and_statements_split() -> None:
    source = (SRC / "anu_jobs" / "storage" / "sqlite" / "_ops.py").read_text()
    unused = [name for name in QUERIES if f'"{name}"' not in source]
    assert unused == []
    script = (
        "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT ';');\n\nINSERT INTO t VALUES ('a;b');\n"
    )
    assert split_statements(script) == [
        "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT ';');",
        "INSERT INTO t VALUES ('a;b');",
    ]


# -- opening: pragmas, errors --------------------------------------------------------------


async def pragma(store: SqliteStorage, name: str) -> object:
    return await store._run(False, lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])


async def test_wal_mode_and_full_synchronous_by_default(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    assert await pragma(storage, "journal_mode") == "wal"
    assert await pragma(storage, "synchronous") == 2  # FULL
    assert await pragma(storage, "busy_timeout") == 5000
    relaxed = open_storage(url_of(tmp_path / "jobs.db") + "?synchronous=normal")
    assert isinstance(relaxed, SqliteStorage)
    await relaxed.open()
    try:
        assert await pragma(relaxed, "synchronous") == 1  # NORMAL
    finally:
        await relaxed.close()


async def test_a_missing_directory_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        await open_storage(url_of(tmp_path / "no" / "such" / "jobs.db")).open()
    assert time.monotonic() - started < 2
    assert "does not exist" in info.value.reason
    assert not (tmp_path / "no").exists()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StorageUnavailableError) as info:
        await open_storage(url_of(path)).open()
    assert "not a SQLite database" in info.value.reason
    assert path.read_bytes().startswith(b"these are my notes")


def open_unprivileged(url: str) -> str:
    """Try to open ``url`` as a user without root's power to write anything; return
    ``opened`` or the reason it was refused, and how long that took."""

    async def attempt() -> str:
        started = time.monotonic()
        store = open_storage(url)
        try:
            await store.open()
        except StorageUnavailableError as exc:
            return f"refused in {time.monotonic() - started:.1f}s: {exc.reason}"
        await store.close()
        return "opened"

    if os.geteuid() != 0:
        return asyncio.run(attempt())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops root, tries, reports, and exits without pytest's teardown
        status = 1
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, asyncio.run(attempt()).encode())
            status = 0
        except BaseException as exc:
            os.write(write, f"the child failed: {exc!r}".encode())
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory an unprivileged user can reach (pytest's own are private to root)."""
    base = tmp_path_factory.mktemp("shared")
    for part in (base, *base.parents):
        if part == Path(part.anchor):
            break
        part.chmod(part.stat().st_mode | 0o111)
    return base


def test_a_read_only_file_is_refused(shared_dir: Path) -> None:
    path = shared_dir / "jobs.db"

    async def create() -> None:
        store = SqliteStorage(path)
        await store.open()
        await store.insert_job("a", "demo", "active", {}, None)
        await store.close()

    asyncio.run(create())
    shared_dir.chmod(0o777)  # only the file itself is read-only
    path.chmod(0o444)
    outcome = open_unprivileged(url_of(path))
    assert outcome.startswith("refused in 0."), outcome
    assert "read-only" in outcome, outcome


def test_an_unwritable_directory_is_refused(shared_dir: Path) -> None:
    shared_dir.chmod(0o555)
    outcome = open_unprivileged(url_of(shared_dir / "jobs.db"))
    assert outcome.startswith("refused in 0."), outcome
    assert not (shared_dir / "jobs.db").exists()


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "jobs.db")
    with pytest.raises(StorageError, match="not open"):
        await store.read_state("a")
    await store.open()
    await store.close()
    with pytest.raises(StorageError, match="not open"):
        await store.read_state("a")


# -- several users of one file ------------------------------------------------------------


async def test_two_storage_objects_on_one_file_see_each_others_writes(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    other: Storage = SqliteStorage(tmp_path / "jobs.db")
    await other.open()
    try:
        await storage.insert_job("a", "demo", "active", {"by": "first"}, at(0))
        env = await other.read_state("a")
        assert env is not None
        assert env.state == {"by": "first"}
        [claimed] = await other.claim_due("s2", at(0), at(0), 10, timedelta(seconds=30))
        assert await storage.lease_holder("a") == claimed.lease
        assert await storage.claim_due("s1", at(1), at(1), 10, timedelta(seconds=30)) == []
    finally:
        await other.close()


async def test_another_process_can_write_while_the_file_is_open(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    await storage.insert_job("mine", "demo", "active", {}, at(0))
    script = (
        "import asyncio, sys\n"
        "from datetime import UTC, datetime\n"
        "from anu_jobs.storage import open_storage\n"
        "async def main():\n"
        "    store = open_storage(sys.argv[1])\n"
        "    await store.open()\n"
        "    assert await store.read_state('mine') is not None\n"
        "    await store.insert_job('theirs', 'demo', 'active', {'pid': 1}, None)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, url_of(tmp_path / "jobs.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    env_theirs = await storage.read_state("theirs")
    assert env_theirs is not None
    assert env_theirs.state == {"pid": 1}
