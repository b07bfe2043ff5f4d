"""The ``anu-jobs`` command line, run for real by subprocess in a temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

DEMO_SECONDS = 6

Demo = tuple[Path, subprocess.CompletedProcess[str]]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ANU_JOBS_URL"}
    env["PYTHONWARNINGS"] = "error"  # the CLI runs as strictly as the tests do
    env.update(extra or {})
    return env


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anu_jobs", *args],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_json(*args: str, cwd: Path) -> Any:
    done = cli(*args, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


# -- the demo, and reading what it left -------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """One ``anu-jobs demo`` run in a fresh directory; its database stays there."""
    cwd = tmp_path_factory.mktemp("demo")
    done = cli("demo", "--seconds", str(DEMO_SECONDS), cwd=cwd, timeout=DEMO_SECONDS + 30)
    return cwd, done


DEMO_JOBS = {
    "demo-every": "Heartbeat",
    "demo-cron": "SecondsCron",
    "demo-charge": "CardCharge",
    "demo-report": "ReportBuilder",
    "demo-import": "LongImport",
}


@pytest.mark.slow
def test_demo_runs_and_leaves_its_database(
    demo: Demo,
) -> None:
    cwd, done = demo
    assert done.returncode == 0, done.stderr
    for job_id in DEMO_JOBS:
        assert job_id in done.stdout
    assert "anu-jobs jobs --url sqlite:///anu_jobs.db" in done.stdout
    assert len(done.stdout.splitlines()) < 60, "the non-interactive output should stay short"
    assert (cwd / "anu_jobs.db").is_file()


@pytest.mark.slow
def test_jobs_json_lists_the_demo_jobs(demo: Demo) -> None:
    cwd, _ = demo
    jobs = cli_json("jobs", cwd=cwd)
    assert {j["job_id"]: j["job_type"] for j in jobs} == DEMO_JOBS
    every = next(j for j in jobs if j["job_id"] == "demo-every")
    assert len(every["triggers"]) == 1
    assert every["triggers"][0].startswith("every 2s")
    assert every["next_fire_at"].endswith("Z")
    assert every["last_run"]["stage"] == "completed"
    assert every["last_run"]["finished_at"].endswith("Z")
    # filters and paging
    assert [j["job_id"] for j in cli_json("jobs", "--stage", "cancelled", cwd=cwd)] == [
        "demo-import"
    ]
    assert [j["job_id"] for j in cli_json("jobs", "--type", "CardCharge", cwd=cwd)] == [
        "demo-charge"
    ]
    assert [j["job_id"] for j in cli_json("jobs", "--search", "rep", cwd=cwd)] == ["demo-report"]
    page = cli_json("jobs", "--limit", "2", "--after", "demo-cron", cwd=cwd)
    assert [j["job_id"] for j in page] == ["demo-every", "demo-import"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("job_id", "stage"),
    [("demo-every", "completed"), ("demo-charge", "compensated"), ("demo-import", "cancelled")],
)
def test_show_json_has_the_expected_runs(demo: Demo, job_id: str, stage: str) -> None:
    cwd, _ = demo
    shown = cli_json("show", job_id, cwd=cwd)
    assert shown["job_id"] == job_id
    assert 1 <= len(shown["runs"]) <= 10
    assert stage in {run["stage"] for run in shown["runs"]}


@pytest.mark.slow
def test_runs_json_shows_retries_and_compensation(
    demo: Demo,
) -> None:
    cwd, _ = demo
    (run,) = cli_json("runs", "demo-charge", "--limit", "1", cwd=cwd)
    assert run["stage"] == "compensated"
    assert run["attempt"] == 3
    assert run["error"]["type"] == "RuntimeError"
    stages = [t["stage"] for t in run["transitions"]]
    assert stages == [
        "scheduled", "running", "retrying", "running", "retrying", "running",
        "compensating", "compensated",
    ]  # fmt: skip
    (report,) = cli_json("runs", "demo-report", "--limit", "1", cwd=cwd)
    assert report["stage"] == "completed"
    assert report["progress"]["fraction"] == 1.0


@pytest.mark.slow
def test_tables_render(demo: Demo) -> None:
    cwd, _ = demo
    listing = cli("jobs", cwd=cwd)
    assert listing.returncode == 0, listing.stderr
    assert "5 job(s)" in listing.stdout
    for job_id in DEMO_JOBS:
        assert job_id in listing.stdout
    shown = cli("show", "demo-charge", cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    assert "manual" in shown.stdout
    assert "card declined" in shown.stdout
    history = cli("runs", "demo-charge", cwd=cwd)
    assert history.returncode == 0, history.stderr
    assert "retries spent, compensating" in history.stdout


@pytest.mark.slow
def test_show_unknown_job_exits_1(demo: Demo) -> None:
    cwd, _ = demo
    assert_one_line_error(cli("show", "no-such-job", cwd=cwd), 1, "no-such-job")
    assert_one_line_error(cli("runs", "no-such-job", cwd=cwd), 1, "no-such-job")


@pytest.mark.slow
def test_demo_runs_again_on_the_same_database(demo: Demo, tmp_path: Path) -> None:
    cwd, _ = demo
    for db in cwd.glob("anu_jobs.db*"):  # a copy, so the other tests see the first run only
        shutil.copy(db, tmp_path / db.name)
    again = cli("demo", "--seconds", "4", cwd=tmp_path, timeout=40)
    assert again.returncode == 0, again.stderr
    assert {j["job_id"] for j in cli_json("jobs", cwd=tmp_path)} == set(DEMO_JOBS)
    for job_id, stage in (("demo-charge", "compensated"), ("demo-import", "cancelled")):
        runs = cli_json("runs", job_id, cwd=tmp_path)
        assert [r["stage"] for r in runs] == [stage, stage], job_id


@pytest.mark.slow
def test_url_from_the_environment(demo: Demo, tmp_path: Path) -> None:
    cwd, _ = demo
    url = f"sqlite:///{cwd / 'anu_jobs.db'}"
    done = cli("jobs", "--json", cwd=tmp_path, env={"ANU_JOBS_URL": url})
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == len(DEMO_JOBS)


# -- exit codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "nosuch://x", "jobs"],
        ["jobs", "--url", "not-a-url"],
        ["jobs", "--url", "sqlite://"],
    ],
)
def test_bad_url_exits_2(tmp_path: Path, args: Sequence[str]) -> None:
    assert_one_line_error(cli(*args, cwd=tmp_path), 2)


def test_usage_error_exits_2(tmp_path: Path) -> None:
    done = cli("jobs", "--stage", "bogus", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "url", ["sqlite:////nonexistent/dir/x.db", "sqlite:///missing.db"], ids=["no-dir", "no-file"]
)
def test_unreachable_store_exits_3(tmp_path: Path, url: str) -> None:
    assert_one_line_error(cli("jobs", "--url", url, cwd=tmp_path), 3, url)
    assert not (tmp_path / "missing.db").exists(), "a read must not create a database"


def test_password_is_masked(tmp_path: Path) -> None:
    done = cli("jobs", "--url", "postgresql://user:s3cr3t@127.0.0.1:1/db", cwd=tmp_path)
    assert done.returncode in (2, 3)  # provider missing, or the server unreachable
    assert "s3cr3t" not in done.stderr + done.stdout


def test_version_and_help(tmp_path: Path) -> None:
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("anu-jobs ")
    helped = cli("--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert helped.returncode == 0
    assert "Exit codes: 0 ok; 1 not found; 2 bad input" in helped.stdout
    for command in ("demo", "run", "jobs", "show", "runs"):
        assert command in helped.stdout


APP = """
from datetime import timedelta
from anu_jobs import Job, JobContext, SiloBuilder

