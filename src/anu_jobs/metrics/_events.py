"""``PrometheusEvents``: a silo's attempts and runs as Prometheus counters and histograms."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from anu_jobs.metrics._deps import require

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DURATION_BUCKETS", "LATENESS_BUCKETS", "PrometheusEvents"]

log = logging.getLogger("anu_jobs.metrics")

#: attempt durations: a few milliseconds to an hour
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
)  # fmt: skip
#: start lateness: on the dot (a millisecond) to a quarter of an hour and beyond
LATENESS_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0,
)  # fmt: skip


class PrometheusEvents:
    """Counts and times what a silo's job grains report (a :class:`~anu_jobs.grain.JobEvents`).

    Every metric lives in :attr:`registry`, a new ``CollectorRegistry`` unless one is
    given (pass ``prometheus_client.REGISTRY`` to export through the process's default
    registry). One counter per kind of event, with the outcome as a label, as Prometheus
    prefers to a counter per outcome:

    - ``anu_jobs_runs_started_total{job_type}``: runs begun (their first ``execute``
      attempt started in this silo).
    - ``anu_jobs_attempts_started_total{job_type,method}``: attempts of ``execute`` or
      ``compensate`` begun (a retry is another attempt of the same run).
    - ``anu_jobs_attempts_running{job_type}``: attempts running in this silo now.
    - ``anu_jobs_attempt_duration_seconds{job_type,method,outcome}``: how long attempts
      took; ``outcome`` is ``ok``, ``error``, ``cancelled``, ``interrupted`` or ``lost``.
      Its ``_count`` counts finished attempts.
    - ``anu_jobs_start_lateness_seconds{job_type}``: from a run's fire time to the start
      of its first ``execute`` attempt (retries, late by their backoff, are left out).
    - ``anu_jobs_runs_finished_total{job_type,stage}``: runs that reached a terminal stage:
      ``completed``, ``failed``, ``compensated``, ``cancelled`` or ``skipped``.

    Raises :class:`~anu_jobs.errors.ConfigurationError` when prometheus-client is missing.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        require("prometheus_client")
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.runs_started = Counter(
            "anu_jobs_runs_started",
            "Runs whose first execute attempt began in this silo.",
            ["job_type"],
            registry=reg,
        )
        self.attempts_started = Counter(
            "anu_jobs_attempts_started",
            "Attempts of a job's execute or compensate that began in this silo.",
            ["job_type", "method"],
            registry=reg,
        )
        self.attempts_running = Gauge(
            "anu_jobs_attempts_running",
            "Attempts running in this silo now.",
            ["job_type"],
            registry=reg,
        )
        self.attempt_duration = Histogram(
            "anu_jobs_attempt_duration_seconds",
            "How long attempts took, by outcome (ok, error, cancelled, interrupted, lost).",
            ["job_type", "method", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.start_lateness = Histogram(
            "anu_jobs_start_lateness_seconds",
            "Seconds from a run's fire time to the start of its first execute attempt.",
            ["job_type"],
            buckets=LATENESS_BUCKETS,
            registry=reg,
        )
        self.runs_finished = Counter(
            "anu_jobs_runs_finished",
            "Runs that reached a terminal stage (completed, failed, compensated, cancelled, "
            "skipped).",
            ["job_type", "stage"],
            registry=reg,
        )

    # JobEvents: called on the event loop; must be quick and must not raise. Job and run
    # ids are not labels: one time series per job or run would grow without bound.

    def attempt_started(
        self, job_type: str, job_id: str, run_id: str, method: str, attempt: int, lateness: float
    ) -> None:
        try:
            self.attempts_started.labels(job_type, method).inc()
            self.attempts_running.labels(job_type).inc()
            if method == "execute" and attempt == 1:
                self.runs_started.labels(job_type).inc()
                self.start_lateness.labels(job_type).observe(max(lateness, 0.0))
        except Exception:  # a metric must never fail a job
            log.exception("recording an attempt's start failed")

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
        try:
            self.attempts_running.labels(job_type).dec()
            self.attempt_duration.labels(job_type, method, outcome).observe(max(duration, 0.0))
        except Exception:
            log.exception("recording an attempt's end failed")

    def run_finished(self, job_type: str, job_id: str, run_id: str, stage: str) -> None:
        try:
            self.runs_finished.labels(job_type, stage).inc()
        except Exception:
            log.exception("recording a run's end failed")
