"""anu-jobs embedded on SQLite (its default store: WAL, synchronous=FULL), one silo.

See ``_anu.py`` for the job, the submission and the silo's configuration.
"""

from __future__ import annotations

import os

import _common as c
from _anu import main

if __name__ == "__main__":
    main(f"sqlite:///{os.path.join(c.parse_args().workdir, 'anu_jobs.db')}")