class Ping(Job):
    async def execute(self, ctx: JobContext) -> None:
        pass

builder = SiloBuilder().use_storage("sqlite:///builder.db").use_recurring_job(
    Ping, timedelta(seconds=0.3), job_id="ping"
)
number = 42
"""


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("app_without_colon", ["module:attr"]),
        ("no_such_module:builder", ["no_such_module"]),
        ("app:missing", ["missing"]),
        ("app:number", ["SiloBuilder"]),
    ],
)
def test_run_bad_target_exits_2(tmp_path: Path, target: str, words: list[str]) -> None:
    (tmp_path / "app.py").write_text(APP)
    assert_one_line_error(cli("run", target, cwd=tmp_path), 2, *words)


@pytest.mark.slow
def test_run_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    # --url given: it replaces the builder's own storage
    args = [sys.executable, "-m", "anu_jobs", "run", "app:builder", "--url", "sqlite:///run.db"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        last_run = None
        while last_run is None or last_run["stage"] != "completed":
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "timed out waiting for a completed run of 'ping'"
            time.sleep(0.2)
            done = cli("show", "ping", "--json", "--url", "sqlite:///run.db", cwd=tmp_path)
            if done.returncode == 0:
                last_run = json.loads(done.stdout)["last_run"]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "sqlite:///run.db" in stderr
    assert not (tmp_path / "builder.db").exists()
