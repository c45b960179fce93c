"""The live table of known peers, fed by mDNS, UDP broadcast and static configuration.

Peers are keyed by their persistent node id (``static:host:port`` until a static peer's id
is known). Each entry remembers which sources vouch for it; it leaves the table when the
last source drops it. A peer speaking another protocol version stays in the table with
``compatible=False`` and a warning is logged: it is reported, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from localswarm.federation.protocol import PROTOCOL_VERSION

__all__ = ["Peer", "PeerEvent", "PeerListener", "PeerTable"]

logger = logging.getLogger(__name__)

PeerEvent = str  # "added" | "updated" | "removed"
PeerListener = Callable[[PeerEvent, "Peer"], None]

# Fields whose change is worth an "updated" event (not last_seen, not sources).
_TRACKED = ("name", "host", "port", "addresses", "version", "model", "instances", "hw", "auth", "rpc_port",
            "rpc_memory", "rpc_backend")


@dataclass(frozen=True, slots=True)
class Peer:
    """One remote swarm as discovered. ``version`` is None until known (static peers)."""

    node_id: str
    host: str
    port: int
    name: str = ""
    addresses: tuple[str, ...] = ()
    version: int | None = PROTOCOL_VERSION
    model: str = ""
    instances: int = 0
    hw: str = ""
    auth: bool = False
    rpc_port: int = 0  # a Mode 2 worker's relay port, as announced (0: not one)
    rpc_memory: int = 0
    rpc_backend: str = ""
    sources: frozenset[str] = field(default_factory=frozenset)
    last_seen: float = 0.0

    @property
    def key(self) -> str:
        """Table key: the node id, or ``static:host:port`` while it is unknown."""
        return self.node_id or static_key(self.host, self.port)

    @property
    def compatible(self) -> bool:
        """False when the peer announced a protocol version other than ours."""
        return self.version is None or self.version == PROTOCOL_VERSION

    @property
    def rpc_only(self) -> bool:
        """A Mode 2 worker with no swarm of its own: it lends memory, it does not vote."""
        return self.rpc_port > 0 and self.instances == 0

    @property
    def url(self) -> str:
        """Base URL of the peer's gateway."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view, e.g. for ``localswarm peers``."""
        return {
            "node_id": self.node_id,
            "name": self.name,
            "address": f"{self.host}:{self.port}",
            "version": self.version,
            "compatible": self.compatible,
            "model": self.model,
            "instances": self.instances,
            "hw": self.hw,
            "auth": self.auth,
            **({"rpc_port": self.rpc_port, "rpc_memory": self.rpc_memory, "rpc_backend": self.rpc_backend}
               if self.rpc_port else {}),
            "sources": sorted(self.sources),
        }


def static_key(host: str, port: int) -> str:
    """Key of a static peer whose node id is not known yet."""
    return f"static:{host}:{port}"


class PeerTable:
    """Known peers plus listeners notified on ``added`` / ``updated`` / ``removed``.

    Not thread-safe: use it from the event loop that runs discovery.
    """

    def __init__(self, *, self_node_id: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.self_node_id = self_node_id
        self._peers: dict[str, Peer] = {}
        self._listeners: list[PeerListener] = []
        self._clock = clock

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._peers

    def get(self, key: str) -> Peer | None:
        """The peer with that key (node id or static key), if any."""
        return self._peers.get(key)

    def snapshot(self) -> list[Peer]:
        """The current peers, sorted by name then key."""
        return sorted(self._peers.values(), key=lambda p: (p.name, p.key))

    def add_listener(self, listener: PeerListener) -> Callable[[], None]:
        """Call ``listener(event, peer)`` on each change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def upsert(self, peer: Peer, source: str) -> PeerEvent | None:
        """Add or refresh ``peer`` as seen by ``source``; return the event emitted, if any.

        Our own node id is ignored. A static entry for the same address is folded into
        the node-id entry once the id is known.
        """
        if self.self_node_id and peer.node_id == self.self_node_id:
            return None
        now = self._clock()
        sources = {source}
        if peer.node_id:
            for addr in {peer.host, *peer.addresses}:
                folded = self._peers.pop(static_key(addr, peer.port), None)
                if folded is not None:
                    sources |= folded.sources
                    self._emit("removed", folded)
        old = self._peers.get(peer.key)
        if old is not None:
            sources |= old.sources
        new = dataclasses.replace(peer, sources=frozenset(sources), last_seen=now)
        self._peers[new.key] = new
        if old is None:
            if not new.compatible:
                logger.warning(
                    "peer %s (%s) speaks federation protocol v%s, this node speaks v%s: it is listed but "
                    "not used until both run the same localswarm version", new.name or new.key, new.url,
                    new.version, PROTOCOL_VERSION,
                )
            else:
                logger.info("peer added: %s at %s via %s", new.name or new.key, new.url, source)
            self._emit("added", new)
            return "added"
        if any(getattr(old, f) != getattr(new, f) for f in _TRACKED):
            if old.version != new.version and not new.compatible:
                logger.warning("peer %s switched to incompatible protocol v%s", new.name or new.key, new.version)
            self._emit("updated", new)
            return "updated"
        return None

    def remove(self, key: str, source: str) -> Peer | None:
        """Withdraw ``source``'s claim on ``key``; remove the peer when no source is left."""
        old = self._peers.get(key)
        if old is None or source not in old.sources:
            return None
        remaining = old.sources - {source}
        if remaining:
            self._peers[key] = dataclasses.replace(old, sources=remaining)
            return None
        del self._peers[key]
        logger.info("peer removed: %s at %s", old.name or key, old.url)
        self._emit("removed", old)
        return old

    def expire(self, source: str, max_age_s: float) -> list[Peer]:
        """Withdraw ``source`` from peers not refreshed for ``max_age_s``; return those removed."""
        cutoff = self._clock() - max_age_s
        removed = []
        for peer in list(self._peers.values()):
            if source in peer.sources and peer.last_seen < cutoff:
                gone = self.remove(peer.key, source)
                if gone is not None:
                    removed.append(gone)
        return removed

    def _emit(self, event: PeerEvent, peer: Peer) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, peer)
            except Exception:  # a listener's bug must not break discovery
                logger.exception("peer table listener failed on %s %s", event, peer.key)
