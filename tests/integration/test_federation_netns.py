"""Federation across real network stacks: 3 hosts as namespaces on a namespace-only bridge.

Each host runs ``tests/federation_node.py`` (discovery + signed federation routes + peer
pool, with a fake coordinator instead of a model). No static configuration: the hosts
must find each other by mDNS (or UDP broadcast in the fallback test).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import netns

pytestmark = pytest.mark.integration

_REASON = netns.unavailable_reason()
if _REASON is not None:
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=f"netns tests skipped: {_REASON}")]

REPO = Path(__file__).resolve().parents[2]
SECRET = "netns-test-secret-0123456789abcdef"
DISCOVERY_TARGET_S = 2.0


class Node:
    """A running federation_node: its process and a queue of the JSON lines it printed."""

    def __init__(self, host: netns.Host, proc: subprocess.Popen[str]) -> None:
        self.host, self.proc = host, proc
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.history: list[dict[str, Any]] = []
        self.node_id = ""
        self.spawned = time.monotonic()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["t_wall"] = time.monotonic()  # read time, comparable across nodes
            self.events.put(ev)

    def wait_for(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """The first event (already seen or new) satisfying ``predicate``, within ``timeout``."""
        for ev in self.history:
            if predicate(ev):
                return ev
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.history.append(ev)
            if ev.get("event") == "ready":
                self.node_id = ev["node_id"]
            if predicate(ev):
                return ev
        raise AssertionError(f"{self.host.name}: no matching event in {timeout} s; saw {self.history[-8:]}")

    def send(self, command: str) -> None:
        """Write one command line (e.g. ``vote``) to the node's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()


@pytest.fixture
def three_hosts() -> Iterator[netns.Lan]:
    """A fresh 3-host LAN, always torn down (namespaces deleted) even when the test fails."""
    with netns.lan(3) as net:
        yield net


def start_nodes(net: netns.Lan, *extra: str, tmp: Path) -> list[Node]:
    nodes = []
    for h in net.hosts:
        proc = h.exec(
            [sys.executable, "-m", "tests.federation_node", "--interface", "eth0", *extra],
            env={"LOCALSWARM_FEDERATION_SECRET": SECRET},
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(tmp / f"{h.name}.log").open("w"),
            text=True,
        )
        nodes.append(Node(h, proc))
    for node in nodes:
        node.wait_for(lambda e: e["event"] == "ready", timeout=20)
    return nodes


def wait_full_mesh(nodes: list[Node], timeout: float) -> float:
    """Wait until every node lists every other; return seconds after the last node was ready.

    Also prints the time since the processes were spawned (interpreter start included).
    """
    last_ready = max(n.wait_for(lambda e: e["event"] == "ready", 0)["t_wall"] for n in nodes)
    found = 0.0
    for node in nodes:
        for other in nodes:
            if other is node:
                continue
            ev = node.wait_for(lambda e, o=other: e["event"] == "added" and e["peer"]["node_id"] == o.node_id, timeout)
            found = max(found, ev["t_wall"])
    print(f"\nfull mesh {found - min(n.spawned for n in nodes):.2f} s after spawn", end="")
    return max(0.0, found - last_ready)


def test_three_hosts_discover_vote_and_survive_a_lost_host(three_hosts: netns.Lan, tmp_path: Path) -> None:
    """mDNS only: full mesh within 2 s, a vote counts all 3, a vanished host is marked down."""
    nodes = start_nodes(three_hosts, tmp=tmp_path)
    discovery_s = wait_full_mesh(nodes, timeout=10)
    print(f"\nmDNS discovery, 3 hosts: full mesh {discovery_s:.3f} s after the last node was ready")
    assert discovery_s < DISCOVERY_TARGET_S
    for node in nodes:
        added = [e for e in node.history if e["event"] == "added"]
        assert all(e["peer"]["sources"] == ["mdns"] and e["peer"]["compatible"] for e in added)

    # Health probes are signed: every peer must come up (same secret everywhere).
    for node in nodes:
        for other in nodes:
            if other is not node:
                node.wait_for(lambda e, o=other: e["event"] == "state" and e["key"] == o.node_id
                              and e["state"] == "up", timeout=5)

    coordinator, survivor, victim = nodes
    coordinator.send("vote")
    vote = coordinator.wait_for(lambda e: e["event"] == "vote", timeout=5)
    assert sorted(vote["nodes"]) == sorted(n.node_id for n in nodes)
    assert vote["total_n"] == 9 and vote["support"] == 6 and not vote["failures"]

    t0 = time.monotonic()
    three_hosts.remove(victim.host)  # SIGKILL + namespace deleted: no goodbye is sent
    for node in (coordinator, survivor):
        node.wait_for(lambda e: (e["event"] == "state" and e["key"] == victim.node_id and e["state"] == "down")
                      or (e["event"] == "removed" and e["peer"]["node_id"] == victim.node_id), timeout=10)
    print(f"lost host marked down after {time.monotonic() - t0:.2f} s")

    coordinator.history = [e for e in coordinator.history if e["event"] != "vote"]
    coordinator.send("vote")
    vote = coordinator.wait_for(lambda e: e["event"] == "vote", timeout=5)
    assert sorted(vote["nodes"]) == sorted([coordinator.node_id, survivor.node_id])
    assert victim.node_id in vote["failures"]
    assert vote["latency_s"] < 2.5  # the peer timeout (2 s) bounds it; a down peer is skipped at once


def test_graceful_stop_unregisters(three_hosts: netns.Lan, tmp_path: Path) -> None:
    """SIGTERM sends an mDNS goodbye: the other hosts drop the peer from their tables."""
    nodes = start_nodes(three_hosts, tmp=tmp_path)
    wait_full_mesh(nodes, timeout=10)
    leaving = nodes[2]
    leaving.proc.send_signal(signal.SIGTERM)
    leaving.wait_for(lambda e: e["event"] == "stopped", timeout=10)
    t0 = time.monotonic()
    for node in nodes[:2]:
        node.wait_for(lambda e: e["event"] == "removed" and e["peer"]["node_id"] == leaving.node_id, timeout=5)
    print(f"\ngoodbye seen by both peers after {time.monotonic() - t0:.2f} s")


def test_udp_broadcast_fallback(three_hosts: netns.Lan, tmp_path: Path) -> None:
    """With mDNS off, UDP broadcast on the namespace subnet finds every peer; bye removes it."""
    nodes = start_nodes(three_hosts, "--no-mdns", "--udp", tmp=tmp_path)
    discovery_s = wait_full_mesh(nodes, timeout=10)
    print(f"\nUDP broadcast discovery, 3 hosts: full mesh {discovery_s:.3f} s after the last node was ready")
    assert discovery_s < DISCOVERY_TARGET_S
    leaving = nodes[1]
    leaving.proc.send_signal(signal.SIGTERM)
    for node in (nodes[0], nodes[2]):
        node.wait_for(lambda e: e["event"] == "removed" and e["peer"]["node_id"] == leaving.node_id, timeout=5)
