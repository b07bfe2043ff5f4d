"""The comparison's independent ledger: every system's job body reports here.

Standard library only, so that every system's environment can import it (the peers run
in their own virtualenv). The driver listens on an ``AF_UNIX``/``SOCK_STREAM`` socket and
passes its path to each system in ``$ANU_BENCH_LEDGER``; a job body calls
:func:`record` once per execution, which writes one line on its process's connection
(made on first use, and again in a forked child; a lock keeps the lines of threads
whole). The kernel holds what the driver has not read yet, and delivers it even after
the sender exits or is killed, so a missing record is a missing execution; a sender
waits only when its connection's buffer is full (thousands of lines where
``net.core.wmem_max`` allows megabytes, hundreds at Linux's default). (A datagram
socket would block a sender once ten datagrams wait, Linux's default
``net.unix.max_dgram_qlen``: a burst's job bodies would then wait for the driver.)

Wire format, one line per execution, ASCII::

    "<job id> <due time> <start time>\n"

times as float seconds since the epoch (``repr(time.time())``), the due time being when
the job was meant to run (``0`` when the system has no notion of it, as in a burst).
Job ids contain no spaces.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

ENV = "ANU_BENCH_LEDGER"

_sock: socket.socket | None = None
_pid = 0
_lock = threading.Lock()


def record(job_id: str, due: float = 0.0) -> None:
    """Report one execution of ``job_id`` (due at ``due``), starting now."""
    global _sock, _pid, _lock
    line = f"{job_id} {due!r} {time.time()!r}\n".encode()
    if _pid != os.getpid():  # first use, or a forked child: a connection of its own
        _lock = threading.Lock()
        _sock = None
        _pid = os.getpid()
    with _lock:
        if _sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # As much room as the system allows (net.core.wmem_max) for lines the driver
            # has not read yet: each small write takes a kilobyte or so of it.
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            s.connect(os.environ[ENV])
            _sock = s
        _sock.sendall(line)


@dataclass
class Entry:
    job_id: str
    due: float
    start: float


@dataclass
class Ledger:
    """The driver's side: collects lines on a thread until :meth:`close`."""

    path: str
    entries: list[Entry] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _closed: bool = False

    def __enter__(self) -> Ledger:
        if os.path.exists(self.path):
            os.unlink(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(128)
        s.setblocking(False)
        self._sock = s
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        partial: dict[socket.socket, bytes] = {}
        draining = False
        while True:
            events = sel.select(0.0 if draining else 0.2)
            if not events:
                if draining:
                    break  # closed, and nothing more to read
                if self._closed:
                    draining = True  # read what is still buffered, then stop
                continue
            for key, _ in events:
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        new, _ = conn.accept()
                        new.setblocking(False)
                        sel.register(new, selectors.EVENT_READ, "conn")
                    continue
                try:
                    data = conn.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    conn.close()
                    partial.pop(conn, None)
                    continue
                lines = (partial.pop(conn, b"") + data).split(b"\n")
                if lines[-1]:
                    partial[conn] = lines[-1]  # the rest of it comes with the next read
                for line in lines[:-1]:
                    job_id, due, start = line.decode().split(" ")
                    self.entries.append(Entry(job_id, float(due), float(start)))
        for key in list(sel.get_map().values()):
            if key.data is not None:
                key.fileobj.close()  # type: ignore[union-attr]
        sel.close()

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
