"""A minimal federated node for namespace tests: discovery + federation routes + peer pool.

Run inside a namespace (``python -m tests.federation_node --port 8400 --interface eth0``).
It serves the federation routes backed by a fake coordinator (a canned answer, no model),
advertises itself, and prints one JSON object per line on stdout:

- ``{"event": "ready", ...}`` once started;
- ``{"event": "added"|"updated"|"removed", "peer": {...}, "t": s}`` on table changes
  (``t`` is seconds since start);
- ``{"event": "state", "key": ..., "state": "up"|"down", "t": s}`` when a probe changes a
  peer's health;
- ``{"event": "vote", ...}`` after a ``vote`` line arrives on stdin (a cross-vote across
  every available peer).

SIGTERM stops it cleanly (mDNS goodbye, UDP bye).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette

from localswarm.consensus import cross_vote
from localswarm.federation import (
    AnswerMessage,
    Discovery,
    InfoReply,
    PeerPool,
    VoteReply,
    VoteRequest,
    federation_routes,
    load_secret,
)


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class FakeCoordinator:
    """Answers every vote with a canned answer (a stand-in for the local swarm)."""

    def __init__(self, node_id: str, name: str, answer: str) -> None:
        self.node_id, self.name, self.answer = node_id, name, answer

    async def local_vote(self, body: dict[str, Any]) -> VoteReply:
        """The canned vote."""
        await asyncio.sleep(0.01)
        return VoteReply(node_id=self.node_id, message=AnswerMessage(content=self.answer), finish_reason="stop",
                         cluster_size=2, n=3, cohesion=0.9, confidence=2 / 3, latency_s=0.01, model="fake")

    def info(self) -> InfoReply:
        """Identity of the fake node."""
        return InfoReply(node_id=self.node_id, name=self.name, model="fake", instances=3, auth=True)


async def main(argv: list[str] | None = None) -> None:
    """Run the node until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=8400)
    p.add_argument("--interface", action="append", default=None, help="interface name or IP to bind mDNS to")
    p.add_argument("--bind", default="0.0.0.0", help="HTTP bind address")
    p.add_argument("--no-mdns", action="store_true")
    p.add_argument("--udp", action="store_true")
    p.add_argument("--udp-interval", type=float, default=1.0)
    p.add_argument("--static-peer", action="append", default=[])
    p.add_argument("--probe-interval", type=float, default=0.5)
    p.add_argument("--ttl", type=int, default=120)
    p.add_argument("--answer", default="def add(a, b):\n    return a + b\n")
    args = p.parse_args(argv)

    secret = load_secret()
    start = time.monotonic()
    disco = Discovery(port=args.port, model="fake", instances=3, auth=secret is not None,
                      interfaces=args.interface, mdns=not args.no_mdns, udp=args.udp,
                      udp_interval_s=args.udp_interval, static_peers=args.static_peer, ttl_s=args.ttl)
    coordinator = FakeCoordinator(disco.node_id, disco.name, args.answer)
    app = Starlette(routes=federation_routes(coordinator, secret=secret))
    server = uvicorn.Server(uvicorn.Config(app, host=args.bind, port=args.port, log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serve = asyncio.create_task(server.serve())

    def on_event(event: str, peer: Any) -> None:
        emit({"event": event, "peer": peer.to_dict(), "t": round(time.monotonic() - start, 3)})

    disco.table.add_listener(on_event)
    pool = PeerPool(disco.table, secret=secret, node_id=disco.node_id, probe_interval_s=args.probe_interval,
                    timeout_s=1.0, connect_timeout_s=0.5, failure_threshold=2, backoff_base_s=0.5, backoff_max_s=2.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_states() -> None:
        seen: dict[str, str] = {}
        while True:
            for key, client in pool.clients().items():
                state = client.state.value
                if seen.get(key) != state:
                    seen[key] = state
                    emit({"event": "state", "key": key, "state": state, "t": round(time.monotonic() - start, 3)})
            await asyncio.sleep(0.1)

    async def read_commands() -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"vote":
                t0 = time.monotonic()
                request = VoteRequest(request_id=uuid.uuid4().hex, request={"messages": [{"role": "user", "content": "add"}]})
                local = await coordinator.local_vote(request.request)
                got = await pool.gather_votes(request, timeout_s=2.0)
                result = cross_vote(local, got.replies)
                emit({"event": "vote", "nodes": result.contributing_nodes, "failures": got.failures,
                      "confidence": result.confidence, "support": result.support, "total_n": result.total_n,
                      "latency_s": round(time.monotonic() - t0, 3)})

    async with disco, pool:
        emit({"event": "ready", "node_id": disco.node_id, "name": disco.name, "addresses": disco.addresses,
              "t": round(time.monotonic() - start, 3)})
        helpers = [asyncio.create_task(watch_states()), asyncio.create_task(read_commands())]
        await stop.wait()
        for task in helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    server.should_exit = True
    await serve
    emit({"event": "stopped"})


if __name__ == "__main__":
    asyncio.run(main())
