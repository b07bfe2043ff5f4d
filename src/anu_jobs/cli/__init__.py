"""The ``anu-jobs`` command line (typer + rich).

Commands: ``demo`` (an embedded silo with sample jobs, shown live), ``run module:attr``
(run a silo until SIGINT/SIGTERM), ``jobs``, ``show ID`` and ``runs ID`` (read a store);
``trigger``, ``cancel``, ``pause``, ``resume`` and ``delete`` (control a job); ``next``
(a job's or a cron expression's next fire times); ``silos``; ``db migrate``;
``dashboard`` (serve the web dashboard).
The store is ``--url``, else the ``ANU_JOBS_URL`` environment variable, else
``sqlite:///anu_jobs.db``; passwords in URLs are masked wherever one is printed.

Exit codes:

- 0: ok
- 1: not found (no job with that id)
- 2: bad input (a usage error, a bad URL, a bad ``module:attr``, a malformed job)
- 3: the store is unreachable (cannot be opened, a missing directory or file)
- 4: ``trigger --wait``: the run ended other than ``completed``, or did not end in time

These errors print one line on stderr, never a traceback.
"""

from anu_jobs.cli import fires as _fires  # noqa: F401  (registers its commands)
from anu_jobs.cli import ops as _ops  # noqa: F401  (registers its commands)
from anu_jobs.cli.app import app, main

__all__ = ["app", "main"]
