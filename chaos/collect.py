"""What the soak reads back once its silos stopped: the store's jobs and runs, the ledger,
the canceller's log and the warnings in the silos' logs, as the
:class:`~chaos.records.SoakData` of the verdict; and, when it fails, the evidence of the
jobs it names."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import astuple
from datetime import datetime
from pathlib import Path

from anu_jobs import RunInfo
from chaos.cluster import Cluster
from chaos.ledger import read_ledger
from chaos.records import CancelRecord, Report, SoakData, StoredRun

__all__ = ["Collector"]


class Collector(Cluster):
    """Reads the store and the soak's files into :class:`~chaos.records.SoakData`."""

    async def keep_evidence(self, report: Report, data: SoakData) -> None:
        """The store's state, runs and ledger lines of the jobs named by the failures, in
        ``evidence/<job>.json`` (the store may be a server of the soak's own, now gone)."""
        assert self.client is not None
        storage = self.client.storage
        named = re.compile(r"\b(?:once|every|cron|flaky|doomed|long)-\d{5}\b")
        jobs: list[str] = []
        for examples in report.violations.values():
            for example in examples[:8]:
                for job_id in named.findall(example):
                    if job_id not in jobs:
                        jobs.append(job_id)
        out = self.workdir / "evidence"
        out.mkdir(exist_ok=True)
        for job_id in jobs[:30]:
            env = await storage.read_state(job_id)
            records = await storage.read_runs(job_id, 1_000_000)
            doc = {
                "state": env.state if env is not None else None,
                "runs": [r.data for r in records],
                "ledger": [list(astuple(e)) for e in data.ledger if e.job_id == job_id],
            }
            (out / f"{job_id}.json").write_text(json.dumps(doc, indent=1, default=str))
        report.lines.append(f"evidence of {min(len(jobs), 30)} job(s) in {out}")

    async def collect(
        self, scheduled_at: datetime, cutoff: datetime, horizon: datetime
    ) -> SoakData:
        assert self.client is not None
        client = self.client
        sem = asyncio.Semaphore(8)
        stages: dict[str, str] = {}
        runs: dict[str, StoredRun] = {}

        async def one(job_id: str) -> None:
            async with sem:
                status = await client.get(job_id)
                history = await client.runs(job_id, limit=1_000_000)
            stages[job_id] = status.stage.value
            for r in history:
                runs[r.run_id] = _stored(r)
            # A run in flight may have no history row yet: the job's state holds it.
            current = status.current_run
            if current is not None and current.run_id not in runs:
                runs[current.run_id] = _stored(current)

        await asyncio.gather(*(one(j) for j in self.planned))
        ledger, torn = read_ledger(self.workdir / "ledger")
        return SoakData(
            planned=self.planned,
            scheduled_at=scheduled_at,
            cutoff=cutoff,
            horizon=horizon,
            job_stages=stages,
            runs=runs,
            ledger=ledger,
            torn_lines=torn,
            faults=self.faults,
            cancels=_read_cancels(self.workdir / "cancels.log"),
            exits=self.exits,
            log_findings=_log_findings(self.workdir / "logs"),
            recovery=self.cfg.recovery,
            late_bound=self.cfg.late_bound,
        )


def _stored(r: RunInfo) -> StoredRun:
    return StoredRun(
        run_id=r.run_id,
        job_id=r.job_id,
        stage=r.stage.value,
        attempt=r.attempt,
        silo_id=r.silo_id,
        scheduled_for=r.scheduled_for.timestamp(),
        terminal_transitions=sum(1 for t in r.transitions if t.stage.terminal),
        reasons=tuple(t.reason or t.stage.value for t in r.transitions),
    )


def _read_cancels(path: Path) -> list[CancelRecord]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        job_id, sent, returned, tries, outcome = line.split("\t")
        out.append(CancelRecord(job_id, int(sent) / 1e6, int(returned) / 1e6, int(tries), outcome))
    return out


_NOISE = (
    (re.compile(r"\b(once|every|cron|flaky|doomed|long)-\d{5}(@\S+)?"), "<job>"),
    (re.compile(r"\b[\w.-]+-\d+-[0-9a-f]{8}\b"), "<silo>"),
    (re.compile(r"\d+(\.\d+)?"), "N"),
)


def _log_findings(logs: Path) -> Counter[str]:
    """Warnings, errors and tracebacks in the silos' stderr, with ids and numbers masked."""
    found: Counter[str] = Counter()
    for path in sorted(logs.glob("*.err")):
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                j = i + 1
                while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                    j += 1
                last = lines[j] if j < len(lines) else "?"
                found[_mask(f"Traceback: {last}")] += 1
                continue
            m = re.search(r" (WARNING|ERROR|CRITICAL) (\S+) (.*)$", line)
            if m:
                found[_mask(f"{m.group(1)} {m.group(2)}: {m.group(3)}")] += 1
    return found


def _mask(text: str) -> str:
    for pattern, repl in _NOISE:
        text = pattern.sub(repl, text)
    return text[:160]
