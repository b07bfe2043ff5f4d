"""Acting on jobs: log in and out, confirm, then trigger, cancel, pause, resume, delete.

Every action takes two steps. The job page's forms post to ``POST /action/{name}``
without ``confirm``: that only shows a confirmation page (also at
``GET /action/{name}?job=ID``), whose form posts again with ``confirm=yes`` (and the
reason, for cancel and pause), and only that acts. See :mod:`anu_jobs.dashboard.auth`
for the checks every POST passes.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from anu_jobs.dashboard.auth import CSRF_FIELD, CSRF_HEADER
from anu_jobs.dashboard.core import Dashboard, dashboard_of
from anu_jobs.errors import EtagConflictError, JobStateError, LeaseLostError

__all__ = ["ACTIONS", "act", "confirm", "login", "login_form", "logout"]

log = logging.getLogger("anu_jobs.dashboard")

ACTIONS = ("trigger", "cancel", "pause", "resume", "delete")
REASON_MAX = 500
_MAX_FORM_FIELDS = 16

READ_ONLY_MESSAGE = "This dashboard is read-only: it shows jobs but does not act on them."
UNCONFIGURED_MESSAGE = (
    "Actions are disabled because no credentials are configured. Start the dashboard "
    "with a token (create_app(..., token=...), or `anu-jobs dashboard --token ...`) or "
    "with basic auth (create_app(..., basic_auth=(user, password))) to trigger, cancel, "
    "pause, resume and delete jobs."
)


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=_MAX_FORM_FIELDS)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _disabled(dash: Dashboard, request: Request) -> Response | None:
    if dash.read_only:
        return dash.error(request, 403, "Read-only dashboard", READ_ONLY_MESSAGE)
    if not dash.auth.configured:
        return dash.error(request, 403, "Actions are disabled", UNCONFIGURED_MESSAGE)
    return None


def _guard(
    dash: Dashboard, request: Request, form: FormData, *, login: bool = False
) -> Response | None:
    """None when the POST may go on, else the response that refuses it."""
    refused = _disabled(dash, request)
    if refused is not None:
        return refused
    session = dash.session(request)
    if not login and not dash.auth.authenticated(request, session):
        return dash.error(
            request,
            401,
            "Log in first",
            "Acting on jobs needs credentials: log in with the dashboard's token, or send "
            "an Authorization header.",
            dash.auth.challenge(),
        )
    token = _text(form, CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not dash.auth.csrf_ok(session, token):
        return dash.error(
            request,
            403,
            "Forbidden",
            "The form's CSRF token is missing or does not belong to this session. Reload "
            "the page and submit again (the dashboard needs its session cookie).",
        )
    return None


def _safe_next(value: str | None, home: str) -> str:
    """A redirect target after login: a path on this site, never another site."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(c in value for c in "\r\n\x00")
    ):
        return home
    return value


def _client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


# -- logging in and out --------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    dash = dashboard_of(request)
    links = dash.links(request)
    context = {"now": None, "next": _safe_next(request.query_params.get("next"), links.home)}
    context["error"] = None
    return dash.render(request, "login.html", context)


async def login(request: Request) -> Response:
    dash = dashboard_of(request)
    links = dash.links(request)
    form = await _form(request)
    refused = _guard(dash, request, form, login=True)
    if refused is not None:
        return refused
    auth = dash.auth
    token, username, password = (
        _text(form, "token"),
        _text(form, "username"),
        _text(form, "password"),
    )
    ok = (bool(token) and auth.token_ok(token)) or (
        bool(username) and bool(password) and auth.basic_ok(username, password)
    )
    next_path = _safe_next(_text(form, "next"), links.home)
    if not ok:
        log.warning("dashboard: failed login from %s", _client_address(request))
        context: dict[str, Any] = {"now": None, "next": next_path, "error": "Wrong credentials."}
        return dash.render(request, "login.html", context, status=401)
    session = auth.new_session(authenticated=True)  # a new id: no session fixation
    dash.set_session(request, session)
    response = RedirectResponse(next_path, status_code=303)
    auth.save_session(response, session, request)
    log.info("dashboard: login from %s", _client_address(request))
    return response


async def logout(request: Request) -> Response:
    dash = dashboard_of(request)
    form = await _form(request)
    session = dash.session(request)
    token = _text(form, CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not dash.auth.csrf_ok(session, token):
        return dash.error(request, 403, "Forbidden", "The form's CSRF token is missing or wrong.")
    fresh = dash.auth.new_session()
    response = RedirectResponse(dash.links(request).overview(done="logout"), status_code=303)
    dash.auth.save_session(response, fresh, request)
    return response


# -- actions -------------------------------------------------------------------------------


async def confirm(request: Request) -> Response:
    dash = dashboard_of(request)
    action = request.path_params["action"]
    if action not in ACTIONS:
        return dash.error(request, 404, "Not found", f"There is no action {action!r}.")
    job_id = request.query_params.get("job", "")
    if not job_id:
        return dash.error(request, 400, "Bad request", "Name the job: ?job=ID.")
    refused = _disabled(dash, request)
    if refused is not None:
        return refused
    if not dash.auth.authenticated(request, dash.session(request)):
        path = request.url.path + "?" + request.url.query
        return RedirectResponse(dash.links(request).login_then(path), status_code=303)
    return await _confirm_page(dash, request, action, job_id)


async def _confirm_page(
    dash: Dashboard, request: Request, action: str, job_id: str, reason: str = ""
) -> Response:
    client = await dash.client()
    job = await client.get(job_id)
    context = {
        "now": client.clock.now(),
        "action": action,
        "job": job,
        "wants_reason": action in ("cancel", "pause"),
        "reason": reason,
        "reason_max": REASON_MAX,
    }
    return dash.render(request, "confirm.html", context)


async def act(request: Request) -> Response:
    dash = dashboard_of(request)
    action = request.path_params["action"]
    if action not in ACTIONS:
        return dash.error(request, 404, "Not found", f"There is no action {action!r}.")
    form = await _form(request)
    refused = _guard(dash, request, form)
    if refused is not None:
        return refused
    job_id = _text(form, "job")
    if not job_id:
        return dash.error(request, 400, "Bad request", "The form names no job.")
    reason = _text(form, "reason").strip()[:REASON_MAX] or None
    if _text(form, "confirm") != "yes":
        return await _confirm_page(dash, request, action, job_id, reason or "")
    links = dash.links(request)
    client = await dash.client()
    try:
        if action == "trigger":
            run_id = await client.trigger(job_id)
            target = links.job(job_id, done="trigger", run=run_id)
        elif action == "cancel":
            await client.cancel(job_id, reason=reason or "cancelled from the dashboard")
            target = links.job(job_id, done="cancel")
        elif action == "pause":
            await client.pause(job_id, reason=reason or "paused from the dashboard")
            target = links.job(job_id, done="pause")
        elif action == "resume":
            await client.resume(job_id)
            target = links.job(job_id, done="resume")
        else:
            await client.delete(job_id)
            target = links.jobs(done="delete", job=job_id)
    except JobStateError as exc:
        return dash.error(request, 409, "Not possible now", str(exc))
    except (EtagConflictError, LeaseLostError):
        return dash.error(
            request, 409, "Try again", "The job changed while acting on it; try again."
        )
    log.info("dashboard: %s %r from %s", action, job_id, _client_address(request))
    return RedirectResponse(target, status_code=303)
