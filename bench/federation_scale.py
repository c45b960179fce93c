#!/usr/bin/env python3
"""Federation scale: discovery time and cross-vote latency at 1, 3, 5 and 10 nodes.

Each node is a network namespace (``tests/netns.py``: a namespace-only bridge, subnet
10.231.0.0/24 existing only there) running the real product, ``python -m localswarm up
--federate --host <its ip>``, over a FAKE llama-server (``tests/fakes/fake_llama_server.py``,
NOT llama.cpp: canned answers, so 10 nodes x 3 instances = 30 instances fit on 2 cores).
Discovery is mDNS only (no static peers); requests are sent from inside node 0's namespace.

Measured per size:

- discovery: seconds from spawning the processes until every node lists every other as
  UP (interpreter start and imports included), and from the moment the last gateway
  answered HTTP (the lifespan, hence discovery, had started) until that full mesh;
- vote latency: ``/v1/chat/completions`` on node 0, median and p95 over ``--requests``
  sequential requests, each answered with the votes of every node.

Needs root and ``ip netns``. ``--write`` replaces the "Federation scale" section of
``docs/benchmarks.md`` (other sections are kept).

    sudo .venv/bin/python bench/federation_scale.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.docs_section import write_section
from tests import netns
from tests.helpers import fake_binary

SECRET = "bench-federation-secret-0123456789abcdef"
PORT = 8000
SECTION = "Federation scale"
ANSWERS = ["def add(a, b):\n    return a + b", "def add(x, y):\n    return x + y", "add = lambda a, b: a + b"]


class BenchNode:
    def __init__(self, host: netns.Host, proc: subprocess.Popen[Any], log: Path) -> None:
        self.host, self.proc, self.log = host, proc, log
        self.ns = netns.InNetns(host)
        self.url = f"http://{host.ip}:{PORT}"
        self.up_at: float | None = None

    def get(self, path: str, timeout: float = 3.0) -> httpx.Response:
        def go() -> httpx.Response:
            with httpx.Client(timeout=timeout, trust_env=False) as c:
                return c.get(self.url + path)
        return self.ns.call(go, timeout=timeout + 5)

    def post(self, path: str, body: dict[str, Any], timeout: float = 60.0) -> httpx.Response:
        def go() -> httpx.Response:
            with httpx.Client(timeout=timeout, trust_env=False) as c:
                return c.post(self.url + path, json=body)
        return self.ns.call(go, timeout=timeout + 5)


def _poll(what: str, nodes: list[BenchNode], predicate: Any, timeout: float, interval: float = 0.05) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if predicate():
                return time.monotonic()
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        for n in nodes:
            if n.proc.poll() is not None:
                raise RuntimeError(f"{n.host.name} exited:\n{n.log.read_text(errors='replace')[-2000:]}")
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout} s")


def run_size(k: int, *, instances: int, requests: int, work: Path, fake_delay: float) -> dict[str, Any]:
    """Start ``k`` federated nodes in namespaces; measure discovery and vote latency; tear down."""
    binary = fake_binary(work)
    model = work / "fake.gguf"
    model.write_bytes(b"GGUF fake")
    with netns.lan(k) as net:
        nodes: list[BenchNode] = []
        try:
            t_spawn = time.monotonic()
            for i, h in enumerate(net.hosts):
                log = work / f"n{k}-{h.name}.log"
                # Every node: one dissenting instance; every third node prefers another answer.
                replies = [ANSWERS[0] if i % 3 != 2 else ANSWERS[2]] * (instances - 1) + [ANSWERS[1]]
                proc = h.exec(
                    [sys.executable, "-m", "localswarm", "up", "--federate", "--host", h.ip, "--port", str(PORT),
                     "--instances", str(instances), "--model", str(model), "--llama-server", str(binary),
                     "--log-level", "warning", "--insecure-no-auth"],  # a throwaway namespace LAN: no client key
                    env={"LOCALSWARM_FEDERATION_SECRET": SECRET, "LOCALSWARM_PEER_TIMEOUT": "20",
                         "LOCALSWARM_PEER_PROBE_INTERVAL": "0.5", "LOCALSWARM_QUORUM": "1.0",
                         "FAKE_REPLIES": json.dumps(replies), "FAKE_DELAY": str(fake_delay)},
                    cwd=REPO, stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
                )
                nodes.append(BenchNode(h, proc, log))

            def all_up() -> bool:
                for n in nodes:
                    if n.up_at is None and n.get("/localswarm/status", timeout=1.0).status_code == 200:
                        n.up_at = time.monotonic()
                return all(n.up_at is not None for n in nodes)

            _poll("every gateway answering", nodes, all_up, 180)
            last_up = max(n.up_at for n in nodes if n.up_at is not None)

            def mesh() -> bool:
                for n in nodes:
                    peers = n.get("/localswarm/status").json()["federation"]["peers"]
                    if sum(1 for p in peers if p["node_id"] and p["state"] == "up") != k - 1:
                        return False
                return True

            t_mesh = _poll("full mesh", nodes, mesh, 60)
            _poll("every instance ready", nodes,
                  lambda: all(n.get("/health").status_code == 200 for n in nodes), 120)
            # Each node's view again: a peer probed while its instances were still loading
            # answered 503 and stays down (backing off) for a moment after it is ready; a vote
            # sent in that moment leaves it out (CI saw "vote counted 2 nodes" once).
            _poll("every peer seen ready", nodes, mesh, 60)
            ids = {n.get("/localswarm/status").json()["federation"]["node_id"] for n in nodes}
            body = {"messages": [{"role": "user", "content": "Write add(a, b) in Python."}], "max_tokens": 32}
            nodes[0].post("/v1/chat/completions", body)  # warm-up (connections, first-call costs)
            latencies, supports = [], []
            for _ in range(requests):
                t0 = time.monotonic()
                resp = nodes[0].post("/v1/chat/completions", body)
                latencies.append(time.monotonic() - t0)
                resp.raise_for_status()
                meta = resp.json()["localswarm"]
                got = {nd["node_id"] for nd in meta.get("nodes", [])} or {next(iter(ids))}
                if k > 1 and got != ids:
                    raise AssertionError(f"{k} nodes: vote counted {len(got)} nodes: {meta.get('federation')}")
                supports.append(f"{meta['votes']}/{meta['n']}")
            latencies.sort()
            return {
                "nodes": k,
                "instances": k * instances,
                "discovery_after_spawn_s": round(t_mesh - t_spawn, 2),
                "discovery_after_last_up_s": round(max(0.0, t_mesh - last_up), 2),
                "vote_median_s": round(statistics.median(latencies), 3),
                "vote_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
                "support": max(set(supports), key=supports.count),
            }
        finally:
            for n in nodes:
                if n.proc.poll() is None:
                    n.proc.send_signal(signal.SIGTERM)
            for n in nodes:
                try:
                    n.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
                n.ns.close()


def run(sizes: list[int], *, instances: int = 3, requests: int = 10, fake_delay: float = 0.05) -> list[dict[str, Any]]:
    reason = netns.unavailable_reason()
    if reason:
        raise RuntimeError(f"federation scale bench needs network namespaces: {reason}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ls-fedscale-") as tmp:
        for k in sizes:
            work = Path(tmp) / f"k{k}"
            work.mkdir()
            row = run_size(k, instances=instances, requests=requests, work=work, fake_delay=fake_delay)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], *, instances: int, requests: int, fake_delay: float) -> str:
    cpu = os.cpu_count()
    lines = [
        f"## {SECTION}",
        "",
        "`bench/federation_scale.py` (`sudo .venv/bin/python bench/federation_scale.py --write`). Each node is a",
        "network namespace on a namespace-only bridge (`tests/netns.py`) running `python -m localswarm up",
        "--federate` over a **FAKE llama-server** (`tests/fakes/fake_llama_server.py`, not llama.cpp: canned",
        f"answers after {fake_delay * 1000:.0f} ms), {instances} instances per node, discovery by **mDNS only** (no static",
        f"peers), shared secret (signed requests). Vote latency: {requests} sequential `/v1/chat/completions` on",
        "node 0 from inside its namespace, each answered with the votes of every node (asserted).",
        f"Machine: {cpu} cores ({platform.machine()}), all nodes and instances sharing them.",
        "",
        "| nodes | instances | discovery after spawn (s) | full mesh after last gateway up (s) | vote median (s) | vote p95 (s) | support |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['nodes']} | {r['instances']} | {r['discovery_after_spawn_s']} | "
                     f"{r['discovery_after_last_up_s']} | {r['vote_median_s']} | {r['vote_p95_s']} | {r['support']} |")
    lines += [
        "",
        "\"Discovery after spawn\" includes interpreter start and imports of every node on the shared cores;",
        "\"full mesh after last gateway up\" starts when the last gateway answered HTTP (its discovery was",
        "running) and ends when every node lists every other as up (signed health probe passed).",
        "At 1 node there are no peers: the plain local vote, for reference.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,3,5,10")
    p.add_argument("--instances", type=int, default=3, help="fake instances per node (10 x 3 = 30)")
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--fake-delay", type=float, default=0.05)
    p.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = run(sizes, instances=args.instances, requests=args.requests, fake_delay=args.fake_delay)
    text = markdown(rows, instances=args.instances, requests=args.requests, fake_delay=args.fake_delay)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
