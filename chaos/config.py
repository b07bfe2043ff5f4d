"""The soak's configuration: :class:`SoakConfig`, what to run (the defaults are the
script's options), and the kinds of fault it can inject."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FAULT_KINDS", "ROOT", "SoakConfig", "child_env"]

#: the checkout: where the soak's child processes run, and what they import from
ROOT = Path(__file__).resolve().parents[1]

FAULT_KINDS = ("kill", "freeze", "term", "join", "pg-restart", "clock")


def child_env() -> dict[str, str]:
    """The environment of a child process of the soak (a silo, the canceller): this one's,
    with the checkout first on ``PYTHONPATH`` so that ``python -m chaos.…`` finds it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class SoakConfig:
    """What to run; the defaults are the script's."""

    backend: str = "postgres"  # or "sqlite"
    url: str | None = None  # postgres: a server not to restart; default: a server of our own
    silos: int = 3
    max_silos: int = 5
    jobs: int = 2000
    duration: float = 300.0  # seconds of faults
    seed: int = 42
    faults: tuple[str, ...] = FAULT_KINDS
    fault_gap: tuple[float, float] = (5.0, 12.0)  # seconds between two faults
    lease_ttl: float = 3.0
    dead_after: float = 2.0
    heartbeat: float = 0.5
    drain_timeout: float = 2.0
    cancel_grace: float = 1.0
    clock_jump: float = 1.0  # largest clock offset a jump sets, in seconds
    late_bound: float = 2.0  # how late a fire may begin outside faults
    quiet: float = 15.0  # seconds without faults before the graceful stop
    workdir: Path | None = None
    keep: bool = False
    log: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def recovery(self) -> float:
        """How long after a fault ends its effects may keep a fire from starting: the
        others declare a silent silo dead (``dead_after`` after its last heartbeat, seen at
        their next heartbeat) or its leases expire, a claim poll (1 s) takes its jobs; plus
        2 s for the burst of work that moves at once."""
        return max(self.dead_after + self.heartbeat, self.lease_ttl) + 1.0 + 2.0
