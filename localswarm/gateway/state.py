"""What the routes share: settings, the supervisor, the pooled client, counters, federation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request

from localswarm import __version__
from localswarm.config import Settings
from localswarm.consensus import VoteResult
from localswarm.gateway.affinity import Affinity
from localswarm.gateway.counters import RequestCounters
from localswarm.gateway.queue import AdmissionQueue
from localswarm.supervisor.supervisor import Supervisor

if TYPE_CHECKING:
    from localswarm.federation.node import Federation
    from localswarm.gateway.fanout import Gathered
    from localswarm.metrics import Metrics

SWARM_ALIASES = ("swarm", "localswarm")


def gateway_state(request: Request) -> GatewayState:
    """The state the app's lifespan built."""
    state: GatewayState = request.app.state.gateway
    return state


@dataclass
class VoteStats:
    votes: int = 0
    early_stops: int = 0
    confidence_total: float = 0.0
    degenerate: int = 0


@dataclass
class GatewayState:
    settings: Settings
    supervisor: Supervisor
    client: httpx.AsyncClient
    model_id: str
    started_at: float = field(default_factory=time.time)
    votes: VoteStats = field(default_factory=VoteStats)
    counters: RequestCounters = field(default_factory=RequestCounters)
    # Set by the lifespan when `federate` is on (issue 6); None otherwise.
    federation: Federation | None = None
    # Prometheus (issue 7); None in tests that build a bare state.
    metrics: Metrics | None = None
    # Queue, don't refuse (issue 13): generating requests wait here for instance slots.
    queue: AdmissionQueue = field(init=False)
    # A conversation's next turn goes to the instances holding its cached prefix (issue 15).
    affinity: Affinity = field(default_factory=Affinity)

    def __post_init__(self) -> None:
        s = self.settings
        self.queue = AdmissionQueue(
            ready=lambda: len(self.supervisor.ready_instances()), parallel=s.parallel, depth=s.queue_depth,
            timeout=s.queue_timeout, min_voters=s.min_voters, on_reject=self.counters.count_busy_rejection,
        )

    def model_ids(self) -> list[str]:
        """The served model and its aliases; any other name a client sends maps here too."""
        return [self.model_id, *[a for a in SWARM_ALIASES if a != self.model_id]]

    def record_vote(self, result: VoteResult, gathered: Gathered) -> None:
        self.votes.votes += 1
        self.votes.confidence_total += result.confidence
        self.votes.early_stops += int(bool(gathered.early_stop))
        self.votes.degenerate += int(bool(result.degenerate))
        if self.metrics is not None:
            self.metrics.observe_vote(result, answered=len(gathered.answers), asked=gathered.asked,
                                      early_stop=gathered.early_stop)

    def record_tokens(self, usage: dict[str, Any] | None) -> None:
        """Count the usage of one answer sent to a client (Prometheus tokens in/out)."""
        if self.metrics is not None and usage:
            self.metrics.observe_tokens(usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def status(self) -> dict[str, Any]:
        s = self.settings
        extra: dict[str, Any] = {}
        if self.federation is not None:
            extra["federation"] = self.federation.status()
        return {
            "version": __version__,
            "model": self.model_id,
            "base_url": f"http://{s.host}:{s.port}/v1",
            "uptime_s": round(time.time() - self.started_at, 1),
            "stream_mode": s.stream_mode,
            "strategy": s.strategy,
            "ready": len(self.supervisor.ready_instances()),
            # The memory guard (issue 13): instances it keeps stopped make the swarm degraded.
            "degraded": self.supervisor.degraded,
            "memory": self.supervisor.memory_status(),
            "instances": self.supervisor.status(),
            "votes": {
                "count": self.votes.votes,
                "early_stops": self.votes.early_stops,
                "degenerate": self.votes.degenerate,
                "mean_confidence": (
                    round(self.votes.confidence_total / self.votes.votes, 3) if self.votes.votes else None
                ),
            },
            **extra,
        }
