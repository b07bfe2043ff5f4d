"""Per-job costs of the Python side on this machine, with no scheduler around them.

    python benchmarks/python_floors.py [--n 20000] [--repeat 5]

What any Python scheduler that runs each job in a task of its own and keeps its state as
JSON pays per job, measured the way ``timeit`` does (the best of ``--repeat`` runs of
``--n`` each): ``create_task`` and the first step of a no-op coroutine; ``json.loads`` of
a finished one-time job's state and its compact encoding; and the comparison's job body,
one line written to the ledger (``compare/ledger.py``) while a reader drains it in
another process. It prints one JSON line of microseconds per job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "compare"))
import ledger  # benchmarks/compare is not a package

# A finished one-time job's state as anu-jobs stores it (892 bytes).
STATE = (
    '{"v":1,"params":{},"triggers":[{"kind":"once","at":"2026-11-28T23:21:13.038654Z",'
    '"delay_us":null}],"next":[null],"misfire":{"policy":"run_once","grace_us":30000000,'
    '"limit":100},"overlap":"skip","stage":"finished","reason":"no trigger will fire again",'
    '"pending":[],"run":null,"last_run":{"run_id":"24485360-0@2026-11-28T23:21:13.038654Z",'
    '"scheduled_for":1795908073038654,"trigger":"once at 2026-11-28T23:21:13.038654Z",'
    '"stage":"completed","attempt":1,"failures":0,"interruptions":0,'
    '"started_at":1795908073648645,"finished_at":1795908073649128,"next_attempt_at":null,'
    '"transitions":[["scheduled",1795908073038654,null],["running",1795908073648645,'
    '"attempt 1 on silo vm-5347-8060d436"],["completed",1795908073649128,null]],'
    '"error":null,"compensation_error":null,"progress":null,"silo_id":"vm-5347-8060d436"},'
    '"source":"client","created_at":1795908073206791,"updated_at":1795908073656000,'
    '"epoch":1}'
)


def _best(fn: Any, n: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=repeat)) / n * 1e6


async def _noop() -> None:
    return None


async def _tasks(n: int, repeat: int) -> float:
    loop = asyncio.get_running_loop()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        tasks = [loop.create_task(_noop()) for _ in range(n)]
        await asyncio.sleep(0)  # every task takes its first (and last) step
        best = min(best, time.perf_counter() - t0)
        if not all(t.done() for t in tasks):
            raise RuntimeError("a no-op task had not finished after one pass of the loop")
    return best / n * 1e6


def _send(path: str, n: int, out: Any) -> None:
    os.environ[ledger.ENV] = path
    ledger.record("warm-up")
    cpu0 = time.process_time()
    for i in range(n):
        ledger.record(f"r-{i}@3", 1795908073.038654)
    out.put((time.process_time() - cpu0) / n * 1e6)


def _ledger(n: int) -> float:
    with tempfile.TemporaryDirectory(prefix="anu-floors-") as tmp:
        path = os.path.join(tmp, "ledger.sock")
        with ledger.Ledger(path) as led:
            out: Any = mp.get_context("spawn").Queue()
            proc = mp.get_context("spawn").Process(target=_send, args=(path, n, out))
            proc.start()
            cpu_us = float(out.get(timeout=120))
            proc.join()
            if not led.wait_for(n + 1, 30.0):
                raise RuntimeError(f"the ledger read {led.distinct()} of {n + 1} lines")
    return cpu_us


def measure(n: int, repeat: int) -> dict[str, float]:
    doc = json.loads(STATE)
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    if encode(doc) != STATE:
        raise RuntimeError("the state does not encode back to its own text")
    return {
        "task_us": asyncio.run(_tasks(n, repeat)),
        "json_loads_us": _best(lambda: json.loads(STATE), n, repeat),
        "json_encode_us": _best(lambda: encode(doc), n, repeat),
        "ledger_record_cpu_us": _ledger(n),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print(json.dumps(measure(args.n, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
