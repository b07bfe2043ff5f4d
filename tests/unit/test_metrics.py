"""Metrics, health and tracing on a real embedded silo (memory store, FakeClock)."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from anu_jobs import (
    ConfigurationError,
    Job,
    JobClient,
    JobContext,
    Once,
    RetryPolicy,
    Silo,
    SiloBuilder,
    StorageError,
)
from anu_jobs._time import to_us
from anu_jobs.grain import RunInfo
from anu_jobs.metrics import (
    SPAN_NAME,
    MetricsServer,
    OtelEvents,
    PrometheusEvents,
    health_app,
    metrics_app,
)
from anu_jobs.storage import open_storage
from anu_jobs.testing import FakeClock
from tests.conftest import SiloFactory, drive, eventually


class Quick(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


class Undone(Job):
    """Fails once more than it may retry, then compensates."""

    retry = RetryPolicy(max_retries=1, initial_delay=timedelta(seconds=10))

    async def execute(self, ctx: JobContext) -> None:
        raise RuntimeError("no")

    async def compensate(self, ctx: JobContext) -> None:
        return None


def sample(events: PrometheusEvents, name: str, **labels: str) -> float:
    value = events.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def run_both(silo: Silo, clock: FakeClock) -> tuple[RunInfo, RunInfo]:
    """Run Quick once (on time) and Undone to compensation (one retry 10 s later)."""
    await silo.client.schedule(Quick, job_id="q", trigger=Once(delay=timedelta(0)))
    await silo.client.schedule(Undone, job_id="u", trigger=Once(delay=timedelta(0)))
    quick = await silo.client.wait("q", timeout=2)
    await eventually(lambda: _retrying(silo, "u"), "Undone's first failure")
    await drive(clock, lambda: _ended(silo, "u"), "Undone to be compensated", step=1)
    return quick, await silo.client.wait("u", timeout=2)


async def _retrying(silo: Silo, job_id: str) -> bool:
    run = (await silo.client.get(job_id)).current_run
    return run is not None and run.stage.value == "retrying"


async def _ended(silo: Silo, job_id: str) -> bool:
    status = await silo.client.get(job_id)
    return status.current_run is None and status.last_run is not None


@pytest.fixture
def metrics() -> PrometheusEvents:
    return PrometheusEvents()


# -- events ----------------------------------------------------------------------------


async def test_attempts_and_runs_are_counted_per_job_type(
    make_silo: SiloFactory, clock: FakeClock, metrics: PrometheusEvents
) -> None:
    async with make_silo(Quick, Undone, configure=lambda b: b.use_events(metrics)) as silo:
        await run_both(silo, clock)
        events = metrics
        runs = "anu_jobs_runs_started_total"
        assert sample(events, runs, job_type="Quick") == 1
        assert sample(events, runs, job_type="Undone") == 1  # its retry is not another run
        started = "anu_jobs_attempts_started_total"
        assert sample(events, started, job_type="Quick", method="execute") == 1
        assert sample(events, started, job_type="Undone", method="execute") == 2
        assert sample(events, started, job_type="Undone", method="compensate") == 1
        finished = "anu_jobs_runs_finished_total"
        assert sample(events, finished, job_type="Quick", stage="completed") == 1
        assert sample(events, finished, job_type="Undone", stage="compensated") == 1
        assert sample(events, finished, job_type="Undone", stage="completed") == 0
        took = "anu_jobs_attempt_duration_seconds_count"
        assert sample(events, took, job_type="Quick", method="execute", outcome="ok") == 1
        assert sample(events, took, job_type="Undone", method="execute", outcome="error") == 2
        assert sample(events, took, job_type="Undone", method="compensate", outcome="ok") == 1
        late = "anu_jobs_start_lateness_seconds"
        # On the dot on a FakeClock; the retry, 10 s (its backoff) after the fire, is not
        # a late start.
        assert sample(events, late + "_count", job_type="Quick") == 1
        assert sample(events, late + "_sum", job_type="Quick") == 0
        assert sample(events, late + "_count", job_type="Undone") == 1
        assert sample(events, late + "_sum", job_type="Undone") == 0
        for job_type in ("Quick", "Undone"):
            assert sample(events, "anu_jobs_attempts_running", job_type=job_type) == 0


async def test_metrics_compose_with_other_events(
    make_silo: SiloFactory, clock: FakeClock, metrics: PrometheusEvents
) -> None:
    heard: list[str] = []

    class Recorder:
        def attempt_started(
            self,
            job_type: str,
            job_id: str,
            run_id: str,
            method: str,
            attempt: int,
            lateness: float,
        ) -> None:
            raise RuntimeError("a broken listener does not silence the others")

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
            heard.append(outcome)

        def run_finished(self, job_type: str, job_id: str, run_id: str, stage: str) -> None:
            heard.append(stage)

    def configure(builder: SiloBuilder) -> SiloBuilder:
        return builder.use_events(Recorder()).use_events(metrics)

    async with make_silo(Quick, configure=configure) as silo:
        await silo.client.schedule(Quick, job_id="q", trigger=Once(delay=timedelta(0)))
        await silo.client.wait("q", timeout=2)
        assert heard == ["ok", "completed"]
        started = "anu_jobs_attempts_started_total"
        assert sample(metrics, started, job_type="Quick", method="execute") == 1


@pytest.mark.parametrize("port", [70000, -1, True, "9100"])
def test_a_bad_metrics_port_is_refused_at_construction(port: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"port must be 0\.\.65535"):
        MetricsServer(PrometheusEvents(), port=port)


def test_each_instance_has_its_own_registry() -> None:
    a, b = PrometheusEvents(), PrometheusEvents()
    a.run_finished("T", "j", "r", "completed")
    assert a.registry is not b.registry
    assert sample(a, "anu_jobs_runs_finished_total", job_type="T", stage="completed") == 1
    assert sample(b, "anu_jobs_runs_finished_total", job_type="T", stage="completed") == 0


@pytest.mark.parametrize(
    ("module", "extra", "make"),
    [
        ("prometheus_client", "metrics", PrometheusEvents),
        ("opentelemetry", "otel", OtelEvents),
        ("uvicorn", "dashboard", MetricsServer),
    ],
)
def test_a_missing_extra_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, module: str, extra: str, make: Any
) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigurationError, match=rf"pip install 'anu-jobs\[{extra}\]'"):
        make()


# -- the /metrics app ------------------------------------------------------------------


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://silo")


async def test_metrics_app_renders_counters_and_store_gauges(
    make_silo: SiloFactory, clock: FakeClock, metrics: PrometheusEvents
) -> None:
    async with make_silo(Quick, Undone, configure=lambda b: b.use_events(metrics)) as silo:
        await run_both(silo, clock)
        await silo.client.schedule(Quick, job_id="later", trigger=Once(delay=timedelta(hours=1)))
        await silo.client.schedule(Quick, job_id="p", trigger=Once(delay=timedelta(hours=1)))
        await silo.client.pause("p")
        async with asgi_client(metrics_app(silo.client, metrics)) as http:
            got = await http.get("/metrics")
            refused = await http.post("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain")
    text = got.text
    for line in (
        'anu_jobs_runs_finished_total{job_type="Quick",stage="completed"} 1.0',
        'anu_jobs_runs_finished_total{job_type="Undone",stage="compensated"} 1.0',
        'anu_jobs_attempts_started_total{job_type="Undone",method="execute"} 2.0',
        'anu_jobs_runs_started_total{job_type="Undone"} 1.0',
        'anu_jobs_attempt_duration_seconds_count{job_type="Undone",method="execute",'
        'outcome="error"} 2.0',
        'anu_jobs_start_lateness_seconds_bucket{job_type="Quick",le="0.001"} 1.0',
        "anu_jobs_store_reachable 1.0",
        "anu_jobs_due_not_started 0.0",
        "anu_jobs_silos_alive 1.0",
        'anu_jobs_jobs{stage="active"} 1.0',
        'anu_jobs_jobs{stage="paused"} 1.0',
        'anu_jobs_jobs{stage="finished"} 2.0',
        'anu_jobs_jobs{stage="cancelled"} 0.0',
    ):
        assert line in text, line
    assert refused.status_code == 405


async def test_due_not_started_counts_late_fires(clock: FakeClock, memory_url: str) -> None:
    """No silo runs: a job due two minutes ago is late; one due 30 s ago is not yet."""
    storage = open_storage(memory_url)
    await storage.open()
    client = JobClient(storage, clock=clock, owns_storage=True)
    client.registry.register(Quick)
    try:
        await client.schedule(Quick, job_id="late", trigger=Once(delay=timedelta(0)))
        await clock.advance(90)
        await client.schedule(Quick, job_id="recent", trigger=Once(delay=timedelta(0)))
        await clock.advance(30)
        app = metrics_app(client, late_threshold=timedelta(seconds=60))
        async with asgi_client(app) as http:
            text = (await http.get("/")).text
    finally:
        await client.close()
    assert "anu_jobs_due_not_started 1.0" in text
    assert "anu_jobs_silos_alive 0.0" in text
    assert "anu_jobs_attempts_started_total" not in text  # no events given


async def test_an_unreachable_store_is_a_gauge_not_an_error() -> None:
    class Down:
        async def overdue(self, *args: object, **kwargs: object) -> Any:
            raise StorageError("the store is down")

    async with asgi_client(metrics_app(Down())) as http:  # type: ignore[arg-type]
        got = await http.get("/metrics")
    assert got.status_code == 200
    assert "anu_jobs_store_reachable 0.0" in got.text
    assert "anu_jobs_jobs" not in got.text


# -- health ----------------------------------------------------------------------------


async def test_health_is_200_while_claiming_and_503_after(make_silo: SiloFactory) -> None:
    async with make_silo(Quick) as silo:
        async with asgi_client(health_app(silo)) as http:
            ok = await http.get("/healthz")
        body = ok.json()
        assert ok.status_code == 200, body
        assert body.pop("loop_lag") >= 0 and body.pop("loop_max_lag") >= 0  # the watchdog's
        assert body == {
            "silo_id": silo.silo_id,
            "claiming": True,
            "store_reachable": True,
            "activations": 0,
        }
    async with asgi_client(health_app(silo)) as http:
        stopped = await http.get("/healthz")
    assert stopped.status_code == 503
    assert stopped.json()["claiming"] is False


async def test_health_is_503_when_the_store_does_not_answer(
    make_silo: SiloFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_silo(Quick) as silo:

        async def broken(key: str) -> None:
            raise StorageError("disk on fire")

        monkeypatch.setattr(silo.storage, "read_meta", broken)
        async with asgi_client(health_app(silo)) as http:
            got = await http.get("/healthz")
        monkeypatch.undo()
    assert got.status_code == 503
    assert json.loads(got.text)["store_reachable"] is False
    assert json.loads(got.text)["claiming"] is True


# -- served by the silo ----------------------------------------------------------------


@pytest.fixture
async def served(
    make_silo: SiloFactory, metrics: PrometheusEvents
) -> AsyncIterator[tuple[Silo, str]]:
    server = MetricsServer(metrics)  # port=0: any free port, read after start
    configure = lambda b: b.use_events(metrics).use_service(server)  # noqa: E731
    async with make_silo(Quick, configure=configure) as silo:
        assert silo.services == (server,)
        assert server.port != 0
        yield silo, server.url


async def test_a_silo_serves_metrics_and_health(served: tuple[Silo, str]) -> None:
    silo, url = served
    async with httpx.AsyncClient(base_url=url) as http:
        metrics = await http.get("/metrics")
        health = await http.get("/healthz")
        other = await http.get("/")
    assert metrics.status_code == 200
    assert "anu_jobs_silos_alive 1.0" in metrics.text
    assert "anu_jobs_runs_finished_total" in metrics.text
    assert health.status_code == 200
    assert health.json()["silo_id"] == silo.silo_id
    assert other.status_code == 404


async def test_the_server_stops_with_the_silo(make_silo: SiloFactory) -> None:
    server = MetricsServer()  # no events: health and the store gauges only
    async with make_silo(Quick, configure=lambda b: b.use_service(server)):
        url = server.url
    async with httpx.AsyncClient(base_url=url) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/healthz")


async def test_a_port_in_use_fails_start_and_leaves_nothing_open(memory_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        builder = SiloBuilder().use_storage(memory_url).use_jobs(Quick)
        silo = builder.use_service(MetricsServer(port=port)).build()
        with pytest.raises(ConfigurationError, match=str(port)):
            await silo.start()
    assert not silo.runtime.claiming
    await silo.stop()  # harmless: it stopped itself


async def test_services_start_once_claiming_and_stop_after_the_drain(
    make_silo: SiloFactory,
) -> None:
    log: list[tuple[str, str, bool]] = []

    class Service:
        def __init__(self, name: str) -> None:
            self.name = name
            self.silo: Silo | None = None

        async def start(self, silo: Silo) -> None:
            self.silo = silo
            log.append(("start", self.name, silo.runtime.claiming))

        async def stop(self) -> None:
            assert self.silo is not None
            log.append(("stop", self.name, self.silo.runtime.claiming))

    a, b = Service("a"), Service("b")
    async with make_silo(Quick, configure=lambda x: x.use_service(a).use_service(b)) as silo:
        assert a.silo is silo and b.silo is silo
        assert log == [("start", "a", True), ("start", "b", True)]
    assert log[2:] == [("stop", "b", False), ("stop", "a", False)]


# -- tracing ---------------------------------------------------------------------------


async def test_tracing_records_a_span_per_attempt(
    make_silo: SiloFactory, clock: FakeClock, metrics: PrometheusEvents
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = OtelEvents(provider, clock=clock)  # the silo's clock: spans on its timeline

    async with make_silo(
        Quick, Undone, configure=lambda b: b.use_events(metrics).use_events(tracing)
    ) as silo:
        quick, undone = await run_both(silo, clock)
        end = clock.now()
    spans = exporter.get_finished_spans()
    assert all(s.name == SPAN_NAME for s in spans)
    seen = sorted(
        (
            str(s.attributes["anu_jobs.job_type"]),
            str(s.attributes["anu_jobs.job_id"]),
            str(s.attributes["anu_jobs.run_id"]),
            str(s.attributes["anu_jobs.method"]),
            s.attributes["anu_jobs.attempt"],
            str(s.attributes["anu_jobs.outcome"]),
            s.status.status_code,
        )
        for s in spans
        if s.attributes is not None
    )
    q, u = quick.run_id, undone.run_id
    assert seen == [
        ("Quick", "q", q, "execute", 1, "ok", StatusCode.OK),
        ("Undone", "u", u, "compensate", 2, "ok", StatusCode.OK),
        ("Undone", "u", u, "execute", 1, "error", StatusCode.ERROR),
        ("Undone", "u", u, "execute", 2, "error", StatusCode.ERROR),
    ]
    for span in spans:
        assert span.parent is None
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time <= to_us(end) * 1000  # the silo's clock
    finished = "anu_jobs_runs_finished_total"
    assert sample(metrics, finished, job_type="Quick", stage="completed") == 1
    provider.shutdown()
