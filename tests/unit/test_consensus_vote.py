"""``vote`` on realistic replies: clustering, exclusion, confidence, degenerate agreement."""

from __future__ import annotations

import json

import pytest

from localswarm.consensus import Candidate, VoteResult, vote
from tests.unit.test_consensus_samples import (
    CLOSE_A,
    CLOSE_B,
    CLOSE_BROKEN,
    CLOSE_C,
    CLOSE_SORTED,
    CLOSE_TRUNCATED,
    PAREN_A,
    PAREN_B,
    PROSE_GIL_A,
    PROSE_GIL_B,
    PROSE_OFF_TOPIC,
)


def cands(*texts: str, **kw: object) -> list[Candidate]:
    return [Candidate(id=f"inst-{i}", text=t, **kw) for i, t in enumerate(texts)]  # type: ignore[arg-type]


def test_renamed_identical_code_beats_lone_different_answer() -> None:
    cs = cands(CLOSE_SORTED, CLOSE_A, CLOSE_B)
    r = vote(cs)
    assert r.winner in (1, 2)
    assert sorted(r.cluster) == [1, 2]
    assert sorted(map(sorted, r.clusters)) == [[0], [1, 2]]
    assert r.excluded == []
    assert r.tool_calls is None
    assert 0 < r.confidence <= 2 / 3
    assert r.confidence == pytest.approx(2 / 3 * r.cohesion)


def test_majority_of_three_renamed_copies_against_two_outliers() -> None:
    cs = cands(PAREN_A, CLOSE_C, CLOSE_SORTED, CLOSE_B, CLOSE_A)
    r = vote(cs)
    assert sorted(r.cluster) == [1, 3, 4]
    assert r.winner in (1, 3, 4)
    meta = r.metadata(cs)
    assert meta["votes"] == 3 and meta["n"] == 5
    assert meta["winner"] == cs[r.winner].id


def test_medoid_is_the_most_central_member() -> None:
    # B is closer to both A and C than they are to each other, so B is the medoid.
    cs = cands(CLOSE_A, CLOSE_C, CLOSE_B)
    r = vote(cs)
    assert sorted(r.cluster) == [0, 1, 2]
    sims = {0: 0.0, 1: 0.0, 2: 0.0}
    from localswarm.consensus.similarity import text_similarity

    for i in range(3):
        sims[i] = sum(text_similarity(cs[i].text, cs[j].text) for j in range(3) if j != i)
    assert r.winner == max(sims, key=sims.get)


def test_truncated_answer_is_excluded_even_when_it_would_agree() -> None:
    cs = [
        Candidate("inst-0", CLOSE_TRUNCATED, finish_reason="length"),
        Candidate("inst-1", CLOSE_TRUNCATED, finish_reason="length"),
        Candidate("inst-2", CLOSE_SORTED),
    ]
    r = vote(cs)
    assert r.excluded == [0, 1]
    assert r.winner == 2
    assert r.confidence == pytest.approx(1 / 3)
    assert any("truncated" in note for note in r.notes)


def test_finish_reason_length_is_excluded_even_if_code_parses() -> None:
    cs = [
        Candidate("inst-0", CLOSE_A, finish_reason="length"),
        Candidate("inst-1", CLOSE_SORTED),
    ]
    r = vote(cs)
    assert r.excluded == [0]
    assert r.winner == 1


def test_unparsable_python_is_excluded() -> None:
    cs = cands(CLOSE_BROKEN, CLOSE_BROKEN, CLOSE_A)
    r = vote(cs)
    assert r.excluded == [0, 1]
    assert r.winner == 2


def test_when_every_answer_is_bad_none_is_dropped() -> None:
    cs = [
        Candidate("inst-0", CLOSE_TRUNCATED, finish_reason="length"),
        Candidate("inst-1", CLOSE_BROKEN),
        Candidate("inst-2", CLOSE_TRUNCATED, finish_reason="length"),
    ]
    r = vote(cs)
    assert r.excluded == []
    assert sorted(r.cluster) == [0, 2]
    assert any("none dropped" in note for note in r.notes)


