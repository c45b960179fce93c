"""Strategies (similarity, quality, fastest), choosing one per request, and early quorum."""

from __future__ import annotations

import pytest

from localswarm.consensus import (
    Candidate,
    quorum_reached,
    required_votes,
    strategy_from_request,
    vote,
)
from tests.unit.test_consensus_samples import (
    CLOSE_A,
    CLOSE_B,
    CLOSE_BROKEN,
    CLOSE_C,
    CLOSE_SORTED,
    CLOSE_TRUNCATED,
    PAREN_A,
)

# ---------------------------------------------------------------- strategy_from_request


def test_header_wins_over_body_and_default() -> None:
    body = {"model": "swarm", "localswarm_strategy": "quality"}
    assert strategy_from_request({"X-LocalSwarm-Strategy": "Fastest"}, body, "similarity") == "fastest"
    assert strategy_from_request({}, body, "similarity") == "quality"
    assert strategy_from_request({}, {"localswarm": {"strategy": "fastest"}}) == "fastest"
    assert strategy_from_request(None, None, "quality") == "quality"
    assert strategy_from_request({}, {}) == "similarity"
    assert strategy_from_request({"x-localswarm-strategy": "  "}, {}, "fastest") == "fastest"


def test_asgi_style_header_pairs() -> None:
    headers = [(b"content-type", b"application/json"), (b"x-localswarm-strategy", b"quality")]
    assert strategy_from_request(headers, {}) == "quality"


def test_unknown_strategy_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"'best'.*header x-localswarm-strategy.*similarity, quality, fastest"):
        strategy_from_request({"x-localswarm-strategy": "best"}, {})
    with pytest.raises(ValueError, match="localswarm_strategy"):
        strategy_from_request({}, {"localswarm_strategy": 3})
    with pytest.raises(ValueError, match="localswarm.strategy"):
        strategy_from_request({}, {"localswarm": {"strategy": "vote"}})
    with pytest.raises(ValueError, match="configuration"):
        strategy_from_request({}, {}, "majority")


def test_strategy_fields_never_go_upstream() -> None:
    """The upstream policy drops localswarm's own fields (and does not mutate the body)."""
    from localswarm.upstream import upstream_body

    body = {"model": "m", "messages": [], "localswarm_strategy": "quality", "localswarm": {}}
    assert upstream_body(body) == {"model": "m", "messages": []}
    assert "localswarm" in body  # not mutated


# ---------------------------------------------------------------- quality / fastest


def test_quality_prefers_complete_parsing_answers_when_all_are_flawed() -> None:
    cs = [
        Candidate("inst-0", CLOSE_TRUNCATED, finish_reason="length", latency_s=1.0),
        Candidate("inst-1", CLOSE_BROKEN, latency_s=2.0),
        Candidate("inst-2", CLOSE_A, finish_reason="length", latency_s=3.0),
    ]
    r = vote(cs, strategy="quality")
    assert r.strategy == "quality"
    assert r.excluded == []  # every answer was bad, so none was dropped
    assert r.winner == 2  # the only one whose code parses


def test_quality_avoids_an_answer_of_absurd_length() -> None:
    stub = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    cs = [
        Candidate("inst-0", stub, latency_s=0.1),
        Candidate("inst-1", CLOSE_SORTED, latency_s=0.9),
        Candidate("inst-2", CLOSE_A, latency_s=0.5),
        Candidate("inst-3", CLOSE_B, latency_s=0.7),
    ]
    r = vote(cs, strategy="quality")
    assert r.winner == 2  # complete, sane length, agreed with by inst-3, faster than inst-3
    assert sorted(r.cluster) == [2, 3]


def test_fastest_picks_lowest_latency_usable_answer() -> None:
    cs = [
        Candidate("inst-0", CLOSE_TRUNCATED, finish_reason="length", latency_s=0.2),
        Candidate("inst-1", CLOSE_SORTED, latency_s=0.9),
        Candidate("inst-2", CLOSE_A, latency_s=0.4),
        Candidate("inst-3", CLOSE_B, latency_s=0.4),
    ]
    r = vote(cs, strategy="fastest")
    assert r.winner == 2
    assert r.excluded == [0]
    assert sorted(r.cluster) == [2, 3]
    assert r.confidence == pytest.approx(2 / 4 * r.cohesion)


def test_fastest_without_timings_uses_arrival_order() -> None:
    cs = [Candidate("inst-0", PAREN_A), Candidate("inst-1", CLOSE_A)]
    assert vote(cs, strategy="fastest").winner == 0


def test_strategies_return_the_winners_tool_calls_verbatim() -> None:
    c = {"id": "c1", "type": "function", "function": {"name": "read", "arguments": '{"filePath": "a"}'}}
    cs = [Candidate("inst-0", "", [c], "tool_calls", 0.3), Candidate("inst-1", "Hello", latency_s=0.1)]
    assert vote(cs, strategy="fastest").tool_calls is None
    assert vote(cs, strategy="quality").tool_calls in ([c], None)
    cs[0].latency_s = 0.05
    assert vote(cs, strategy="fastest").tool_calls == [c]


# ---------------------------------------------------------------- early quorum


def test_quorum_default_is_strict_majority() -> None:
    assert required_votes(5) == 3
    assert required_votes(4) == 3
    assert required_votes(1) == 1
    assert required_votes(5, 2) == 2
    assert required_votes(5, 0.5) == 3
    assert required_votes(4, 0.5) == 2
    assert required_votes(8, 1.0) == 8
    for bad in (0, 6, 1.5, 0.0, True, "3"):
        with pytest.raises(ValueError):
            required_votes(5, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        required_votes(0)


def test_quorum_reached_on_agreeing_code() -> None:
    agree = [Candidate("inst-0", CLOSE_A), Candidate("inst-1", CLOSE_B)]
    assert not quorum_reached(agree, 5)  # 2 of 5 is not a majority
    agree.append(Candidate("inst-2", CLOSE_C))
    assert quorum_reached(agree, 5)
    assert quorum_reached(agree[:2], 5, quorum=2)
    assert quorum_reached(agree[:2], 5, quorum=0.4)


def test_quorum_not_reached_by_disagreeing_or_bad_answers() -> None:
    mixed = [Candidate("inst-0", CLOSE_A), Candidate("inst-1", CLOSE_SORTED), Candidate("inst-2", PAREN_A)]
    assert not quorum_reached(mixed, 5)
    truncated = [Candidate(f"inst-{i}", CLOSE_TRUNCATED, finish_reason="length") for i in range(3)]
    assert not quorum_reached(truncated, 5)
    two_good = truncated[:1] + [Candidate("inst-1", CLOSE_A), Candidate("inst-2", CLOSE_B)]
    assert not quorum_reached(two_good, 5)
    two_good.append(Candidate("inst-3", CLOSE_C))
    assert quorum_reached(two_good, 5)
