"""The cross-machine vote: pool several swarms' votes, judged as the local vote judges (pure).

Each swarm sends its best answer (the medoid of its winning cluster), the size of that
cluster and its N. Agreement between two swarms' answers is the local engine's: tool calls
in their canonical form (same function names, canonical arguments), otherwise the text
similarity with code normalised through its AST. The answers are clustered by the same
star clustering as local answers, each weighted by its cluster size, with the same
threshold; a group's support is the sum of its cluster sizes (pooled self-consistency).
Global confidence is the winning support divided by the total N of every vote counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from .cluster import star_clusters
from .model import Candidate
from .similarity import text_similarity
from .toolcalls import call_list_similarity, name_signature, parse_tool_calls, sorted_calls
from .vote import DEFAULT_THRESHOLD

__all__ = ["CrossVoteResult", "SwarmVote", "answer_similarity", "cross_vote"]

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
                    "latency_s": round(m.latency_s, 3),
                    "group": gi,
                }
                for gi, g in enumerate(self.groups)
                for m in g
            ],
            "groups": [{"support": sum(m.cluster_size for m in g), "n": sum(m.n for m in g),
                        "nodes": [m.node_id for m in g]} for g in self.groups],
        }


def cross_vote(
    local: V,
    peers: Sequence[V],
    *,
    similarity: Similarity = answer_similarity,
    threshold: float = DEFAULT_THRESHOLD,
) -> CrossVoteResult[V]:
    """Pool ``local`` and ``peers`` votes and pick the answer with the most support.

    Votes are visited local first, then by cluster size; a node id seen twice keeps only
    its first vote. Inside a group the representative is the vote with the largest cluster
    (then confidence, then the earliest visited). Ties in support go to the group with more
    summed confidence, then to the group holding the local vote, so the outcome is
    deterministic.
    """
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
                             weights=[float(v.cluster_size) for v in votes])
    groups = [tuple(votes[i] for i in c) for c in clusters]
    groups.sort(
        key=lambda g: (sum(m.cluster_size for m in g), sum(m.confidence for m in g), local in g),
        reverse=True,
    )
    best = groups[0]
    winner = max(best, key=lambda v: (v.cluster_size, v.confidence, -votes.index(v)))
    support = sum(m.cluster_size for m in best)
    total_n = sum(v.n for v in votes)
    return CrossVoteResult(
        winner=winner,
        support=support,
        total_n=total_n,
        confidence=support / total_n if total_n else 0.0,
        groups=tuple(groups),
        local_node_id=local.node_id,
    )
