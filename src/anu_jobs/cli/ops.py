"""Operator commands: ``trigger``, ``cancel``, ``pause``, ``resume``, ``delete``, ``silos``,
``db migrate`` and ``dashboard``. They register on the ``anu-jobs`` app when imported."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer

from anu_jobs.cli import render
from anu_jobs.cli.app import (
    EPILOG,
    EXIT_BAD_INPUT,
    EXIT_RUN,
    EXIT_STORE,
    JsonOption,
    UrlOption,
    _missing_sqlite_file,
    _print_json,
    _read,
    _scheme,
    _settings,
    app,
    err,
    errors,
    fail,
    out,
)
from anu_jobs.clock import SystemClock
from anu_jobs.errors import ConfigurationError, WaitTimeoutError
from anu_jobs.grain import JobStatus, RunInfo, RunStage
from anu_jobs.hosting import JobClient
from anu_jobs.storage import SiloInfo, Storage, open_storage, redact_url

__all__ = ["db_app"]

ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why; recorded with the job's stage change.")
]
JobIdArgument = Annotated[str, typer.Argument(help="The job's id.")]


def _say(text: str) -> None:
    out.print(render.safe(text), highlight=False, markup=False, soft_wrap=True)


# -- control ---------------------------------------------------------------------------


@app.command("trigger", epilog=EPILOG)
def trigger_cmd(
    ctx: typer.Context,
    job_id: JobIdArgument,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end and print its stage.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="With --wait: give up after this many seconds.")
    ] = 60.0,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Run a job now (a manual fire, queued behind a run in flight); print the run id.

    With --wait, wait for a silo to run it and print its final stage; exit 4 when the
    run ends other than completed, or has not ended after --timeout seconds.
    """
    settings = _settings(ctx, url)

    async def go(client: JobClient) -> tuple[str, RunInfo | None, bool]:
        run_id = await client.trigger(job_id)
        if not wait:
            return run_id, None, False
        if not as_json:
            _say(run_id)
            sys.stdout.flush()
        try:
            return run_id, await client.wait(job_id, run_id=run_id, timeout=timeout), False
        except WaitTimeoutError:
            return run_id, None, True

    run_id, run, timed_out = _read(settings.url, go)
    if timed_out:
        hint = "is a silo running on this store?"
        fail(f"run {run_id} did not end within {timeout:g}s; {hint}", EXIT_RUN)
    if run is None:
        if as_json:
            _print_json({"run_id": run_id})
        else:
            _say(run_id)
        return
    if as_json:
        _print_json(render.run_json(run))
    else:
        _say(run.stage.value)
        if run.error is not None:
            err.print(
                render.safe(f"  error: {run.error.type}: {run.error.message}"),
                highlight=False,
                markup=False,
            )
    if run.stage is not RunStage.COMPLETED:
        raise typer.Exit(EXIT_RUN)


@app.command(epilog=EPILOG)
def cancel(
    ctx: typer.Context, job_id: JobIdArgument, reason: ReasonOption = None, url: UrlOption = None
) -> None:
    """Cancel a job: stop its running attempt (after a grace period) and every future fire."""
    settings = _settings(ctx, url)
    _read(settings.url, lambda client: client.cancel(job_id, reason))
    _say(f"cancelled {job_id}")


@app.command(epilog=EPILOG)
def pause(
    ctx: typer.Context, job_id: JobIdArgument, reason: ReasonOption = None, url: UrlOption = None
) -> None:
    """Stop firing a job's triggers (a run in flight goes on) until `resume`."""
    settings = _settings(ctx, url)
    _read(settings.url, lambda client: client.pause(job_id, reason))
    _say(f"paused {job_id}")


@app.command(epilog=EPILOG)
def resume(ctx: typer.Context, job_id: JobIdArgument, url: UrlOption = None) -> None:
    """Fire a paused job's triggers again from now on (fires missed while paused are skipped)."""
    settings = _settings(ctx, url)
    _read(settings.url, lambda client: client.resume(job_id))
    _say(f"resumed {job_id}")


@app.command(epilog=EPILOG)
def delete(
    ctx: typer.Context,
    job_id: JobIdArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
) -> None:
    """Cancel a job and remove it with its run history (asks first unless --yes)."""
    settings = _settings(ctx, url)
    if not yes:
        status: JobStatus = _read(settings.url, lambda client: client.get(job_id))
        question = render.safe(
            f"delete {job_id} ({status.job_type}, {status.stage.value}) and its runs?"
        )
        try:
            confirmed = typer.confirm(question, default=False, err=True, prompt_suffix=" ")
        except typer.Abort:  # end of input: nobody answered
            err.print("")
            fail("not deleted: no answer; pass --yes to delete without asking", EXIT_BAD_INPUT)
        if not confirmed:
            err.print("not deleted", highlight=False)
            return
    _read(settings.url, lambda client: client.delete(job_id))
    _say(f"deleted {job_id}")


# -- cluster and store -----------------------------------------------------------------


@app.command(epilog=EPILOG)
def silos(ctx: typer.Context, as_json: JsonOption = False, url: UrlOption = None) -> None:
    """The silos the store knows: host, pid, status and last heartbeat."""
    settings = _settings(ctx, url)

    async def fetch(client: JobClient) -> tuple[list[SiloInfo], datetime]:
        return await client.silos(), await client.store_now()  # heartbeats' clock

    found, now = _read(settings.url, fetch)
    if as_json:
        _print_json([render.silo_json(s) for s in found])
    else:
        out.print(render.silos_table(found, now))


db_app = typer.Typer(
    help="The store's schema.", no_args_is_help=True, epilog=EPILOG, add_completion=False
)
app.add_typer(db_app, name="db")


