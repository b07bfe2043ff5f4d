"""The PostgreSQL provider: the cluster store, shared by any number of silos and clients."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from anu_jobs import _json
from anu_jobs.clock import Clock
from anu_jobs.errors import ConfigurationError, StorageError, StorageUnavailableError
from anu_jobs.storage._common import (
    FREEING_STATUSES,
    MAX_US,
    NoticeHub,
    from_us,
    new_job_rows,
    silo_to_row,
    to_us,
)
from anu_jobs.storage._url import redact_text, redact_url
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
from anu_jobs.storage.postgres import _commit, _ops
from anu_jobs.storage.postgres._config import (
    DEFAULT_SCHEMA,
    PostgresConfig,
    channel_for,
    check_schema,
    parse_url,
)
from anu_jobs.storage.postgres._migrate import connect_and_migrate, reason
from anu_jobs.storage.postgres._notices import NoticeListener as _Listener
from anu_jobs.storage.postgres._notices import encode

__all__ = ["PostgresStorage"]

log = logging.getLogger("anu_jobs.storage.postgres")

P = ParamSpec("P")
R = TypeVar("R")
Conn = psycopg.AsyncConnection[Any]


class PostgresStorage(Storage):
    """A store in a PostgreSQL database (``postgresql://user:password@host:port/db``).

    Everything lives in one schema, ``anu_jobs`` unless the URL says ``?schema=NAME``,
    created and migrated at :meth:`open`. Each contract method is one statement on a
    pooled autocommit connection (psycopg 3, ``psycopg_pool``), so one round trip, with
    batches sent as binary arrays (a commit as one JSON document). Notices travel by
    LISTEN/NOTIFY on the channel ``anu_jobs_<schema>`` and reach every process using the
    schema, this one included, through one dedicated listening connection per object.

    :meth:`open` tries for ``connect_timeout`` seconds in all (``?connect_timeout=``,
    default 5) before it raises :class:`~anu_jobs.errors.StorageUnavailableError`. Later,
    a lost connection or server fails the call with :class:`~anu_jobs.errors.StorageError`;
    the pool replaces broken connections itself, so a retry works once the server is back.
    ``?pool_min_size=`` and ``?pool_max_size=`` size the pool (1 and 10). Every other URL
    parameter goes to libpq as it is.

    Store time (lease expiries, heartbeats, who is dead) is the server's clock, read in
    SQL, which every silo and client shares whatever its own clock says. Only tests pass
    ``clock``: it pins the store's time to that clock's instead.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        connect_timeout: float = 5.0,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        url: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._pinned_clock = clock
        self._config = PostgresConfig(
            conninfo, check_schema(schema), connect_timeout, pool_min_size, pool_max_size
        )
        self.url = redact_url(url or conninfo)
        self.schema = schema
        self._channel = channel_for(schema)
        self._hub = NoticeHub()
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(connect_timeout)),
        }
        try:
            given = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:  # libpq's message may quote the URL, password and all
            why = redact_text(redact_text(reason(exc), conninfo), url or "")
            raise ConfigurationError(f"{self.url} is not a URL libpq accepts: {why}") from None
        if "application_name" not in given:
            self._kwargs["application_name"] = "anu-jobs"
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener: _Listener | None = None
        self._checking: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> PostgresStorage:
        """``postgresql://…`` or ``postgres://…``, with optional ``schema=``,
        ``connect_timeout=`` (seconds, in all), ``pool_min_size=`` and ``pool_max_size=``;
        every other query parameter is passed to libpq. ``clock``: tests only (see the
        class)."""
        c = parse_url(url)
        return cls(
            c.conninfo,
            schema=c.schema,
            connect_timeout=c.connect_timeout,
            pool_min_size=c.pool_min_size,
            pool_max_size=c.pool_max_size,
            url=url,
            clock=clock,
        )

    def _pinned(self) -> int | None:
        """The store's time for a statement: None, the server's (``anu_now_us(NULL)``),
        unless a test pinned it to a clock."""
        return None if self._pinned_clock is None else to_us(self._pinned_clock.now())

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.connect_timeout
        conn = await connect_and_migrate(
            self._new_connection, self.schema, deadline, self.url, self._config.connect_timeout
        )
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._config.conninfo,
            kwargs=self._kwargs,
            min_size=self._config.pool_min_size,
            max_size=max(self._config.pool_min_size, self._config.pool_max_size),
            open=False,
            configure=self._configure,
            timeout=max(10.0, self._config.connect_timeout),
            name=f"anu-jobs-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=max(deadline - loop.time(), 0.5))
            listener = _Listener(self._new_connection, self._channel, self._hub)
            await listener.start(conn)
        except BaseException as exc:
            await pool.close()
            await conn.close()
            if isinstance(exc, PoolTimeout | psycopg.OperationalError):
                raise StorageUnavailableError(self.url, reason(exc)) from None
            raise
        self._pool, self._listener = pool, listener

    async def _new_connection(self) -> Conn:
        return await psycopg.AsyncConnection.connect(self._config.conninfo, **self._kwargs)

    async def _configure(self, conn: Conn) -> None:
        # Per connection, once: every statement then finds the store's tables unqualified.
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    async def close(self) -> None:
        pool, listener, checking = self._pool, self._listener, self._checking
        self._pool = self._listener = self._checking = None
        if listener is not None:
            await listener.close()
        if checking is not None:
            checking.cancel()
            await asyncio.gather(checking, return_exceptions=True)
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        pool = self._pool
        if pool is None:
            raise StorageError(f"the store {self.url} is not open; call open() first")
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StorageError(
                f"the store {self.url} had no connection to give within {pool.timeout:g}s "
                f"({reason(exc)}); is the server up?"
            ) from exc
        except psycopg.OperationalError as exc:
            await self._recheck(pool)
            raise StorageError(f"the store {self.url} failed: {reason(exc)}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"the store {self.url} failed: {reason(exc)}") from exc

    async def _recheck(self, pool: AsyncConnectionPool[Conn]) -> None:
        """After a connection failed, test the pool's idle connections (they likely died
        with it, as in a server restart), so that the caller's retry gets a live one."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(pool.check())
            self._checking.add_done_callback(_log_check_failure)
        # Wait a little, never cancel: a cancelled check() would lose connections.
        await asyncio.wait({self._checking}, timeout=1.0)

    async def _call(
        self, fn: Callable[Concatenate[Conn, P], Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        async with self._connection() as conn:
            return await fn(conn, *args, **kwargs)

    # -- grain state ------------------------------------------------------------------

    async def insert_job(
        self, job_id: str, job_type: str, stage: str, state: dict[str, Any], due_at: datetime | None
    ) -> int:
        text = _json.dumps(state)
        due_us = None if due_at is None else to_us(due_at)
        return await self._call(_ops.insert_job, job_id, job_type, stage, text, due_us)

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> None:
        await self.insert_encoded_jobs(new_job_rows(jobs))

    async def insert_encoded_jobs(self, rows: Sequence[NewJobRow]) -> None:
        if rows:
            await self._call(_ops.insert_jobs, rows)

    async def read_state(self, job_id: str) -> StateEnvelope | None:
        return await self._call(_ops.read_state, job_id)

    async def read_due_at(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        return await self._call(_ops.read_due_at, job_ids) if job_ids else {}

    async def list_jobs(self, query: JobQuery) -> list[StateEnvelope]:
        return await self._call(_ops.list_jobs, query)

    async def count_jobs(self, query: JobQuery) -> int:
        return await self._call(_ops.count_jobs, query)

    async def stage_counts(self) -> dict[str, int]:
        return await self._call(_ops.stage_counts)

    async def overdue(
        self, due_before: datetime, limit: int = 100
    ) -> tuple[int, list[tuple[str, datetime]]]:
        return await self._call(_ops.overdue, self._pinned(), to_us(due_before), limit)

    async def run_counts(
        self, since: datetime, bucket: timedelta
    ) -> list[tuple[datetime, str, int]]:
        bucket_us = bucket // timedelta(microseconds=1)
        if bucket_us <= 0:
            raise ValueError(f"bucket={bucket!r} must be positive")
        return await self._call(_ops.run_counts, to_us(since), bucket_us)

    # -- leases and reminders -----------------------------------------------------------

    async def claim_due(
        self, silo_id: str, now: datetime, until: datetime, limit: int, lease_for: timedelta
    ) -> list[Claim]:
        if limit <= 0:
            return []
        return await self._call(
            _ops.claim_due, silo_id, to_us(now), to_us(until), limit, _us(lease_for),
            self._pinned(),
        )  # fmt: skip

    async def acquire_lease(
        self, job_id: str, silo_id: str, lease_for: timedelta
    ) -> tuple[LeaseToken, StateEnvelope, tuple[ControlMessage, ...]] | None:
        return await self._call(_ops.acquire_lease, job_id, silo_id, _us(lease_for), self._pinned())

    async def renew_leases(
        self, tokens: Sequence[LeaseToken], lease_for: timedelta
    ) -> list[LeaseToken]:
        return await self._call(_ops.renew_leases, tokens, _us(lease_for), self._pinned())

    async def release_leases(self, tokens: Sequence[LeaseToken]) -> None:
        await self._call(_ops.release_leases, tokens)

    async def lease_holder(self, job_id: str) -> LeaseToken | None:
        return await self._call(_ops.lease_holder, job_id, self._pinned())

    async def next_due(self, now: datetime) -> datetime | None:
        due_us = await self._call(_ops.next_due, to_us(now), self._pinned())
        return None if due_us is None else from_us(due_us)

    # -- the write path -----------------------------------------------------------------

    async def commit(self, writes: Sequence[GrainWrite]) -> list[WriteResult]:
        if not writes:
            return []
        return await self._call(_commit.commit, writes)

    # -- control inbox -----------------------------------------------------------------

    async def post_control(self, job_id: str, body: dict[str, Any], now: datetime) -> int:
        return await self._call(_ops.post_control, job_id, _json.dumps(body), to_us(now))

    async def pending_control(self, silo_id: str) -> list[ControlMessage]:
        return await self._call(_ops.pending_control, silo_id)

    async def control_pending(self, msg_ids: Sequence[int]) -> set[int]:
        return await self._call(_ops.control_pending, msg_ids)

    # -- run history -------------------------------------------------------------------

    async def read_runs(
        self, job_id: str, limit: int = 100, before: datetime | None = None
    ) -> list[RunRecord]:
        before_us = MAX_US if before is None else to_us(before)
        return await self._call(_ops.read_runs, job_id, limit, before_us)

    async def read_run(self, run_id: str) -> RunRecord | None:
        return await self._call(_ops.read_run, run_id)

    async def prune_runs(self, keep: int) -> int:
        return await self._call(_ops.prune_runs, keep)

    # -- membership --------------------------------------------------------------------

    async def register_silo(self, info: SiloInfo) -> None:
        await self._call(_ops.register_silo, silo_to_row(info), self._pinned())

    async def heartbeat(self, silo_id: str) -> bool:
        return await self._call(_ops.heartbeat, silo_id, self._pinned())

    async def set_silo_status(self, silo_id: str, status: SiloStatus, now: datetime) -> None:
        await self._call(_ops.set_silo_status, silo_id, status, status in FREEING_STATUSES)

    async def declare_dead(self, dead_after: timedelta, by: str | None = None) -> list[str]:
        return await self._call(_ops.declare_dead, _us(dead_after), by, self._pinned())

    async def list_silos(self) -> list[SiloInfo]:
        return await self._call(_ops.list_silos)

    async def now(self) -> datetime:
        return from_us(await self._call(_ops.store_now, self._pinned()))

    # -- store metadata ------------------------------------------------------------------

    async def schema_versions(self) -> list[tuple[int, datetime]]:
        return [(v, from_us(at)) for v, at in await self._call(_ops.schema_versions)]

    async def read_meta(self, key: str) -> dict[str, Any] | None:
        return await self._call(_ops.read_meta, key)

    async def write_meta(self, key: str, value: dict[str, Any]) -> None:
        await self._call(_ops.write_meta, key, _json.dumps(value))

    # -- notices -----------------------------------------------------------------------

    async def notify(self, notices: Sequence[Notice]) -> None:
        """NOTIFY every process listening on this schema, this one included (its own
        listening connection hears it). Best effort: a failure is logged, not raised."""
        if not notices:
            return
        try:
            await self._call(_ops.notify, self._channel, encode(notices))
        except StorageError as exc:
            log.warning("could not send %d notice(s): %s", len(notices), exc)

    def add_listener(self, listener: NoticeListener) -> Callable[[], None]:
        return self._hub.add(listener)


def _us(duration: timedelta) -> int:
    return duration // timedelta(microseconds=1)


def _log_check_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("checking the pool's connections failed: %s", task.exception())
