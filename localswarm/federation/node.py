"""A federated node: the gateway's typed collaborator for issue 6 (docs/federation.md).

- :class:`GatewayCoordinator` implements the federation routes'
  :class:`~localswarm.federation.routes.FederationCoordinator` on top of
  :func:`localswarm.gateway.rounds.local_round`: a peer's request runs on this node's
  own instances only, never forwarded.
- :class:`Federation` holds :class:`~localswarm.federation.discovery.Discovery` and a
  :class:`~localswarm.federation.pool.PeerPool`; the app's lifespan starts and stops it
  through :func:`start_federation` / :func:`stop_federation`, and hangs it on
  ``GatewayState.federation`` (None when federation is off).
- :meth:`Federation.vote_round` is the cross-vote step: vote locally while asking every
  healthy peer in parallel with one timeout, then :func:`localswarm.consensus.cross_vote`.
  It returns the gateway's :class:`~localswarm.gateway.rounds.Round` with a
  :class:`FederatedOutcome`, so every route (streamed consensus included) serves the
  federated answer unchanged.

Federation is off unless ``settings.federate``: then nothing here runs and the
``/v1/federation/*`` endpoints do not exist.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from localswarm import __version__
from localswarm.config import Settings
from localswarm.consensus import CrossVoteResult, cross_vote, strategy_from_request
from localswarm.federation.auth import HEADER_HOPS, check_hops, resolve_secret
from localswarm.federation.discovery import Discovery
from localswarm.federation.errors import AuthError
from localswarm.federation.pool import PeerPool, VoteGather
from localswarm.federation.protocol import AnswerMessage, HealthReply, InfoReply, VoteReply, VoteRequest
from localswarm.federation.routes import federation_routes
from localswarm.gateway import fanout
from localswarm.gateway.rounds import Round, local_metadata, local_round
from localswarm.gateway.state import GatewayState
from localswarm.hosts import is_wildcard
from localswarm.supervisor.instance import Instance
from localswarm.upstream import Answer

__all__ = [
    "FederatedOutcome",
    "Federation",
    "GatewayCoordinator",
    "HopGuard",
    "preflight",
    "request_hops",
    "start_federation",
    "stop_federation",
]

logger = logging.getLogger(__name__)

# Hops of the client request being served (0: a client, >0: it came from a federated node).
_HOPS: contextvars.ContextVar[int] = contextvars.ContextVar("localswarm_hops", default=0)


def request_hops() -> int:
    """The ``x-localswarm-hops`` of the HTTP request being served (0 when absent)."""
    return _HOPS.get()


class HopGuard:
    """ASGI wrapper: records each request's hop count so a federated request is never fanned out.

    A request whose ``x-localswarm-hops`` is invalid or over the limit counts as a
    federated one too (answered locally), never as a client's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        hops = 0
        if HEADER_HOPS in raw:
            try:
                hops = max(1, check_hops(raw))
            except AuthError:
                hops = 99
        token = _HOPS.set(hops)
        try:
            await self.app(scope, receive, send)
        finally:
            _HOPS.reset(token)


def preflight(settings: Settings) -> bytes | None:
    """Check the federation settings before anything starts; return the secret (or None).

    Raises :class:`~localswarm.federation.errors.SecretError` (a ``ConfigError``) when
    federation is enabled on a non-loopback address without a usable shared secret.
    """
    if not settings.federate:
        return None
    return resolve_secret(settings.host, settings.federation_secret_file)


# -- the coordinator the federation routes call ------------------------------------------


def vote_reply(node_id: str, model: str, voted: Round, latency: float) -> VoteReply:
    """This node's vote in the federation protocol: its best answer and the vote's statistics."""
    assert voted.result is not None
    gathered, result, winner = voted.gathered, voted.result, voted.winner
    n = max(1, gathered.asked, len(gathered.answers))
    return VoteReply(
        node_id=node_id,
        message=AnswerMessage(content=winner.message().get("content"), tool_calls=winner.tool_calls or None),
        finish_reason=winner.finish_reason or "stop",
        cluster_size=min(len(result.cluster), n),
        n=n,
        cohesion=min(1.0, max(0.0, float(result.cohesion))),
        confidence=min(1.0, max(0.0, float(result.confidence))),
        latency_s=max(0.0, latency),
        model=model,
    )


