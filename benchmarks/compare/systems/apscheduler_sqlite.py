"""APScheduler 3.x with a SQLAlchemyJobStore on a SQLite file in the work dir.

SQLite as SQLAlchemy opens it by default (rollback journal, ``synchronous=FULL``). See
``_apscheduler.py`` for the scheduler's configuration and the submission.
"""

from __future__ import annotations

import os

import _common as c
from _apscheduler import main

if __name__ == "__main__":
    main(f"sqlite:///{os.path.join(c.parse_args().workdir, 'apscheduler.db')}")
