"""Faults on real llama-server instances: a killed instance, a hung one, a vanished client."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from tests.helpers import RunningGateway, free_tcp_port

pytestmark = pytest.mark.integration

LONG = {
    "messages": [{"role": "user", "content": "Count from one to one thousand in words."}],
    "max_tokens": 400,
    "ignore_eos": True,  # llama-server extension, passed through: a reliably long generation
}


def _gateway(real_llama, **settings) -> RunningGateway:
    binary, model = real_llama
    s = Settings(port=free_tcp_port(), ctx_size=1024, parallel=1, health_interval=0.5, backoff_initial=0.2, **settings)
    backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2", ctx_size=1024,
                                 parallel=1)
    return RunningGateway(s, backend, instances=2)


def _post_in_thread(url: str, body: dict, out: dict) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        try:
            out["resp"] = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            out["error"] = exc
        out["elapsed"] = time.monotonic() - started

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_busy(gw: RunningGateway, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(i.stats.in_flight > 0 for i in gw.supervisor.instances):
            return
        time.sleep(0.05)
    raise TimeoutError("instances never got busy")


def test_kill_9_of_an_instance_mid_request(real_llama):
    with _gateway(real_llama) as gw:
        victim = gw.supervisor.instances[0]
        old_pid = victim.pid
        out: dict = {}
        t = _post_in_thread(gw.url, LONG, out)
        _wait_busy(gw)
        time.sleep(0.5)
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 20
        while time.monotonic() < deadline and not (victim.ready and victim.pid != old_pid):
            time.sleep(0.02)
        back_after = time.monotonic() - killed_at
        t.join(120)
        resp = out["resp"]
        assert resp.status_code == 200, resp.text
        meta = resp.json()["localswarm"]
        assert meta["winner"] == "inst-1" and meta["answered"] == 1
        assert "inst-0" in meta["left_out"]
        assert resp.json()["choices"][0]["message"]["content"]
        assert victim.ready and victim.pid != old_pid and victim.stats.restarts == 1
        print(f"\ninstance READY again {back_after:.1f}s after kill -9 (request took {out['elapsed']:.1f}s)")


def test_hung_instance_is_left_out_within_the_timeout(real_llama):
    with _gateway(real_llama, instance_timeout=6.0) as gw:
        hung = gw.supervisor.instances[0]
        os.kill(hung.pid, signal.SIGSTOP)
        try:
            out: dict = {}
            t = _post_in_thread(gw.url, {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16}, out)
            t.join(60)
            resp = out["resp"]
            assert resp.status_code == 200, resp.text
            assert out["elapsed"] < 6.0 + 3.0
            meta = resp.json()["localswarm"]
            assert meta["winner"] == "inst-1"
            assert meta["left_out"]["inst-0"].startswith("timed out")
        finally:
            if hung.pid:
                os.kill(hung.pid, signal.SIGCONT)


def test_client_disconnect_cancels_upstream_generation(real_llama):
    with _gateway(real_llama, keepalive_interval=0.3) as gw:
        body = {**LONG, "max_tokens": 1500, "stream": True}
        raw = httpx.Request("POST", gw.url + "/v1/chat/completions", json=body)
        sock = socket.create_connection(("127.0.0.1", gw.settings.port))
        payload = raw.read()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        sock.sendall(head + payload)
        first = sock.recv(4096)
        assert b"200 OK" in first
        _wait_busy(gw)
        sock.close()  # the client goes away mid-vote
        closed_at = time.monotonic()
        deadline = closed_at + 10
        while time.monotonic() < deadline and any(i.stats.in_flight for i in gw.supervisor.instances):
            time.sleep(0.05)
        assert not any(i.stats.in_flight for i in gw.supervisor.instances)
        # llama-server itself stops decoding: no slot is still processing.
        deadline = time.monotonic() + 10
        busy = True
        while time.monotonic() < deadline and busy:
            busy = False
            for inst in gw.supervisor.instances:
                slots = httpx.get(inst.base_url + "/slots", headers=inst.auth_headers(), timeout=5).json()
                busy |= any(s.get("is_processing") for s in slots)
            time.sleep(0.1)
        assert not busy, "llama-server kept generating for a client that left"
        print(f"\nupstream freed {time.monotonic() - closed_at:.2f}s after the client left")


def test_non_streamed_client_disconnect_cancels_upstream(real_llama):
    with _gateway(real_llama) as gw:
        body = {**LONG, "max_tokens": 1500}
        out: dict = {}

        def run() -> None:
            try:
                httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=1.5)
            except httpx.TimeoutException:
                out["timed_out"] = True

        t = threading.Thread(target=run)
        t.start()
        t.join(30)
        assert out.get("timed_out")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(i.stats.in_flight for i in gw.supervisor.instances):
            time.sleep(0.05)
        assert not any(i.stats.in_flight for i in gw.supervisor.instances)
