"""Small ASGI apps: ``/metrics`` (Prometheus text) and ``/healthz`` (a silo's health).

They are plain ASGI callables with no framework, so the ``metrics`` extra needs nothing but
prometheus-client; mount them in any ASGI app (Starlette's ``Mount``), or let a silo serve
them itself: ``builder.use_service(MetricsServer(events, port=…))``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from anu_jobs.hosting import JobClient, Silo
from anu_jobs.metrics._deps import require
from anu_jobs.metrics._events import PrometheusEvents
from anu_jobs.metrics._store import StoreCollector

if TYPE_CHECKING:
    from prometheus_client import Metric

__all__ = ["ASGIApp", "health_app", "metrics_app", "silo_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: an ASGI application
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PROBE_KEY = "health-probe"  # a meta key read (never written) to see the store answer


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(scope: Scope, send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _refuse(scope: Scope, send: Send) -> bool:
    """Answer anything but GET or HEAD with 405; True when it did."""
    if scope["method"] in ("GET", "HEAD"):
        return False
    await _respond(scope, send, 405, b"only GET and HEAD\n", "text/plain; charset=utf-8")
    return True


class _Proxy:
    """Collects another registry's metrics into this one (the events' counters)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        result: Iterable[Metric] = self._registry.collect()
        return result

    def describe(self) -> Iterable[Metric]:
        return []


def metrics_app(
    client: JobClient,
    events: PrometheusEvents | None = None,
    *,
    late_threshold: timedelta = timedelta(seconds=60),
    timeout: float = 5.0,
) -> ASGIApp:
    """An ASGI app that answers every GET with Prometheus metrics: the store gauges of
    :class:`StoreCollector` (read through ``client`` and awaited before rendering, so the
    event loop never blocks) and, when given, the counters and histograms of ``events``.
    It speaks OpenMetrics to a scraper that asks for it."""
    require("prometheus_client")
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    store = StoreCollector(client, late_threshold=late_threshold, timeout=timeout)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(store)
    if events is not None:
        registry.register(_Proxy(events.registry))
    lock = asyncio.Lock()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http" or await _refuse(scope, send):
            return
        accept = ""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"accept":
                accept = value.decode("latin-1")
        async with lock:  # one refresh at a time; a collect between awaits sees one reading
            await store.refresh()
            encoder, content_type = choose_encoder(accept)
            body = encoder(registry)
        await _respond(scope, send, 200, body, content_type)

    return app


async def health(silo: Silo, timeout: float = 2.0) -> tuple[bool, dict[str, Any]]:
    """Whether ``silo`` is healthy (claiming work, and its store answered within
    ``timeout`` seconds), and the JSON document that says so."""
    runtime = silo.runtime
    claiming = runtime.claiming and runtime.fatal is None
    try:
        await asyncio.wait_for(silo.storage.read_meta(HEALTH_PROBE_KEY), timeout)
        reachable = True
    except Exception:
        reachable = False
    doc = {
        "silo_id": silo.silo_id,
        "claiming": claiming,
        "store_reachable": reachable,
        "activations": len(runtime.activations),
    }
    if silo.watchdog is not None:  # how far behind the event loop runs, in seconds
        doc["loop_lag"] = round(silo.watchdog.lag, 3)
        doc["loop_max_lag"] = round(silo.watchdog.max_lag, 3)
    return claiming and reachable, doc


def health_app(silo: Silo, *, timeout: float = 2.0) -> ASGIApp:
    """An ASGI app that answers every GET with the silo's health as JSON:
    ``{"silo_id", "claiming", "store_reachable", "activations"}``; HTTP 200 when the silo
    is claiming work and its store answered within ``timeout`` seconds, else 503."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http" or await _refuse(scope, send):
            return
        ok, doc = await health(silo, timeout)
        body = (json.dumps(doc) + "\n").encode()
        await _respond(scope, send, 200 if ok else 503, body, "application/json")

    return app


def silo_app(silo: Silo, events: PrometheusEvents | None = None) -> ASGIApp:
    """``/metrics`` (:func:`metrics_app` on the silo's client) and ``/healthz``
    (:func:`health_app`); anything else is 404. What :class:`MetricsServer` serves."""
    routes: dict[str, ASGIApp] = {
        "/metrics": metrics_app(silo.client, events),
        "/healthz": health_app(silo),
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        target = routes.get(scope["path"].rstrip("/") or "/")
        if target is None:
            await _respond(scope, send, 404, b"try /metrics or /healthz\n", "text/plain")
            return
        await target(scope, receive, send)

    return app
