"""Group commit: many activations' writes in one storage transaction."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from anu_jobs._gc import collector_paused
from anu_jobs.storage.base import GrainWrite, Storage

if TYPE_CHECKING:
    from anu_jobs.runtime.activation import Activation

__all__ = ["WriteBatcher"]

log = logging.getLogger("anu_jobs.runtime")


class WriteBatcher:
    """Collects dirty activations and commits them together, one transaction at a time.

    While a transaction is in flight, new writes gather for the next one, so the batch
    size adapts to the load: one write when idle, hundreds under a burst. If the store
    fails, the batch is kept and tried again with back-off; nothing is dropped.
    """

    def __init__(self, storage: Storage, max_batch: int = 1000) -> None:
        self._storage = storage
        self._max_batch = max_batch
        self._queue: dict[str, Activation] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.commits = 0
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="anu-jobs-writer")

    def enqueue(self, activation: Activation) -> None:
        self._queue[activation.job_id] = activation
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Return once every write enqueued so far is committed (or refused)."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.flush()
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping and not self._queue:
                return
            while self._queue:
                batch: list[Activation] = []
                for job_id in list(self._queue)[: self._max_batch]:
                    batch.append(self._queue.pop(job_id))
                pairs: list[tuple[Activation, GrainWrite]] = []
                with collector_paused(len(batch)):  # the writes outlive the pass
                    for act in batch:
                        write = act.build_write()
                        if write is not None:
                            pairs.append((act, write))
                if not pairs:
                    continue
                try:
                    results = await self._storage.commit([w for _, w in pairs])
                except Exception as exc:  # the store failed: keep the writes, try again
                    log.warning("commit of %d writes failed, retrying: %s", len(pairs), exc)
                    for act, write in pairs:
                        act.write_failed(write)
                        self._queue.setdefault(act.job_id, act)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                self.commits += 1
                self.writes += len(pairs)
                with collector_paused(len(pairs)):
                    for (act, write), result in zip(pairs, results, strict=True):
                        try:
                            act.write_done(write, result)
                        except Exception:
                            log.exception("job %s: handling its write result failed", act.job_id)
            if not self._queue:
                self._idle.set()
