"""The ``anu-jobs`` typer app: ``demo``, ``run``, ``jobs``, ``show`` and ``runs``; the
operator commands in :mod:`anu_jobs.cli.ops` and :mod:`anu_jobs.cli.fires` register here.

The store is ``--url`` (before or after the command), else ``ANU_JOBS_URL``, else
``sqlite:///anu_jobs.db``. Exit codes: 0 ok, 1 not found, 2 bad input, 3 store
unreachable, 4 ``trigger --wait``: the run did not complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import unquote

import typer
from rich.console import Console

from anu_jobs import __version__
from anu_jobs.cli import render
from anu_jobs.cli.target import TargetError, load_target
from anu_jobs.errors import AnuJobsError, JobNotFoundError, StorageError
from anu_jobs.grain import JobStage, JobStatus, RunInfo
from anu_jobs.hosting import DEFAULT_STORAGE_URL, JobClient, Silo
from anu_jobs.storage import redact_url

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_RUN",
    "EXIT_STORE",
    "app",
    "main",
]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_STORE = 3
EXIT_RUN = 4

EPILOG = (
    "Exit codes: 0 ok; 1 not found; 2 bad input (usage, URL, job definition, a job's "
    "stage that forbids the call); 3 store unreachable; 4 `trigger --wait`: the run did "
    "not complete.  The store is --url, else $ANU_JOBS_URL, "
    f"else {DEFAULT_STORAGE_URL}."
)

T = TypeVar("T")

app = typer.Typer(
    name="anu-jobs",
    help="Durable job scheduling on virtual actors: run silos, inspect jobs and their runs.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# Piped output gets room for wide tables (rich would assume 80 columns); COLUMNS still wins.
out = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
err = Console(stderr=True, soft_wrap=True)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the global options chose: the store URL, and whether ``--url`` was given."""

    url: str
    explicit: bool


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="The store, e.g. sqlite:///anu_jobs.db or postgresql://…", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"anu-jobs {__version__}", highlight=False)
        raise typer.Exit()


