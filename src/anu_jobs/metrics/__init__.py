"""Metrics, health and tracing for silos: the operator surface's view of a running cluster.

Install with ``pip install 'anu-jobs[metrics]'`` (prometheus-client), ``[otel]``
(opentelemetry-api) and, to let a silo serve HTTP itself, ``[dashboard]`` (uvicorn).
Nothing optional is imported until it is used; a missing package raises
:class:`~anu_jobs.errors.ConfigurationError` naming what to install.

This layer sits above hosting and plugs into a silo through the builder's two seams,
``use_events`` (a :class:`~anu_jobs.grain.JobEvents` listener) and ``use_service`` (a
:class:`~anu_jobs.hosting.silo.SiloService`)::

    from anu_jobs.metrics import MetricsServer, OtelEvents, PrometheusEvents

    metrics = PrometheusEvents()
    builder.use_events(metrics).use_service(MetricsServer(metrics, port=9100))
    builder.use_events(OtelEvents(tracer_provider))

- :class:`PrometheusEvents`: what a silo's job grains report, as counters and histograms.
- :class:`StoreCollector`: gauges about the whole store, read through a client.
- :func:`metrics_app`, :func:`health_app`, :func:`silo_app`: small ASGI apps for
  ``/metrics`` and ``/healthz``, to mount in your own ASGI app.
- :class:`MetricsServer`: a silo service that serves :func:`silo_app` on a port.
- :class:`OtelEvents`: an OpenTelemetry span per attempt.

Metric names:

========================================== ======= =============================
``anu_jobs_runs_started_total``            counter ``job_type``
``anu_jobs_attempts_started_total``        counter ``job_type``, ``method``
``anu_jobs_attempts_running``              gauge   ``job_type``
``anu_jobs_attempt_duration_seconds``      histo.  ``job_type``, ``method``, ``outcome``
``anu_jobs_start_lateness_seconds``        histo.  ``job_type``
``anu_jobs_runs_finished_total``           counter ``job_type``, ``stage``
``anu_jobs_store_reachable``               gauge
``anu_jobs_due_not_started``               gauge
``anu_jobs_silos_alive``                   gauge
``anu_jobs_jobs``                          gauge   ``stage``
========================================== ======= =============================
"""

from anu_jobs.metrics._asgi import ASGIApp, health, health_app, metrics_app, silo_app
from anu_jobs.metrics._events import DURATION_BUCKETS, LATENESS_BUCKETS, PrometheusEvents
from anu_jobs.metrics._otel import SPAN_NAME, OtelEvents
from anu_jobs.metrics._server import MetricsServer
from anu_jobs.metrics._store import StoreCollector

__all__ = [
    "DURATION_BUCKETS",
    "LATENESS_BUCKETS",
    "SPAN_NAME",
    "ASGIApp",
    "MetricsServer",
    "OtelEvents",
    "PrometheusEvents",
    "StoreCollector",
    "health",
    "health_app",
    "metrics_app",
    "silo_app",
]
