"""The operator commands of ``anu-jobs``, run for real by subprocess on a SQLite file:
trigger, cancel, pause, resume, delete, silos, next, db migrate and dashboard."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from anu_jobs import Cron, Every, Job, JobClient, JobContext
from tests.acceptance.test_cli import _env, assert_one_line_error, cli

URL = "sqlite:///ops.db"


class Ping(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


async def _seed(url: str) -> None:
    async with JobClient.connect(url, jobs=[Ping]) as client:
        await client.schedule(Ping, job_id="manual")
        await client.schedule(
            Ping,
            job_id="nightly",
            trigger=[Cron("30 2 * * *", tz="Europe/Zurich"), Every(timedelta(hours=7))],
        )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A SQLite store in ``tmp_path`` with a manual job and a cron+interval job."""
    asyncio.run(_seed(f"sqlite:///{tmp_path / 'ops.db'}"))
    return tmp_path


def ops(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return cli(*args, "--url", URL, cwd=cwd, **kwargs)


def shown(job_id: str, cwd: Path) -> Any:
    done = ops("show", job_id, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def answer(text: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anu_jobs", *args, "--url", URL],
        cwd=cwd,
        env=_env(),
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- control ---------------------------------------------------------------------------


def test_trigger_prints_the_run_id(store: Path) -> None:
    done = ops("trigger", "manual", cwd=store)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert run_id.startswith("manual@") and run_id.endswith("Z")
    as_json = ops("trigger", "manual", "--json", cwd=store)
    assert json.loads(as_json.stdout)["run_id"].startswith("manual@")


def test_pause_resume_cancel(store: Path) -> None:
    assert ops("pause", "nightly", "--reason", "maintenance", cwd=store).returncode == 0
    job = shown("nightly", store)
    assert (job["stage"], job["reason"]) == ("paused", "maintenance")
    assert job["next_fire_at"] is None
    assert ops("resume", "nightly", cwd=store).returncode == 0
    job = shown("nightly", store)
    assert job["stage"] == "active"
    assert job["next_fire_at"] is not None
    done = ops("cancel", "nightly", "--reason", "retired", cwd=store)
    assert done.returncode == 0, done.stderr
    assert "cancelled nightly" in done.stdout
    job = shown("nightly", store)
    assert (job["stage"], job["reason"]) == ("cancelled", "retired")
    # a cancelled job cannot resume or run: bad input, one line
    assert_one_line_error(ops("resume", "nightly", cwd=store), 2, "cancelled")
    assert_one_line_error(ops("trigger", "nightly", cwd=store), 2, "cancelled")


def test_delete_asks_first(store: Path) -> None:
    declined = answer("n\n", "delete", "manual", cwd=store)
    assert declined.returncode == 0, declined.stderr
    assert "not deleted" in declined.stderr
    assert shown("manual", store)["job_id"] == "manual"
    unanswered = answer("", "delete", "manual", cwd=store)
    assert unanswered.returncode == 2
    assert "--yes" in unanswered.stderr
    assert shown("manual", store)["job_id"] == "manual"
    confirmed = answer("y\n", "delete", "manual", cwd=store)
    assert confirmed.returncode == 0, confirmed.stderr
    assert "deleted manual" in confirmed.stdout
    assert_one_line_error(ops("show", "manual", cwd=store), 1, "manual")
    done = ops("delete", "nightly", "--yes", cwd=store)
    assert done.returncode == 0, done.stderr
    assert_one_line_error(ops("show", "nightly", cwd=store), 1, "nightly")


@pytest.mark.parametrize(
    "args",
    [
        ["trigger", "nope"],
        ["cancel", "nope"],
        ["pause", "nope"],
        ["resume", "nope"],
        ["delete", "nope"],
        ["delete", "nope", "--yes"],
        ["next", "nope"],
    ],
)
def test_an_unknown_job_exits_1(store: Path, args: list[str]) -> None:
    assert_one_line_error(ops(*args, cwd=store), 1, "nope")


def test_control_on_a_missing_store_exits_3(tmp_path: Path) -> None:
    assert_one_line_error(cli("trigger", "x", "--url", URL, cwd=tmp_path), 3, URL)
    assert not (tmp_path / "ops.db").exists(), "a typo in --url must not create a store"


# -- next ------------------------------------------------------------------------------

ZURICH_SPRING = ["--tz", "Europe/Zurich", "--count", "3", "--after", "2030-03-30T00:00:00Z"]


def test_next_cron_shows_the_spring_forward_day(tmp_path: Path) -> None:
    done = cli("next", "--cron", "30 2 * * *", *ZURICH_SPRING, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fires = json.loads(done.stdout)
    assert [(f["local"], f["at"]) for f in fires] == [
        ("2030-03-30T02:30:00+01:00", "2030-03-30T01:30:00Z"),
        ("2030-03-31T03:00:00+02:00", "2030-03-31T01:00:00Z"),  # 02:30 does not exist
        ("2030-04-01T02:30:00+02:00", "2030-04-01T00:30:00Z"),
    ]
    assert {f["zone"] for f in fires} == {"Europe/Zurich"}
    table = cli("next", "--cron", "30 2 * * *", *ZURICH_SPRING, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "2030-03-31 03:00:00 CEST" in table.stdout
    assert "2030-03-31 01:00:00Z" in table.stdout


def test_next_cron_fires_once_in_the_repeated_hour(tmp_path: Path) -> None:
    args = ["--tz", "Europe/Zurich", "--count", "2", "--after", "2030-10-26T12:00:00Z"]
    done = cli("next", "--cron", "30 2 * * *", *args, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [f["local"] for f in json.loads(done.stdout)] == [
        "2030-10-27T02:30:00+02:00",  # the first of the two 02:30s, summer time
        "2030-10-28T02:30:00+01:00",
    ]


def test_next_for_a_job_merges_its_triggers(store: Path) -> None:
    job = shown("nightly", store)
    start = job["created_at"]
    done = ops("next", "nightly", "--count", "6", "--after", start, "--json", cwd=store)
    assert done.returncode == 0, done.stderr
    fires = json.loads(done.stdout)
    assert len(fires) == 6
    assert [f["at"] for f in fires] == sorted(f["at"] for f in fires)
    assert {f["zone"] for f in fires} == {"Europe/Zurich", "UTC"}
    cron = [f for f in fires if f["zone"] == "Europe/Zurich"]
    assert all(f["local"][11:19] == "02:30:00" for f in cron)
    assert ops("pause", "nightly", cwd=store).returncode == 0
    paused = ops("next", "nightly", "--count", "1", cwd=store)
    assert paused.returncode == 0, paused.stderr
    assert "nightly is paused" in paused.stdout
    manual = ops("next", "manual", cwd=store)
    assert manual.returncode == 0, manual.stderr
    assert "no fire" in manual.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["next"], ["--cron"]),
        (["next", "job", "--cron", "* * * * *"], ["--cron"]),
        (["next", "job", "--tz", "UTC"], ["--tz"]),
        (["next", "--cron", "61 * * * *"], ["61"]),
        (["next", "--cron", "* * * * *", "--tz", "Mars/Olympus"], ["Mars/Olympus"]),
        (["next", "--cron", "* * * * *", "--after", "soon"], ["soon"]),
    ],
)
def test_next_bad_input_exits_2(tmp_path: Path, args: list[str], words: list[str]) -> None:
    assert_one_line_error(cli(*args, cwd=tmp_path), 2, *words)


# -- the store -------------------------------------------------------------------------


def test_db_migrate_applies_then_finds_nothing_to_do(tmp_path: Path) -> None:
    first = ops("db", "migrate", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    versions = [m["version"] for m in doc["migrations"]]
    assert versions and versions == sorted(versions) and versions[0] == 1
    assert doc["applied"] == versions
    assert doc["version"] == versions[-1]
    assert (tmp_path / "ops.db").is_file()
    again = ops("db", "migrate", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"schema at version {versions[-1]}; up to date" in again.stdout
    assert json.loads(ops("db", "migrate", "--json", cwd=tmp_path).stdout)["applied"] == []


def test_db_migrate_on_a_missing_directory_exits_3(tmp_path: Path) -> None:
    done = cli("db", "migrate", "--url", "sqlite:///no/such/dir/x.db", cwd=tmp_path)
    assert_one_line_error(done, 3, "does not exist")


def test_silos_with_none_running(store: Path) -> None:
    done = ops("silos", "--json", cwd=store)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert "0 silo(s)" in ops("silos", cwd=store).stdout


def test_help_lists_the_commands_and_exit_codes(tmp_path: Path) -> None:
    helped = cli("--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert helped.returncode == 0
    for command in (
        "trigger", "cancel", "pause", "resume", "delete", "silos", "next", "db", "dashboard",
    ):  # fmt: skip
        assert f" {command} " in helped.stdout, command
    assert "4 `trigger --wait`" in helped.stdout
    trigger_help = cli("trigger", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert "exit 4" in trigger_help.stdout


# -- with a silo running ---------------------------------------------------------------

APP = """
from anu_jobs import Job, JobContext, SiloBuilder

class Ping(Job):
    async def execute(self, ctx: JobContext) -> None:
        pass

class Boom(Job):
    async def execute(self, ctx: JobContext) -> None:
        raise RuntimeError("boom")

builder = (
    SiloBuilder()
    .use_storage("sqlite:///ops.db")
    .use_job(Ping, job_id="ping")
    .use_job(Boom, job_id="boom")
    .use_options(poll_interval=__import__("datetime").timedelta(seconds=0.2))
)
"""


def _until(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def silo_proc(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    (tmp_path / "app.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "anu_jobs", "run", "app:builder"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def active() -> Any:
            assert proc.poll() is None, proc.communicate()
            done = ops("silos", "--json", cwd=tmp_path)
            found = json.loads(done.stdout) if done.returncode == 0 else []
            return [s for s in found if s["status"] == "active"]

        _until("the silo to register", active)
        yield tmp_path, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.mark.slow
def test_trigger_wait_and_silos_with_a_running_silo(
    silo_proc: tuple[Path, subprocess.Popen[str]],
) -> None:
    cwd, proc = silo_proc
    (silo,) = json.loads(ops("silos", "--json", cwd=cwd).stdout)
    assert silo["pid"] == proc.pid
    assert silo["status"] == "active"
    table = ops("silos", cwd=cwd)
    assert silo["silo_id"] in table.stdout
    done = ops("trigger", "ping", "--wait", "--timeout", "20", cwd=cwd)
    assert done.returncode == 0, done.stderr
    run_id, stage = done.stdout.split()
    assert run_id.startswith("ping@")
    assert stage == "completed"
    failed = ops("trigger", "boom", "--wait", "--timeout", "20", cwd=cwd)
    assert failed.returncode == 4, failed.stderr
    assert failed.stdout.split()[-1] == "failed"
    assert "RuntimeError: boom" in failed.stderr
    as_json = ops("trigger", "ping", "--wait", "--json", cwd=cwd)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["stage"] == "completed"


def test_trigger_wait_times_out_without_a_silo(store: Path) -> None:
    done = ops("trigger", "manual", "--wait", "--timeout", "0.5", cwd=store)
    assert done.returncode == 4
    assert "did not end within 0.5s" in done.stderr
    assert done.stdout.strip().startswith("manual@")  # the run id came first


# -- dashboard -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--host", "0.0.0.0"], ["0.0.0.0", "--token"]),
        (["--host", "::"], ["--token"]),
        (["--token", "t", "--basic", "u:p"], ["not both"]),
        (["--basic", "user-without-password"], ["USER:PASSWORD"]),
    ],
)
def test_dashboard_refuses_unsafe_options(store: Path, args: list[str], words: list[str]) -> None:
    assert_one_line_error(ops("dashboard", *args, cwd=store), 2, *words)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_dashboard_serves_until_interrupted(store: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "anu_jobs", "dashboard", "--port", str(port), "--url", URL,
         "--read-only"],
        cwd=store,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def page() -> str | None:
        assert proc.poll() is None, proc.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=2) as got:
                body: str = got.read().decode()
                return body
        except (urllib.error.URLError, ConnectionError):
            return None

    def metrics() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as got:
                body: str = got.read().decode()
                return body
        except (urllib.error.URLError, ConnectionError):
            return None

    try:
        assert "nightly" in _until("the dashboard to answer", page)
        gauges = _until("the metrics endpoint", metrics)
        assert "anu_jobs_store_reachable 1.0" in gauges
        assert 'anu_jobs_jobs{stage="active"}' in gauges
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stderr
    assert f"http://127.0.0.1:{port}" in stderr
