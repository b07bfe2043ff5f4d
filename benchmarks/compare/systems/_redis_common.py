"""Shared plumbing for the peer systems (Celery, RQ): options, protocol lines, process tree.

Runs in the peers' virtualenv (``benchmarks/compare/.venv-peers``); needs ``psutil`` and
``redis``. See ``../PROTOCOL.md`` for the protocol these scripts follow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SYSTEMS = Path(__file__).resolve().parent
COMPARE = SYSTEMS.parent
if str(COMPARE) not in sys.path:  # the ledger, for the job bodies imported here too
    sys.path.append(str(COMPARE))
SCALE_FIRST_DUE_S = 3600.0  # scale jobs are due between 1 h and 24 h from now


def parse_args(default_redis_db: int) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", required=True, choices=["burst", "timers", "recurring", "scale"])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--workdir", default=None)
    p.add_argument("--pg-url", default=None)  # ignored: these peers keep everything in Redis
    p.add_argument("--redis-url", default=f"redis://127.0.0.1:6379/{default_redis_db}")
    p.add_argument("--store", default=None)  # ignored: one store
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--period", type=float, default=5.0)
    args, _ = p.parse_known_args()  # options a newer driver adds are ignored
    if args.workdir is None:
        import tempfile

        args.workdir = tempfile.mkdtemp(prefix="anu-peer-")
    return args


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def wait_for_stop() -> None:
    """Block until the driver sends ``stop`` (or closes stdin)."""
    for line in sys.stdin:
        if line.strip() == "stop":
            return


def stop_event() -> threading.Event:
    """An event set once the driver sends ``stop`` (read on a thread from now on)."""
    ev = threading.Event()

    def read() -> None:
        wait_for_stop()
        ev.set()

    threading.Thread(target=read, daemon=True).start()
    return ev


def anchor_ahead(min_ahead: float) -> float:
    """A whole second at least ``min_ahead`` s from now."""
    return float(math.ceil(time.time() + min_ahead))


def child_env() -> dict[str, str]:
    """Environment for children: the task modules and the ledger importable."""
    env = dict(os.environ)
    parts = [str(SYSTEMS), str(COMPARE)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def venv_bin(name: str) -> str:
    """A console script of the interpreter running us (the peers' virtualenv)."""
    return str(Path(sys.executable).parent / name)


@dataclass
class Tree:
    """Children we started, sampled every 0.2 s for peak RSS (VmHWM) and CPU.

    CPU at the end comes from ``getrusage`` (self + every reaped descendant), which is
    exact once all children are reaped; the per-pid samples give the idle figures.
    """

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    hwm_kb: dict[int, int] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    rss_kb: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        threading.Thread(target=self._loop, daemon=True).start()

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        p = subprocess.Popen(
            argv,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=str(SYSTEMS),
            start_new_session=True,
        )
        with self._lock:
            self.procs.append(p)
        return p

    def _pids(self) -> list[int]:
        pids = [os.getpid()]
        with contextlib.suppress(psutil.Error):
            pids += [c.pid for c in psutil.Process().children(recursive=True)]
        with self._lock:
            for p in self.procs:  # their own session: still our descendants
                if p.poll() is None:
                    pids.append(p.pid)
        return list(dict.fromkeys(pids))

    def sample(self) -> None:
        for pid in self._pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                pr = psutil.Process(pid)
                t = pr.cpu_times()
            except (OSError, psutil.Error):
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), int(line.split()[1]))
                elif line.startswith("VmRSS:"):
                    self.rss_kb[pid] = int(line.split()[1])
            self.cpu[pid] = t.user + t.system

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def live_cpu(self) -> float:
        """CPU seconds of the live processes now (for rates over an interval)."""
        self.sample()
        live = set(self._pids())
        return sum(v for k, v in self.cpu.items() if k in live)

    def live_rss_mb(self) -> float:
        self.sample()
        live = set(self._pids())
        return sum(v for k, v in self.rss_kb.items() if k in live) / 1024

    def terminate(self, p: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        """SIGTERM (warm shutdown for both peers), then SIGKILL the group if it hangs."""
        self.sample()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def finish(self) -> dict[str, float]:
        """Stop every child still running; CPU and summed peak RSS of the whole tree."""
        for p in list(self.procs):
            self.terminate(p)
        self._stop.set()
        self.sample()
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        reaped = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        # A grandchild its parent never reaped is missing from RUSAGE_CHILDREN; the last
        # 0.2 s samples of every pid bound the total from below.
        sampled = sum(self.cpu.values())
        return {
            "cpu_s": round(max(reaped, sampled), 3),
            "peak_rss_mb": round(sum(self.hwm_kb.values()) / 1024, 1),
            "cpu_s_reaped": round(reaped, 3),
            "cpu_s_sampled": round(sampled, 3),
        }


def redis_cpu_s(r: Any) -> float:
    """CPU seconds of the whole Redis server (shared: others' use shows up too)."""
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_used_mb(r: Any) -> float:
    return float(r.info("memory")["used_memory"]) / 2**20


def wait_until(pred: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False
