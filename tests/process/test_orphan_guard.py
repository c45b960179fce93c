"""The macOS orphan guard, run on Linux by forcing its path (real processes, real signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from localswarm.supervisor import proc

SERVER = """
import signal, sys, time
buf = bytearray(64 * 1024 * 1024)  # resident memory the status must report
for i in range(0, len(buf), 4096): buf[i] = 1
def bye(sig, frame):
    open(sys.argv[1], "w").write(signal.Signals(sig).name); sys.exit(3)
signal.signal(signal.SIGTERM, bye); signal.signal(signal.SIGINT, bye)
open(sys.argv[1] + ".up", "w").write("up")
while True: time.sleep(0.1)
"""


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    mark = tmp_path / "signal.txt"
    argv = proc.orphan_guard_argv([sys.executable, "-c", SERVER, str(mark)], platform="darwin")
    assert argv[:2] == [sys.executable, "-c"]  # the guard wraps the server
    guard = subprocess.Popen(argv, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "signal.txt.up").exists():
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    return guard, mark


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_guard_forwards_the_signal_and_waits_for_its_server(tmp_path: Path, sig: signal.Signals) -> None:
    guard, mark = _start(tmp_path)
    server = psutil.Process(guard.pid).children()[0]
    os.kill(guard.pid, sig)
    assert guard.wait(20) == 3  # the server's own exit code: the guard waited for it
    assert mark.read_text() == sig.name
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE


def test_status_memory_is_the_servers_not_the_guards(tmp_path: Path) -> None:
    guard, _ = _start(tmp_path)
    try:
        own = psutil.Process(guard.pid).memory_info().rss
        total = proc.memory_rss(guard.pid)
        assert total is not None and total - own > 60 * 1024 * 1024
    finally:
        proc.terminate(guard.pid)
        guard.wait(20)


def test_kill_takes_the_guard_and_its_server_together(tmp_path: Path) -> None:
    guard, _ = _start(tmp_path)
    server = psutil.Process(guard.pid).children()[0]
    proc.kill(guard.pid)
    guard.wait(20)
    server.wait(20)
    assert not server.is_running()


def test_linux_and_windows_need_no_guard() -> None:
    assert proc.orphan_guard_argv(["x"], platform="linux") == ["x"]
    assert proc.orphan_guard_argv(["x"], platform="win32") == ["x"]
    assert proc.needs_orphan_guard("darwin")
