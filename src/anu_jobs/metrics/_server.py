"""``MetricsServer``: a silo's ``/metrics`` and ``/healthz`` over HTTP, on uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from anu_jobs.errors import ConfigurationError
from anu_jobs.hosting import Silo
from anu_jobs.metrics._asgi import silo_app
from anu_jobs.metrics._deps import require
from anu_jobs.metrics._events import PrometheusEvents

if TYPE_CHECKING:
    import uvicorn

__all__ = ["MetricsServer"]

log = logging.getLogger("anu_jobs.metrics")


class MetricsServer:
    """Serves :func:`~anu_jobs.metrics.silo_app` (``/metrics`` with ``events``' counters
    and the store gauges, ``/healthz``) on ``host:port`` beside a silo, as a
    :class:`~anu_jobs.hosting.silo.SiloService`::

        metrics = PrometheusEvents()
        builder.use_events(metrics).use_service(MetricsServer(metrics, port=9100))

    Started once the silo claims work, stopped once it has drained (so a scrape during
    the drain still answers, and ``/healthz`` says 503). ``port=0`` takes any free port;
    :attr:`port` is the bound one once started.

    Raises :class:`~anu_jobs.errors.ConfigurationError` here for a bad port or a missing
    package (uvicorn: ``pip install 'anu-jobs[dashboard]'``; prometheus-client). The
    socket is bound at start, so a port in use raises it from ``silo.start()``. uvicorn
    leaves the process's signal handlers alone (they are the silo's).
    """

    def __init__(
        self,
        events: PrometheusEvents | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        require("prometheus_client")
        require("uvicorn")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"the metrics port must be 0..65535, not {port!r}")
        if not isinstance(host, str) or not host:
            raise ConfigurationError(
                f"the metrics host must be a host name or address, not {host!r}"
            )
        self.events = events
        self.host = host
        self._requested_port = port  # 0 binds any free port at each start
        self.port = port
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, silo: Silo) -> None:
        """Bind ``host:port`` and serve ``silo``; called by the silo once it claims work."""
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self._requested_port}: {exc.strerror or exc}"
            ) from None
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            silo_app(silo, self.events),
            lifespan="off",
            ws="none",
            log_config=None,  # the application's logging setup stays as it is
            log_level="warning",
            access_log=False,
        )
        server = _quiet_server()(config)
        self._server = server
        # The socket listens already: requests wait in its backlog until uvicorn accepts.
        self._task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name="anu-jobs-metrics"
        )
        self._task.add_done_callback(self._ended)
        log.info("serving /metrics and /healthz on %s", self.url)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the metrics server on %s failed: %s", self.url, task.exception())
        elif self._task is task:
            log.error("the metrics server on %s stopped early", self.url)

    async def stop(self) -> None:
        """Stop serving and close the socket; called by the silo once it has drained."""
        server, task, sock = self._server, self._task, self._sock
        self._server = self._task = self._sock = None
        if server is not None:
            server.should_exit = True
        if task is not None:
            try:
                await asyncio.wait_for(task, 5.0)
            except TimeoutError:
                log.warning("the metrics server did not stop within 5s")
            except Exception:
                pass  # _ended logged it
        if sock is not None:
            sock.close()


@functools.cache
def _quiet_server() -> type[uvicorn.Server]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # SIGINT and SIGTERM stay with the silo, which stops this server

    return QuietServer
