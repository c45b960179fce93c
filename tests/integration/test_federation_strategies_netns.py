"""Federation strategies and peer limits on a real LAN: 3 hosts (network namespaces on a
namespace-only bridge, found by real mDNS), each running ``python -m localswarm up --federate``.

The llama-servers are the FAKE one (tests/fakes/fake_llama_server.py, not llama.cpp), so each
host's answer and speed are chosen and every strategy's choice is observable:

- h0, the coordinator: 1 instance, answer M (Python cut mid-expression), after 3 s;
- h1, the slow majority: 3 instances, answer M, after 5 s;
- h2, the fast loner: 1 instance, answer G (Python that parses), at once.

``weighted`` takes M (support × confidence: 1 + 3 against 1), ``best_of_n`` takes G (the quality
score: only G parses), ``latency`` takes G as soon as h2 answers and cancels the rest. With
``min_peers`` out of reach the coordinator answers alone and says so; with ``max_peers: 1`` it
asks one peer, each peer once to time it, then the fastest. Only the coordinator is restarted
between phases (its settings change); namespaces are prefixed ``ls-fs-`` and always deleted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import netns
from tests.helpers import fake_binary

pytestmark = pytest.mark.integration

_REASON = netns.unavailable_reason()
if _REASON is not None:
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=f"netns tests skipped: {_REASON}")]

REPO = Path(__file__).resolve().parents[2]
SECRET = "strategies-netns-secret-0123456789abcdef"
PORT = 8000
M = "```python\ndef add(a, b):\n    return (a +\n```"
G = "```python\ndef add(a, b):\n    return a + b\n```"
HOSTS = {"h0": (1, M, 3.0), "h1": (3, M, 5.0), "h2": (1, G, 0.0)}  # instances, answer, delay (s)
CHAT = {"messages": [{"role": "user", "content": "Write add(a, b) in Python."}], "max_tokens": 32}


class Node:
    """One host running ``localswarm up --federate`` over the FAKE llama-server."""

    def __init__(self, host: netns.Host, tmp: Path) -> None:
        self.host, self.tmp = host, tmp
        self.ns = netns.InNetns(host)
        self.url = f"http://{host.ip}:{PORT}"
        self.proc: subprocess.Popen[Any] | None = None
        self.log = tmp / f"{host.name}.log"
        self.runs = 0

    def start(self, **settings: Any) -> None:
        count, answer, delay = HOSTS[self.host.name]
        self.runs += 1
        self.log = self.tmp / f"{self.host.name}-{self.runs}.log"
        env = {"LOCALSWARM_FEDERATION_SECRET": SECRET, "LOCALSWARM_PEER_PROBE_INTERVAL": "0.5",
               "FAKE_REPLIES": json.dumps([answer]), "FAKE_DELAY": str(delay)}
        env.update({f"LOCALSWARM_{k.upper()}": str(v) for k, v in settings.items()})
        self.proc = self.host.exec(
            [sys.executable, "-m", "localswarm", "up", "--federate", "--host", self.host.ip, "--port", str(PORT),
             "--instances", str(count), "--model", "embedded", "--ctx-size", "1024", "--parallel", "1",
             "--llama-server", str(fake_binary(self.tmp)), "--insecure-no-auth"],
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, method: str, path: str, timeout: float = 10, **kw: Any) -> httpx.Response:
        def go() -> httpx.Response:
            with httpx.Client(base_url=self.url, timeout=timeout, trust_env=False) as client:
                resp = client.request(method, path, **kw)
                resp.read()
                return resp
        return self.ns.call(go, timeout=timeout + 5)

    def chat(self) -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        resp = self.request("POST", "/v1/chat/completions", json=CHAT, timeout=60)
        assert resp.status_code == 200, resp.text
        return resp, time.monotonic() - t0

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[list[Node]]:
    with netns.lan(3, prefix="ls-fs-") as net:
        nodes = [Node(h, tmp_path) for h in net.hosts]
        try:
            yield nodes
        finally:
            for node in nodes:
                node.stop()
                node.ns.close()


def _wait(what: str, predicate: Any, timeout: float, nodes: list[Node]) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as exc:
            last = exc
        for node in nodes:
            if node.proc is not None and node.proc.poll() is not None:
                raise AssertionError(f"{node.host.name} exited ({node.proc.returncode}):\n{node.tail()}")
        time.sleep(0.2)
    logs = "\n".join(f"--- {n.host.name}\n{n.tail()}" for n in nodes)
    raise AssertionError(f"{what} not reached in {timeout} s (last error {last!r})\n{logs}")


def _peers_up(node: Node, count: int) -> bool:
    peers = node.request("GET", "/localswarm/status", timeout=5).json()["federation"]["peers"]
    return len([p for p in peers if p["node_id"] and p["state"] == "up"]) == count


def _ids(nodes: list[Node]) -> dict[str, str]:
    out = {}
    for node in nodes:
        out[node.host.name] = node.request("GET", "/localswarm/status", timeout=5).json()["federation"]["node_id"]
    return out


def _coordinate(nodes: list[Node], **settings: Any) -> Node:
    """(Re)start h0 with ``settings`` and wait until it is ready and sees both peers up."""
    h0 = nodes[0]
    h0.stop()
    h0.start(**settings)
    _wait("coordinator ready", lambda: h0.request("GET", "/health", timeout=2).status_code == 200, 60, nodes)
    _wait("coordinator sees 2 peers up", lambda: _peers_up(h0, 2), 60, nodes)
    return h0


def test_strategies_and_peer_limits_on_a_real_lan(lan: list[Node]) -> None:
    for node in lan[1:]:
        node.start()
    h0 = _coordinate(lan)  # weighted: the default
    _wait("peers see each other", lambda: all(_peers_up(n, 2) for n in lan[1:]), 30, lan)
    ids = _ids(lan)
    name = {nid: host for host, nid in ids.items()}

    # weighted (default): M, held by 1 + 3 instances, outweighs G (1); the answer is h1's (heaviest).
    resp, took = h0.chat()
    meta = resp.json()["localswarm"]
    print(f"\nweighted: {took:.2f} s, winner {meta['winner']}")
    assert resp.json()["choices"][0]["message"]["content"] == M
    assert meta["federation"]["strategy"] == "weighted" and name[meta["federation"]["winner_node"]] == "h1"
    assert resp.headers["x-localswarm-federation-strategy"] == "weighted"
    assert resp.headers["x-localswarm-federation"] == "federated" and resp.headers["x-localswarm-peers"] == "2/2"

    # best_of_n: the one answer whose Python parses, though only one instance gave it.
    h0 = _coordinate(lan, federation_strategy="best_of_n")
    resp, took = h0.chat()
    meta = resp.json()["localswarm"]
    print(f"best_of_n: {took:.2f} s, winner {meta['winner']}")
    assert resp.json()["choices"][0]["message"]["content"] == G
    assert name[meta["federation"]["winner_node"]] == "h2" and len(meta["nodes"]) == 3
    assert resp.headers["x-localswarm-federation-strategy"] == "best_of_n"

    # latency: h2's answer is taken as it arrives; h1 (5 s) and the local vote (3 s) are cancelled.
    h0 = _coordinate(lan, federation_strategy="latency")
    resp, took = h0.chat()
    meta = resp.json()["localswarm"]
    fed = meta["federation"]
    print(f"latency: {took:.2f} s, winner {meta['winner']}, cancelled {fed['cancelled']}")
    assert resp.json()["choices"][0]["message"]["content"] == G and name[fed["winner_node"]] == "h2"
    assert fed["cancelled"] == [ids["h1"]] and fed["local_cancelled"] is True and fed["fallback"] is None
    assert took < 3.0  # before the local vote (3 s) or h1 (5 s) could have answered
    assert "1 peer(s) cancelled" in resp.headers["x-localswarm-latency"]
    assert resp.headers["x-localswarm-peers"] == "1/2"

    # min_peers out of reach: h1 misses the 1.5 s peer timeout, so 1 of 2 answered: local answer.
    h0 = _coordinate(lan, min_peers=2, peer_timeout=1.5)
    resp, took = h0.chat()
    meta = resp.json()["localswarm"]
    print(f"min_peers 2, h1 too slow: {took:.2f} s, {resp.headers['x-localswarm-federation']}")
    assert meta["mode"] == "local" and meta["federation"]["local_only"].startswith("min_peers 2 not reached")
    assert resp.json()["choices"][0]["message"]["content"] == M and meta["winner"] == "inst-0"
    assert resp.headers["x-localswarm-federation"].startswith("local; min_peers 2 not reached: 1 of 2")
    assert took < 3.0 + 1.5  # the local vote (3 s), not h1 (5 s): the peer timeout (1.5 s) bounds the wait
    assert h0.tail().count("answered locally: min_peers 2 not reached") == 1  # one log line

    # More peers than exist: answered locally at once, without asking.
    h0 = _coordinate(lan, min_peers=3)
    resp, _ = h0.chat()
    assert resp.headers["x-localswarm-federation"] == "local; min_peers 3 not reached: 2 peer(s) available"
    assert resp.headers["x-localswarm-peers"] == "0/0"

    # max_peers 1: one peer asked; each is timed once, then the fastest (h2) is the one asked.
    h0 = _coordinate(lan, max_peers=1)
    asked = []
    for _ in range(3):
        resp, took = h0.chat()
        fed = resp.json()["localswarm"]["federation"]
        assert len(fed["asked"]) == 1 and len(fed["not_asked"]) == 1 and fed["max_peers"] == 1
        assert resp.headers["x-localswarm-peers-not-asked"] == "1"
        asked.append(name[fed["asked"][0]])
    print(f"max_peers 1: asked {asked}")
    assert sorted(asked[:2]) == ["h1", "h2"] and asked[2] == "h2"