class GatewayCoordinator:
    """``FederationCoordinator`` on top of the gateway: local votes only, never forwarded."""

    def __init__(self, state: GatewayState, *, node_id: str, name: str, auth: bool, hw: str = "") -> None:
        self.state, self.node_id, self.name, self.auth, self.hw = state, node_id, name, auth, hw

    async def local_vote(self, body: dict[str, Any]) -> VoteReply:
        """Run ``body`` on this node's ready instances and return its vote."""
        from localswarm.gateway.validation import validate_chat

        state = self.state
        body = peer_body(body)
        validate_chat(body)
        instances = state.supervisor.ready_instances()
        if not instances:
            raise RuntimeError("no local instance is ready")
        try:
            strategy = strategy_from_request({}, body, state.settings.strategy)
        except ValueError:
            strategy = state.settings.strategy
        started = time.monotonic()
        voted = await local_round(state, instances, body, strategy)
        return vote_reply(self.node_id, state.model_id, voted, time.monotonic() - started)

    def info(self) -> InfoReply:
        """Identity, model and capacity of this node."""
        return InfoReply(node_id=self.node_id, name=self.name, model=self.state.model_id,
                         instances=len(self.state.supervisor.instances), hw=self.hw, auth=self.auth,
                         software=f"localswarm {__version__}")

    def health(self) -> HealthReply:
        """``ok`` when every instance is ready, ``degraded`` with some, ``down`` with none."""
        ready = len(self.state.supervisor.ready_instances())
        total = len(self.state.supervisor.instances)
        status = "down" if ready == 0 else ("ok" if ready >= total else "degraded")
        return HealthReply(node_id=self.node_id, status=status, ready_instances=ready, instances=total)


def peer_body(body: dict[str, Any]) -> dict[str, Any]:
    """What a peer is asked (and runs): the checked chat body, never streamed."""
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


# -- the cross vote's outcome -------------------------------------------------------------


@dataclass
class FederatedOutcome:
    """What a federated round adds to a :class:`~localswarm.gateway.rounds.Round`."""

    cross: CrossVoteResult[VoteReply]
    names: dict[str, str]
    addresses: dict[str, str]
    failures: dict[str, str]
    winner_label: str
    peer_timeout_s: float
    peers_latency_s: float

    def nodes(self) -> list[dict[str, Any]]:
        """Every node whose vote was counted, and whether it agreed."""
        agreeing = set(self.cross.agreeing_nodes)
        return [
            {"node_id": nid, "name": self.names.get(nid, nid[:8]), "address": self.addresses.get(nid, ""),
             "agreed": nid in agreeing}
            for nid in self.cross.contributing_nodes
        ]

    def metadata(self, voted: Round, latency: float) -> dict[str, Any]:
        """Local vote details plus the pooled decision; ``nodes`` names every contributor."""
        gathered = voted.gathered
        if voted.result is not None and voted.answers:
            meta = local_metadata(voted.answers, gathered, voted.result, latency)
            meta["local"] = {"winner": meta["winner"], "votes": meta["votes"], "n": meta["n"],
                             "confidence": meta["confidence"]}
        else:  # the local vote failed: the answer comes from the peers alone
            meta = {"strategy": voted.strategy, "asked": gathered.asked, "answered": 0, "left_out": gathered.failed,
                    "early_stop": gathered.early_stop, "latency_s": round(latency, 3), "degenerate": False,
                    "cluster": [], "clusters": [], "excluded": [], "cohesion": 0.0,
                    "tool_call": bool(voted.winner.tool_calls), "synthesized": False,
                    "usage_total": {"prompt_tokens": 0, "completion_tokens": 0}, "local": None}
        cross = self.cross
        fed = cross.to_metadata()
        for row in fed["nodes"]:
            row["name"] = self.names.get(row["node_id"], row["node_id"][:8])
        fed["left_out"] = dict(self.failures)
        fed["peer_timeout_s"] = self.peer_timeout_s
        fed["peers_latency_s"] = round(self.peers_latency_s, 3)
        meta.update(
            mode="federated",
            winner=self.winner_label,
            votes=cross.support,
            n=cross.total_n,
            confidence=round(cross.confidence, 4),
            nodes=self.nodes(),
            federation=fed,
        )
        return meta


def _peer_answer(reply: VoteReply, label: str) -> Answer:
    """A peer's winning answer, as the client gets it (its token usage is the peer's own)."""
    calls = list(reply.message.tool_calls or [])
    return Answer(id=label, text=reply.message.content or "", tool_calls=calls,
                  finish_reason="tool_calls" if calls else reply.finish_reason, latency_s=reply.latency_s)


# -- the federation object the lifespan owns ---------------------------------------------


