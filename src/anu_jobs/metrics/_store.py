"""``StoreCollector``: gauges read from the store, refreshed (awaited) before each scrape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from anu_jobs.grain import JobStage
from anu_jobs.hosting import JobClient
from anu_jobs.metrics._deps import require

if TYPE_CHECKING:
    from prometheus_client import Metric

__all__ = ["StoreCollector"]

log = logging.getLogger("anu_jobs.metrics")


@dataclass(frozen=True, slots=True)
class _Reading:
    reachable: bool = False
    due_not_started: int = 0
    silos_alive: int = 0
    jobs: dict[str, int] = field(default_factory=dict)


class StoreCollector:
    """A Prometheus collector of gauges about the whole store, read through a client:

    - ``anu_jobs_store_reachable``: 1 when the last refresh read the store, else 0 (the
      other store gauges are then left out rather than reported stale).
    - ``anu_jobs_due_not_started``: jobs due more than ``late_threshold`` ago that no
      silo has started (late or missed fires: the alert to have).
    - ``anu_jobs_silos_alive``: silos that are active and heartbeated within
      ``heartbeat_grace``.
    - ``anu_jobs_jobs{stage}``: jobs in each job stage (active, paused, finished,
      cancelled).

    prometheus-client collects synchronously while the store is async, so the values come
    from the last :meth:`refresh`; :func:`~anu_jobs.metrics.metrics_app` awaits one before
    each scrape, so nothing blocks the event loop. Each refresh is three cheap queries.
    """

    def __init__(
        self,
        client: JobClient,
        *,
        late_threshold: timedelta = timedelta(seconds=60),
        heartbeat_grace: timedelta = timedelta(seconds=30),
        timeout: float = 5.0,
    ) -> None:
        require("prometheus_client")
        self.client = client
        self.late_threshold = late_threshold
        self.heartbeat_grace = heartbeat_grace
        self.timeout = timeout
        self._reading = _Reading()

    async def refresh(self) -> None:
        """Read the store now; a failure (or ``timeout``) marks it unreachable."""
        try:
            self._reading = await asyncio.wait_for(self._read(), self.timeout)
        except Exception as exc:
            log.warning("metrics: reading the store failed: %s", exc)
            self._reading = _Reading(reachable=False)

    async def _read(self) -> _Reading:
        client = self.client
        overdue, _ = await client.overdue(self.late_threshold, limit=1)
        silos = await client.silos()
        since = await client.store_now() - self.heartbeat_grace
        alive = sum(1 for s in silos if s.status == "active" and s.heartbeat_at >= since)
        counts = await client.stage_counts()
        jobs = {stage.value: counts.get(stage.value, 0) for stage in JobStage}
        return _Reading(True, overdue, alive, jobs)

    def describe(self) -> Iterable[Metric]:
        return self._families(_Reading(reachable=True))

    def collect(self) -> Iterable[Metric]:
        return self._families(self._reading)

    def _families(self, reading: _Reading) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "anu_jobs_store_reachable", "1 when the store answered the last scrape's reads."
        )
        up.add_metric([], 1.0 if reading.reachable else 0.0)
        if not reading.reachable:
            return [up]
        late = GaugeMetricFamily(
            "anu_jobs_due_not_started",
            f"Jobs due more than {self.late_threshold.total_seconds():g}s ago that no silo "
            "has started.",
            value=reading.due_not_started,
        )
        silos = GaugeMetricFamily(
            "anu_jobs_silos_alive",
            "Silos that are active and heartbeated recently.",
            value=reading.silos_alive,
        )
        jobs = GaugeMetricFamily("anu_jobs_jobs", "Jobs in each job stage.", labels=["stage"])
        for stage, n in sorted(reading.jobs.items()):
            jobs.add_metric([stage], n)
        return [up, late, silos, jobs]
