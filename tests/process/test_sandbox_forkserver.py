"""The sandbox's fork server (localswarm/sandbox/forkserver.py): the same guarantees as a
one-shot run (limits, no network, read-only filesystem, nobody, timeouts), for many
programs from one set-up. Real processes; isolation checks are skipped, with the reason,
where the kernel gives no namespaces."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from localswarm.sandbox import Limits, isolation_summary, probe
from localswarm.sandbox.forkserver import ForkServer, close_shared, run_programs

FAST = Limits(wall_s=3)


@pytest.fixture(scope="module")
def iso() -> dict:
    return probe()


def run1(src: str, limits: Limits = FAST):
    return run_programs([src], limits=limits)[0]


def test_programs_run_in_order_with_their_own_output_and_exit_codes() -> None:
    rs = run_programs(["print('a')", "import sys; print('b'); sys.exit(3)", "raise ValueError('boom')",
                       "print(1 +)"], limits=FAST)
    assert [r.status for r in rs] == ["passed", "failed", "failed", "failed"]
    assert rs[0].stdout == "a\n" and rs[1].stdout == "b\n" and rs[1].returncode == 3
    assert "ValueError: boom" in rs[2].stderr and "SyntaxError" in rs[3].stderr


def test_hangs_and_busy_loops_are_killed_and_the_others_still_answer() -> None:
    rs = run_programs(["import time; time.sleep(60)", "while True: pass", "print('ok')"],
                      limits=Limits(wall_s=1.5, cpu_s=1))
    assert [r.status for r in rs] == ["timeout", "timeout", "passed"]
    assert all(r.duration_s < 5 for r in rs)


def test_memory_and_file_size_are_limited() -> None:
    rs = run_programs(["x = bytearray(3 << 30)\nprint('allocated')",
                       "open('big', 'wb').write(b'x' * (64 << 20))\nprint('written')"],
                      limits=Limits(wall_s=5, fsize_bytes=1 << 20))
    assert rs[0].status == "failed" and "allocated" not in rs[0].stdout
    assert rs[1].status != "passed" and "written" not in rs[1].stdout


def test_isolation_network_filesystem_and_user(tmp_path: Path, iso: dict) -> None:
    if not (iso.get("net_ns") and iso.get("readonly_fs")):
        pytest.skip(f"no namespaces here: {isolation_summary(iso)}")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    target = tmp_path / "escape.txt"
    rs = run_programs([
        f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\nprint('connected')",
        f"open({str(target)!r}, 'w').write('x')",
        "open('mine.txt', 'w').write('x')\nimport os\nprint(os.getuid(), os.getcwd())",
        "import os\nprint(sorted(os.listdir('..')))",  # the other jobs' directories
    ], limits=FAST)
    srv.close()
    assert rs[0].status == "failed" and "connected" not in rs[0].stdout
    assert rs[1].status == "failed" and not target.exists()
    assert rs[2].status == "passed", rs[2].stderr
    uid, cwd = rs[2].stdout.split()
    if os.geteuid() == 0:
        assert uid == "65534" and rs[2].isolation["nobody"]
        assert rs[3].status == "failed" and "PermissionError" in rs[3].stderr
    assert not os.path.exists(cwd)  # each job's directory is deleted after


def test_a_dead_warm_server_is_replaced() -> None:
    close_shared()
    assert run1("print('first')").stdout == "first\n"
    from localswarm.sandbox import forkserver

    (srv,) = forkserver._shared.values()
    os.killpg(srv._proc.pid, signal.SIGKILL)
    srv._proc.wait()
    assert run1("print('second')").stdout == "second\n"
    (again,) = forkserver._shared.values()
    assert again is not srv
    close_shared()
    assert not os.path.exists(again.workroot)


def test_a_server_that_dies_mid_batch_fails_its_programs_cleanly(tmp_path: Path) -> None:
    """Its children die with it (no stray sleeper left behind)."""
    with ForkServer(limits=Limits(wall_s=30)) as srv:
        fut = srv.submit("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(30)")
        deadline = time.monotonic() + 10
        while not list(srv.workroot.glob("job-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        children = [int(p) for p in Path(f"/proc/{srv._proc.pid}/task/{srv._proc.pid}/children").read_text().split()]
        assert len(children) == 1
        os.killpg(srv._proc.pid, signal.SIGKILL)
        r = fut.result(timeout=10)
    assert r.status == "error" and "fork server" in r.stderr
    deadline = time.monotonic() + 5
    while Path(f"/proc/{children[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{children[0]}").exists() or "Z" in Path(f"/proc/{children[0]}/stat").read_text().split()[2]