class Federation:
    """Discovery + peer pool + coordinator of one gateway, and the cross-vote step."""

    def __init__(
        self,
        state: GatewayState,
        *,
        secret: bytes | None,
        discovery: Discovery | None = None,
        pool: PeerPool | None = None,
    ) -> None:
        settings = state.settings
        self.state = state
        self.settings = settings
        self.secret = secret
        host = settings.host
        specific = not is_wildcard(host)
        self.discovery = discovery or Discovery(
            port=settings.port,
            model=state.model_id,
            instances=len(state.supervisor.instances),
            auth=secret is not None,
            interfaces=[host] if specific and host != "localhost" else None,
            addresses=["127.0.0.1"] if host == "localhost" else None,
            mdns=settings.mdns,
            static_peers=settings.peers,
            udp=settings.udp_discovery,
            udp_port=settings.udp_port,
            udp_bind="0.0.0.0",
            udp_interval_s=settings.advertise_interval,
        )
        self.node_id = self.discovery.node_id
        self.name = self.discovery.name
        self.pool = pool or PeerPool(
            self.discovery.table,
            secret=secret,
            node_id=self.node_id,
            probe_interval_s=settings.peer_probe_interval,
            vote_timeout_s=settings.peer_timeout,
            timeout_s=min(3.0, settings.peer_timeout),  # health and info never generate text
            connect_timeout_s=min(2.0, settings.peer_timeout),
            failure_threshold=2,
            backoff_base_s=1.0,
            backoff_max_s=60.0,
            on_latency=state.metrics.observe_peer_latency if state.metrics else None,
            on_bad_reply=state.metrics.count_peer_bad_reply if state.metrics else None,
        )
        self.coordinator = GatewayCoordinator(state, node_id=self.node_id, name=self.name, auth=secret is not None,
                                              hw=self.discovery.advert.hw)
        # Mode 2 (`up --federate --offer-memory`): also lend memory through rpc-server, less what
        # the local swarm's weights take (docs/federation.md "Mode 2").
        self.rpc_worker = None
        if settings.offer_memory:
            from localswarm.federation.rpc import worker_from_settings

            model_path = getattr(state.supervisor.backend, "model_path", None)
            in_use = model_path.stat().st_size * len(state.supervisor.instances) if model_path else 0
            self.rpc_worker = worker_from_settings(settings, secret=secret, node_id=self.node_id, name=self.name,
                                                   in_use=in_use)
        self._routes: list[BaseRoute] = []
        self.cross_votes = 0

    # lifecycle

    async def start(self) -> None:
        """Start discovery (mDNS, static peers, UDP) and the peer pool's probes (and the rpc worker)."""
        if self.rpc_worker is not None:
            await self.rpc_worker.start()
            w = self.rpc_worker
            self.discovery.advert = dataclasses.replace(self.discovery.advert, rpc_port=w.relay.port,
                                                        rpc_memory=w.memory, rpc_backend=w.backend_name)
        await self.discovery.start()
        await self.pool.start()

    async def aclose(self) -> None:
        """Stop probing, close peer clients, unregister (goodbye)."""
        try:
            await self.pool.aclose()
        finally:
            await self.discovery.aclose()
            if self.rpc_worker is not None:
                await self.rpc_worker.aclose()

    def routes(self) -> list[BaseRoute]:
        """``/v1/federation/{vote,info,health}``, signed when a secret is configured."""
        if not self._routes:
            self._routes = list(federation_routes(self.coordinator, secret=self.secret))
            if self.rpc_worker is not None:
                self._routes += self.rpc_worker.routes()
        return self._routes

    # reporting

    def status(self) -> dict[str, Any]:
        """For ``/localswarm/status`` and ``localswarm peers``."""
        rows = []
        for row in self.pool.status():
            latency = row.get("latency_s")
            rows.append({**row, "latency_s": round(latency, 4) if isinstance(latency, float) else latency})
        return {
            "node_id": self.node_id,
            "name": self.name,
            "addresses": list(self.discovery.addresses),
            "auth": self.secret is not None,
            "peer_timeout_s": self.settings.peer_timeout,
            "cross_votes": self.cross_votes,
            **({"rpc": self.rpc_worker.status()} if self.rpc_worker is not None else {}),
            "peers": rows,
        }

    # the cross vote

    def should_coordinate(self) -> bool:
        """True for a client's request (no hop header) when at least one peer is known."""
        return request_hops() == 0 and bool(self.pool.clients())

    def _names(self) -> tuple[dict[str, str], dict[str, str]]:
        names = {self.node_id: self.name}
        addresses = {self.node_id: f"{self.settings.host}:{self.settings.port}"}
        for peer in self.discovery.table.snapshot():
            if peer.node_id:
                names[peer.node_id] = peer.name or peer.node_id[:8]
                addresses[peer.node_id] = f"{peer.host}:{peer.port}"
        return names, addresses

    async def vote_round(self, instances: Sequence[Instance], body: dict[str, Any], strategy: str) -> Round:
        """Vote locally and with every available peer (in parallel, one timeout); pool the answers."""
        state = self.state
        timeout = self.settings.peer_timeout
        started = time.monotonic()
        request = VoteRequest(request_id=uuid.uuid4().hex, request=peer_body(body))
        local_task = asyncio.create_task(local_round(state, instances, body, strategy))
        peers_task = asyncio.create_task(self.pool.gather_votes(request, timeout_s=timeout))
        try:
            await asyncio.wait({local_task, peers_task})
        finally:
            for task in (local_task, peers_task):
                if not task.done():
                    await fanout.cancel_and_wait({task})
        got = peers_task.result()
        peers_latency = time.monotonic() - started
        if got.failures:
            logger.info("cross-vote %s: peers left out: %s", request.request_id, got.failures)
        names, addresses = self._names()
        for node_id, key in got.keys.items():  # peers known by address only (static, before their info)
            if node_id not in names and key.startswith("static:"):
                names[node_id] = addresses[node_id] = key[len("static:"):]
        exc = local_task.exception()
        if exc is not None:
            if not got.replies:
                raise exc
            logger.warning("local vote failed (%s); answering with %d peer votes", exc, len(got.replies))
            return self._from_peers_only(got, names, addresses, strategy, peers_latency)
        local = local_task.result()
        local_latency = max((a.latency_s for a in local.answers), default=0.0)
        mine = vote_reply(self.node_id, state.model_id, local, local_latency)
        cross = cross_vote(mine, got.replies, threshold=self.settings.similarity_threshold)
        self.cross_votes += 1
        if cross.winner.node_id == self.node_id:
            label = local.winner.id
            winner, index = local.winner, local.winner_index
        else:
            label = names.get(cross.winner.node_id, cross.winner.node_id[:8])
            winner, index = _peer_answer(cross.winner, label), None
        outcome = FederatedOutcome(cross=cross, names=names, addresses=addresses, failures=got.failures,
                                   winner_label=label, peer_timeout_s=timeout, peers_latency_s=peers_latency)
        return Round(local.gathered, local.result, winner, index, cross.confidence, local.strategy,
                     federated=outcome)

    def _from_peers_only(self, got: VoteGather, names: dict[str, str], addresses: dict[str, str], strategy: str,
                         peers_latency: float) -> Round:
        first, *rest = sorted(got.replies, key=lambda r: (-r.cluster_size, -r.confidence, r.node_id))
        cross = cross_vote(first, rest, threshold=self.settings.similarity_threshold)
        self.cross_votes += 1
        label = names.get(cross.winner.node_id, cross.winner.node_id[:8])
        outcome = FederatedOutcome(cross=cross, names=names, addresses=addresses, failures=got.failures,
                                   winner_label=label, peer_timeout_s=self.settings.peer_timeout,
                                   peers_latency_s=peers_latency)
        gathered = fanout.Gathered(asked=len(self.state.supervisor.instances))
        return Round(gathered, None, _peer_answer(cross.winner, label), None, cross.confidence, strategy,
                     federated=outcome)


# -- lifespan hooks (the only lines app.py carries for federation) ------------------------


async def start_federation(app: Starlette, state: GatewayState) -> Federation | None:
    """Unless ``settings.federate``: nothing (the endpoints do not exist). Otherwise resolve the
    secret (refusing a LAN bind without one), mount the federation routes, guard hop headers,
    start discovery and the peer pool, and hang the object on ``state.federation``."""
    settings = state.settings
    if not settings.federate:
        return None
    secret = preflight(settings)
    if secret is None:
        logger.warning("federation without a shared secret: only acceptable on loopback (%s)", settings.host)
    federation = Federation(state, secret=secret)
    await federation.start()
    app.router.routes.extend(federation.routes())
    state.federation = federation
    logger.info("federation on: node %s (%s), %s", federation.node_id[:8], federation.name,
                "signed requests" if secret else "no secret (loopback)")
    return federation


async def stop_federation(app: Starlette, federation: Federation | None) -> None:
    """Unmount the routes, stop probing, say goodbye."""
    if federation is None:
        return
    for route in federation.routes():
        if route in app.router.routes:
            app.router.routes.remove(route)
    federation.state.federation = None
    await federation.aclose()
