"""Cross-swarm consensus: pool the votes of several machines (pure, no I/O).

Each swarm returns its best answer (the medoid of its winning cluster), the size of that
cluster and its N. The coordinator clusters those answers with a similarity function and
scores each group by pooled support, the sum of cluster sizes (pooled self-consistency).
Global confidence is the winning support divided by the total N of every vote counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Indel

from localswarm.federation.protocol import AnswerMessage, VoteReply

__all__ = [
    "DEFAULT_THRESHOLD",
    "CrossVoteGroup",
    "CrossVoteResult",
    "Similarity",
    "answer_text",
    "cross_vote",
    "token_similarity",
]

Similarity = Callable[[str, str], float]

DEFAULT_THRESHOLD = 0.8
_TOKEN = re.compile(r"\w+|[^\w\s]")


def token_similarity(a: str, b: str) -> float:
    """Normalised Indel similarity over word/punctuation tokens, in [0, 1]."""
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    if not ta and not tb:
        return 1.0
    return float(Indel.normalized_similarity(ta, tb))


def answer_text(message: AnswerMessage) -> str:
    """The text compared between answers: content, then each tool call's name and arguments."""
    parts = [message.content or ""]
    for call in message.tool_calls or ():
        fn = call.get("function") if isinstance(call.get("function"), dict) else call
        name = fn.get("name", "")
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = json.dumps(args, sort_keys=True)
        parts.append(f"{name}({args})")
    return "\n".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class CrossVoteGroup:
    """Votes whose answers agree; ``representative`` is the one with the largest cluster."""

    members: tuple[VoteReply, ...]
    representative: VoteReply
    support: int
    n: int

    @property
    def node_ids(self) -> list[str]:
        """Nodes whose answer falls in this group."""
        return [m.node_id for m in self.members]


@dataclass(frozen=True, slots=True)
class CrossVoteResult:
    """The pooled decision and the metadata naming who contributed."""

    winner: VoteReply
    support: int
    total_n: int
    confidence: float
    groups: tuple[CrossVoteGroup, ...]
    local_node_id: str

    @property
    def message(self) -> AnswerMessage:
        """The winning answer."""
        return self.winner.message

    @property
    def contributing_nodes(self) -> list[str]:
        """Every node whose vote was counted, the local node first."""
        return [m.node_id for g in self.groups for m in g.members]

    @property
    def agreeing_nodes(self) -> list[str]:
        """Nodes whose answer is in the winning group."""
        return self.groups[0].node_ids

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
                for m in g.members
            ],
            "groups": [{"support": g.support, "n": g.n, "nodes": g.node_ids} for g in self.groups],
        }


def cross_vote(
    local: VoteReply,
    peers: Sequence[VoteReply],
    *,
    similarity: Similarity = token_similarity,
    threshold: float = DEFAULT_THRESHOLD,
) -> CrossVoteResult:
    """Pool ``local`` and ``peers`` votes and pick the answer with the most support.

    Answers are grouped greedily: each vote joins the first group whose representative
    is at least ``threshold`` similar, else starts a new group. Votes are visited local
    first, then by cluster size, so groups form around the strongest answers. Ties in
    support go to the group with more local-side evidence (larger summed confidence),
    then to the group holding the local vote, so the outcome is deterministic. A node id
    seen twice keeps only its first vote.
    """
    seen: set[str] = set()
    votes: list[VoteReply] = []
    for vote in (local, *sorted(peers, key=lambda v: (-v.cluster_size, -v.confidence, v.node_id))):
        if vote.node_id in seen:
            continue
        seen.add(vote.node_id)
        votes.append(vote)

    texts = {v.node_id: answer_text(v.message) for v in votes}
    buckets: list[list[VoteReply]] = []
    for vote in votes:
        for bucket in buckets:
            if similarity(texts[vote.node_id], texts[_representative(bucket).node_id]) >= threshold:
                bucket.append(vote)
                break
        else:
            buckets.append([vote])

    total_n = sum(v.n for v in votes)
    groups = [
        CrossVoteGroup(
            members=tuple(b),
            representative=_representative(b),
            support=sum(v.cluster_size for v in b),
            n=sum(v.n for v in b),
        )
        for b in buckets
    ]
    groups.sort(
        key=lambda g: (g.support, sum(m.confidence for m in g.members), local in g.members),
        reverse=True,
    )
    best = groups[0]
    return CrossVoteResult(
        winner=best.representative,
        support=best.support,
        total_n=total_n,
        confidence=best.support / total_n if total_n else 0.0,
        groups=tuple(groups),
        local_node_id=local.node_id,
    )


def _representative(bucket: list[VoteReply]) -> VoteReply:
    # First max wins, and the bucket's first member is the earliest visited (local first).
    return max(bucket, key=lambda v: (v.cluster_size, v.confidence))
