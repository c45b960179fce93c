"""`localswarm up --detach` → the openai client → `localswarm status` → `localswarm down`.

Real parts only: the CLI in a subprocess, real llama-server processes, the embedded model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import openai
import psutil
import pytest

from tests.helpers import free_tcp_port

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localswarm", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def swarm(real_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swarm")
    env = {**os.environ, "LOCALSWARM_STATE_DIR": str(tmp / "state"), "LOCALSWARM_CONFIG_DIR": str(tmp / "cfg"),
           "LOCALSWARM_CACHE_DIR": str(tmp / "cache")}
    port = free_tcp_port()
    up = _cli(env, "up", "--detach", "--port", str(port), "--instances", "2", "--ctx-size", "2048")
    assert up.returncode == 0, up.stderr + up.stdout
    assert f"http://127.0.0.1:{port}/v1" in up.stdout
    status = json.loads(_cli(env, "status", "--json").stdout)
    pids = [i["pid"] for i in status["instances"]]
    yield {"env": env, "port": port, "url": f"http://127.0.0.1:{port}/v1", "pids": pids,
           "gateway_pid": json.loads((tmp / "state" / "swarm.json").read_text())["pid"]}
    _cli(env, "down")


def test_non_streamed_completion_with_openai_client(swarm):
    client = openai.OpenAI(base_url=swarm["url"], api_key="none")
    raw = client.chat.completions.with_raw_response.create(
        model="swarm", messages=[{"role": "user", "content": "Write a Python function that adds two numbers."}],
        max_tokens=48, temperature=0.8,
    )
    resp = raw.parse()
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 0 and 0 < resp.usage.completion_tokens <= 48
    meta = resp.model_extra["localswarm"]
    assert meta["n"] == 2 and meta["answered"] == 2
    assert meta["winner"] in ("inst-0", "inst-1")
    assert raw.headers["x-localswarm-winner"] == meta["winner"]


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_completion_with_openai_client(swarm, include_usage):
    client = openai.OpenAI(base_url=swarm["url"], api_key="none")
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(
        model="swarm", messages=[{"role": "user", "content": "Say hello in one sentence."}],
        max_tokens=32, stream=True, **kwargs,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0] in ("stop", "length")
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1].choices == []
        assert usage_chunks[0].usage.completion_tokens > 0
    else:
        assert usage_chunks == []


def test_status_reports_every_instance(swarm):
    out = _cli(swarm["env"], "status")
    assert out.returncode == 0, out.stderr
    assert "inst-0" in out.stdout and "inst-1" in out.stdout and "ready" in out.stdout
    data = json.loads(_cli(swarm["env"], "status", "--json").stdout)
    for inst in data["instances"]:
        assert inst["state"] == "ready" and inst["pid"] and inst["port"]
        assert inst["memory_rss"] > 10 * 2**20
        assert inst["requests"] >= 1 and inst["tokens_per_s"] > 0 and inst["avg_latency_s"] > 0


def test_instances_are_reachable_only_with_their_key(swarm):
    """Workers listen on loopback and refuse requests without the gateway's per-instance key."""
    import httpx

    data = json.loads(_cli(swarm["env"], "status", "--json").stdout)
    port = data["instances"][0]["port"]
    resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert resp.status_code == 401
    conns = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.status == "LISTEN"]
    assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns)


def test_a_second_swarm_in_the_same_state_dir_is_refused(swarm):
    out = _cli(swarm["env"], "up", "--detach", "--model", "embedded", "--port", str(free_tcp_port()))
    assert out.returncode == 1
    assert "already running" in out.stderr and "Traceback" not in out.stderr
    assert json.loads(_cli(swarm["env"], "status", "--json").stdout)["ready"] == 2  # the first is untouched


def test_down_leaves_no_llama_server(swarm):
    pids, gateway = swarm["pids"], swarm["gateway_pid"]
    assert all(psutil.pid_exists(p) for p in pids)
    out = _cli(swarm["env"], "down")
    assert "stopped" in out.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids + [gateway]):
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) for p in pids + [gateway])
    assert "no swarm is running" in _cli(swarm["env"], "down").stdout


def test_sigkill_of_the_swarm_leaves_no_llama_server(real_llama, tmp_path):
    env = {**os.environ, "LOCALSWARM_STATE_DIR": str(tmp_path / "state")}
    port = free_tcp_port()
    assert _cli(env, "up", "--detach", "--port", str(port)).returncode == 0
    status = json.loads(_cli(env, "status", "--json").stdout)
    pids = [i["pid"] for i in status["instances"]]
    gateway = json.loads((tmp_path / "state" / "swarm.json").read_text())["pid"]
    os.kill(gateway, 9)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) for p in pids), "llama-server survived its supervisor"
    out = _cli(env, "down")
    assert "stale" in out.stdout


def test_api_key_protects_the_swarm_and_never_reaches_a_command_line(real_llama, tmp_path):
    import httpx

    key = "test-key-" + os.urandom(8).hex()
    env = {**os.environ, "LOCALSWARM_STATE_DIR": str(tmp_path / "state")}
    port = free_tcp_port()
    assert _cli(env, "up", "--api-key", key).returncode == 2  # no such flag: a key on argv shows in ps
    up = _cli({**env, "LOCALSWARM_API_KEY": key}, "up", "--detach", "--port", str(port), "--model", "embedded")
    assert up.returncode == 0, up.stderr
    try:
        gateway = json.loads((tmp_path / "state" / "swarm.json").read_text())["pid"]
        procs = [psutil.Process(gateway), *psutil.Process(gateway).children(recursive=True)]
        assert procs and not any(key in " ".join(p.cmdline()) for p in procs)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        denied = httpx.post(url, json=body, timeout=60)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert ok.status_code == 200
        assert "unreachable" in json.loads(_cli(env, "status", "--json").stdout)  # no key: refused
        status = json.loads(_cli({**env, "LOCALSWARM_API_KEY": key}, "status", "--json").stdout)
        assert status["ready"] == 2
    finally:
        _cli(env, "down")


def test_down_never_signals_a_process_that_reused_a_stale_pid(tmp_path):
    env = {**os.environ, "LOCALSWARM_STATE_DIR": str(tmp_path / "state")}
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "swarm.json").write_text(json.dumps(
            {"pid": bystander.pid, "host": "127.0.0.1", "port": 1, "started_at": time.time() - 3600}))
        out = _cli(env, "down")
        assert "stale" in out.stdout
        time.sleep(0.3)
        assert bystander.poll() is None, "down killed an unrelated process"
    finally:
        bystander.kill()
        bystander.wait()


def test_no_instance_ready_is_a_failure_exit(tmp_path):
    broken = tmp_path / "broken-server"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    env = {**os.environ, "LOCALSWARM_STATE_DIR": str(tmp_path / "state")}
    out = _cli(env, "up", "--model", "embedded", "--port", str(free_tcp_port()), "--llama-server", str(broken),
               "--backoff-initial", "0.05", "--max-fast-failures", "2", timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "gave up" in out.stderr
