"""The web dashboard: a server-rendered Starlette app over a :class:`~anu_jobs.JobClient`.

Serve it on its own (``anu-jobs dashboard``, or any ASGI server)::

    from anu_jobs.dashboard import create_app

    app = create_app("sqlite:///anu_jobs.db", token="a-long-random-secret")

or mount it in your own ASGI app, sharing a silo's client::

    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/jobs", app=create_app(silo.client, token=...))])

Pages: ``/`` (overview: jobs by stage, runs per minute over the last hour, silos, late
schedules), ``/jobs`` (filters, search, keyset pages), ``/jobs/{id}`` (triggers, current
run, params, history with each run's stage timeline and errors), ``/silos``, and
``/healthz`` (JSON). Reads are open; actions (trigger, cancel, pause, resume, delete)
need a token or basic auth, a confirmation step and a CSRF token (see
:mod:`anu_jobs.dashboard.auth`). Needs the ``dashboard`` extra
(``pip install 'anu-jobs[dashboard]'``); it loads nothing from the network.
"""

try:
    import jinja2 as _jinja2
    import starlette as _starlette
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the anu-jobs dashboard needs {exc.name}: pip install 'anu-jobs[dashboard]'"
    ) from exc

from anu_jobs.dashboard.app import create_app

del _jinja2, _starlette

__all__ = ["create_app"]
