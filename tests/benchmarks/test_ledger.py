"""The comparison's ledger: every record arrives, whole, from threads, forked children and
a sender killed right after it wrote; a burst of records does not wait for the driver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "compare"
sys.path.insert(0, str(COMPARE))

import ledger  # noqa: E402

pytestmark = pytest.mark.slow

_SENDER = """
import os, sys, threading
sys.path.insert(0, sys.argv[1])
import ledger
n = int(sys.argv[2])
ledger.record("parent-0", 1.5)
pid = os.fork()
if pid == 0:
    for i in range(n):
        ledger.record(f"child-{i}")
    os._exit(0)
os.waitpid(pid, 0)
threads = [
    threading.Thread(target=lambda t=t: [ledger.record(f"t{t}-{i}") for i in range(n)])
    for t in range(4)
]
for t in threads: t.start()
for t in threads: t.join()
ledger.record("last", 2.5)
print("sent", flush=True)
os.kill(os.getpid(), 9)
"""


def test_every_record_arrives_from_threads_forks_and_a_killed_sender(tmp_path: Path) -> None:
    n = 5000
    with ledger.Ledger(str(tmp_path / "l.sock")) as led:
        env = dict(os.environ, **{ledger.ENV: led.path})
        proc = subprocess.run(
            [sys.executable, "-c", _SENDER, str(COMPARE), str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert proc.stdout.strip() == "sent"
    ids = [e.job_id for e in led.entries]
    expected = {"parent-0", "last"} | {f"child-{i}" for i in range(n)}
    expected |= {f"t{t}-{i}" for t in range(4) for i in range(n)}
    assert len(ids) == len(expected)
    assert set(ids) == expected
    by_id = {e.job_id: e for e in led.entries}
    assert by_id["parent-0"].due == 1.5
    assert by_id["last"].due == 2.5
    assert abs(by_id["last"].start - time.time()) < 60


def test_a_burst_of_records_does_not_wait_for_the_reader(tmp_path: Path) -> None:
    """Records while nobody reads: they wait in the connection's buffer (at least 50 fit
    in the smallest; a datagram socket blocks its sender after 10)."""
    path = str(tmp_path / "idle.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    os.environ[ledger.ENV] = path
    ledger._pid = 0  # a connection of this test's own
    try:
        ledger.record("b-0")
        assert ledger._sock is not None
        room = ledger._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        n = max(50, min(2000, room // 4096))
        sender = threading.Thread(target=lambda: [ledger.record(f"b-{i}") for i in range(1, n)])
        sender.start()
        sender.join(timeout=10)
        assert not sender.is_alive(), "a record waited for the reader"
        conn, _ = listener.accept()
        ledger._sock.close()
        ledger._sock = None
        data = b""
        with conn:
            while chunk := conn.recv(1 << 16):
                data += chunk
    finally:
        del os.environ[ledger.ENV]
        ledger._pid = 0
        listener.close()
    lines = data.decode().splitlines()
    assert [line.split(" ")[0] for line in lines] == [f"b-{i}" for i in range(n)]
