"""What every page shares: the client, auth, settings, templates and ``render``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse

from anu_jobs import JobClient
from anu_jobs.dashboard import charts, display
from anu_jobs.dashboard.auth import CSRF_FIELD, Auth, Session
from anu_jobs.errors import ConfigurationError, StorageError

__all__ = ["ClientSource", "Dashboard", "dashboard_of", "environment"]

log = logging.getLogger("anu_jobs.dashboard")

ActionsMode = Literal["enabled", "read_only", "unconfigured"]


class ClientSource:
    """The dashboard's :class:`JobClient`: the one given, or one opened from a URL in the
    app's lifespan (or at the first request, when the app is mounted and so gets no
    lifespan of its own) and closed at shutdown."""

    def __init__(self, client: JobClient | str) -> None:
        if isinstance(client, str):
            self._url: str | None = client
            self._client: JobClient | None = None
        elif isinstance(client, JobClient):
            self._url, self._client = None, client
        else:
            raise ConfigurationError(
                f"create_app needs a JobClient or a storage URL, not {type(client).__name__}"
            )
        self._lock = asyncio.Lock()

    async def get(self) -> JobClient:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                assert self._url is not None
                self._client = await JobClient.connect(self._url)
            return self._client

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self._url is not None:
            try:
                await self.get()
            except StorageError as exc:  # pages say 503 until the store is back
                log.warning("the dashboard's store is unreachable at start: %s", exc)
        try:
            yield
        finally:
            if self._url is not None and self._client is not None:
                client, self._client = self._client, None
                await client.close()


@dataclass
class Dashboard:
    """What every page needs: the client, auth, settings and the template environment."""

    source: ClientSource
    auth: Auth
    read_only: bool
    late_threshold: timedelta
    title: str
    env: jinja2.Environment = field(repr=False)

    @property
    def actions(self) -> ActionsMode:
        if self.read_only:
            return "read_only"
        return "enabled" if self.auth.configured else "unconfigured"

    async def client(self) -> JobClient:
        return await self.source.get()

    def session(self, request: Request) -> Session:
        cached: Session | None = getattr(request.state, "session", None)
        if cached is None:
            cached = self.auth.load_session(request)
            request.state.session = cached
        return cached

    def set_session(self, request: Request, session: Session) -> None:
        request.state.session = session

    def links(self, request: Request) -> display.Links:
        return display.Links(request.scope.get("root_path", ""))

    def render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        """Render a page with the common context, and set the session cookie when the
        session is new (so that the page's forms carry a CSRF token that will check)."""
        session = self.session(request)
        page = {
            "title": self.title,
            "links": self.links(request),
            "actions": self.actions,
            "authenticated": self.auth.authenticated(request, session),
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.auth.csrf_token(session),
            "login_modes": {
                "token": self.auth.token is not None,
                "basic": bool(self.auth.basic_auth),
            },
            "path": _full_path(request),
            "refresh": None,
            "flash": None,
            "nav": None,
        }
        page.update(context)
        html = self.env.get_template(template).render(page)
        response = HTMLResponse(html, status_code=status, headers=headers)
        response.headers["Cache-Control"] = "no-store"
        if session.fresh:
            self.auth.save_session(response, session, request)
        return response

    def error(
        self,
        request: Request,
        status: int,
        heading: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        context = {"status": status, "heading": heading, "message": message, "now": None}
        return self.render(request, "error.html", context, status=status, headers=headers)


def _full_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def dashboard_of(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("anu_jobs.dashboard", "templates"),
        autoescape=True,  # every template, whatever its name: ids and errors are untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        iso=display.iso,
        stamp=display.stamp,
        relative=display.relative,
        duration=display.duration,
        percent=display.percent,
        stage_class=display.stage_class,
        pretty_json=display.pretty_json,
        compensation_outcome=display.compensation_outcome,
        time_key=display.time_key,
        runs_chart=charts.runs_chart,
    )
    return env
