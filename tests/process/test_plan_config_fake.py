"""The seed plan's own config.yaml starts a swarm (with the FAKE llama-server).

`localswarm --config tests/fixtures/seed-plan-config.yaml up`, the file unchanged: the swarm
comes up on its settings (`network.max_peers: 10` is honoured now, issue 14), the one plan key
with no effect (`network.federation_port`: federation shares the gateway's port) is said, and
`network.enabled: true` with `auth_token: null` leaves federation off, said loudly, while the
local swarm serves. Offline first run (HF_HUB_OFFLINE=1, nothing cached): the planner's model
cannot be had, so it falls back to the embedded model, as a user's first offline run would.
The llama-server is tests/fakes/fake_llama_server.py (not llama.cpp), so this is a test of
the configuration path, not of the model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import fake_binary, free_tcp_port

PLAN_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "seed-plan-config.yaml"


def test_plans_config_yaml_starts_a_swarm_fake_llama_server(tmp_path: Path) -> None:
    port = free_tcp_port()
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # models.cache_dir is ~/.local_swarm/models
        "HF_HUB_OFFLINE": "1",
        "LOCALSWARM_LLAMA_SERVER": str(fake_binary(tmp_path)),
        "LOCALSWARM_PORT": str(port),  # the environment beats the file's 8000 (busy on a shared machine)
    }
    env.pop("LOCALSWARM_FEDERATION_SECRET", None)
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "localswarm", "--config", str(PLAN_FILE), "up"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        status = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/localswarm/status", timeout=2).json()
                if status.get("ready", 0) >= 2:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        text = log.read_text()
        assert status is not None and status.get("ready", 0) >= 2, text
        assert 2 <= len(status["instances"]) <= 8  # min_instances 2 .. max_instances 8
        assert status.get("federation") is None  # no secret: federation stays off...
        assert "federation is OFF" in text and "LOCALSWARM_FEDERATION_SECRET" in text  # ...said loudly
        assert "network.federation_port" in text and "is refused" in text  # the only refusal left...
        assert "max_peers" not in text and "not yet supported" not in text  # ...max_peers is honoured
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                           json={"model": "any", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["localswarm"]["strategy"] == "similarity"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
