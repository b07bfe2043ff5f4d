"""``SiloBuilder``: declare storage, job types, declared jobs and options; build a ``Silo``."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from anu_jobs.clock import Clock, SystemClock
from anu_jobs.errors import ConfigurationError
from anu_jobs.grain import GrainOptions, JobEvents
from anu_jobs.hosting.client import check_job_id
from anu_jobs.hosting.silo import DeclaredJob, Silo, SiloService
from anu_jobs.model import Job, JobRegistry, validate_params
from anu_jobs.runtime import RuntimeOptions
from anu_jobs.storage import open_storage
from anu_jobs.triggers import Cron, Every, MisfirePolicy, Once, Trigger

__all__ = ["DEFAULT_STORAGE_URL", "SiloBuilder"]

DEFAULT_STORAGE_URL = "sqlite:///anu_jobs.db"

log = logging.getLogger("anu_jobs.silo")


class _FanOut:
    """Several :class:`JobEvents` listeners as one; one that raises does not stop the rest."""

    def __init__(self, listeners: list[JobEvents]) -> None:
        self.listeners = listeners

    def attempt_started(
        self, job_type: str, job_id: str, run_id: str, method: str, attempt: int, lateness: float
    ) -> None:
        for each in self.listeners:
            try:
                each.attempt_started(job_type, job_id, run_id, method, attempt, lateness)
            except Exception:
                log.exception("%s.attempt_started failed", type(each).__name__)

    def attempt_finished(
        self,
        job_type: str,
        job_id: str,
        run_id: str,
        method: str,
        attempt: int,
        outcome: str,
        duration: float,
    ) -> None:
        for each in self.listeners:
            try:
                each.attempt_finished(job_type, job_id, run_id, method, attempt, outcome, duration)
            except Exception:
                log.exception("%s.attempt_finished failed", type(each).__name__)

    def run_finished(self, job_type: str, job_id: str, run_id: str, stage: str) -> None:
        for each in self.listeners:
            try:
                each.run_finished(job_type, job_id, run_id, stage)
            except Exception:
                log.exception("%s.run_finished failed", type(each).__name__)


class SiloBuilder:
    """Fluent configuration of a :class:`Silo`; every method returns the builder.

    Mistakes (an invalid cron, an unknown option, a duplicate job id) raise at the call
    that made them, not later at start.
    """

    def __init__(self) -> None:
        self._url = DEFAULT_STORAGE_URL
        self._registry = JobRegistry()
        self._declared: dict[str, DeclaredJob] = {}
        self._clock: Clock = SystemClock()
        self._runtime: dict[str, Any] = {}
        self._cancel_grace = timedelta(seconds=5)
        self._history_keep = 100
        self._drain_timeout = 30.0
        self._events: list[JobEvents] = []
        self._services: list[SiloService] = []
        self._watchdog: float | None = 1.0

    def use_storage(self, url: str) -> SiloBuilder:
        """``sqlite:///path.db`` (the default, ``sqlite:///anu_jobs.db``), ``memory://``
        or ``memory://name`` (in this process only), or ``postgresql://…``."""
        if not isinstance(url, str):
            raise ConfigurationError(
                f"a storage URL looks like sqlite:///anu_jobs.db or memory://, not {url!r}"
            )
        open_storage(
            url
        )  # raises ConfigurationError now for a URL no provider takes; opens nothing
        self._url = url
        return self

    def use_jobs(self, *items: type[Job] | ModuleType) -> SiloBuilder:
        """Register job classes, or every ``Job`` subclass defined in the given modules."""
        self._registry.register(*items)
        return self

    def use_clock(self, clock: Clock) -> SiloBuilder:
        """Use another clock (``anu_jobs.testing.FakeClock`` in tests)."""
        self._clock = clock
        return self

    def use_concurrency(self, max_concurrency: int) -> SiloBuilder:
        """How many attempts may run at once in this silo (default 100)."""
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        self._runtime["max_concurrency"] = max_concurrency
        return self

    def use_events(self, events: JobEvents) -> SiloBuilder:
        """Report attempts and runs to ``events`` (see :class:`~anu_jobs.grain.JobEvents`),
        such as ``anu_jobs.metrics.PrometheusEvents`` or ``OtelEvents``. Each call adds a
        listener; they hear every event in the order added, and one that raises is logged
        and does not stop the others."""
        self._events.append(events)
        return self

    def use_service(self, service: SiloService) -> SiloBuilder:
        """Run ``service`` beside the silo (see :class:`~anu_jobs.hosting.silo.SiloService`),
        such as ``anu_jobs.metrics.MetricsServer``: the silo starts it once it claims work
        (a service that fails to start fails ``silo.start()``) and stops it once it has
        drained, in the reverse order of these calls."""
        self._services.append(service)
        return self

    def use_watchdog(self, threshold: timedelta | None = timedelta(seconds=1)) -> SiloBuilder:
        """Warn when the silo's event loop is held longer than ``threshold`` (default 1 s),
        naming the jobs running at the time (see :mod:`anu_jobs.hosting.watchdog`);
        ``None`` turns the watchdog off."""
        if threshold is not None and (
            not isinstance(threshold, timedelta) or threshold <= timedelta(0)
        ):
            raise ConfigurationError(
                f"the watchdog threshold is a positive timedelta or None, not {threshold!r}"
            )
        self._watchdog = None if threshold is None else threshold.total_seconds()
        return self

    def use_history(self, keep: int) -> SiloBuilder:
        """How many runs to keep per job (default 100); older ones are pruned."""
        if keep < 1:
            raise ConfigurationError("history must keep at least 1 run per job")
        self._history_keep = keep
        return self

    def use_options(
        self,
        *,
        cancel_grace: timedelta | None = None,
        drain_timeout: float | None = None,
        **runtime: Any,
    ) -> SiloBuilder:
        """Tune the runtime (see :class:`~anu_jobs.runtime.RuntimeOptions` for the names:
        ``lease_ttl``, ``lookahead``, ``keepalive``, ``heartbeat``, ``dead_after``,
        ``poll_interval``, ``claim_batch``…), the cancel grace period and the drain timeout."""
        fields = set(RuntimeOptions.__dataclass_fields__)
        unknown = set(runtime) - fields
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {sorted(unknown)}; known: {sorted(fields)}"
            )
        self._runtime.update(runtime)
        if cancel_grace is not None:
            self._cancel_grace = cancel_grace
        if drain_timeout is not None:
            self._drain_timeout = drain_timeout
        return self

    def use_job(
        self,
        cls: type[Job],
        *triggers: Trigger,
        job_id: str | None = None,
        params: Any = None,
        misfire: MisfirePolicy | None = None,
        overlap: str | None = None,
    ) -> SiloBuilder:
        """Declare a job with any triggers; it is upserted at every start of the silo."""
        self._registry.resolve(cls)
        jid = check_job_id(job_id or cls.name)
        if jid in self._declared:
            raise ConfigurationError(
                f"the job id {jid!r} is declared twice on this builder; "
                "pass job_id=... to tell them apart"
            )
        if overlap is not None and overlap not in ("skip", "queue_one"):
            raise ConfigurationError(f"overlap must be 'skip' or 'queue_one', not {overlap!r}")
        validate_params(cls, params)
        self._declared[jid] = DeclaredJob(jid, cls, params, tuple(triggers), misfire, overlap)
        return self

    def use_recurring_job(
        self,
        cls: type[Job],
        interval: timedelta,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        jitter: timedelta | None = None,
        **kwargs: Any,
    ) -> SiloBuilder:
        """Declare a job that runs every ``interval``."""
        return self.use_job(cls, Every(interval, start=start, end=end, jitter=jitter), **kwargs)

    def use_cron_job(
        self, cls: type[Job], expr: str, *, tz: str = "UTC", **kwargs: Any
    ) -> SiloBuilder:
        """Declare a job on a cron schedule (5 fields, or 6 with seconds first) in zone ``tz``."""
        return self.use_job(cls, Cron(expr, tz=tz), **kwargs)

    def use_one_time_job(
        self,
        cls: type[Job],
        *,
        at: datetime | None = None,
        delay: timedelta | None = None,
        **kwargs: Any,
    ) -> SiloBuilder:
        """Declare a job that runs once, at ``at`` or ``delay`` after the silo first starts
        (restarts do not schedule it again)."""
        return self.use_job(cls, Once(at=at, delay=delay), **kwargs)

    def build(self) -> Silo:
        """Build the silo (nothing is opened until it starts)."""
        options = RuntimeOptions(**self._runtime)
        # Even one listener goes through the fan-out, so a listener that raises never
        # reaches the job grain.
        events = _FanOut(list(self._events)) if self._events else None
        return Silo(
            storage=open_storage(self._url, clock=self._clock),
            registry=self._registry,
            clock=self._clock,
            declared=tuple(self._declared.values()),
            runtime_options=options,
            grain_options=GrainOptions(
                cancel_grace=self._cancel_grace, events=events, arm_ahead=options.lookahead
            ),
            history_keep=self._history_keep,
            drain_timeout=self._drain_timeout,
            services=tuple(self._services),
            watchdog=self._watchdog,
        )
