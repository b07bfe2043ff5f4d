"""The comparison's markdown report: medians per system, ratio to the best peer."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

Result = dict[str, Any]


class _Sys(Protocol):
    env: str


# scenario -> [(key, label, format, better: "low" | "high" | "", aggregate: "median" | "max")]
Metric = tuple[str, str, str, str, str]
METRICS: dict[str, list[Metric]] = {
    "burst": [
        ("submit_s", "submit time (s)", ".2f", "low", "median"),
        ("total_s", "submit start → last execution (s)", ".2f", "low", "median"),
        ("exec_per_s", "executions/s (incl. submit)", ",.0f", "high", "median"),
        ("cpu_s", "CPU, system's processes (s)", ".1f", "low", "median"),
        ("peak_rss_mb", "peak RSS (MB)", ".0f", "low", "median"),
        ("lost", "lost (worst round)", ".0f", "", "max"),
        ("duplicates", "duplicates (worst round)", ".0f", "", "max"),
        ("commits_per_job", "commits per executed job", ".3f", "", "median"),
        ("ceiling_per_s", "machine ceiling, claim+ack/s (batch 100)", ",.0f", "", "median"),
        ("ceiling_share", "share of that ceiling reached", ".3f", "", "median"),
    ],
    "timers": [
        ("submit_s", "submit time (s)", ".2f", "low", "median"),
        ("p50_ms", "lateness p50 (ms)", ".1f", "low", "median"),
        ("p99_ms", "lateness p99 (ms)", ".1f", "low", "median"),
        ("max_ms", "lateness max (ms)", ".1f", "low", "median"),
        ("lost", "lost (worst round)", ".0f", "", "max"),
        ("duplicates", "duplicates (worst round)", ".0f", "", "max"),
    ],
    "recurring": [
        ("fired", "ticks fired (of expected)", ".0f", "", "median"),
        ("lost", "ticks missed (worst round)", ".0f", "", "max"),
        ("duplicates", "duplicates (worst round)", ".0f", "", "max"),
        ("p99_ms", "lateness p99 (ms)", ".1f", "low", "median"),
        ("cpu_s", "CPU, system's processes (s)", ".1f", "low", "median"),
        ("peak_rss_mb", "peak RSS (MB)", ".0f", "low", "median"),
    ],
    "scale": [
        ("schedule_s", "schedule time (s)", ".1f", "low", "median"),
        ("schedule_per_s", "jobs scheduled/s", ",.0f", "high", "median"),
        ("ready_s", "fresh start → ready (s)", ".2f", "low", "median"),
        ("idle_cpu_pct", "idle CPU (% of a core)", ".2f", "low", "median"),
        ("rss_mb", "RSS idle (MB)", ".0f", "low", "median"),
        ("peak_rss_mb", "peak RSS, submit included (MB)", ".0f", "low", "median"),
    ],
}


def machine_info() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    here = Path(__file__).resolve().parent
    rev = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "commit": rev + ("+dirty" if dirty else ""),
    }


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _cell(rounds: list[Result], key: str, agg: str) -> tuple[float, str]:
    """The aggregate of ``key`` over the rounds that ran, and a note on the others."""
    ran = [r for r in rounds if r["status"] in ("ok", "timeout") and key in r]
    if not ran:
        statuses = sorted({r["status"] for r in rounds})
        if statuses == ["ok"]:
            return math.nan, "-"  # a figure this system does not report
        return math.nan, "n/a" if statuses == ["unsupported"] else "/".join(statuses)
    timed = [r for r in ran if r["status"] == "timeout"]
    # time-to-finish figures of a round that did not finish mean nothing
    if key in ("total_s", "exec_per_s", "p50_ms", "p99_ms", "max_ms"):
        ran = [r for r in ran if r["status"] == "ok"]
        if not ran:
            return math.nan, "timeout"
    vals = [_num(r[key]) for r in ran]
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return math.nan, "-"
    v = max(vals) if agg == "max" else statistics.median(vals)
    return v, ("†" if timed else "")


def render(
    info: dict[str, Any],
    labels: list[str],
    names: list[str],
    results: list[Result],
    systems: dict[str, Any],
) -> str:
    peers_v = info.get("peers") or {}
    vers = ", ".join(f"{k} {v}" for k, v in peers_v.items() if k != "python")
    out = [
        f"Date: {info['date']}; machine: {info['nproc']} CPUs (nproc), {info['cpu']}; "
        f"Python {info['python']}; commit {info['commit']}; "
        f"{info['rounds']} round(s), medians; wall {info.get('wall_s', 0) / 60:.1f} min",
    ]
    if vers:
        out.append(f"Peers: {vers} (Python {peers_v.get('python', '?')})")
    out.append(
        "Cells: median over rounds (xratio to the best peer; lower is better for times, "
        "CPU, memory, lateness; higher for rates); lost/duplicates: worst round. "
        "† some rounds timed out."
    )
    notes: list[str] = []
    for label in labels:
        case_res = [r for r in results if r.get("case") == label]
        if not case_res:
            continue
        scenario = case_res[0]["scenario"]
        out += ["", f"### {label}", "", "| metric | " + " | ".join(names) + " |"]
        out.append("|---|" + "---:|" * len(names))
        by_sys = {n: [r for r in case_res if r["system"] == n] for n in names}
        for key, mlabel, fmt, better, agg in METRICS[scenario]:
            cells = {n: _cell(by_sys[n], key, agg) for n in names}
            peer_vals = [
                v
                for n, (v, _) in cells.items()
                if systems[n].env == "peers" and not math.isnan(v) and v > 0
            ]
            best = (min if better == "low" else max)(peer_vals) if better and peer_vals else None
            row = []
            for n in names:
                v, note = cells[n]
                if math.isnan(v):
                    row.append(note)
                    continue
                text = format(v, fmt)
                if key == "fired":
                    exp = [_num(r.get("expected")) for r in by_sys[n] if "expected" in r]
                    text += f" / {statistics.median(exp):.0f}" if exp else ""
                if best:
                    text += f" (x{v / best:.2f})"
                row.append(text + note)
            out.append(f"| {mlabel} | " + " | ".join(row) + " |")
        for n in names:
            for r in by_sys[n]:
                if r["status"] != "ok":
                    why = r.get("why", "")
                    notes.append(f"- {label}, {n}, round {r.get('round')}: {r['status']}: {why}")
    if info.get("missing_systems"):
        notes.append(f"- not run (no script yet): {', '.join(info['missing_systems'])}")
    if notes:
        out += ["", "Notes:", *dict.fromkeys(notes)]
    return "\n".join(out)
