"""The soak's separate client process that cancels the long-running jobs on time.

``python -m chaos.canceller --url URL --plan PLAN.json --out CANCELS.log``: PLAN is a JSON
list of ``[job_id, at]`` (``at`` in seconds since the epoch, real time). For each, in
order, it waits until ``at`` and calls ``JobClient.cancel``, retrying while the store
fails (a PostgreSQL restart), and appends ``job_id sent_us returned_us tries outcome``
to OUT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TextIO

if __package__ in (None, ""):  # run as a file: make ``chaos`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anu_jobs import JobClient
from chaos.jobs import JOB_TYPES


async def _connect(url: str, give_up: float) -> JobClient:
    while True:
        try:
            return await JobClient.connect(url, jobs=list(JOB_TYPES))
        except Exception:
            if time.time() > give_up:
                raise
            await asyncio.sleep(0.5)


async def _cancel(client: JobClient, job_id: str, at: float, log: TextIO) -> bool:
    """Cancel ``job_id`` at ``at``, retrying while the store fails; False if it never took."""
    await asyncio.sleep(max(0.0, at - time.time()))
    sent = time.time()
    tries, outcome = 0, "ok"
    while True:
        tries += 1
        try:
            await client.cancel(job_id, reason="chaos: cancelled by the canceller")
            break
        except Exception as exc:
            if time.time() - sent > 60:
                outcome = f"error:{type(exc).__name__}"
                break
            await asyncio.sleep(0.2)
    log.write(f"{job_id}\t{round(sent * 1e6)}\t{round(time.time() * 1e6)}\t{tries}\t{outcome}\n")
    log.flush()
    return outcome == "ok"


async def run(url: str, plan: list[tuple[str, float]], out: Path) -> int:
    """Each cancel on time, concurrently: a cancel waits until the job's silo takes the
    message (up to a poll interval on SQLite), which must not delay the next ones."""
    client = await _connect(url, time.time() + 60)
    try:
        with out.open("a") as log:
            done = await asyncio.gather(*(_cancel(client, j, at, log) for j, at in plan))
    finally:
        await client.close()
    return 0 if all(done) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    plan = [(str(j), float(a)) for j, a in json.loads(args.plan.read_text())]
    sys.exit(asyncio.run(run(args.url, plan, args.out)))


if __name__ == "__main__":
    main()
