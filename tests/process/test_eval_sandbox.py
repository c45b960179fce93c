"""The sandbox that runs generated code: limits, isolation, pass/fail judgement.

These run real subprocesses (about 0.15 s each). Isolation checks that need kernel
namespaces are skipped, with the reason, where the sandbox could not create them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from localswarm.sandbox import Limits, isolation_summary, probe, run_program, run_test

CHECK = "def check(candidate):\n    assert candidate(2) == 3\n    assert candidate(-1) == 0\n"


@pytest.fixture(scope="module")
def iso() -> dict:
    return probe()


def test_passing_solution() -> None:
    r = run_test("def inc(x):\n    return x + 1\n", CHECK, "inc")
    assert r.status == "passed", r.stderr
    assert r.passed and r.returncode == 0


def test_failing_solution() -> None:
    r = run_test("def inc(x):\n    return x\n", CHECK, "inc")
    assert r.status == "failed"
    assert "AssertionError" in r.stderr


def test_syntax_error_fails() -> None:
    r = run_test("def inc(x):\n    return x +\n", CHECK, "inc")
    assert r.status == "failed" and "SyntaxError" in r.stderr


def test_early_exit_zero_is_not_a_pass() -> None:
    """A solution that exits 0 before the checks ran must not count as passing."""
    src = "import sys\ndef inc(x):\n    sys.exit(0)\n"
    r = run_test(src, CHECK, "inc")
    assert r.returncode == 0 and r.status == "failed"
    r = run_test("import os\ndef inc(x):\n    os._exit(0)\n", CHECK, "inc")
    assert r.status == "failed"


def test_infinite_loop_is_killed_by_the_wall_timeout() -> None:
    r = run_program("while True:\n    pass\n", limits=Limits(wall_s=1.5, cpu_s=30))
    assert r.status == "timeout"
    assert r.duration_s < 5


def test_cpu_limit_kills_a_busy_loop() -> None:
    r = run_program("while True:\n    pass\n", limits=Limits(wall_s=20, cpu_s=1))
    assert r.status == "timeout"
    assert r.duration_s < 10


def test_sleeping_forever_is_killed() -> None:
    r = run_program("import time\ntime.sleep(60)\n", limits=Limits(wall_s=1.0))
    assert r.status == "timeout" and r.duration_s < 5


def test_memory_bomb_is_stopped() -> None:
    r = run_program("x = bytearray(3 << 30)\nprint('allocated')\n")
    assert r.status == "failed"
    assert "allocated" not in r.stdout
    assert "MemoryError" in r.stderr


def test_growing_list_memory_bomb_is_stopped() -> None:
    r = run_program("xs = []\nwhile True:\n    xs.append(' ' * (1 << 20))\n", limits=Limits(wall_s=20, as_bytes=256 << 20))
    assert r.status in ("failed", "timeout")
    assert "MemoryError" in r.stderr or r.status == "timeout"


def test_huge_file_write_is_limited() -> None:
    r = run_program("with open('big', 'wb') as f:\n    f.write(b'x' * (64 << 20))\nprint('wrote')\n",
                    limits=Limits(fsize_bytes=1 << 20))
    assert r.status == "failed" and "wrote" not in r.stdout


def test_fork_bomb_is_contained() -> None:
    src = "import os\nfor _ in range(1000):\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_program(src, limits=Limits(wall_s=2, nproc=32))
    assert r.status in ("failed", "timeout", "passed")  # what matters: it returned, bounded
    assert r.duration_s < 15


def test_relative_writes_land_in_a_throwaway_dir() -> None:
    r = run_program("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())\n")
    assert r.status == "passed", r.stderr
    workdir = r.stdout.strip()
    assert workdir and not os.path.exists(workdir)  # deleted afterwards


def test_writes_outside_the_workdir_are_refused(tmp_path: Path, iso: dict) -> None:
    if not iso.get("readonly_fs"):
        pytest.skip(f"no mount namespace here: {isolation_summary(iso)}")
    target = tmp_path / "escape.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('x')\n")
    assert r.status == "failed"
    assert not target.exists()
    r = run_program("open('/tmp/lsw-escape-probe', 'w').write('x')\n")
    assert r.status == "failed" and not os.path.exists("/tmp/lsw-escape-probe")


def test_network_is_blocked(iso: dict) -> None:
    if not iso.get("net_ns"):
        pytest.skip(f"no network namespace here: {isolation_summary(iso)}")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    src = (
        "import socket\ns = socket.socket()\ns.settimeout(2)\n"
        f"s.connect(('127.0.0.1', {port}))\nprint('connected')\n"
    )
    r = run_program(src)
    srv.setblocking(False)
    try:  # a connection made by the program would be waiting in the backlog by now
        conn, _ = srv.accept()
        conn.close()
        reached = True
    except BlockingIOError:
        reached = False
    finally:
        srv.close()
    assert r.status == "failed" and "connected" not in r.stdout
    assert "unreachable" in r.stderr.lower() or "OSError" in r.stderr
    assert not reached


def test_environment_is_empty_of_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSW_TEST_SECRET", "hunter2")
    r = run_program("import os\nprint(os.environ.get('LSW_TEST_SECRET'))\n")
    assert r.stdout.strip() == "None"


def test_probe_reports_isolation(iso: dict) -> None:
    assert "net_ns" in iso and "readonly_fs" in iso
    line = isolation_summary(iso)
    assert "rlimits" in line
    if iso.get("net_ns"):
        assert iso.get("loopback") != "reachable"
