"""The SQLite provider: the embedded default store, one file, any number of processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qsl, unquote

from anu_jobs import _json
from anu_jobs.clock import Clock, SystemClock
from anu_jobs.errors import ConfigurationError, StorageError, StorageUnavailableError
from anu_jobs.storage._common import (
    FREEING_STATUSES,
    MAX_US,
    NoticeHub,
    from_us,
    id_matches,
    new_job_rows,
    silo_to_row,
    to_us,
)
from anu_jobs.storage._url import redact_url
from anu_jobs.storage.base import (
    Claim,
    ControlMessage,
    GrainWrite,
    JobQuery,
    LeaseToken,
    NewJob,
    NewJobRow,
    Notice,
    NoticeListener,
    RunRecord,
    SiloInfo,
    SiloStatus,
    StateEnvelope,
    Storage,
    WriteResult,
)
from anu_jobs.storage.sqlite import _ops
from anu_jobs.storage.sqlite._migrate import SchemaTooNewError, migrate

__all__ = ["SqliteStorage"]

P = ParamSpec("P")
R = TypeVar("R")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

# One hub per database file in this process, so that every SqliteStorage on a file
# hears the others' notices. SQLite has no channel between processes: each open store
# watches the file for other connections' commits instead (see SqliteStorage._watch).
_HUBS: dict[str, NoticeHub] = {}
_HUBS_LOCK = threading.Lock()


def _hub_for(path: str) -> NoticeHub:
    key = os.path.realpath(path)
    with _HUBS_LOCK:
        return _HUBS.setdefault(key, NoticeHub())


_MICRO = timedelta(microseconds=1)

#: how often an open store looks for commits of other processes (seconds)
_WATCH_PERIOD = 0.2


class SqliteStorage(Storage):
    """A store in one SQLite file (``sqlite:///relative.db``, ``sqlite:////abs/path.db``).

    All SQL runs on one dedicated thread that owns the connection, so the event loop
    never blocks on disk; each contract method is one transaction, one call on that
    thread (``BEGIN IMMEDIATE`` for writes). The file is in WAL mode with
    ``synchronous=FULL`` by default (a committed write survives power loss; pass
    ``?synchronous=NORMAL`` to trade that for speed) and a busy timeout, so several
    processes (a silo, a CLI client) can use one file: their writes take turns.

    Notices reach every listener of the same file in this process. Another process's
    commits are seen within 200 ms (``PRAGMA data_version`` is read that often) and
    announced as a ``changed`` notice: a silo then looks for new work and requests, and a
    client waiting for a run looks again.

    Store time (lease expiries, heartbeats) is ``clock``'s, the system clock unless given:
    the silo's clock, which a silo passes through :func:`~anu_jobs.storage.open_storage`.
    The processes sharing a file share a host, and so its clock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        url: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not a SQLite synchronous mode; "
                f"use one of {', '.join(_SYNCHRONOUS)}"
            )
        self._path = os.fspath(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self.url = redact_url(url) if url else f"sqlite:///{self._path}"
        self._hub = _hub_for(self._path)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> SqliteStorage:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, optionally
        with ``?synchronous=NORMAL`` and ``?busy_timeout=SECONDS``; ``clock`` keeps the
        store's time."""
        rest = url.partition("://")[2]
        location, _, query = rest.partition("?")
        if not location.startswith("/") or len(location) < 2:
            raise ConfigurationError(
                f"{redact_url(url)} names no file: use sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        options: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "synchronous":
                options["synchronous"] = value
            elif key == "busy_timeout":
                try:
                    options["busy_timeout"] = float(value)
                except ValueError:
                    raise ConfigurationError(f"busy_timeout={value!r} is not seconds") from None
            else:
                raise ConfigurationError(
                    f"unknown option {key!r} in {redact_url(url)}; "
                    "the SQLite store takes synchronous= and busy_timeout="
                )
        return cls(unquote(location[1:]), url=url, clock=clock, **options)

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anu-jobs-sqlite")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(executor, self._connect)
        except BaseException:
            executor.shutdown(wait=True)  # its one thread is idle: this returns at once
            raise
        self._executor = executor
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(), name=f"anu-jobs-sqlite-watch {self._path}"
        )

    async def _watch(self) -> None:
        """Announce commits of other processes to this file's listeners.

        ``PRAGMA data_version`` changes exactly when another connection has committed
        since it was last read on the same connection, and reading it touches no table
        (a few microseconds). A connection of its own, read on the event loop, sees every
        commit; only when it saw one does the store's connection (on the store's thread)
        tell whether another process made it. An idle store so costs a timer 5 times a
        second. The period is real time, not the store's clock: it only ever causes a look.
        """
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            return
        loop = asyncio.get_running_loop()

        def main_version() -> int:
            return _data_version(conn)

        try:
            watch = await loop.run_in_executor(executor, self._watch_connection)
        except (sqlite3.Error, RuntimeError):
            return  # no watch: other processes' work is found by the silo's poll
        try:
            seen = _data_version(watch)
            main_seen = await loop.run_in_executor(executor, main_version)
            while True:
                await asyncio.sleep(_WATCH_PERIOD)
                now = _data_version(watch)
                if now == seen:
                    continue
                seen = now
                mine = await loop.run_in_executor(executor, main_version)
                if mine != main_seen:  # not (only) this store's own commits
                    main_seen = mine
                    self._hub.publish((Notice("changed"),))
        except (sqlite3.Error, RuntimeError):
            return  # closing, or the file went away: the poll remains
        finally:
            watch.close()

    def _watch_connection(self) -> sqlite3.Connection:
        # Read on the event loop's thread, made on the store's: never used by two at once.
        return sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )

    def _connect(self) -> sqlite3.Connection:
        # sqlite3 would create a missing file but not its directory; say so plainly.
        directory = os.path.dirname(os.path.abspath(self._path))
        if not os.path.isdir(directory):
            raise StorageUnavailableError(
                self.url, f"the directory {directory} does not exist; create it first"
            )
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE / COMMIT
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise StorageUnavailableError(self.url, _reason(exc, self._path)) from None
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageUnavailableError(
                    self.url, f"cannot put {self._path} in WAL mode (it stays in {mode} mode)"
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.create_function("anu_id_matches", 2, id_matches, deterministic=True)
            migrate(conn)
            _probe_write(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageUnavailableError(self.url, _reason(exc, self._path)) from None
        except SchemaTooNewError as exc:
            conn.close()
            raise StorageUnavailableError(self.url, str(exc)) from None
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        conn, executor, watcher = self._conn, self._executor, self._watcher
        self._conn = self._executor = self._watcher = None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if executor is None:
            return
        try:
            if conn is not None:
                # Queued behind any call still running, so those finish first.
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        finally:
            executor.shutdown(wait=True)

    async def _run(
        self,
        write: bool,
        fn: Callable[Concatenate[sqlite3.Connection, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            raise StorageError(f"the store {self.url} is not open; call open() first")

        def call() -> R:
            return _ops.run(conn, write, lambda: fn(conn, *args, **kwargs))

        try:
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        except sqlite3.Error as exc:
            raise StorageError(f"the store {self.url} failed: {exc}") from exc

    # -- grain state ------------------------------------------------------------------

    async def insert_job(
        self, job_id: str, job_type: str, stage: str, state: dict[str, Any], due_at: datetime | None
    ) -> int:
        text = _json.dumps(state)
        due_us = None if due_at is None else to_us(due_at)
        return await self._run(True, _ops.insert_job, job_id, job_type, stage, text, due_us)

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> None:
        await self.insert_encoded_jobs(new_job_rows(jobs))

    async def insert_encoded_jobs(self, rows: Sequence[NewJobRow]) -> None:
        if rows:
            await self._run(True, _ops.insert_jobs, rows)

    async def read_state(self, job_id: str) -> StateEnvelope | None:
        return await self._run(False, _ops.read_state, job_id)

    async def read_due_at(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        return await self._run(False, _ops.read_due_at, job_ids)

    async def list_jobs(self, query: JobQuery) -> list[StateEnvelope]:
        return await self._run(False, _ops.list_jobs, query)

    async def count_jobs(self, query: JobQuery) -> int:
        return await self._run(False, _ops.count_jobs, query)

    async def stage_counts(self) -> dict[str, int]:
        return await self._run(False, _ops.stage_counts)

    # -- leases and reminders -----------------------------------------------------------

    def _now_us(self) -> int:
        return to_us(self.clock.now())

    async def claim_due(
        self, silo_id: str, now: datetime, until: datetime, limit: int, lease_for: timedelta
    ) -> list[Claim]:
        store_us = self._now_us()
        return await self._run(
            True, _ops.claim_due, silo_id, to_us(now), to_us(until), limit,
            store_us + lease_for // _MICRO, store_us,
        )  # fmt: skip

    async def acquire_lease(
        self, job_id: str, silo_id: str, lease_for: timedelta
    ) -> tuple[LeaseToken, StateEnvelope, tuple[ControlMessage, ...]] | None:
        store_us = self._now_us()
        return await self._run(
            True, _ops.acquire_lease, job_id, silo_id, store_us, store_us + lease_for // _MICRO
        )

    async def renew_leases(
        self, tokens: Sequence[LeaseToken], lease_for: timedelta
    ) -> list[LeaseToken]:
        expires_us = self._now_us() + lease_for // _MICRO
        return await self._run(True, _ops.renew_leases, tokens, expires_us)

    async def release_leases(self, tokens: Sequence[LeaseToken]) -> None:
        await self._run(True, _ops.release_leases, tokens)

    async def lease_holder(self, job_id: str) -> LeaseToken | None:
        return await self._run(False, _ops.lease_holder, job_id, self._now_us())

    async def overdue(
        self, due_before: datetime, limit: int = 100
    ) -> tuple[int, list[tuple[str, datetime]]]:
        count, rows = await self._run(False, _ops.overdue, self._now_us(), to_us(due_before), limit)
        return count, [(j, from_us(d)) for j, d in rows]

    async def run_counts(
        self, since: datetime, bucket: timedelta
    ) -> list[tuple[datetime, str, int]]:
        rows = await self._run(False, _ops.run_counts, to_us(since), bucket // _MICRO)
        return [(from_us(b), s, n) for b, s, n in rows]

    async def next_due(self, now: datetime) -> datetime | None:
        due_us = await self._run(False, _ops.next_due, to_us(now), self._now_us())
        return None if due_us is None else from_us(due_us)

    # -- the write path -----------------------------------------------------------------

    async def commit(self, writes: Sequence[GrainWrite]) -> list[WriteResult]:
        if not writes:
            return []
        return await self._run(True, _ops.commit, writes)

    # -- control inbox -----------------------------------------------------------------

    async def post_control(self, job_id: str, body: dict[str, Any], now: datetime) -> int:
        return await self._run(True, _ops.post_control, job_id, _json.dumps(body), to_us(now))

    async def pending_control(self, silo_id: str) -> list[ControlMessage]:
        return await self._run(False, _ops.pending_control, silo_id)

    async def control_pending(self, msg_ids: Sequence[int]) -> set[int]:
        return await self._run(False, _ops.control_pending, msg_ids)

    # -- run history -------------------------------------------------------------------

    async def read_runs(
        self, job_id: str, limit: int = 100, before: datetime | None = None
    ) -> list[RunRecord]:
        before_us = MAX_US if before is None else to_us(before)
        return await self._run(False, _ops.read_runs, job_id, limit, before_us)

    async def read_run(self, run_id: str) -> RunRecord | None:
        return await self._run(False, _ops.read_run, run_id)

    async def prune_runs(self, keep: int) -> int:
        return await self._run(True, _ops.prune_runs, keep)

    # -- membership --------------------------------------------------------------------

    async def register_silo(self, info: SiloInfo) -> None:
        row = silo_to_row(info)
        await self._run(True, _ops.register_silo, (*row[:4], self._now_us(), *row[5:]))

    async def heartbeat(self, silo_id: str) -> bool:
        return await self._run(True, _ops.heartbeat, silo_id, self._now_us())

    async def set_silo_status(self, silo_id: str, status: SiloStatus, now: datetime) -> None:
        await self._run(True, _ops.set_silo_status, silo_id, status, status in FREEING_STATUSES)

    async def declare_dead(self, dead_after: timedelta, by: str | None = None) -> list[str]:
        missed_us = self._now_us() - dead_after // _MICRO
        return await self._run(True, _ops.declare_dead, missed_us, by)

    async def list_silos(self) -> list[SiloInfo]:
        return await self._run(False, _ops.list_silos)

    async def now(self) -> datetime:
        return from_us(self._now_us())

    # -- store metadata ------------------------------------------------------------------

    async def schema_versions(self) -> list[tuple[int, datetime]]:
        return [(v, from_us(at)) for v, at in await self._run(False, _ops.schema_versions)]

    async def read_meta(self, key: str) -> dict[str, Any] | None:
        return await self._run(False, _ops.read_meta, key)

    async def write_meta(self, key: str, value: dict[str, Any]) -> None:
        await self._run(True, _ops.write_meta, key, _json.dumps(value))

    # -- notices -----------------------------------------------------------------------

    async def notify(self, notices: Sequence[Notice]) -> None:
        """Publish to the listeners of this file in this process. SQLite cannot reach
        other processes; they find the work by polling."""
        self._hub.publish(notices)

    def add_listener(self, listener: NoticeListener) -> Callable[[], None]:
        return self._hub.add(listener)


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _probe_write(conn: sqlite3.Connection) -> None:
    """Fail now, not at the first claim, when the file cannot be written: SQLite opens a
    read-only file read-only without complaint, and an up-to-date schema writes nothing.
    The probe rewrites one row in place and rolls back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE schema_migrations SET applied_us = applied_us WHERE version = 1")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _reason(exc: sqlite3.Error, path: str) -> str:
    """Say what to do about an error that stopped open()."""
    message = str(exc)
    if "not a database" in message:
        return f"{path} is not a SQLite database ({message}); point the URL at another file"
    if "readonly" in message or "read-only" in message:
        return f"{path} is read-only ({message}); make the file and its directory writable"
    if "unable to open" in message:
        return f"cannot create or open {path} ({message}); check the directory is writable"
    if "locked" in message or "busy" in message:
        return f"{path} stayed locked by another process ({message})"
    return message
