"""anu-jobs on PostgreSQL (``--pg-url``, an empty database), one silo, default options.

See ``_anu.py`` for the job, the submission and the silo's configuration.
"""

from __future__ import annotations

import _common as c
from _anu import main

if __name__ == "__main__":
    main(c.parse_args().pg_url)
