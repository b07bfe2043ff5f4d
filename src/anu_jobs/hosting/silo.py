"""``Silo``: a process that hosts job grains, and the reconcile of its declared jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from anu_jobs import _json
from anu_jobs.clock import Clock
from anu_jobs.errors import DuplicateJobError
from anu_jobs.grain import GrainOptions, JobGrain, JobState
from anu_jobs.grain.state import STATE_ERRORS
from anu_jobs.hosting.client import JobClient
from anu_jobs.hosting.watchdog import LoopWatchdog
from anu_jobs.model import Job, JobRegistry
from anu_jobs.runtime import GrainHost, RuntimeOptions, SiloRuntime
from anu_jobs.storage.base import StateEnvelope, Storage
from anu_jobs.triggers import MisfirePolicy, Trigger

__all__ = ["DeclaredJob", "Silo", "SiloService"]

log = logging.getLogger("anu_jobs.silo")

MANIFEST_KEY = "builder-jobs"


@dataclass(frozen=True, slots=True)
class DeclaredJob:
    """A job declared on the builder; upserted at every start."""

    job_id: str
    cls: type[Job]
    params: Any
    triggers: tuple[Trigger, ...]
    misfire: MisfirePolicy | None
    overlap: str | None

    def fingerprint(self, params: dict[str, Any]) -> str:
        doc = {
            "type": self.cls.name,
            "params": params,
            "triggers": [t.to_json() for t in self.triggers],
            "misfire": (self.misfire or self.cls.misfire).to_json(),
            "overlap": self.overlap or self.cls.overlap,
        }
        return hashlib.sha256(_json.dumps(doc).encode()).hexdigest()[:16]


class SiloService(Protocol):
    """Something that runs beside a silo while it works, added with
    ``SiloBuilder.use_service()``: an HTTP endpoint (``anu_jobs.metrics.MetricsServer``),
    a reporter. Services start in the order added and stop in reverse."""

    async def start(self, silo: Silo) -> None:
        """Start; called once the silo claims work. Raising fails ``silo.start()``."""

    async def stop(self) -> None:
        """Stop; called once the silo has drained, before its store closes."""


class Silo:
    """Hosts job grains: claims due jobs, runs them, records them.

    Use it as ``async with silo:``, or ``await silo.start()`` / ``await silo.stop()``, or
    the blocking :meth:`run`, which stops gracefully on SIGINT and SIGTERM.
    """

    def __init__(
        self,
        storage: Storage,
        registry: JobRegistry,
        clock: Clock,
        declared: tuple[DeclaredJob, ...],
        runtime_options: RuntimeOptions,
        grain_options: GrainOptions,
        history_keep: int,
        drain_timeout: float,
        services: tuple[SiloService, ...] = (),
        watchdog: float | None = 1.0,
    ) -> None:
        self.storage = storage
        self.registry = registry
        self.clock = clock
        self.declared = declared
        self.history_keep = history_keep
        self.drain_timeout = drain_timeout
        self._grain_options = grain_options
        self._executor: ThreadPoolExecutor | None = None
        self.runtime = SiloRuntime(
            storage, clock, self._make_grain, runtime_options, maintenance=self._maintain
        )
        self.client = JobClient(storage, registry=registry, clock=clock, runtime=self.runtime)
        #: what ``SiloBuilder.use_service()`` added, started and stopped with the silo
        self.services = services
        self._live: list[SiloService] = []
        self._started = False
        #: watches the event loop while the silo runs (None: ``use_watchdog(None)``)
        self.watchdog = (
            LoopWatchdog(watchdog, running=self._running_jobs) if watchdog is not None else None
        )

    @property
    def silo_id(self) -> str:
        return self.runtime.silo_id

    def _running_jobs(self) -> list[str]:
        # Called on the watchdog's thread: one copy of the dict (atomic), then reads only.
        acts = list(self.runtime.activations.values())
        return sorted(a.job_id for a in acts if a.alive and a.logic.is_busy())

    def _make_grain(self, host: GrainHost, envelope: StateEnvelope) -> JobGrain:
        return JobGrain(host, envelope, self.registry, self._grain_options)

    async def _maintain(self) -> None:
        pruned = await self.storage.prune_runs(self.history_keep)
        if pruned:
            log.info("pruned %d old runs (keeping %d per job)", pruned, self.history_keep)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, upsert the declared jobs, and start claiming work."""
        if self._started:
            return
        await self.storage.open()
        workers = min(32, self.runtime.options.max_concurrency)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anu-jobs-sync")
        self._grain_options = dataclasses.replace(self._grain_options, executor=self._executor)
        try:
            await self._reconcile()
            await self.runtime.start()
        except BaseException:
            await self.storage.close()
            self._executor.shutdown(wait=False)
            raise
        self._started = True
        if self.watchdog is not None:
            self.watchdog.start()
        try:
            for service in self.services:
                await service.start(self)
                self._live.append(service)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop claiming; let running attempts finish for up to ``drain_timeout`` seconds;
        interrupt the rest (each runs again, as its next attempt, when a silo next takes the
        job); hand every lease back; close the store."""
        if not self._started:
            return
        self._started = False
        await self.runtime.stop(self.drain_timeout if drain_timeout is None else drain_timeout)
        live, self._live = self._live, []
        for service in reversed(live):
            try:
                await service.stop()
            except Exception as exc:
                log.warning("stopping %s failed: %s", type(service).__name__, exc)
        await self.client.close()
        await self.storage.close()
        if self.watchdog is not None:
            self.watchdog.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Silo:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run(self) -> None:
        """Run until SIGINT or SIGTERM, then stop gracefully (blocking)."""
        asyncio.run(self.serve())

    async def serve(self) -> None:
        """Start, wait for SIGINT or SIGTERM, stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            log.info("silo %s running; Ctrl+C to stop", self.silo_id)
            await stop.wait()
            log.info("stopping (draining for up to %gs)", self.drain_timeout)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()

    # -- declared jobs ----------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Upsert the builder's jobs without resetting them; retire the ones removed."""
        client = JobClient(self.storage, registry=self.registry, clock=self.clock)
        try:
            ids = []
            for decl in self.declared:
                ids.append(decl.job_id)
                await self._upsert(client, decl)
            previous = await self.storage.read_meta(MANIFEST_KEY)
            old = set(previous.get("job_ids", [])) if previous else set()
            for job_id in sorted(old - set(ids)):
                env = await self.storage.read_state(job_id)
                if env is None or env.stage == "cancelled":
                    continue
                log.warning("job %s is no longer declared on the silo builder: retiring it", job_id)
                await client.cancel(job_id, reason="removed from the silo's declared jobs")
            if set(ids) != old:
                await self.storage.write_meta(MANIFEST_KEY, {"job_ids": sorted(ids)})
        finally:
            await client.close()

    async def _upsert(self, client: JobClient, decl: DeclaredJob) -> None:
        state = client._new_state(
            decl.cls, decl.params, decl.triggers, decl.misfire, decl.overlap, "builder"
        )
        state.source = f"builder:{decl.fingerprint(state.params)}"
        env = await self.storage.read_state(decl.job_id)
        if env is not None:
            try:
                same = JobState.from_json(env.state).source == state.source
            except STATE_ERRORS:
                same = False
            if same and env.job_type == decl.cls.name:
                return
            log.info("declared job %s changed: updating its schedule", decl.job_id)
        try:
            await client._put(decl.job_id, decl.cls, state, replace=env is not None)
        except DuplicateJobError:  # another silo declared it at the same moment
            log.info("declared job %s was created by another silo", decl.job_id)
