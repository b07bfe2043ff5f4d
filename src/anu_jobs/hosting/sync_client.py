"""``SyncJobClient``: the same client for synchronous code (Django, Flask, scripts)."""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Coroutine, Sequence
from datetime import datetime
from types import ModuleType
from typing import Any, TypeVar

from anu_jobs.grain import JobStatus, RunInfo
from anu_jobs.hosting.client import JobClient
from anu_jobs.model import Job
from anu_jobs.storage.base import SiloInfo
from anu_jobs.triggers import MisfirePolicy, Trigger

__all__ = ["SyncJobClient"]

T = TypeVar("T")


class SyncJobClient:
    """A blocking facade over :class:`JobClient`, which runs on a private event loop
    thread. Methods and arguments are those of ``JobClient``."""

    def __init__(self, url: str, *, jobs: Sequence[type[Job] | ModuleType] = ()) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="anu-jobs-sync-client", daemon=True
        )
        self._thread.start()
        try:
            self._client: JobClient = self._call(_connect(url, jobs))
        except BaseException:
            self._shutdown()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def schedule(
        self,
        job: type[Job] | str,
        *,
        job_id: str | None = None,
        params: Any = None,
        trigger: Trigger | Sequence[Trigger] | None = None,
        replace: bool = False,
        misfire: MisfirePolicy | None = None,
        overlap: str | None = None,
    ) -> JobStatus:
        return self._call(
            self._client.schedule(
                job,
                job_id=job_id,
                params=params,
                trigger=trigger,
                replace=replace,
                misfire=misfire,
                overlap=overlap,
            )
        )

    def trigger(self, job_id: str) -> str:
        return self._call(self._client.trigger(job_id))

    def cancel(self, job_id: str, reason: str | None = None) -> None:
        self._call(self._client.cancel(job_id, reason))

    def pause(self, job_id: str, reason: str | None = None) -> None:
        self._call(self._client.pause(job_id, reason))

    def resume(self, job_id: str) -> None:
        self._call(self._client.resume(job_id))

    def delete(self, job_id: str) -> None:
        self._call(self._client.delete(job_id))

    def get(self, job_id: str) -> JobStatus:
        return self._call(self._client.get(job_id))

    def runs(
        self, job_id: str, limit: int = 100, before: datetime | None = None
    ) -> builtins.list[RunInfo]:
        return self._call(self._client.runs(job_id, limit, before))

    def list(self, **filters: Any) -> builtins.list[JobStatus]:
        return self._call(self._client.list(**filters))

    def silos(self) -> builtins.list[SiloInfo]:
        return self._call(self._client.silos())

    def wait(self, job_id: str, run_id: str | None = None, timeout: float = 30.0) -> RunInfo:
        return self._call(self._client.wait(job_id, run_id, timeout))

    def close(self) -> None:
        """Close the store and stop the client's thread."""
        if self._thread.is_alive():
            try:
                self._call(self._client.close())
            finally:
                self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncJobClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _connect(url: str, jobs: Sequence[type[Job] | ModuleType]) -> JobClient:
    return await JobClient.connect(url, jobs=jobs)
