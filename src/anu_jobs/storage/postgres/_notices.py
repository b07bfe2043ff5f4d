"""Notices over LISTEN/NOTIFY: the payload format, and the one listening connection.

A payload is a compact JSON array of notices, each ``[kind, job_id, due_us]`` with
trailing nulls left out: ``[["due","a",1893456000000000],["control","b"]]``. One
:meth:`notify` call sends one NOTIFY, or a few when the notices pass what one payload
may carry (PostgreSQL's limit is 8,000 bytes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast, get_args

import psycopg
from psycopg import sql

from anu_jobs import _json
from anu_jobs._time import from_us_opt, to_us
from anu_jobs.storage._common import NoticeHub
from anu_jobs.storage.base import Notice, NoticeKind

__all__ = ["NoticeListener", "decode", "encode"]

log = logging.getLogger("anu_jobs.storage.postgres")

#: the most a payload carries; PostgreSQL refuses 8,000 bytes and more
MAX_PAYLOAD = 7000
_KINDS = frozenset(get_args(NoticeKind))


def _item(notice: Notice) -> list[Any]:
    item: list[Any] = [notice.kind, notice.job_id]
    if notice.due_at is not None:
        item.append(to_us(notice.due_at))
    elif notice.job_id is None:
        item.pop()
    return item


def encode(notices: Iterable[Notice], limit: int = MAX_PAYLOAD) -> list[str]:
    """The payloads that carry ``notices``, in order, each at most ``limit`` bytes."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 2  # the brackets
    for notice in notices:
        text = _json.dumps(_item(notice))
        if len(text.encode()) + 2 > limit:
            # An id too long to send: the bare kind still wakes the listener.
            text = _json.dumps([notice.kind])
        cost = len(text.encode()) + (1 if chunk else 0)
        if chunk and size + cost > limit:
            payloads.append("[" + ",".join(chunk) + "]")
            chunk, size = [], 2
            cost = len(text.encode())
        chunk.append(text)
        size += cost
    if chunk:
        payloads.append("[" + ",".join(chunk) + "]")
    return payloads


def decode(payload: str) -> list[Notice]:
    """The notices in a payload; what does not parse is dropped (notices are best effort)."""
    try:
        items = _json.loads(payload)
    except ValueError:
        log.warning("ignoring a notice payload that is not JSON: %.80r", payload)
        return []
    notices = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, list) or not item or item[0] not in _KINDS:
            continue
        job_id = item[1] if len(item) > 1 and isinstance(item[1], str) else None
        due = item[2] if len(item) > 2 and isinstance(item[2], int) else None
        notices.append(Notice(cast(NoticeKind, item[0]), job_id, from_us_opt(due)))
    return notices


Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


class NoticeListener:
    """One dedicated connection (not from the pool) that LISTENs on the store's channel
    and hands each notice to the hub's listeners on the event loop.

    When the connection drops it reconnects with backoff, and then publishes a bare
    ``due`` notice: notices sent meanwhile are lost, so listeners should look again.
    Notices this process sends come back through it too, which is how they reach this
    process's own listeners.
    """

    def __init__(
        self, connect: Connect, channel: str, hub: NoticeHub, keepalive: float = 60.0
    ) -> None:
        self._connect = connect
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._hub = hub
        self._keepalive = keepalive
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.reconnects = 0

    async def start(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """LISTEN on ``conn`` (an autocommit connection this object now owns), then
        dispatch in a task. Returns once notices are being received."""
        await conn.execute(self._listen)
        self._conn = conn
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="anu-jobs-postgres-listener"
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            conn = self._conn
            try:
                if conn is None:
                    conn = await self._connect()
                    await conn.execute(self._listen)
                    self._conn = conn
                    self.reconnects += 1
                    delay = 0.05
                    log.info("listening for notices again")
                    self._hub.publish([Notice("due")])
                await self._receive(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the notice connection failed (%s); reconnecting in %.2fs", exc, delay)
                self._conn = None
                if conn is not None:
                    await _close_quietly(conn)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for message in conn.notifies(timeout=self._keepalive):
            self._hub.publish(decode(message.payload))
        # A quiet spell: make sure the connection is still there (a silently dropped
        # one would otherwise wait for notices forever).
        await asyncio.wait_for(conn.execute("SELECT 1"), timeout=10)


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except Exception as exc:  # it is broken already; nothing more to do
        log.debug("closing a broken notice connection: %s", exc)