@app.callback(epilog=EPILOG)
def _root(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="ANU_JOBS_URL", help="The store to use.", show_envvar=True),
    ] = DEFAULT_STORAGE_URL,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Durable job scheduling on virtual actors: run silos, inspect jobs and their runs."""
    source = ctx.get_parameter_source("url")
    explicit = source is not None and source.name == "COMMANDLINE"  # not the env, not the default
    ctx.obj = Settings(url, explicit)


def _settings(ctx: typer.Context, url: str | None) -> Settings:
    if url is not None:
        return Settings(url, True)
    found = ctx.find_object(Settings)
    return found if found is not None else Settings(DEFAULT_STORAGE_URL, False)


# -- errors ----------------------------------------------------------------------------


def fail(message: str, code: int) -> NoReturn:
    """Print ``anu-jobs: message`` (one line) to stderr and exit with ``code``."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "") if lines else "error"
    err.print(f"anu-jobs: {text}", highlight=False, markup=False)
    raise typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """Turn anu-jobs' errors into a one-line message and the documented exit code."""
    try:
        yield
    except JobNotFoundError as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except StorageError as exc:
        fail(str(exc), EXIT_STORE)
    except (AnuJobsError, TargetError) as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower().split("+", 1)[0]


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite store whose file does not exist (in a directory that does).

    Read commands refuse it rather than create an empty database by a typo.
    """
    if _scheme(url) != "sqlite":
        return None
    location = url.partition("://")[2].partition("?")[0]
    if len(location) < 2 or not location.startswith("/"):
        return None  # the provider explains what is wrong with it
    path = unquote(location[1:])
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory) and not os.path.exists(path):
        return path
    return None


def _read(url: str, fn: Callable[[JobClient], Awaitable[T]]) -> T:
    """Open a client on ``url``, call ``fn`` with it, close it."""
    missing = _missing_sqlite_file(url)
    if missing is not None:
        fail(
            f"no store at {redact_url(url)}: {missing} does not exist; "
            "pass --url (or set ANU_JOBS_URL), or create it with `anu-jobs demo`",
            EXIT_STORE,
        )

    async def go() -> T:
        async with JobClient.connect(url) as client:
            return await fn(client)

    with errors():
        return asyncio.run(go())


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- commands --------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def demo(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(min=1.0, help="How long to run the demo.")] = 20.0,
    url: UrlOption = None,
) -> None:
    """Run an embedded silo with sample jobs and watch them live; the database stays."""
    from anu_jobs.cli.demo import run_demo

    settings = _settings(ctx, url)
    shown = redact_url(settings.url)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out.print(f"anu-jobs demo on {shown} for {seconds:g}s (Ctrl+C stops it)", highlight=False)
    with errors():
        run_demo(settings.url, seconds, out)
    if _scheme(settings.url) == "memory":
        out.print("done; the memory:// store went with the demo's process", highlight=False)
    else:
        hint = f"done; inspect the jobs with: anu-jobs jobs --url {shown}"
        out.print(hint, highlight=False, soft_wrap=True)


@app.command(epilog=EPILOG)
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="module:attr naming a SiloBuilder or a Silo.")],
    url: UrlOption = None,
    log_level: Annotated[str, typer.Option(help="Logging level: debug, info, warning…")] = "info",
) -> None:
    """Run a silo until SIGINT or SIGTERM, then stop it gracefully.

    A SiloBuilder gets --url (when given) as its storage; ANU_JOBS_URL does not apply
    here, so the builder's own storage wins unless --url is given.
    """
    settings = _settings(ctx, url)
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(
            f"--log-level {log_level!r} is not a logging level (debug, info, warning, error)",
            EXIT_BAD_INPUT,
        )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with errors():
        silo = load_target(target, settings.url if settings.explicit else None)
        _serve(silo, target)


def _serve(silo: Silo, target: str) -> None:
    url = getattr(silo.storage, "url", None)
    where = f" on {redact_url(url)}" if isinstance(url, str) else ""
    err.print(f"anu-jobs: running {target}{where}", highlight=False)
    silo.run()


@app.command(epilog=EPILOG)
def jobs(
    ctx: typer.Context,
    stage: Annotated[JobStage | None, typer.Option(help="Only jobs in this stage.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    search: Annotated[str | None, typer.Option(help="Only jobs whose id contains this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many jobs.")] = 100,
    after: Annotated[str | None, typer.Option(help="Start after this job id (paging).")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """List jobs by id: type, stage, next fire time and last run."""
    settings = _settings(ctx, url)

    async def fetch(client: JobClient) -> tuple[list[JobStatus], datetime]:
        found = await client.list(
            stage=stage.value if stage else None,
            job_type=job_type,
            text=search,
            after=after,
            limit=limit,
        )
        return found, client.clock.now()

    found, now = _read(settings.url, fetch)
    if as_json:
        _print_json([render.job_json(job, transitions=False) for job in found])
    else:
        out.print(render.jobs_table(found, now))


@app.command(epilog=EPILOG)
def show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Show a job: triggers, stage, next fire, current run and its last 10 runs."""
    settings = _settings(ctx, url)

    async def fetch(client: JobClient) -> tuple[JobStatus, list[RunInfo], datetime]:
        status = await client.get(job_id)
        return status, await client.runs(job_id, limit=10), client.clock.now()

    status, runs_, now = _read(settings.url, fetch)
    if as_json:
        _print_json({**render.job_json(status), "runs": [render.run_json(r) for r in runs_]})
    else:
        out.print(render.job_view(status, runs_, now))


@app.command(epilog=EPILOG)
def runs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many runs.")] = 20,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """A job's run history, newest first: each run's stage timeline and errors."""
    settings = _settings(ctx, url)

    async def fetch(client: JobClient) -> tuple[list[RunInfo], datetime]:
        return await client.runs(job_id, limit=limit), client.clock.now()

    found, now = _read(settings.url, fetch)
    if as_json:
        _print_json([render.run_json(r) for r in found])
    else:
        out.print(render.runs_view(found, now))


def main() -> None:
    """The ``anu-jobs`` console script."""
    app(prog_name="anu-jobs")
