"""The memory guard against a REAL cgroup memory limit (issue 13, seed 8.2).

Real parts only: `localswarm up` in a subprocess with three real llama-servers of the
embedded model (one thread each), inside a memory cgroup made for this test (v1 here, v2
where that is what the machine has), and a memory hog started beside them in the same
cgroup. The hog takes memory until what the cgroup still allows drops below the guard's
reserve; the guard must drain and stop the newest instance (the swarm serves on, degraded
in `status`, `/health` and `/metrics`), the kernel must never have to OOM-kill anything,
and once the hog is gone the instance must come back and the swarm be healthy again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests import cgroups
from tests.helpers import free_tcp_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(cgroups.unavailable_reason() is not None,
                                 reason=str(cgroups.unavailable_reason()))]

MiB = 1024**2
RESERVE_MB = 160
RESUME_MB = 64
HEADROOM = 420 * MiB  # the limit is set this far above the swarm's own usage once it is up
HOG_BASE = 12 * MiB  # the hog's own interpreter, besides what it allocates

HOG_CODE = """
import sys, time
held, target = [], int(sys.argv[1])
while sum(map(len, held)) < target:
    held.append(b"\\x01" * (8 << 20))  # written, so resident (calloc'd pages would not be)
    time.sleep(0.05)
print("holding", flush=True)
time.sleep(3600)
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localswarm", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def _wait(cond, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _health(base: str) -> dict:
    try:
        return httpx.get(f"{base}/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}


def _metric(base: str, name: str) -> float | None:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_a_hog_in_the_cgroup_stops_the_newest_instance_and_it_returns(real_llama, tmp_path):
    env = {**os.environ, "LOCALSWARM_STATE_DIR": str(tmp_path / "state"),
           "LOCALSWARM_CONFIG_DIR": str(tmp_path / "cfg"), "LOCALSWARM_CACHE_DIR": str(tmp_path / "cache")}
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "swarm.log", "wb")
    with cgroups.memory_cgroup("ls-guard") as cg:
        cg.set_limit(4096 * MiB)  # a limit from the start: detection reports it
        swarm = subprocess.Popen(cg.wrap([
            sys.executable, "-m", "localswarm", "up", "--model", "embedded", "--instances", "3", "--threads", "3",
            "--ctx-size", "4096", "--parallel", "1", "--port", str(port),
            "--memory-reserve-mb", str(RESERVE_MB), "--memory-resume-mb", str(RESUME_MB),
            "--memory-interval", "0.2", "--memory-settle", "2", "--memory-drain-timeout", "2"]),
            env=env, stdout=log, stderr=subprocess.STDOUT)
        hog = None
        try:
            _wait(lambda: _health(base).get("ready") == 3, 60, "three ready instances")
            assert _health(base) == {"status": "ok", "ready": 3, "instances": 3}
            status = json.loads(_cli(env, "status", "--json").stdout)
            assert status["memory"]["memory"]["ram_source"] == f"cgroup {cg.version} limit"
            assert set(cg.pids()) >= {swarm.pid, *(i["pid"] for i in status["instances"])}
            newest = min(status["instances"], key=lambda i: i["uptime_s"])
            # what one instance holds privately, as the guard measures it (no plan for the embedded model)
            need = status["memory"]["need_per_instance"]
            assert need and need > 10 * MiB
            # a request answered now: the swarm really serves, and each instance has its KV cache in use
            reply = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
                "model": "swarm", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})
            assert reply.status_code == 200, reply.text
            time.sleep(1.0)
            usage = cg.usage()
            cg.set_limit(usage + HEADROOM)

            # The hog leaves less than the reserve free (by half an instance): the guard must stop one;
            # with it stopped, more than the reserve is free (no second stop), but less than the
            # reserve + an instance + the resume margin (it stays stopped while the hog holds on).
            hog_bytes = HEADROOM - RESERVE_MB * MiB + need // 2 - HOG_BASE
            hog = subprocess.Popen(cg.wrap([sys.executable, "-c", HOG_CODE, str(hog_bytes)]),
                                   stdout=subprocess.PIPE, text=True)
            _wait(lambda: _health(base).get("status") == "degraded", 30, "a degraded swarm")
            body = _health(base)
            assert body["ready"] == 2 and list(body["degraded"]["held"]) == [newest["name"]]
            assert "stopped by the memory guard" in body["degraded"]["held"][newest["name"]]
            assert not psutil.pid_exists(newest["pid"]) or psutil.Process(newest["pid"]).status() == "zombie"
            assert hog.stdout.readline().strip() == "holding"  # the hog got all it asked for
            text = _cli(env, "status").stdout
            assert "DEGRADED:" in text and newest["name"] in text, text
            assert _metric(base, "localswarm_degraded") == 1.0
            assert _metric(base, "localswarm_memory_guard_stops_total") == 1.0
            # still serving, on the two left
            reply = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
                "model": "swarm", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})
            assert reply.status_code == 200 and reply.json()["localswarm"]["n"] == 2
            # hysteresis: while the hog holds its memory the stopped instance stays stopped
            time.sleep(3)
            assert _health(base)["ready"] == 2 and _metric(base, "localswarm_memory_guard_stops_total") == 1.0

            hog.kill()
            hog.wait(10)
            _wait(lambda: _health(base) == {"status": "ok", "ready": 3, "instances": 3}, 40, "the instance back")
            assert _metric(base, "localswarm_degraded") == 0.0
            assert _metric(base, "localswarm_memory_guard_resumes_total") == 1.0
            assert _metric(base, "localswarm_memory_guard_stops_total") == 1.0  # no flapping
            # the kernel never had to choose: no OOM kill, and usage never even hit the limit
            assert cg.oom_kills() == 0 and not cg.under_oom() and cg.limit_hits() == 0
            assert swarm.poll() is None
        finally:
            if hog is not None and hog.poll() is None:
                hog.kill()
                hog.wait(10)
            swarm.terminate()
            try:
                swarm.wait(30)
            except subprocess.TimeoutExpired:
                swarm.kill()
                swarm.wait(10)
            log.close()
    out = (tmp_path / "swarm.log").read_text(errors="replace")
    assert len(re.findall(r"memory guard: .* draining and stopping inst-\d \(the newest instance\)", out)) == 1, out
    assert len(re.findall(r"memory guard: starting inst-\d again", out)) == 1, out