def test_empty_answer_is_excluded() -> None:
    cs = cands("", "", PROSE_GIL_A)
    r = vote(cs)
    assert r.excluded == [0, 1]
    assert r.winner == 2


def test_prose_answers_cluster() -> None:
    cs = cands(PROSE_OFF_TOPIC, PROSE_GIL_A, PROSE_GIL_B)
    r = vote(cs)
    assert sorted(r.cluster) == [1, 2]


def test_ties_between_equal_sized_clusters_go_to_cohesion() -> None:
    # PAREN_A/B normalise identically (cohesion ~0.86); CLOSE_A/C also do, but their raw
    # forms differ more (C carries example usage, ~0.77), so the paren pair wins the tie.
    cs = cands(CLOSE_A, CLOSE_C, PAREN_A, PAREN_B)
    r = vote(cs)
    assert sorted(r.cluster) == [2, 3]
    assert {tuple(sorted(c)) for c in r.clusters} == {(0, 1), (2, 3)}
    r2 = vote(cands(PAREN_A, PAREN_B, CLOSE_A, CLOSE_C))
    assert sorted(r2.cluster) == [0, 1]


def test_threshold_is_configurable() -> None:
    cs = cands(CLOSE_A, CLOSE_SORTED)
    assert len(vote(cs, threshold=0.8).clusters) == 2
    assert len(vote(cs, threshold=0.0).clusters) == 1
    with pytest.raises(ValueError):
        vote(cs, threshold=1.5)


def test_single_candidate_wins_with_full_confidence_and_n_one() -> None:
    cs = cands(CLOSE_A)
    r = vote(cs)
    assert (r.winner, r.confidence, r.cohesion, r.cluster) == (0, 1.0, 1.0, [0])
    assert r.metadata(cs)["n"] == 1
    assert r.degenerate is False


def test_empty_list_and_unknown_strategy_raise() -> None:
    with pytest.raises(ValueError):
        vote([])
    with pytest.raises(ValueError, match="similarity, quality, fastest"):
        vote(cands(CLOSE_A), strategy="bogus")


def test_degenerate_agreement_is_flagged() -> None:
    r = vote(cands(CLOSE_A, CLOSE_A, CLOSE_A))
    assert r.degenerate is True
    assert r.confidence == pytest.approx(1.0)
    assert any("identical" in note for note in r.notes)
    # Renamed copies agree but are not byte-identical: genuine agreement.
    assert vote(cands(CLOSE_A, CLOSE_B, CLOSE_C)).degenerate is False
    assert vote(cands(CLOSE_A)).degenerate is False


def test_metadata_is_json_and_uses_ids() -> None:
    cs = [
        Candidate("gpu-a", CLOSE_A),
        Candidate("gpu-b", CLOSE_B),
        Candidate("gpu-c", CLOSE_TRUNCATED, finish_reason="length"),
    ]
    r = vote(cs)
    meta = json.loads(json.dumps(r.metadata(cs)))
    assert meta["excluded"] == ["gpu-c"]
    assert set(meta["cluster"]) == {"gpu-a", "gpu-b"}
    assert meta["strategy"] == "similarity"
    for key in ("confidence", "votes", "n", "winner", "degenerate", "cohesion"):
        assert key in meta
    assert isinstance(r, VoteResult)


def test_unfenced_code_is_treated_as_code() -> None:
    bare = CLOSE_B.split("```python\n")[1].split("```")[0]
    cs = cands(bare, CLOSE_A, CLOSE_SORTED)
    r = vote(cs)
    assert sorted(r.cluster) == [0, 1]


def test_vote_is_deterministic_under_input_order() -> None:
    texts = [CLOSE_SORTED, CLOSE_A, CLOSE_B, PAREN_A]
    r1 = vote(cands(*texts))
    r2 = vote(cands(*reversed(texts)))
    assert texts[r1.winner] in (CLOSE_A, CLOSE_B)
    assert list(reversed(texts))[r2.winner] in (CLOSE_A, CLOSE_B)
