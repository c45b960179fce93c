"""Cross-machine consensus: pooled support, global confidence, contributing nodes, and the
same agreement test as a local vote (AST-normalised code, canonical tool calls)."""

from __future__ import annotations

from localswarm.consensus import DEFAULT_THRESHOLD, Candidate, answer_similarity, cross_vote, text_similarity
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
    assert result.winner.message.content in (GOOD, GOOD2)
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
    assert cross_vote(a, [b]).support == 4


def test_metadata_names_nodes() -> None:
    meta = cross_vote(vote("local", GOOD, 3), [vote("p1", GOOD2, 2), vote("p2", BAD, 1)]).to_metadata()
    assert meta["coordinator"] == "local" and meta["support"] == 5 and meta["total_n"] == 15
    assert {n["node_id"] for n in meta["nodes"]} == {"local", "p1", "p2"}
    assert meta["groups"][0]["nodes"] == ["local", "p1"]


def test_agreement_is_the_local_votes() -> None:
    """Two answers agree across machines exactly when they would agree in one swarm."""
    renamed = "def add(x, y):\n    return x + y\n"
    a, b = Candidate("a", GOOD), Candidate("b", renamed)
    assert answer_similarity(a, b) == text_similarity(GOOD, renamed) >= DEFAULT_THRESHOLD
    assert answer_similarity(Candidate("a", GOOD), Candidate("c", BAD)) < DEFAULT_THRESHOLD
    result = cross_vote(vote("local", BAD, 3), [vote("p1", GOOD, 3), vote("p2", renamed, 3)])
    assert result.support == 6 and sorted(result.agreeing_nodes) == ["p1", "p2"]


def test_tool_calls_agree_in_canonical_form() -> None:
    """Key order and whitespace in arguments do not matter; another function never agrees."""
    def reply(node: str, name: str, args: str) -> VoteReply:
        calls = [{"id": node, "type": "function", "function": {"name": name, "arguments": args}}]
        return VoteReply(node_id=node, message=AnswerMessage(tool_calls=calls), finish_reason="tool_calls",
                         cluster_size=2, n=3, cohesion=1, confidence=0.66, latency_s=0, model="m")

    a = reply("a", "bash", '{"command": "ls", "description": "list"}')
    b = reply("b", "bash", '{ "description" : "list",\n "command" : "ls" }')
    c = reply("c", "read", '{"command": "ls", "description": "list"}')
    assert answer_similarity(a.candidate(), b.candidate()) == 1.0
    assert answer_similarity(a.candidate(), c.candidate()) == 0.0
    assert answer_similarity(a.candidate(), Candidate("t", "ls")) == 0.0
    assert sorted(cross_vote(a, [b, c]).agreeing_nodes) == ["a", "b"]


# -- federation strategies ---------------------------------------------------------------

TRUNCATED = "```python\ndef add(a, b):\n    return (a +\n```"  # does not parse: the quality score ranks it low


def test_weighted_weighs_support_by_confidence() -> None:
    """3 of 3 tightly agreeing outweighs 2+2 from two split swarms (3×1.0 > 2×0.4 + 2×0.4)."""
    result = cross_vote(vote("local", BAD, 3, n=3), [vote("p1", GOOD, 2), vote("p2", GOOD2, 2)], strategy="weighted")
    assert result.winner.node_id == "local" and result.strategy == "weighted"
    assert result.support == 3 and result.total_n == 13
    # With confident peers the pooled group wins again: 2×1.0 + 2×1.0 > 3×0.6.
    result = cross_vote(vote("local", BAD, 3), [vote("p1", GOOD, 2, n=2), vote("p2", GOOD2, 2, n=2)])
    assert sorted(result.agreeing_nodes) == ["p1", "p2"] and result.support == 4
    assert result.to_metadata()["nodes"][0]["weight"] == 2.0


def test_best_of_n_takes_the_best_single_answer_by_quality() -> None:
    """Two swarms agree on an answer that does not parse; the lone parsing answer wins."""
    result = cross_vote(vote("local", TRUNCATED, 4), [vote("p1", TRUNCATED + " ", 4), vote("p2", GOOD, 1)],
                        strategy="best_of_n")
    assert result.winner.node_id == "p2" and result.strategy == "best_of_n"
    weighted = cross_vote(vote("local", TRUNCATED, 4), [vote("p1", TRUNCATED + " ", 4), vote("p2", GOOD, 1)])
    assert weighted.winner.node_id in ("local", "p1")  # the same votes, weighted: the majority


def test_latency_takes_the_first_vote_over_the_floor() -> None:
    local, p1, p2 = vote("local", GOOD, 3), vote("p1", BAD, 1, conf=0.2), vote("p2", GOOD2, 4, conf=0.8)
    result = cross_vote(local, [p1, p2], strategy="latency", floor=0.5, arrival=["p1", "p2", "local"])
    assert result.winner.node_id == "p2" and result.fallback is None  # p1 came first but is under the floor
    result = cross_vote(local, [p1, p2], strategy="latency", floor=0.5, arrival=["local", "p2"])
    assert result.winner.node_id == "local"
    # Nothing clears the floor: weighted over what arrived, and said.
    low = cross_vote(vote("local", GOOD, 1, conf=0.2), [p1], strategy="latency", floor=0.9, arrival=["p1", "local"])
    assert low.fallback and "0.9" in low.fallback and low.winner.node_id == "local"
    assert low.to_metadata()["fallback"] == low.fallback


def test_unknown_federation_strategy_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="weighted, best_of_n, latency"):
        cross_vote(vote("local", GOOD, 1), [], strategy="majority")
