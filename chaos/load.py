"""The soak's load: the mix of jobs it schedules (one-time, interval, cron, flaky, doomed
and long-running), drawn from the seed, and the canceller process that cancels the long
ones at their planned times."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

from anu_jobs import Cron, Every, JobSpec, Once, Trigger
from chaos.cluster import Cluster
from chaos.config import ROOT, child_env
from chaos.jobs import ChaosDoomed, ChaosFlaky, ChaosLong, ChaosTick
from chaos.records import PlannedJob

__all__ = ["CRON_STEPS", "EVERY_INTERVALS", "MIX", "LoadPlanner"]

#: the load's mix: family -> share of the jobs
MIX = {"once": 0.40, "every": 0.20, "cron": 0.10, "flaky": 0.15, "doomed": 0.10, "long": 0.05}
EVERY_INTERVALS = (2, 3, 5, 10, 15, 30)
CRON_STEPS = (2, 3, 5, 10, 15, 20, 30)


class LoadPlanner(Cluster):
    """Plans the load (:attr:`planned`, and the specs to schedule) and starts the canceller."""

    def plan_load(self, t0: datetime, rng: random.Random) -> list[JobSpec]:
        cfg = self.cfg
        d_ms = int(cfg.duration * 1000)
        counts = {k: int(cfg.jobs * share) for k, share in MIX.items()}
        counts["long"] = max(1, counts["long"])
        counts["once"] += cfg.jobs - sum(counts.values())
        specs: list[JobSpec] = []
        cutoff = t0 + timedelta(milliseconds=d_ms)

        def at(lo_ms: int, hi_ms: int) -> datetime:
            return t0 + timedelta(milliseconds=rng.randint(lo_ms, max(lo_ms, hi_ms)))

        def add(job: PlannedJob, cls: type[Any], trigger: Trigger, params: dict[str, Any]) -> None:
            self.planned[job.job_id] = job
            specs.append(JobSpec(cls, job_id=job.job_id, params=params, trigger=trigger))

        n = 0
        for family in ("once", "every", "cron", "flaky", "doomed", "long"):
            for _ in range(counts[family]):
                n += 1
                job_id = f"{family}-{n:05d}"
                work = {"work_ms": rng.randint(10, 200)}
                if family == "once":
                    when = at(1000, d_ms)
                    add(
                        PlannedJob(job_id, family, "ChaosTick", ("once", when)),
                        ChaosTick,
                        Once(at=when),
                        work,
                    )
                elif family == "every" or (family == "flaky" and rng.random() < 0.2):
                    interval = rng.choice(EVERY_INTERVALS if family == "every" else (10, 15, 30))
                    start = at(500, interval * 1000)
                    fail = rng.randint(1, 2) if family == "flaky" else 0
                    cls = ChaosTick if family == "every" else ChaosFlaky
                    add(
                        PlannedJob(
                            job_id,
                            family,
                            cls.name,
                            ("every", start, interval),
                            max_retries=cls.retry.max_retries,
                            fail_first=fail,
                        ),
                        cls,
                        Every(timedelta(seconds=interval), start=start),
                        {**work, "fail_first": fail},
                    )
                elif family == "cron":
                    step = rng.choice(CRON_STEPS)
                    add(
                        PlannedJob(job_id, family, "ChaosTick", ("cron", step)),
                        ChaosTick,
                        Cron(f"*/{step} * * * * *"),
                        work,
                    )
                elif family == "flaky":
                    when = at(1000, d_ms)
                    fail = rng.randint(1, 2)
                    add(
                        PlannedJob(
                            job_id,
                            family,
                            "ChaosFlaky",
                            ("once", when),
                            max_retries=ChaosFlaky.retry.max_retries,
                            fail_first=fail,
                        ),
                        ChaosFlaky,
                        Once(at=when),
                        {**work, "fail_first": fail},
                    )
                elif family == "doomed":
                    when = at(1000, d_ms)
                    add(
                        PlannedJob(
                            job_id,
                            family,
                            "ChaosDoomed",
                            ("once", when),
                            max_retries=ChaosDoomed.retry.max_retries,
                        ),
                        ChaosDoomed,
                        Once(at=when),
                        work,
                    )
                else:
                    when = at(1000, int(d_ms * 0.6))
                    span = max(3.0, min(15.0, cfg.duration * 0.3))
                    cancel = when.timestamp() + rng.uniform(3.0, span)
                    cancel = min(cancel, cutoff.timestamp() - 1.0)
                    add(
                        PlannedJob(job_id, family, "ChaosLong", ("once", when), cancel_at=cancel),
                        ChaosLong,
                        Once(at=when),
                        {"max_s": 900},
                    )
        return specs

    def start_canceller(self) -> subprocess.Popen[bytes]:
        plan = sorted(
            ((j.job_id, j.cancel_at) for j in self.planned.values() if j.cancel_at is not None),
            key=lambda p: p[1],
        )
        (self.workdir / "cancel-plan.json").write_text(json.dumps(plan))
        env = child_env()
        with (self.workdir / "logs" / "canceller.err").open("wb") as err:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chaos.canceller",
                    "--url",
                    self.url,
                    "--plan",
                    str(self.workdir / "cancel-plan.json"),
                    "--out",
                    str(self.workdir / "cancels.log"),
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
