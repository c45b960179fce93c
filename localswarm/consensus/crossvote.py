"""The cross-machine vote: pool several swarms' votes, judged as the local vote judges (pure).

Each swarm sends its best answer (the medoid of its winning cluster), the size of that
cluster and its N. Agreement between two swarms' answers is the local engine's: tool calls
in their canonical form (same function names, canonical arguments), otherwise the text
similarity with code normalised through its AST. The answers are clustered by the same
star clustering as local answers, each weighted by its cluster size, with the same
threshold; a group's support is the sum of its cluster sizes (pooled self-consistency).
Global confidence is the winning support divided by the total N of every vote counted.

Which group, and which answer, wins is the federation strategy's choice
(``federation_strategy``, config ``network.strategy``; docs/federation.md "Strategies"):

* ``weighted`` (default): each swarm's vote weighs its support times its confidence
  (``cluster_size × confidence``: how many instances stood behind the answer, discounted by
  how split and loose that swarm's own vote was); the group with the most weight wins and
  its heaviest vote is the answer.
* ``best_of_n``: the best single answer by the local ``quality`` score (the same
  :func:`~localswarm.consensus.vote.vote` a swarm runs with ``strategy: quality``: code that
  parses, finished normally, valid tool arguments, sane length, agreement as tie-breaker).
* ``latency``: the first vote to arrive whose confidence clears the floor
  (``federation_min_confidence``); the caller stops waiting for the rest. When none clears
  it, the choice falls back to ``weighted`` over what arrived (``fallback`` says so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from localswarm import config

from .cluster import star_clusters
from .model import Candidate
from .similarity import text_similarity
from .toolcalls import call_list_similarity, name_signature, parse_tool_calls, sorted_calls
from .vote import DEFAULT_THRESHOLD
from .vote import vote as _vote

__all__ = [
    "DEFAULT_FLOOR",
    "FEDERATION_STRATEGIES",
    "CrossVoteResult",
    "SwarmVote",
    "answer_similarity",
    "clears_floor",
    "cross_vote",
    "vote_weight",
]

FEDERATION_STRATEGIES: tuple[str, ...] = config.FEDERATION_STRATEGIES  # declared once, with the settings
#: The confidence a vote needs for ``latency`` to take it without waiting for the others.
DEFAULT_FLOOR: float = config.FEDERATION_FLOOR

Similarity = Callable[[Candidate, Candidate], float]


class SwarmVote(Protocol):
    """One swarm's vote as the cross vote reads it (the federation's ``VoteReply``)."""

    @property
    def node_id(self) -> str: ...
    @property
    def cluster_size(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def confidence(self) -> float: ...
    @property
    def model(self) -> str: ...
    @property
    def latency_s(self) -> float: ...

    def candidate(self) -> Candidate: ...


V = TypeVar("V", bound=SwarmVote)


def answer_similarity(a: Candidate, b: Candidate) -> float:
    """Agreement of two answers in [0, 1]: tool calls in canonical form, else text similarity.

    A call and a non-call never agree; calls to different functions never agree.
    """
    pa, pb = parse_tool_calls(a.tool_calls), parse_tool_calls(b.tool_calls)
    if pa or pb:
        if not pa or not pb or name_signature(pa) != name_signature(pb):
            return 0.0
        return call_list_similarity(sorted_calls(pa), sorted_calls(pb))
    return text_similarity(a.text or "", b.text or "")


@dataclass(frozen=True, slots=True)
class CrossVoteResult(Generic[V]):
    """The pooled decision; ``groups`` holds the agreeing votes, the winning group first."""

    winner: V
    support: int
    total_n: int
    confidence: float
    groups: tuple[tuple[V, ...], ...]
    local_node_id: str
    strategy: str = "weighted"
    fallback: str | None = None  # why the strategy's own rule could not decide (latency: nothing cleared the floor)

    @property
    def contributing_nodes(self) -> list[str]:
        """Every node whose vote was counted, the winning group first."""
        return [m.node_id for g in self.groups for m in g]

    @property
    def agreeing_nodes(self) -> list[str]:
        """Nodes whose answer is in the winning group."""
        return [m.node_id for m in self.groups[0]]

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-ready summary for the response's consensus metadata."""
        return {
            "mode": "federated",
            "strategy": self.strategy,
            "fallback": self.fallback,
            "coordinator": self.local_node_id,
            "winner_node": self.winner.node_id,
            "support": self.support,
            "total_n": self.total_n,
            "confidence": round(self.confidence, 4),
            "nodes": [
                {
                    "node_id": m.node_id,
                    "model": m.model,
                    "cluster_size": m.cluster_size,
                    "n": m.n,
                    "confidence": m.confidence,
                    "weight": round(vote_weight(m), 4),
                    "latency_s": round(m.latency_s, 3),
                    "group": gi,
                }
                for gi, g in enumerate(self.groups)
                for m in g
            ],
            "groups": [{"support": sum(m.cluster_size for m in g), "n": sum(m.n for m in g),
                        "nodes": [m.node_id for m in g]} for g in self.groups],
        }


