"""The independent ledger: what the job bodies did, written by them, not by anu-jobs.

Each silo process appends to its own file, ``<dir>/<pid>.log``, one line per event with a
single ``write(2)`` on an ``O_APPEND`` descriptor: a line reaches the page cache before the
job goes on, so it survives a ``kill -9`` of the process. Fields, tab-separated:

``wall_us event kind run_id attempt silo_id pid outcome offset_us note``

- ``wall_us``: the machine's real time (``time.time_ns() // 1000``), never the silo's
  injected clock, so lines from every process compare;
- ``event``: ``begin`` or ``end``; ``kind``: ``execute`` or ``compensate``;
- ``attempt``: ``ctx.attempt`` (a compensation carries the attempt it follows);
- ``outcome``: ``-`` on ``begin``; ``ok``, ``error``, ``cancelled`` (the token tripped)
  or ``interrupted`` (the task was cancelled with the token untripped) on ``end``;
- ``offset_us``: the silo clock's offset from real time when the line was written;
- ``note``: the cancellation reason, if any (``-`` otherwise).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from anu_jobs import JobContext
from chaos.clock import ChaosClock

__all__ = ["Entry", "LedgerWriter", "read_ledger"]


class LedgerWriter:
    """Appends ledger lines for one silo process."""

    def __init__(self, path: Path, silo_id: Callable[[], str], clock: ChaosClock) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.silo_id = silo_id  # the silo's id now (a silo declared dead may join anew)
        self.clock = clock
        self._pid = str(os.getpid())
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(
        self, event: str, kind: str, ctx: JobContext, outcome: str = "-", note: str = "-"
    ) -> None:
        fields = (
            str(time.time_ns() // 1000),
            event,
            kind,
            ctx.run_id,
            str(ctx.attempt),
            self.silo_id(),
            self._pid,
            outcome,
            str(round(self.clock.offset * 1_000_000)),
            " ".join(note.split())[:200] or "-",
        )
        os.write(self._fd, ("\t".join(fields) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line."""

    wall: float  # seconds since the epoch, real time
    event: str
    kind: str
    run_id: str
    attempt: int
    silo_id: str
    pid: int
    outcome: str
    offset: float  # seconds
    note: str

    @property
    def job_id(self) -> str:
        return self.run_id.rsplit("@", 1)[0]


def _parse(line: str) -> Entry | None:
    parts = line.split("\t")
    if len(parts) != 10:
        return None  # a torn line (the process died inside the write): never expected
    try:
        return Entry(
            wall=int(parts[0]) / 1e6,
            event=parts[1],
            kind=parts[2],
            run_id=parts[3],
            attempt=int(parts[4]),
            silo_id=parts[5],
            pid=int(parts[6]),
            outcome=parts[7],
            offset=int(parts[8]) / 1e6,
            note=parts[9],
        )
    except ValueError:
        return None


def read_ledger(directory: Path) -> tuple[list[Entry], int]:
    """Every entry of every process, by real time; and how many lines were unreadable."""
    entries: list[Entry] = []
    torn = 0
    for path in sorted(directory.glob("*.log")):
        for line in _lines(path):
            entry = _parse(line)
            if entry is None:
                torn += 1
            else:
                entries.append(entry)
    entries.sort(key=lambda e: (e.wall, e.pid))
    return entries, torn


def _lines(path: Path) -> Iterator[str]:
    text = path.read_text()
    for line in text.split("\n"):
        if line:
            yield line
