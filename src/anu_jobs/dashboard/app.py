"""``create_app``: the dashboard as a Starlette (ASGI) application."""

from __future__ import annotations

import logging
from datetime import timedelta

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anu_jobs import JobClient
from anu_jobs.dashboard import actions, views
from anu_jobs.dashboard.auth import Auth
from anu_jobs.dashboard.core import ClientSource, Dashboard, dashboard_of, environment
from anu_jobs.errors import ConfigurationError, JobNotFoundError, StorageError

__all__ = ["create_app"]

log = logging.getLogger("anu_jobs.dashboard")

# Scripts: none. Styles and images: our own. Forms post only to us; no framing.
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


#: The dashboard's forms are a few short fields; a bigger body is refused (413).
MAX_BODY = 64 * 1024


class _Hardening:
    """Adds the CSP and the other hardening headers to every response, and refuses
    request bodies over :data:`MAX_BODY` bytes (counted as they arrive)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise HTTPException(413, f"The request body is over {MAX_BODY} bytes.")
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", _CSP)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "same-origin")
            await send(message)

        await self.app(scope, receive_limited, send_with_headers)


class _Asgi:
    """An ASGI app as a route endpoint (Starlette wraps plain functions as handlers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


# -- errors: a page, never a traceback -------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headings = {404: "Not found", 405: "Method not allowed", 413: "Request too large"}
    heading = headings.get(exc.status_code, "Error")
    detail = exc.detail if exc.status_code != 404 else "There is no page at this address."
    return dashboard_of(request).error(request, exc.status_code, heading, str(detail), exc.headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobNotFoundError)
    return dashboard_of(request).error(
        request, 404, "No such job", f"There is no job with id {exc.job_id!r}."
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("store unavailable while serving %s: %s", request.url.path, exc)
    return dashboard_of(request).error(
        request,
        503,
        "Store unavailable",
        "The job store cannot be reached right now; this page will work again once it "
        "can. The dashboard's log has the details.",
        {"Retry-After": "5"},
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("dashboard error on %s", request.url.path, exc_info=exc)
    return dashboard_of(request).error(
        request, 500, "Internal error", "The dashboard failed; its log has the details."
    )


def create_app(
    client: JobClient | str,
    *,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    read_only: bool = False,
    late_threshold: timedelta = timedelta(seconds=60),
    metrics_app: ASGIApp | None = None,
    title: str = "anu-jobs",
) -> Starlette:
    """The dashboard for the jobs that ``client`` sees (a :class:`JobClient`, such as a
    silo's ``silo.client``, or a storage URL to open in the app's lifespan).

    Reads are open to whoever reaches the app. Actions (trigger, cancel, pause, resume,
    delete) need ``token`` (sent as ``Authorization: Bearer``, or typed into the login
    form) or ``basic_auth=(user, password)``; with neither, or with ``read_only``, they
    are disabled and the pages say so. ``late_threshold``: how late a due job must be to
    show as late on the overview. ``metrics_app``: an ASGI app served at ``/metrics``.

    Mount it inside your own app with ``Mount("/jobs", app=create_app(silo.client))``.
    """
    if late_threshold <= timedelta(0):
        raise ConfigurationError(f"late_threshold must be positive, not {late_threshold}")
    source = ClientSource(client)
    auth = Auth(token, basic_auth)
    dash = Dashboard(source, auth, read_only, late_threshold, title, environment())
    routes: list[BaseRoute] = [
        Route("/", views.overview, name="overview"),
        Route("/jobs", views.jobs, name="jobs"),
        Route("/jobs/{job_id:path}", views.job, name="job"),
        Route("/job", views.job, name="job_by_query"),
        Route("/silos", views.silos, name="silos"),
        Route("/healthz", views.healthz, name="healthz"),
        Route("/login", actions.login_form, methods=["GET"], name="login"),
        Route("/login", actions.login, methods=["POST"]),
        Route("/logout", actions.logout, methods=["POST"], name="logout"),
        Route("/action/{action}", actions.confirm, methods=["GET"], name="confirm"),
        Route("/action/{action}", actions.act, methods=["POST"], name="act"),
        Mount("/static", StaticFiles(packages=[("anu_jobs.dashboard", "static")]), name="static"),
    ]
    if metrics_app is not None:
        routes.insert(0, Route("/metrics", _Asgi(metrics_app), name="metrics"))
        routes.insert(1, Mount("/metrics", metrics_app))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Hardening)],
        exception_handlers={
            HTTPException: _http_error,
            JobNotFoundError: _not_found,
            StorageError: _unavailable,
            Exception: _server_error,
        },
        lifespan=source.lifespan,
    )
    app.state.dashboard = dash
    return app
