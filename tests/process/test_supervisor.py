"""Supervisor behaviour on real processes (FAKE llama-servers and failing binaries)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.supervisor.instance import InstanceTiming
from localswarm.supervisor.states import TRANSITIONS, InvalidTransition, State, check_transition
from localswarm.supervisor.supervisor import Supervisor, threads_per_instance
from tests.helpers import REPO, fake_backend, pids_of

FAST = InstanceTiming(health_interval=0.3, health_timeout=1.0, start_timeout=10, backoff_initial=0.1,
                      backoff_max=0.5, max_fast_failures=3, fast_failure_window=5, stop_grace=3)


def test_transition_table_is_closed_and_enforced():
    assert set(TRANSITIONS) == set(State)
    check_transition(State.STARTING, State.READY)
    with pytest.raises(InvalidTransition):
        check_transition(State.STOPPED, State.READY)  # never READY without starting
    with pytest.raises(InvalidTransition):
        check_transition(State.READY, State.STARTING)  # a restart always passes through BACKOFF


def test_threads_are_divided_never_multiplied():
    assert threads_per_instance(2, 2) == 1
    assert threads_per_instance(2, 8) == 4
    assert threads_per_instance(3, 8) == 2
    assert threads_per_instance(4, 2) == 1  # floor of 1, with a warning


async def test_crashed_instance_is_restarted(tmp_path):
    sup = Supervisor(fake_backend(tmp_path), instances=2, log_dir=tmp_path / "logs", timing=FAST)
    sup.start()
    try:
        assert await sup.wait_ready(15, all_=True)
        victim = sup.instances[0]
        old_pid, old_port = victim.pid, victim.port
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (victim.ready and victim.pid != old_pid):
            await asyncio.sleep(0.05)
        assert victim.ready and victim.pid != old_pid
        assert victim.stats.restarts == 1
        assert sup.instances[1].stats.restarts == 0
        assert "exited" in (victim.last_error or "")
        assert old_port  # a fresh port and key are chosen at each start
    finally:
        await sup.stop()
    assert all(i.state is State.STOPPED for i in sup.instances)


async def test_repeated_fast_failures_end_in_fatal_with_one_log_line(tmp_path, caplog):
    broken = tmp_path / "broken-server"
    broken.write_text("#!/bin/sh\necho 'error: model file is corrupt' >&2\nexit 3\n")
    broken.chmod(0o755)
    backend = LlamaServerBackend(binary=broken, model_path=tmp_path / "m.gguf", model_id="m")
    sup = Supervisor(backend, instances=1, log_dir=tmp_path / "logs", timing=FAST)
    sup.start()
    try:
        assert not await sup.wait_ready(10)
        inst = sup.instances[0]
        assert inst.state is State.FATAL
        gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
        assert len(gave_up) == 1
        assert "exited with code 3" in gave_up[0].getMessage()
        assert "model file is corrupt" in inst.log_path.read_text()
    finally:
        await sup.stop()


async def test_stop_kills_a_server_that_ignores_sigterm(tmp_path):
    stubborn = tmp_path / "stubborn-server"
    stubborn.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import signal, sys, runpy
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.argv = ["fake"] + sys.argv[1:]
        runpy.run_path("{REPO / 'tests' / 'fakes' / 'fake_llama_server.py'}", run_name="__main__")
        """))
    stubborn.chmod(0o755)
    backend = LlamaServerBackend(binary=stubborn, model_path=tmp_path / "m.gguf", model_id="m")
    timing = InstanceTiming(**{**FAST.__dict__, "stop_grace": 1.0})
    sup = Supervisor(backend, instances=1, log_dir=tmp_path / "logs", timing=timing)
    sup.start()
    assert await sup.wait_ready(15)
    pid = sup.instances[0].pid
    started = time.monotonic()
    await sup.stop()
    assert time.monotonic() - started < 5
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    import psutil

    return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


SUPERVISOR_SCRIPT = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.helpers import fake_backend
from localswarm.supervisor.supervisor import Supervisor

async def main():
    tmp = Path({tmp!r})
    sup = Supervisor(fake_backend(tmp), instances=2, log_dir=tmp / "logs")
    sup.start()
    await sup.wait_ready(20, all_=True)
    print(" ".join(str(i.pid) for i in sup.instances), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_sigkill_of_the_supervisor_leaves_no_orphan(tmp_path):
    script = SUPERVISOR_SCRIPT.format(repo=str(REPO), tmp=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    assert not pids_of(str(tmp_path / "fake-llama-server"))


async def test_crash_soon_after_ready_leaves_ready_and_ends_fatal(tmp_path):
    """A model that loads, then dies on every first decode: READY must not outlive the process."""
    dies = tmp_path / "dies-after-ready"
    dies.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, threading, os, runpy
        threading.Timer(0.6, lambda: os._exit(3)).start()
        sys.argv = ["fake"] + sys.argv[1:]
        runpy.run_path("{REPO / 'tests' / 'fakes' / 'fake_llama_server.py'}", run_name="__main__")
        """))
    dies.chmod(0o755)
    backend = LlamaServerBackend(binary=dies, model_path=tmp_path / "m.gguf", model_id="m")
    sup = Supervisor(backend, instances=1, log_dir=tmp_path / "logs", timing=FAST)
    inst = sup.instances[0]
    sup.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and inst.state is not State.FATAL:
            await asyncio.sleep(0.02)
        assert inst.state is State.FATAL and not sup.ready_instances()
        assert inst._task.done() and inst._task.exception() is None
    finally:
        await sup.stop()


async def test_stop_itself_can_be_cancelled(tmp_path):
    sup = Supervisor(fake_backend(tmp_path), instances=1, log_dir=tmp_path / "logs", timing=FAST)
    sup.start()
    assert await sup.wait_ready(15)
    inst = sup.instances[0]
    stopping = asyncio.ensure_future(inst.stop())
    await asyncio.sleep(0)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    await sup.stop()
    assert inst.state is State.STOPPED
