"""Run one system script through the protocol once and print what the ledger saw.

A small stand-in for the driver, to try a system script by hand::

    python benchmarks/compare/_try_system.py [--python PY] SYSTEM --scenario burst --jobs 5000

Any option after SYSTEM goes to the system script. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ledger  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def expected(scenario: str, jobs: int, seconds: float, period: float) -> int:
    if scenario in ("burst", "timers"):
        return jobs
    if scenario == "recurring":
        return 0  # open-ended: stopped after --seconds
    return 0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--python", default=str(HERE / ".venv-peers" / "bin" / "python"))
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("system")
    ns, rest = p.parse_known_args()
    sp = argparse.ArgumentParser()
    sp.add_argument("--scenario", required=True)
    sp.add_argument("--jobs", type=int, default=1000)
    sp.add_argument("--seconds", type=float, default=10.0)
    sp.add_argument("--period", type=float, default=5.0)
    so, _ = sp.parse_known_args(rest)

    work = tempfile.mkdtemp(prefix="anu-try-")
    sock = os.path.join(work, "ledger.sock")
    with ledger.Ledger(sock) as led:
        env = dict(os.environ, **{ledger.ENV: sock})
        script = HERE / "systems" / f"{ns.system}.py"
        argv = [ns.python, str(script), *rest]
        if "--workdir" not in rest:
            argv += ["--workdir", work]
        t_start = time.time()
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
        )
        assert proc.stdin is not None and proc.stdout is not None
        events: dict[str, dict[str, Any]] = {}
        got = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    ev = json.loads(line)
                except ValueError:
                    print("  system:", line.rstrip())
                    continue
                events[ev["event"]] = ev
                print(f"  +{time.time() - t_start:7.2f}s {line.rstrip()[:300]}")
                got.set()

        threading.Thread(target=read, daemon=True).start()
        while "submitted" not in events and "unsupported" not in events:
            if proc.poll() is not None:
                sys.exit(f"system exited early with {proc.returncode}")
            got.wait(0.5)
            got.clear()
        if "unsupported" in events:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            proc.wait(60)
            return
        sub = events["submitted"]
        want = expected(so.scenario, so.jobs, so.seconds, so.period)
        if so.scenario == "recurring":
            time.sleep(max(0.0, sub.get("anchor", sub["t1"]) - time.time()) + so.seconds)
            ok = True
        elif so.scenario == "scale":
            ok = True
        else:
            ok = led.wait_for(want, ns.timeout, quiet=1.0)
        t_end = time.time()
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        proc.wait(600)
        entries = list(led.entries)
        ids = Counter(e.job_id for e in entries)
        dups = sum(c - 1 for c in ids.values() if c > 1)
        late = [e.start - e.due for e in entries if e.due > 0]
        print(
            f"scenario={so.scenario} jobs={so.jobs} complete={ok} executions={len(entries)} "
            f"distinct={len(ids)} duplicates={dups}"
        )
        if so.scenario == "burst" and entries:
            span = max(e.start for e in entries) - sub["t0"]
            sub_s = sub["t1"] - sub["t0"]
            print(
                f"  submit {sub_s:.2f}s, all done {span:.2f}s after t0: "
                f"{len(ids) / span:.0f} executions/s (submit {so.jobs / sub_s:.0f}/s)"
            )
        if want:
            print(f"  lost={want - len(ids)}")
        if so.scenario == "recurring":
            anchor = sub["anchor"]
            ticks = int((t_end - anchor) // so.period) + 1
            exp_ids = {
                f"r-{i}@{k}"
                for i in range(so.jobs)
                for k in range(ticks)
                if anchor + k * so.period <= t_end - 1.0
            }
            print(
                f"  ticks due (to end-1s)={len(exp_ids)} lost={len(exp_ids - set(ids))} "
                f"unexpected={len(set(ids) - exp_ids)}"
            )
            by_k: dict[int, list[float]] = {}
            for e in entries:
                by_k.setdefault(int(e.job_id.split("@")[1]), []).append(e.start - e.due)
            for k in sorted(by_k):
                xs = by_k[k]
                print(
                    f"    k={k}: n={len(xs)} lateness min={min(xs) * 1e3:.0f} "
                    f"p50={pct(xs, 0.5) * 1e3:.0f} max={max(xs) * 1e3:.0f} ms"
                )
        if late:
            print(
                f"  lateness p50={pct(late, 0.5) * 1e3:.1f}ms p99={pct(late, 0.99) * 1e3:.1f}ms "
                f"max={max(late) * 1e3:.1f}ms"
            )
        done = events.get("done", {})
        print(
            f"  cpu_s={done.get('cpu_s')} peak_rss_mb={done.get('peak_rss_mb')} "
            f"extra={json.dumps(done.get('extra'))}"
        )


if __name__ == "__main__":
    main()
