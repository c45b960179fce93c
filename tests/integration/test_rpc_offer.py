"""``up --federate --offer-memory``: a swarm that also lends memory (Mode 2), on loopback.

The real gateway with the real llama-server (embedded model, one thread) and the build's
rpc-server: the signed handshake on the gateway's port returns the offer (less the swarm's
own weights), an unsigned one is refused, and stopping the swarm leaves no rpc-server behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from localswarm.federation.rpc import RPC_PATH
from localswarm.federation.rpcpool import client, handshake
from localswarm.supervisor.instance import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "offer-memory-test-secret-0123456789"


def test_a_federated_swarm_lends_memory_behind_the_signed_handshake(tmp_path: Path) -> None:
    from localswarm.backends.binary import rpc_server_for
    from localswarm.backends.llama_server import find_llama_server

    if rpc_server_for(find_llama_server()) is None:
        pytest.fail("llama-server was built without RPC: `make install` builds it with -DGGML_RPC=ON")
    port, relay = free_port(), free_port()
    env = {**os.environ, "LOCALSWARM_FEDERATION_SECRET": SECRET, "PYTHONPATH": str(REPO),
           "LOCALSWARM_STATE_DIR": str(tmp_path / "state"), "LOCALSWARM_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localswarm", "up", "--model", "embedded", "--instances", "1", "--threads", "1",
         "--parallel", "1", "--ctx-size", "1024", "--port", str(port), "--federate", "--offer-memory",
         "--rpc-port", str(relay), "--mdns", "false", "--exec-check", "off"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    rpc: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        unsigned = httpx.post(f"http://127.0.0.1:{port}{RPC_PATH}", json={"v": 1}, trust_env=False)
        assert unsigned.status_code == 401

        async def shake() -> object:
            async with client(SECRET.encode(), "test") as http:
                for _ in range(60):  # 503 until rpc-server accepts
                    try:
                        return await handshake(http, "127.0.0.1", port)
                    except Exception:  # noqa: BLE001
                        await asyncio.sleep(0.5)
                return await handshake(http, "127.0.0.1", port)

        offer = asyncio.run(shake())
        assert offer.port == relay and offer.memory > 0 and offer.backend  # type: ignore[attr-defined]
        rpc = [p for p in psutil.Process(proc.pid).children(recursive=True) if "rpc-server" in p.name()]
        assert len(rpc) == 1 and "127.0.0.1" in rpc[0].cmdline()  # loopback only: the relay faces out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in rpc), out[-2000:]
