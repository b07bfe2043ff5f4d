"""The comparison's independent ledger: every system's job body reports here.

Standard library only, so that every system's environment can import it (the peers run
in their own virtualenv). The driver binds an ``AF_UNIX``/``SOCK_DGRAM`` socket and
passes its path to each system in ``$ANU_BENCH_LEDGER``; a job body calls
:func:`record` once per execution. Unix datagram sockets do not drop: a sender blocks
when the driver falls behind, so a missing record is a missing execution.

Wire format, one datagram per execution, ASCII::

    "<job id> <due time> <start time>"

times as float seconds since the epoch (``repr(time.time())``), the due time being when
the job was meant to run (``0`` when the system has no notion of it, as in a burst).
Job ids contain no spaces.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

ENV = "ANU_BENCH_LEDGER"

_sock: socket.socket | None = None
_path: str | None = None


def record(job_id: str, due: float = 0.0) -> None:
    """Report one execution of ``job_id`` (due at ``due``), starting now."""
    global _sock, _path
    if _sock is None or _path is None:
        _path = os.environ[ENV]
        _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    _sock.sendto(f"{job_id} {due!r} {time.time()!r}".encode(), _path)


@dataclass
class Entry:
    job_id: str
    due: float
    start: float


@dataclass
class Ledger:
    """The driver's side: collects datagrams on a thread until :meth:`close`."""

    path: str
    entries: list[Entry] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _closed: bool = False

    def __enter__(self) -> Ledger:
        if os.path.exists(self.path):
            os.unlink(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind(self.path)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        while not self._closed:
            try:
                data = self._sock.recv(512)
            except TimeoutError:
                continue
            except OSError:
                return
            job_id, due, start = data.decode().split(" ")
            self.entries.append(Entry(job_id, float(due), float(start)))

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def distinct(self) -> int:
        return len({e.job_id for e in list(self.entries)})

    def wait_for(self, distinct: int, timeout: float, quiet: float = 0.0) -> bool:
        """Wait until ``distinct`` job ids were recorded (then ``quiet`` s more)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            n = len(self.entries)
            if n != seen:
                seen = n
                if self.distinct() >= distinct:
                    time.sleep(quiet)
                    return True
            time.sleep(0.005)
        return False