def vote_weight(vote: SwarmVote) -> float:
    """A swarm's weight in the ``weighted`` strategy: its support × its confidence."""
    return vote.cluster_size * vote.confidence


def clears_floor(vote: SwarmVote, floor: float) -> bool:
    """Whether ``latency`` may take ``vote`` without waiting for the others."""
    return vote.confidence >= floor


def cross_vote(
    local: V,
    peers: Sequence[V],
    *,
    strategy: str = "weighted",
    similarity: Similarity = answer_similarity,
    threshold: float = DEFAULT_THRESHOLD,
    floor: float = DEFAULT_FLOOR,
    arrival: Sequence[str] = (),
) -> CrossVoteResult[V]:
    """Pool ``local`` and ``peers`` votes and pick one answer by ``strategy``.

    Votes are visited local first, then by cluster size; a node id seen twice keeps only
    its first vote. The votes are grouped by agreement (star clustering, the local vote's
    threshold) whatever the strategy; ``support`` and ``confidence`` describe the group
    holding the winner. ``weighted``: groups ordered by summed weight (support ×
    confidence), then support, then the group holding the local vote; inside the winning
    group the heaviest vote (then the largest cluster, then the earliest visited) answers.
    ``best_of_n``: the answer with the best local quality score. ``latency``: the first
    node in ``arrival`` (node ids in the order their votes arrived; default: by
    ``latency_s``) whose confidence is at least ``floor``. Deterministic for equal inputs.
    """
    if strategy not in FEDERATION_STRATEGIES:
        raise ValueError(f"unknown federation strategy {strategy!r}; expected one of {', '.join(FEDERATION_STRATEGIES)}")
    seen: set[str] = set()
    votes: list[V] = []
    for vote in (local, *sorted(peers, key=lambda v: (-v.cluster_size, -v.confidence, v.node_id))):
        if vote.node_id in seen:
            continue
        seen.add(vote.node_id)
        votes.append(vote)

    answers = [v.candidate() for v in votes]
    k = len(votes)
    sim = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            sim[i, j] = sim[j, i] = similarity(answers[i], answers[j])
    clusters = star_clusters(sim, [[i] for i in range(k)], threshold,
                             weights=[max(vote_weight(v), 1e-9) for v in votes])
    groups = [tuple(votes[i] for i in c) for c in clusters]
    groups.sort(
        key=lambda g: (sum(vote_weight(m) for m in g), sum(m.cluster_size for m in g), local in g),
        reverse=True,
    )
    fallback = None
    winner: V | None = None
    if strategy == "best_of_n" and k > 1:
        winner = votes[_vote(answers, strategy="quality", threshold=threshold).winner]
    elif strategy == "latency":
        order = list(arrival) or [v.node_id for v in sorted(votes, key=lambda v: v.latency_s)]
        by_id = {v.node_id: v for v in votes}
        winner = next((by_id[nid] for nid in order if nid in by_id and clears_floor(by_id[nid], floor)), None)
        if winner is None:
            fallback = f"no vote reached confidence {floor:g}: weighted over the {k} that arrived"
    if winner is None:
        winner = max(groups[0], key=lambda v: (vote_weight(v), v.cluster_size, -votes.index(v)))
    groups.sort(key=lambda g: winner not in g)  # stable: the winner's group first, the others as ranked
    best = groups[0]
    support = sum(m.cluster_size for m in best)
    total_n = sum(v.n for v in votes)
    return CrossVoteResult(
        winner=winner,
        support=support,
        total_n=total_n,
        confidence=support / total_n if total_n else 0.0,
        groups=tuple(groups),
        local_node_id=local.node_id,
        strategy=strategy,
        fallback=fallback,
    )