async def _schema_versions(storage: Storage) -> list[tuple[int, datetime]] | None:
    """The migrations recorded in an open store, oldest first; None when the provider
    keeps no versioned schema (memory)."""
    return await storage.schema_versions() or None


@db_app.command("migrate", epilog=EPILOG)
def db_migrate(ctx: typer.Context, as_json: JsonOption = False, url: UrlOption = None) -> None:
    """Bring the store's schema up to date and print its version(s).

    Opening a store applies the migrations it lacks, so this opens it (creating a new
    SQLite file if there is none yet) and reports what was applied.
    """
    settings = _settings(ctx, url)
    # A migration applied by this open is stamped after this (SQLite's clock has
    # millisecond steps, hence the slack).
    began = SystemClock().now() - timedelta(milliseconds=2)

    async def go() -> list[tuple[int, datetime]] | None:
        storage = open_storage(settings.url)
        await storage.open()
        try:
            return await _schema_versions(storage)
        finally:
            await storage.close()

    with errors():
        versions = asyncio.run(go())
    shown = redact_url(settings.url)
    if versions is None:
        if as_json:
            _print_json({"url": shown, "version": None, "applied": []})
        else:
            _say(f"{shown}: this store keeps no versioned schema; nothing to migrate")
        return
    current = versions[-1][0] if versions else None
    applied = [v for v, at in versions if at >= began]
    if as_json:
        _print_json(
            {
                "url": shown,
                "version": current,
                "applied": applied,
                "migrations": [{"version": v, "applied_at": render.iso(at)} for v, at in versions],
            }
        )
    elif applied:
        _say(
            f"{shown}: schema at version {current}; "
            f"applied now: {', '.join(str(v) for v in applied)}"
        )
    else:
        _say(f"{shown}: schema at version {current}; up to date, nothing applied")


# -- dashboard -------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _dashboard_factory() -> Callable[..., Any]:
    try:
        module = importlib.import_module("anu_jobs.dashboard")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("anu_jobs"):
            fail("this anu-jobs has no dashboard", EXIT_BAD_INPUT)
        fail(
            f"the dashboard needs {exc.name!r}: pip install 'anu-jobs[dashboard]'",
            EXIT_BAD_INPUT,
        )
    factory: Callable[..., Any] = module.create_app
    return factory


@app.command(epilog=EPILOG)
def dashboard(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="The port to listen on.")] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ANU_JOBS_DASHBOARD_TOKEN",
            show_envvar=True,
            help="A bearer token that allows actions (trigger, cancel…).",
        ),
    ] = None,
    basic: Annotated[
        str | None,
        typer.Option(
            envvar="ANU_JOBS_DASHBOARD_BASIC",
            show_envvar=True,
            metavar="USER:PASSWORD",
            help="HTTP basic credentials that allow actions.",
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show jobs; allow no actions.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Serve the web dashboard on the store until Ctrl+C.

    A --host other than loopback needs --token or --basic, unless --read-only: the
    dashboard can trigger, cancel and delete jobs.
    """
    settings = _settings(ctx, url)
    if token is not None and basic is not None:
        fail("pass --token or --basic, not both", EXIT_BAD_INPUT)
    basic_auth: tuple[str, str] | None = None
    if basic is not None:
        user, sep, password = basic.partition(":")
        if not sep or not user or not password:
            fail("--basic takes USER:PASSWORD, both non-empty", EXIT_BAD_INPUT)
        basic_auth = (user, password)
    if not _is_loopback(host) and token is None and basic_auth is None and not read_only:
        fail(
            f"refusing to serve the dashboard on {host} without credentials: anyone who "
            "reaches it could trigger, cancel and delete jobs; pass --token or --basic "
            "(or --read-only), or keep --host 127.0.0.1",
            EXIT_BAD_INPUT,
        )
    if _scheme(settings.url) == "sqlite" and _missing_sqlite_file(settings.url) is not None:
        fail(
            f"no store at {redact_url(settings.url)}; pass --url (or set ANU_JOBS_URL)", EXIT_STORE
        )
    create_app = _dashboard_factory()
    try:
        import uvicorn
    except ModuleNotFoundError:
        fail("the dashboard needs uvicorn: pip install 'anu-jobs[dashboard]'", EXIT_BAD_INPUT)
    with errors():
        asgi = _dashboard_with_metrics(
            create_app, settings.url, token=token, basic_auth=basic_auth, read_only=read_only
        )
    mode = "read-only" if read_only else "actions need credentials"
    where = f"http://{host}:{port}"
    err.print(f"anu-jobs: dashboard for {redact_url(settings.url)} on {where} ({mode})")
    uvicorn.run(asgi, host=host, port=port, log_level="warning")


def _dashboard_with_metrics(create_app: Any, url: str, **options: Any) -> Any:
    """The dashboard app, with the store's Prometheus gauges at ``/metrics`` when the
    ``metrics`` extra is installed. One client serves both; it opens in the server's
    lifespan and closes at shutdown."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.routing import Mount

    from anu_jobs.hosting import JobClient

    try:
        from anu_jobs.metrics import metrics_app
    except ImportError:
        return create_app(url, **options)
    storage = open_storage(url)
    client = JobClient(storage, owns_storage=True)
    try:
        metrics = metrics_app(client)
    except ConfigurationError:  # prometheus-client is not installed
        return create_app(url, **options)
    dashboard = create_app(client, metrics_app=metrics, **options)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await storage.open()
        try:
            yield
        finally:
            await client.close()

    return Starlette(routes=[Mount("/", app=dashboard)], lifespan=lifespan)
