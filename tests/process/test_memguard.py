"""The memory guard on real processes: FAKE llama-servers (tests/fakes/fake_llama_server.py)
whose memory figures are scripted (a :class:`Memory` stands for the probe), so each
threshold can be crossed on purpose. The real cgroup test is
tests/integration/test_memguard_cgroup.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from localswarm.ui.status_watch import memory_lines
from localswarm.config import Settings
from localswarm.gateway.app import create_app
from localswarm.supervisor.instance import InstanceTiming
from localswarm.supervisor.memguard import GuardPolicy, MemoryProbe, MemorySnapshot
from localswarm.supervisor.states import State
from localswarm.supervisor.supervisor import Supervisor
from tests.helpers import fake_backend

MiB = 1024**2
FAST = InstanceTiming(health_interval=0.3, health_timeout=1.0, start_timeout=10, backoff_initial=0.1,
                      backoff_max=0.5, max_fast_failures=3, fast_failure_window=5, stop_grace=3)
POLICY = GuardPolicy(reserve=500 * MiB, resume_margin=200 * MiB, interval=0.1, settle=0.6, drain_timeout=2.0)
NEED = 300 * MiB


class Memory:
    """The probe, scripted: ``ram`` is what is free with no instance running; each live
    instance process takes ``NEED`` of it, as a real one would once loaded."""

    def __init__(self, ram: int) -> None:
        self.ram = ram
        self.sup: Supervisor | None = None

    def live(self) -> int:
        return sum(1 for i in self.sup.instances if i.pid) if self.sup else 0

    def set_free(self, free: int) -> None:
        """Free memory now is ``free`` (whatever the instances running now hold)."""
        self.ram = free + NEED * self.live()

    def sample(self) -> MemorySnapshot:
        return MemorySnapshot(self.ram - NEED * self.live(), 8192 * MiB, "cgroup v1 limit")


def guarded(tmp_path, mem: Memory, instances: int, **kw) -> Supervisor:
    sup = Supervisor(fake_backend(tmp_path), instances=instances, log_dir=tmp_path / "logs", timing=FAST,
                     memory_guard=POLICY, memory_need=NEED, memory_sample=kw.pop("sample", mem.sample), **kw)
    mem.sup = sup
    return sup


async def until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def names(sup: Supervisor, state: State) -> list[str]:
    return [i.name for i in sup.instances if i.state is state]


async def test_an_instance_that_does_not_fit_is_not_started_until_it_does(tmp_path, caplog):
    caplog.set_level(logging.INFO, "localswarm.supervisor.memguard")
    # room for two: 500 reserve + 2 × 300 need = 1100 MiB; the third waits
    mem = Memory(ram=1300 * MiB)
    sup = guarded(tmp_path, mem, 3)
    sup.start()
    try:
        assert await until(lambda: len(sup.ready_instances()) == 2)
        await asyncio.sleep(0.5)
        assert len(sup.ready_instances()) == 2
        [waiting] = [i for i in sup.instances if not i.ready]
        assert waiting.pid is None and waiting.state is State.STOPPED  # never spawned
        assert sup.degraded and "waiting for memory" in sup.guard.held[waiting.name]
        assert sum("waiting for memory" in r.message for r in caplog.records) == 1  # one line, not one a tick
        mem.set_free(900 * MiB)  # room again
        assert await until(lambda: len(sup.ready_instances()) == 3)
        assert not sup.degraded and sup.guard.held == {}
        assert any(f"starting {waiting.name}" in r.message for r in caplog.records)
    finally:
        await sup.stop()
    assert all(i.state is State.STOPPED for i in sup.instances)


async def test_pressure_drains_and_stops_the_newest_and_it_returns_with_hysteresis(tmp_path, caplog):
    caplog.set_level(logging.INFO, "localswarm.supervisor.memguard")
    mem = Memory(ram=4000 * MiB)
    sup = guarded(tmp_path, mem, 3)
    sup.start()
    try:
        assert await until(lambda: len(sup.ready_instances()) == 3)
        newest = max(sup.instances, key=lambda i: i.started_at)
        old_pid = newest.pid
        work = newest.request()  # a request in flight on the newest: it gets to finish
        mem.set_free(400 * MiB)  # below the 500 MiB reserve
        assert await until(lambda: newest.state is State.STOPPING, 3)
        assert not newest.ready and len(sup.ready_instances()) == 2  # out of the routing at once
        await asyncio.sleep(0.3)
        assert newest.state is State.STOPPING  # still draining its request
        work.done(tokens=3)
        assert await until(lambda: newest.pid is None and newest.name in sup.guard.held, 5)
        assert sup.degraded and sup.guard.sheds == 1
        assert "stopped by the memory guard" in (newest.last_error or "")
        assert [r.message for r in caplog.records if "draining and stopping" in r.message] == [
            f"memory guard: 400 MiB free on ram (cgroup v1 limit), below the 500 MiB reserve: draining and "
            f"stopping {newest.name} (the newest instance)"]
        # the freed memory: above the reserve, so nothing else is stopped...
        assert mem.sample().ram_available == 400 * MiB + NEED
        mem.set_free(500 * MiB + NEED + 100 * MiB)  # ...but below reserve + need + margin: it stays down
        await asyncio.sleep(1.2)
        assert len(sup.ready_instances()) == 2 and newest.pid is None and sup.guard.sheds == 1
        # above the resume level, but not for the settle time: still down (no flapping)
        for _ in range(3):
            mem.set_free(500 * MiB + NEED + 300 * MiB)
            await asyncio.sleep(0.3)
            mem.set_free(500 * MiB + NEED + 100 * MiB)
            await asyncio.sleep(0.15)
        assert newest.pid is None
        mem.set_free(500 * MiB + NEED + 300 * MiB)  # and stays there
        assert await until(lambda: newest.ready, 6)
        assert newest.pid != old_pid and not sup.degraded and sup.guard.resumes == 1
        assert sup.guard.sheds == 1  # it did not flap back down
    finally:
        await sup.stop()


async def test_the_last_instance_is_kept(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "localswarm.supervisor.memguard")
    mem = Memory(ram=4000 * MiB)
    sup = guarded(tmp_path, mem, 2)
    sup.start()
    try:
        assert await until(lambda: len(sup.ready_instances()) == 2)
        mem.set_free(100 * MiB)
        assert await until(lambda: sup.guard.sheds == 1 and len(sup.ready_instances()) == 1)
        await asyncio.sleep(0.6)
        assert len(sup.ready_instances()) == 1 and sup.guard.sheds == 1
        assert sum("no instance to spare" in r.message for r in caplog.records) == 1
    finally:
        await sup.stop()


class FakeNVML:
    """pynvml's calls the probe makes (nvidia-ml-py's names); free VRAM as the test sets it."""

    def __init__(self, free: dict[int, int]) -> None:
        self.free = free
        self.shut = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=24 << 30, free=self.free[handle], used=(24 << 30) - self.free[handle])


def test_probe_reads_vram_through_nvml(tmp_path):
    nvml = FakeNVML({0: 3 << 30, 1: 5 << 30})
    probe = MemoryProbe(sysfs_root=tmp_path, gpus=[1], nvml=nvml)
    snap = probe.sample()
    assert snap.vram_free == {1: 5 << 30} and snap.free("gpu1") == 5 << 30 and snap.free("gpu0") is None
    nvml.free[1] = 1 << 30
    assert probe.sample().free("gpu1") == 1 << 30
    probe.close()
    assert nvml.shut


async def test_vram_pressure_stops_the_newest_instance_on_that_gpu(tmp_path):
    nvml = FakeNVML({0: 20 << 30, 1: 20 << 30})
    probe = MemoryProbe(sysfs_root=tmp_path, gpus=[0, 1], nvml=nvml)
    mem = Memory(ram=16 << 30)

    def sample() -> MemorySnapshot:
        return MemorySnapshot(mem.ram, 32 << 30, "physical", probe.sample().vram_free)

    sup = guarded(tmp_path, mem, 3, devices=["gpu0", "gpu1", "gpu0"], sample=sample)
    sup.start()
    try:
        assert await until(lambda: len(sup.ready_instances()) == 3)
        on_gpu0 = [i for i in sup.instances if i.device == "gpu0"]
        newest_gpu0 = max(on_gpu0, key=lambda i: i.started_at)
        nvml.free[0] = 100 * MiB
        assert await until(lambda: sup.guard.sheds == 1 and newest_gpu0.pid is None)
        assert sup.instances[1].ready  # gpu1's instance is untouched
        assert "gpu0 (NVML)" in sup.guard.held[newest_gpu0.name]
        nvml.free[0] = 20 << 30
        assert await until(lambda: newest_gpu0.ready, 6) and not sup.degraded
    finally:
        await sup.stop()


def test_degraded_shows_in_health_status_and_metrics(tmp_path):
    """The user's view: /health, /localswarm/status (what `localswarm status` prints) and /metrics."""
    mem = Memory(ram=4000 * MiB)
    sup = guarded(tmp_path, mem, 2)
    app = create_app(Settings(port=8000), sup, model_id="fake-model")

    def wait_for(cond, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cond()

    with TestClient(app) as client:
        wait_for(lambda: client.get("/health").json()["ready"] == 2)
        health = client.get("/health").json()
        assert health["status"] == "ok" and "degraded" not in health
        assert "localswarm_degraded 0.0" in client.get("/metrics").text
        mem.set_free(300 * MiB)
        wait_for(lambda: client.get("/health").json()["status"] == "degraded")
        resp = client.get("/health")
        assert resp.status_code == 200  # still serving, with one instance
        body = resp.json()
        assert body["ready"] == 1 and body["degraded"]["reason"] == "memory"
        [(held, why)] = body["degraded"]["held"].items()
        assert "below the 500 MiB reserve" in why
        status = client.get("/localswarm/status").json()
        assert status["degraded"] is True and status["memory"]["held"] == {held: why}
        free = status["memory"]["memory"]["ram_available"]
        assert free in (300 * MiB, 300 * MiB + NEED)  # before or after the stopped one's memory returned
        lines = memory_lines(status)
        assert lines[0] == f"memory: {free // MiB} MiB free of 8.00 GiB (cgroup v1 limit), reserve 500 MiB"
        assert lines[1].startswith(f"DEGRADED: {held} stopped by the memory guard")
        text = client.get("/metrics").text
        assert "localswarm_degraded 1.0" in text
        assert f'localswarm_instance_held{{instance="{held}"}} 1.0' in text
        samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
                   for fam in text_string_to_metric_families(text) for m in fam.samples}
        assert samples[("localswarm_memory_available_bytes", (("device", "ram"),))] in (300 * MiB, 300 * MiB + NEED)
        assert samples[("localswarm_memory_reserve_bytes", ())] == 500 * MiB
        assert "localswarm_memory_guard_stops_total 1.0" in text
        mem.set_free(4000 * MiB)
        wait_for(lambda: client.get("/health").json() == {"status": "ok", "ready": 2, "instances": 2})
        assert "localswarm_degraded 0.0" in client.get("/metrics").text


@pytest.mark.parametrize("setting", ["memory_reserve_mb", "memory_resume_mb"])
def test_settings_refuse_negative_figures(setting):
    from localswarm.errors import ConfigError

    with pytest.raises(ConfigError, match=setting):
        Settings(**{setting: -1})


async def test_the_oom_killer_would_take_the_newest_instance_never_the_gateway(tmp_path):
    """Belt and braces: a spike faster than the checks meets instances scored for the OOM
    killer, the newest highest; the gateway's own score is untouched."""
    mem = Memory(ram=4000 * MiB)
    sup = guarded(tmp_path, mem, 2)
    sup.start()
    try:
        assert await until(lambda: len(sup.ready_instances()) == 2)

        def score(pid: int) -> int:
            with open(f"/proc/{pid}/oom_score_adj") as f:
                return int(f.read())

        old, new = sorted(sup.instances, key=lambda i: i.started_at)
        assert 500 <= score(old.pid) < score(new.pid) <= 1000
        assert score(os.getpid()) < 500
    finally:
        await sup.stop()
