"""Federation: swarms on one LAN find each other, authenticate, and vote together.

Modules, one concern each:

- :mod:`.discovery` mDNS advertise/browse with static and UDP broadcast fallbacks
  (:mod:`.udp`), feeding the live :mod:`.table`; :mod:`.advert` holds the announced fields.
- :mod:`.auth` shared secret, HMAC request signing, replay cache, hop limit.
- :mod:`.protocol` versioned, validated JSON bodies.
- :mod:`.peers` one HTTP client per peer with backoff; :mod:`.pool` follows the table
  and gathers votes in parallel.
- :mod:`.node` the gateway's typed collaborator: discovery, pool, routes, the federated round
  (the vote itself is :func:`localswarm.consensus.cross_vote`).
- :mod:`.routes` the Starlette routes a node serves to its peers.
"""

from __future__ import annotations

from localswarm.federation.advert import Advert, load_node_id
from localswarm.federation.auth import (
    ENV_SECRET,
    FederationAuth,
    ReplayCache,
    check_hops,
    load_secret,
    resolve_secret,
    sign,
    verify,
)
from localswarm.federation.discovery import SERVICE_TYPE, Discovery
from localswarm.federation.errors import (
    AuthError,
    FederationError,
    HopLimitError,
    PeerError,
    PeerUnavailable,
    ProtocolError,
    SecretError,
)
from localswarm.federation.peers import PeerClient, PeerHealth, PeerState
from localswarm.federation.pool import PeerPool, VoteGather
from localswarm.federation.protocol import (
    PROTOCOL_VERSION,
    AnswerMessage,
    HealthReply,
    InfoReply,
    VoteReply,
    VoteRequest,
)
from localswarm.federation.routes import FederationCoordinator, federation_routes
from localswarm.federation.table import Peer, PeerTable

__all__ = [
    "ENV_SECRET",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Advert",
    "AnswerMessage",
    "AuthError",
    "Discovery",
    "FederationAuth",
    "FederationCoordinator",
    "FederationError",
    "HealthReply",
    "HopLimitError",
    "InfoReply",
    "Peer",
    "PeerClient",
    "PeerError",
    "PeerHealth",
    "PeerPool",
    "PeerState",
    "PeerTable",
    "PeerUnavailable",
    "ProtocolError",
    "ReplayCache",
    "SecretError",
    "VoteGather",
    "VoteReply",
    "VoteRequest",
    "check_hops",
    "federation_routes",
    "load_node_id",
    "load_secret",
    "resolve_secret",
    "sign",
    "verify",
]
