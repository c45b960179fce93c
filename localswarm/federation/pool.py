"""The coordinator's side: one PeerClient per compatible peer in the table, probed and polled.

:class:`PeerPool` follows a :class:`~localswarm.federation.table.PeerTable` (a client is
created when a peer is added or changes address, closed when it is removed), probes each
peer's health periodically so a dead one is marked down before a client waits on it, and
asks every available peer to vote in parallel with one overall timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection
from typing import Any

from localswarm.federation.auth import FederationAuth
from localswarm.federation.errors import PeerError
from localswarm.federation.peers import PeerClient, PeerState
from localswarm.federation.protocol import PROTOCOL_VERSION, VoteReply, VoteRequest
from localswarm.federation.table import Peer, PeerTable

__all__ = ["PeerPool", "VoteGather"]

logger = logging.getLogger(__name__)


class VoteGather:
    """What :meth:`PeerPool.gather_votes` collected: replies and why the others are missing."""

    def __init__(self) -> None:
        self.replies: list[VoteReply] = []
        self.failures: dict[str, str] = {}
        self.keys: dict[str, str] = {}  # node id of each reply -> table key it was asked under
        self.asked: list[str] = []  # table keys asked
        self.cancelled: list[str] = []  # asked, then no longer needed (the caller stopped the gather)

    def __repr__(self) -> str:
        return f"VoteGather(replies={[r.node_id for r in self.replies]}, failures={self.failures})"


class PeerPool:
    """Clients for the peers of ``table``, with health probes and parallel voting.

    ``client_factory(peer)`` builds a :class:`PeerClient`; by default it signs with
    ``secret`` and identifies as ``node_id``. Call :meth:`start` (probe loop) and
    :meth:`aclose`, or use it as an async context manager.
    """

    def __init__(
        self,
        table: PeerTable,
        *,
        secret: bytes | None = None,
        node_id: str = "",
        probe_interval_s: float = 5.0,
        client_factory: Callable[[Peer], PeerClient] | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.table = table
        self.probe_interval_s = probe_interval_s
        self.vote_check_s = 0.2  # how often a gather looks for peers marked down meanwhile
        self._factory = client_factory or (
            lambda peer: PeerClient(
                peer.url, node_id=peer.node_id, auth=FederationAuth(secret, node_id=node_id), **client_kwargs
            )
        )
        self._clients: dict[str, PeerClient] = {}
        self.vote_latency: dict[str, float] = {}  # table key -> moving average of its votes' round trips (s)
        self._closing: set[asyncio.Task[None]] = set()
        self._probe_task: asyncio.Task[None] | None = None
        for peer in table:
            self._on_event("added", peer)
        self._unsubscribe = table.add_listener(self._on_event)

    async def __aenter__(self) -> PeerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def clients(self) -> dict[str, PeerClient]:
        """Clients by table key (compatible peers only)."""
        return dict(self._clients)

    def available(self) -> dict[str, PeerClient]:
        """Clients not inside a backoff delay."""
        return {k: c for k, c in self._clients.items() if c.available}

    def status(self) -> list[dict[str, Any]]:
        """One row per peer for ``localswarm peers``: node, address, model, instances, state, latency."""
        rows = []
        for peer in self.table.snapshot():
            client = self._clients.get(peer.key)
            row = peer.to_dict()
            if client is None:
                row.update(state="incompatible" if not peer.compatible else "unknown", latency_s=None)
            else:
                row.update(state=client.state.value, latency_s=client.health.latency_s, error=client.health.last_error)
            rows.append(row)
        return rows

    async def start(self) -> None:
        """Start the health-probe loop (no-op when ``probe_interval_s`` is 0)."""
        if self.probe_interval_s > 0 and self._probe_task is None:
            self._probe_task = asyncio.create_task(self._probe_loop(), name="localswarm-peer-probe")

    async def aclose(self) -> None:
        """Stop probing and close every client."""
        self._unsubscribe()
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)

    async def probe(self) -> None:
        """Check the health of every peer that is due (UP, or DOWN past its delay)."""
        due = list(self.available().items())
        await asyncio.gather(*(self._probe_one(k, c) for k, c in due))

    def choose(self, limit: int | None) -> tuple[list[str], list[str]]:
        """``(asked, skipped)``: the available peers to ask, at most ``limit`` of them.

        The rule (docs/federation.md "Peer limits"): peers whose votes were never timed come
        first (each is measured once), then the lowest measured vote latency (a moving
        average of the round trips of their votes, a timeout counting as the whole timeout),
        then the health probes' latency, then the key.
        """
        def rank(item: tuple[str, PeerClient]) -> tuple[bool, float, float, str]:
            key, client = item
            voted = self.vote_latency.get(key)
            return (voted is not None, voted or 0.0, client.health.latency_s or 0.0, key)

        keys = [k for k, _ in sorted(self.available().items(), key=rank)]
        if limit is None:
            return keys, []
        return keys[:limit], keys[limit:]

    def _timed(self, key: str, seconds: float) -> None:
        old = self.vote_latency.get(key)
        self.vote_latency[key] = seconds if old is None else 0.7 * old + 0.3 * seconds

    async def gather_votes(
        self,
        request: VoteRequest,
        *,
        timeout_s: float,
        keys: Collection[str] | None = None,
        on_reply: Callable[[VoteReply], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> VoteGather:
        """Ask every available peer (or those of ``keys``) to vote, in parallel; whatever is
        back by ``timeout_s`` counts.

        ``on_reply`` sees each reply as it arrives; once ``stop`` is set the peers still
        working are cancelled (listed in ``cancelled``, not counted as failures).
        """
        result = VoteGather()
        clients = self._clients.items()
        for key, client in clients:  # every peer that is down is said, asked or not
            if not client.available:
                result.failures[key] = f"down: {client.health.last_error}"
        targets = {key: c for key, c in clients if c.available and (keys is None or key in keys)}
        result.asked = list(targets)
        if not targets:
            return result
        tasks = {asyncio.create_task(c.vote(request, timeout_s=timeout_s)): key for key, c in targets.items()}
        failures_before = {key: c.health.consecutive_failures for key, c in targets.items()}
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + timeout_s
        pending: set[asyncio.Task[VoteReply]] = set(tasks)
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            while pending and not (stop is not None and stop.is_set()):
                left = deadline - loop.time()
                if left <= 0:
                    break
                waiting: set[asyncio.Future[Any]] = set(pending) | ({stopper} if stopper is not None else set())
                done, _ = await asyncio.wait(waiting, timeout=min(left, self.vote_check_s),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in pending:
                        pending.discard(task)
                        if not task.cancelled():  # an error counts as slow as the timeout
                            self._timed(tasks[task], loop.time() - began if task.exception() is None else timeout_s)
                        if on_reply is not None and not task.cancelled() and task.exception() is None:
                            on_reply(task.result())
                # A peer that the health probes marked down while we wait (its host vanished, its
                # connection hangs) is given up at once instead of holding the answer until the timeout.
                for task in list(pending):
                    key = tasks[task]
                    client = targets[key]
                    if client.state is PeerState.DOWN and client.health.consecutive_failures > failures_before[key]:
                        task.cancel()
                        pending.discard(task)
                        result.failures[key] = f"marked down during the vote: {client.health.last_error}"
        finally:
            if stopper is not None:
                stopper.cancel()
        stopped = stop is not None and stop.is_set()
        for task in pending:
            task.cancel()
            if stopped:
                result.cancelled.append(tasks[task])
            else:
                result.failures[tasks[task]] = f"timed out after {timeout_s:.1f} s"
                self._timed(tasks[task], timeout_s)
                targets[tasks[task]].record_failure(f"vote timed out after {timeout_s:.1f} s")
        for task in tasks:
            if task in pending or not task.done() or task.cancelled():
                continue
            exc = task.exception()
            if exc is None:
                result.replies.append(task.result())
                result.keys[task.result().node_id] = tasks[task]
            elif tasks[task] not in result.failures:
                result.failures[tasks[task]] = str(exc)
        cancelled = [t for t in tasks if t.cancelled() or not t.done()]
        if cancelled:
            await asyncio.gather(*cancelled, return_exceptions=True)
        return result

    async def _probe_one(self, key: str, client: PeerClient) -> None:
        with contextlib.suppress(PeerError):
            await client.check_health()
            peer = self.table.get(key)
            if peer is not None and not peer.node_id:
                # A static peer answered: learn who it is, so the table keys it by node id.
                info = await client.info()
                self.table.upsert(dataclasses.replace(peer, node_id=info.node_id, name=info.name or peer.name,
                                                      model=info.model, instances=info.instances, hw=info.hw,
                                                      auth=info.auth, version=PROTOCOL_VERSION), "static")

    async def _probe_loop(self) -> None:
        while True:
            try:
                await self.probe()
            except Exception:  # never let one bad probe stop the loop
                logger.exception("peer probe failed")
            await asyncio.sleep(self.probe_interval_s)

    def _on_event(self, event: str, peer: Peer) -> None:
        old = self._clients.get(peer.key)
        if event == "removed" or not peer.compatible or peer.rpc_only:  # a Mode 2 worker never votes
            if old is not None:
                del self._clients[peer.key]
                self.vote_latency.pop(peer.key, None)
                self._close_later(old)
            return
        if old is not None and old.base_url == peer.url:
            return
        if old is not None:
            self._close_later(old)
        self._clients[peer.key] = self._factory(peer)

    def _close_later(self, client: PeerClient) -> None:
        try:
            task = asyncio.get_running_loop().create_task(client.aclose())
        except RuntimeError:  # no loop (table edited outside asyncio): nothing is open yet
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
