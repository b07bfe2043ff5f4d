"""Helpers that every system script may share (standard library only).

A system script is started by ``run.py`` with the python of its own environment, so this
module, like ``ledger.py``, imports nothing outside the standard library. It parses the
protocol's options, prints the protocol's events, waits for ``stop`` on stdin, and
measures CPU time and memory of the script's process and its children.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # ledger.py
import ledger  # noqa: E402

record = ledger.record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The protocol's options; unknown ones are ignored, so the driver can add more."""
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", required=True, choices=["burst", "timers", "recurring", "scale"])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--workdir", default=".")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    p.add_argument("--store", default="")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--period", type=float, default=1.0)
    p.add_argument("--span", type=float, default=10.0)
    args, _unknown = p.parse_known_args(argv)
    return args


def emit(event: str, **fields: Any) -> None:
    """Print one protocol event as a JSON line, flushed."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def unsupported(why: str) -> None:
    """Say the scenario cannot be expressed with this system, and exit 0."""
    emit("unsupported", why=why)
    raise SystemExit(0)


def wait_stop_blocking() -> None:
    """Block until the driver writes ``stop`` (or closes stdin)."""
    for line in sys.stdin:
        if line.strip() == "stop":
            return


def stop_event(on_stop: Callable[[], None] | None = None) -> threading.Event:
    """A thread reads stdin; the returned event is set on ``stop`` (``on_stop`` is called)."""
    ev = threading.Event()

    def _read() -> None:
        wait_stop_blocking()
        ev.set()
        if on_stop is not None:
            on_stop()

    threading.Thread(target=_read, daemon=True).start()
    return ev


async def wait_stop_async() -> None:
    """Await the driver's ``stop`` from an asyncio program."""
    import asyncio

    await asyncio.to_thread(wait_stop_blocking)


# -- measurements ---------------------------------------------------------------------------


def cpu_s() -> float:
    """User+system CPU seconds of this process and of its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def peak_rss_mb() -> float:
    """Peak RSS of this process plus the largest of its waited-for children (MB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


def rss_mb(pid: int | None = None) -> float:
    """Current RSS of a process (this one by default), in MB."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def done(**extra: Any) -> None:
    """Print the ``done`` event with this process's CPU and peak RSS."""
    emit("done", cpu_s=cpu_s(), peak_rss_mb=peak_rss_mb(), extra=extra)


class IdleMeter:
    """CPU % of a core and RSS over an idle window, for this process (and ``pids``)."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or []
        self.t0 = time.monotonic()
        self.c0 = self._cpu()

    def _cpu(self) -> float:
        total = time.process_time()
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def result(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        cpu = self._cpu() - self.c0
        rss = rss_mb() + sum(rss_mb(p) for p in self.pids)
        return {"idle_cpu_pct": 100.0 * cpu / wall, "rss_mb": rss, "idle_wall_s": wall}


# -- the scenarios' jobs ----------------------------------------------------------------------


def timer_dues(n: int, t0: float, span: float = 10.0) -> list[float]:
    """Due times of the timers scenario: ``t0 + 2 + span * i / n``."""
    return [t0 + 2.0 + span * i / n for i in range(n)]


def scale_dues(n: int, t0: float) -> list[float]:
    """Due times of the scale scenario: spread over 24 h that begin an hour from now, so
    that the idle window measures holding the jobs, not running the first of them."""
    return [t0 + 3_600.0 + 86_400.0 * (i + 1) / n for i in range(n)]


def anchor(period: float, ahead: float = 2.0) -> float:
    """The recurring scenario's first due time: a whole second at least ``ahead`` s from
    now, and a multiple of ``period`` when the period is a whole number of seconds (so
    that cron-style triggers, which count from the minute, agree with it)."""
    step = period if period >= 1 and float(period).is_integer() else 1.0
    return math.ceil((time.time() + ahead) / step) * step


def tick_of(anchor_t: float, period: float, at: float) -> int:
    """The tick index of a fire at ``at`` (its due time when the system passes one; else
    its start time, which is never before its due time: the latest tick due by then)."""
    return math.floor((at - anchor_t) / period + 1e-6)
