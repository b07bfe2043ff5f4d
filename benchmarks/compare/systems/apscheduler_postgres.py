"""APScheduler 3.x with a SQLAlchemyJobStore on PostgreSQL (psycopg 3 driver).

See ``_apscheduler.py`` for the scheduler's configuration and the submission.
"""

from __future__ import annotations

import _common as c
from _apscheduler import main

if __name__ == "__main__":
    url = c.parse_args().pg_url
    main(url.replace("postgresql://", "postgresql+psycopg://", 1))
