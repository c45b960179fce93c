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
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from localswarm import __version__
from localswarm.config import Settings
from localswarm.consensus import CrossVoteResult, cross_vote, strategy_from_request
from localswarm.consensus.crossvote import clears_floor
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


@dataclass(frozen=True)
class PeerLimits:
    """``min_peers``/``max_peers`` as one round applied them."""

    min_peers: int = 0
    max_peers: int | None = None
    not_asked: list[str] = field(default_factory=list)  # available peers left out by max_peers


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
    asked: list[str] = field(default_factory=list)  # table keys of the peers asked
    cancelled: list[str] = field(default_factory=list)  # asked, then not waited for (latency)
    limits: PeerLimits = field(default_factory=PeerLimits)
    local_only: str | None = None  # why the answer is this node's alone (min_peers not reached)
    peer_replies: int = 0  # peer votes received
    local_cancelled: bool = False  # latency: a peer's vote was taken before this node's finished

    @property
    def answered(self) -> int:
        """Peer votes received."""
        return self.peer_replies

    def headers(self) -> dict[str, str]:
        """The federation's ``x-localswarm-*`` response headers."""
        headers = {
            "x-localswarm-federation": f"local; {self.local_only}" if self.local_only else "federated",
            "x-localswarm-federation-strategy": self.cross.strategy,
            "x-localswarm-peers": f"{self.answered}/{len(self.asked)}",
        }
        if self.cross.strategy == "latency" and not self.local_only:
            taken = "first over the floor" if self.cross.fallback is None else "none over the floor: weighted"
            headers["x-localswarm-latency"] = f"{taken}; {len(self.cancelled)} peer(s) cancelled" + (
                ", local vote cancelled" if self.local_cancelled else "")
        if self.limits.not_asked:
            headers["x-localswarm-peers-not-asked"] = str(len(self.limits.not_asked))
        return headers

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
        fed.update(asked=list(self.asked), answered=self.answered, cancelled=list(self.cancelled),
                   local_cancelled=self.local_cancelled, min_peers=self.limits.min_peers,
                   max_peers=self.limits.max_peers, not_asked=list(self.limits.not_asked), local_only=self.local_only)
        if self.local_only:  # the local vote's own figures stand; the federation part says why
            fed["mode"] = "local"
            meta.update(mode="local", federation=fed)
            return meta
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
        """True for a client's request (no hop header) when at least one peer is known, or
        ``min_peers`` asks for peers (then the answer says it was answered locally)."""
        return request_hops() == 0 and (bool(self.pool.clients()) or self.settings.min_peers > 0)

    def _names(self) -> tuple[dict[str, str], dict[str, str]]:
        names = {self.node_id: self.name}
        addresses = {self.node_id: f"{self.settings.host}:{self.settings.port}"}
        for peer in self.discovery.table.snapshot():
            if peer.node_id:
                names[peer.node_id] = peer.name or peer.node_id[:8]
                addresses[peer.node_id] = f"{peer.host}:{peer.port}"
        return names, addresses

    async def vote_round(self, instances: Sequence[Instance], body: dict[str, Any], strategy: str) -> Round:
        """Vote locally and with the chosen peers (in parallel, one timeout); pool the answers
        by ``federation_strategy``, within ``min_peers``/``max_peers`` (docs/federation.md)."""
        state, settings = self.state, self.settings
        how, floor, min_peers = settings.federation_strategy, settings.federation_min_confidence, settings.min_peers
        timeout = settings.peer_timeout
        started = time.monotonic()
        request = VoteRequest(request_id=uuid.uuid4().hex, request=peer_body(body))
        chosen, skipped = self.pool.choose(settings.max_peers)
        limits = PeerLimits(min_peers=min_peers, max_peers=settings.max_peers, not_asked=skipped)
        if len(chosen) < min_peers:  # cannot be reached: answer at once instead of waiting for nothing
            local = await local_round(state, instances, body, strategy)
            reason = f"min_peers {min_peers} not reached: {len(chosen)} peer(s) available"
            return self._local_only(local, VoteGather(), reason, limits, time.monotonic() - started)

        arrival: list[str] = []  # node ids in the order their votes arrived, this node's included
        replies: list[VoteReply] = []
        mine: list[VoteReply] = []
        stop = asyncio.Event()

        def decided() -> bool:  # `latency`: a vote cleared the floor and enough peers answered
            votes = {v.node_id: v for v in (*replies, *mine)}
            return len(replies) >= min_peers and any(clears_floor(votes[n], floor) for n in arrival)

        def on_reply(reply: VoteReply) -> None:
            replies.append(reply)
            arrival.append(reply.node_id)
            if how == "latency" and decided():
                stop.set()

        def on_local(task: asyncio.Task[Round]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            voted = task.result()
            mine.append(vote_reply(self.node_id, state.model_id, voted, time.monotonic() - started))
            arrival.append(self.node_id)
            if how == "latency" and decided():
                stop.set()

        local_task = asyncio.create_task(local_round(state, instances, body, strategy))
        local_task.add_done_callback(on_local)
        peers_task = asyncio.create_task(self.pool.gather_votes(request, timeout_s=timeout, keys=chosen,
                                                                 on_reply=on_reply, stop=stop))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            pending: set[asyncio.Future[Any]] = {local_task, peers_task}
            while pending - {stopper} and not stop.is_set():
                _, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait({peers_task})  # it stops by itself once `stop` is set
        finally:
            stopper.cancel()
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
        exc = None if local_task.cancelled() else local_task.exception()
        if local_task.cancelled() or exc is not None or not mine:
            if not got.replies:
                raise exc or RuntimeError("the local vote was cancelled and no peer answered")
            if exc is not None:
                logger.warning("local vote failed (%s); answering with %d peer votes", exc, len(got.replies))
            return self._from_peers_only(got, names, addresses, strategy, peers_latency, limits, arrival,
                                         local_cancelled=local_task.cancelled())
        local = local_task.result()
        if len(got.replies) < min_peers:
            reason = f"min_peers {min_peers} not reached: {len(got.replies)} of {len(got.asked)} asked answered"
            return self._local_only(local, got, reason, limits, peers_latency)
        cross = cross_vote(mine[0], got.replies, strategy=how, threshold=settings.similarity_threshold,
                           floor=floor, arrival=arrival)
        self.cross_votes += 1
        if cross.winner.node_id == self.node_id:
            label = local.winner.id
            winner, index = local.winner, local.winner_index
        else:
            label = names.get(cross.winner.node_id, cross.winner.node_id[:8])
            winner, index = _peer_answer(cross.winner, label), None
        outcome = FederatedOutcome(cross=cross, names=names, addresses=addresses, failures=got.failures,
                                   winner_label=label, peer_timeout_s=timeout, peers_latency_s=peers_latency,
                                   asked=got.asked, cancelled=got.cancelled, limits=limits,
                                   peer_replies=len(got.replies))
        return Round(local.gathered, local.result, winner, index, cross.confidence, local.strategy,
                     federated=outcome)

    def _local_only(self, local: Round, got: VoteGather, reason: str, limits: PeerLimits, latency: float) -> Round:
        """The local answer, because ``min_peers`` was not reached: said in the metadata, the
        headers and one log line."""
        logger.warning("federated request answered locally: %s", reason)
        mine = vote_reply(self.node_id, self.state.model_id, local, latency)
        names, addresses = self._names()
        outcome = FederatedOutcome(cross=cross_vote(mine, [], strategy=self.settings.federation_strategy),
                                   names=names, addresses=addresses, failures=got.failures,
                                   winner_label=local.winner.id, peer_timeout_s=self.settings.peer_timeout,
                                   peers_latency_s=latency, asked=got.asked, cancelled=got.cancelled,
                                   limits=limits, local_only=reason, peer_replies=len(got.replies))
        return Round(local.gathered, local.result, local.winner, local.winner_index, local.confidence,
                     local.strategy, federated=outcome)

    def _from_peers_only(self, got: VoteGather, names: dict[str, str], addresses: dict[str, str], strategy: str,
                         peers_latency: float, limits: PeerLimits, arrival: Sequence[str] = (),
                         local_cancelled: bool = False) -> Round:
        first, *rest = sorted(got.replies, key=lambda r: (-r.cluster_size, -r.confidence, r.node_id))
        settings = self.settings
        cross = cross_vote(first, rest, strategy=settings.federation_strategy, threshold=settings.similarity_threshold,
                           floor=settings.federation_min_confidence, arrival=arrival)
        cross = dataclasses.replace(cross, local_node_id=self.node_id)  # this node still coordinated
        self.cross_votes += 1
        label = names.get(cross.winner.node_id, cross.winner.node_id[:8])
        outcome = FederatedOutcome(cross=cross, names=names, addresses=addresses, failures=got.failures,
                                   winner_label=label, peer_timeout_s=settings.peer_timeout,
                                   peers_latency_s=peers_latency, asked=got.asked, cancelled=got.cancelled,
                                   limits=limits, local_cancelled=local_cancelled,
                                   peer_replies=len(got.replies))
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
