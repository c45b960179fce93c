"""Cross-swarm consensus: pooled support, global confidence, contributing nodes."""

from __future__ import annotations

from localswarm.federation.crossvote import answer_text, cross_vote, token_similarity
from localswarm.federation.protocol import AnswerMessage, VoteReply

GOOD = "def add(a, b):\n    return a + b\n"
GOOD2 = "def add(a, b):\n    return a+b  # sum\n"
BAD = "def add(a, b):\n    raise NotImplementedError('todo, will write later, sorry')\n"


def vote(node: str, text: str, k: int, n: int = 5, conf: float | None = None) -> VoteReply:
    return VoteReply(node_id=node, message=AnswerMessage(content=text), finish_reason="stop", cluster_size=k, n=n,
                     cohesion=0.9, confidence=k / n if conf is None else conf, latency_s=0.1, model="m")


def test_pooled_support_beats_largest_single_cluster() -> None:
    """Two peers agreeing with 3+3 outweigh one node with 4 on another answer."""
    local = vote("local", BAD, 4)
    result = cross_vote(local, [vote("p1", GOOD, 3), vote("p2", GOOD2, 3)])
    assert result.message.content in (GOOD, GOOD2)
    assert result.support == 6
    assert result.total_n == 15
    assert abs(result.confidence - 6 / 15) < 1e-9
    assert sorted(result.agreeing_nodes) == ["p1", "p2"]
    assert result.contributing_nodes[0] in ("p1", "p2") and set(result.contributing_nodes) == {"local", "p1", "p2"}


def test_representative_is_largest_cluster() -> None:
    """Inside the winning group the answer of the largest local cluster is returned."""
    result = cross_vote(vote("local", GOOD2, 2), [vote("p1", GOOD, 4)])
    assert result.winner.node_id == "p1"
    assert result.support == 6 and result.total_n == 10


def test_no_peers_is_local_vote() -> None:
    local = vote("local", GOOD, 3)
    result = cross_vote(local, [])
    assert result.winner is local and result.confidence == 3 / 5


def test_tie_goes_to_local_group() -> None:
    """Equal support and confidence: the local answer wins, deterministically."""
    result = cross_vote(vote("local", BAD, 3), [vote("p1", GOOD, 3)])
    assert result.winner.node_id == "local"


def test_custom_similarity_and_duplicate_nodes() -> None:
    """The similarity is pluggable; a node voting twice counts once."""
    always = lambda a, b: 1.0  # noqa: E731
    result = cross_vote(vote("local", BAD, 1), [vote("p1", GOOD, 2), vote("p1", GOOD, 2)], similarity=always)
    assert result.support == 3 and result.total_n == 10
    assert len(result.groups) == 1


def test_tool_calls_are_compared() -> None:
    """Tool-call answers cluster by function name and arguments."""
    call = lambda args: [{"type": "function", "function": {"name": "read_file", "arguments": args}}]  # noqa: E731
    a = VoteReply(node_id="a", message=AnswerMessage(tool_calls=call('{"path": "x.py"}')), finish_reason="tool_calls",
                  cluster_size=2, n=3, cohesion=1, confidence=0.66, latency_s=0, model="m")
    b = VoteReply(node_id="b", message=AnswerMessage(tool_calls=call('{"path": "x.py"}')), finish_reason="tool_calls",
                  cluster_size=2, n=3, cohesion=1, confidence=0.66, latency_s=0, model="m")
    assert answer_text(a.message) == 'read_file({"path": "x.py"})'
    assert cross_vote(a, [b]).support == 4


def test_metadata_names_nodes() -> None:
    meta = cross_vote(vote("local", GOOD, 3), [vote("p1", GOOD2, 2), vote("p2", BAD, 1)]).to_metadata()
    assert meta["coordinator"] == "local" and meta["support"] == 5 and meta["total_n"] == 15
    assert {n["node_id"] for n in meta["nodes"]} == {"local", "p1", "p2"}
    assert meta["groups"][0]["nodes"] == ["local", "p1"]


def test_token_similarity() -> None:
    assert token_similarity("", "") == 1.0
    assert token_similarity(GOOD, GOOD) == 1.0
    assert token_similarity(GOOD, GOOD2) > 0.8 > token_similarity(GOOD, BAD)
