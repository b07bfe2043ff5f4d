"""The soak's faults: the kinds that apply to the run, their seeded rotation and gaps, and
each one's action (``kill -9`` and a replacement, SIGSTOP past the lease, SIGTERM and a
restart, a silo joining or leaving, a restart of the soak's own PostgreSQL, a clock jump),
recorded as :class:`~chaos.records.FaultEvent` for the verdict."""

from __future__ import annotations

import asyncio
import random
import signal
import time

from chaos.cluster import Cluster, SiloProc
from chaos.records import FaultEvent

__all__ = ["FaultInjector"]


class FaultInjector(Cluster):
    """Injects the faults of the run at seeded moments, on victims picked by rank."""

    def fault_kinds(self) -> list[str]:
        kinds = []
        for kind in self.cfg.faults:
            if kind == "pg-restart" and self.owned is None:
                continue  # never restart a server the soak does not own
            if kind == "join" and self.cfg.backend == "sqlite":
                continue  # one silo on SQLite
            kinds.append(kind)
        return kinds

    async def inject(self, until: float, rng: random.Random) -> None:
        kinds = self.fault_kinds()
        if not kinds:
            await asyncio.sleep(max(0.0, until - time.time()))
            return
        cycle: list[str] = []
        while True:
            gap = rng.uniform(*self.cfg.fault_gap)
            draws = (rng.random(), rng.random(), rng.random())
            if not cycle:
                cycle = rng.sample(kinds, len(kinds))
            kind = cycle.pop()
            if time.time() + gap >= until:
                break
            await asyncio.sleep(gap)
            await self.fault(kind, draws)
        await asyncio.sleep(max(0.0, until - time.time()))

    def pick(self, u: float) -> SiloProc | None:
        able = sorted(
            (s for s in self.live() if not s.busy and not s.frozen and s.silo_id is not None),
            key=lambda s: s.serial,
        )
        return able[min(len(able) - 1, int(u * len(able)))] if able else None

    async def fault(self, kind: str, u: tuple[float, float, float]) -> None:
        cfg = self.cfg
        victim = self.pick(u[0])
        t = time.time()
        if kind == "pg-restart":
            self.say("restarting PostgreSQL")
            await asyncio.to_thread(self.owned.restart)
            self.faults.append(FaultEvent(kind, t, time.time(), None, "pg_ctl restart -m fast"))
            return
        if kind == "join":
            if len(self.live()) < cfg.max_silos:
                new = self.start_silo()
                self.say(f"silo {new.serial} (pid {new.pid}) joins")
                await self.wait_active(new)
                self.faults.append(FaultEvent("join", t, time.time(), frozenset({new.pid})))
                return
            kind = "leave"  # at the most silos: one leaves gracefully instead
        if victim is None:
            self.say(f"no silo to {kind}")
            return
        victim.busy = True
        pid = frozenset({victim.pid})
        others = any(s is not victim and not s.frozen for s in self.live())
        try:
            if kind == "kill":
                self.say(f"kill -9 silo {victim.serial} (pid {victim.pid})")
                await self.kill_silo(victim)
                await asyncio.sleep(0.5 + 2.0 * u[1])
                new = self.start_silo()
                await self.wait_active(new)
                end = t if others else time.time()
                self.faults.append(FaultEvent(kind, t, end, pid, f"replaced by {new.serial}"))
            elif kind == "freeze":
                hold = cfg.lease_ttl + 0.5 + 3.0 * u[1]
                self.say(f"SIGSTOP silo {victim.serial} (pid {victim.pid}) for {hold:.1f}s")
                victim.frozen = True
                victim.send(signal.SIGSTOP)
                await asyncio.sleep(hold)
                victim.send(signal.SIGCONT)
                victim.frozen = False
                self.faults.append(FaultEvent(kind, t, time.time(), pid, f"{hold:.1f}s"))
            elif kind in ("term", "leave"):
                self.say(f"SIGTERM silo {victim.serial} (pid {victim.pid})")
                await self.stop_silo(victim)
                stopped = time.time()
                detail = f"stopped in {stopped - t:.1f}s"
                if kind == "term":
                    new = self.start_silo()
                    await self.wait_active(new)
                    detail += f", restarted as {new.serial}"
                end = stopped if others else time.time()
                self.faults.append(FaultEvent(kind, t, end, pid, detail))
            elif kind == "clock":
                size = 0.3 + max(0.0, cfg.clock_jump - 0.3) * u[1]
                offset = round(size if u[2] < 0.5 else -size, 3)
                old = victim.offset
                change = f"{old:+.2f}s -> {offset:+.2f}s"
                self.say(f"clock of silo {victim.serial} (pid {victim.pid}): {change}")
                victim.set_offset(offset)
                self.faults.append(FaultEvent(kind, t, t, None, f"silo {victim.serial}: {change}"))
            else:
                raise ValueError(f"unknown fault {kind!r}")
        finally:
            victim.busy = False
