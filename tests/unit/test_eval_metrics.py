"""The evaluation harness's arithmetic: pass@k, selection efficiency, AUROC, summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from localswarm.eval.metrics import auroc, pass_at_k, percentile, selection_efficiency
from localswarm.eval.report import ProblemEval, group_samples, summarise, write_section


def test_pass_at_k_known_values() -> None:
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 = c / n
    assert pass_at_k(5, 1, 5) == 1.0  # any of all five
    assert pass_at_k(5, 1, 2) == pytest.approx(1 - 6 / 10)  # 1 - C(4,2)/C(5,2)
    assert pass_at_k(5, 4, 2) == 1.0  # fewer failures than draws


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, 1, 0), (5, 1, 6), (5, -1, 1)])
def test_pass_at_k_rejects_nonsense(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_selection_efficiency() -> None:
    assert selection_efficiency(0.5, 0.3, 0.7) == pytest.approx(0.5)
    assert selection_efficiency(0.7, 0.3, 0.7) == pytest.approx(1.0)  # as good as the oracle
    assert selection_efficiency(0.3, 0.3, 0.7) == pytest.approx(0.0)  # chance
    assert selection_efficiency(0.1, 0.3, 0.7) == pytest.approx(-0.5)  # worse than chance
    assert selection_efficiency(0.0, 0.0, 0.0) is None  # nothing passes: choice cannot matter
    assert selection_efficiency(0.4, 0.4, 0.4) is None  # all-or-nothing problems only


def test_auroc_known_inputs() -> None:
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5  # ties count one half
    # 3 positives x 2 negatives = 6 pairs; (0.7 vs 0.8) is the only misordered pair
    assert auroc([0.9, 0.7, 0.95, 0.8, 0.1], [1, 1, 1, 0, 0]) == pytest.approx(5 / 6)
    # one tie between a positive and a negative: half a pair
    assert auroc([0.6, 0.4, 0.6], [1, 0, 0]) == pytest.approx(0.75)


def test_auroc_matches_pairwise_definition() -> None:
    import random

    rng = random.Random(7)
    scores = [round(rng.random(), 1) for _ in range(60)]
    labels = [rng.random() < 0.4 for _ in range(60)]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    brute = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
    assert auroc(scores, labels) == pytest.approx(brute)


def test_auroc_undefined_with_one_class() -> None:
    assert auroc([0.1, 0.9], [1, 1]) is None
    assert auroc([0.1, 0.9], [0, 0]) is None
    with pytest.raises(ValueError):
        auroc([0.1], [1, 0])


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([0, 10], 95) == pytest.approx(9.5)


def _pe(passed: list[bool], voted: int, quality: int, conf: float, exec_: int | None = None) -> ProblemEval:
    n = len(passed)
    return ProblemEval(task_id="t", passed=passed, how=["function"] * n, finish=["stop"] * n,
                       voted=voted, voted_quality=quality, confidence=conf, cluster_size=1,
                       vote_ms=1.0, vote_quality_ms=0.5, statuses=["passed" if p else "failed" for p in passed],
                       voted_exec=voted if exec_ is None else exec_, exec_examples=int(exec_ is not None))


def test_summarise_figures() -> None:
    evals = [
        _pe([True, True, False, False], voted=0, quality=2, conf=0.9),   # vote picks a pass
        _pe([False, False, False, True], voted=0, quality=3, conf=0.2, exec_=3),  # vote misses it, exec not
        _pe([False] * 4, voted=1, quality=1, conf=0.3),
        _pe([True] * 4, voted=2, quality=2, conf=0.8),
    ]
    s = summarise(evals, 4)
    assert s["single_pass1"] == pytest.approx((0.5 + 0.25 + 0 + 1) / 4)
    assert s["random_pass1"] == s["single_pass1"]
    assert s["voted_pass1"] == pytest.approx(0.5)
    assert s["quality_pass1"] == pytest.approx(0.5)
    assert s["oracle_passN"] == pytest.approx(0.75)
    assert s["pass_at_k"][4] == pytest.approx(0.75)
    assert s["selection_efficiency"] == pytest.approx((0.5 - 0.4375) / (0.75 - 0.4375))
    assert s["auroc"] == 1.0  # the two passing winners have the highest confidence
    assert s["mixed_problems"] == 2 and s["mixed_voted_pass"] == 1
    assert s["exec_pass1"] == pytest.approx(0.75) and s["exec_selection_efficiency"] == pytest.approx(1.0)
    assert s["exec_problems_with_examples"] == 1
    iv = s["intervals"]
    assert iv["deciding"] == 2
    lo, hi = iv["exec"]["pass1"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0 and lo < hi


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_problems() -> None:
    from localswarm.eval.metrics import bootstrap_ci

    def mean(c):
        return float(c["x"].mean())

    small = bootstrap_ci({"x": [1, 0] * 10}, mean, seed=1)
    large = bootstrap_ci({"x": [1, 0] * 500}, mean, seed=1)
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 3
    assert bootstrap_ci({"x": [1.0] * 5}, lambda c: None) is None
    with pytest.raises(ValueError):
        bootstrap_ci({"x": [1], "y": [1, 2]}, mean)


def test_summarise_single_sample_has_no_vote_figures() -> None:
    s = summarise([ProblemEval("t", [True], ["body"], ["stop"], statuses=["passed"])], 1)
    assert s["single_pass1"] == 1.0 and "voted_pass1" not in s


def test_group_samples_keeps_only_complete_problems() -> None:
    recs = [{"task_id": "a", "sample": i, "text": str(i)} for i in range(3)]
    recs += [{"task_id": "b", "sample": 0, "text": "x"}]
    recs += [{"task_id": "a", "sample": 1, "text": "retry"}]  # a resumed run's later record wins
    full, partial = group_samples(recs, 3)
    assert list(full) == ["a"] and partial == ["b"]
    assert [r["text"] for r in full["a"]] == ["0", "retry", "2"]


def test_write_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    doc = tmp_path / "consensus.md"
    write_section(doc, "model A, N=5", "### A\nfirst\n")
    doc.write_text(doc.read_text() + "\n## Hand-written notes\nkeep me\n")
    write_section(doc, "model B, N=5", "### B\nother\n")
    write_section(doc, "model A, N=5", "### A\nsecond\n")
    text = doc.read_text()
    assert "second" in text and "first" not in text
    assert "keep me" in text and "### B" in text
    assert text.count("<!-- eval:model-A-N=5 begin -->") == 1


def test_seeds_are_distinct_per_problem_and_sample() -> None:
    from localswarm.eval.sampling import GenConfig

    cfg = GenConfig(n=5, seed=1234)
    seeds = {cfg.seed_for(p, s) for p in range(164) for s in range(5)}
    assert len(seeds) == 164 * 5


@pytest.mark.parametrize("url,want", [
    ("http://h:1", "http://h:1/v1"),
    ("http://h:1/", "http://h:1/v1"),
    ("http://h:1/v1/", "http://h:1/v1"),
    ("http://h:1/v1/chat/completions", "http://h:1/v1"),
])
def test_base_url_normalised(url: str, want: str) -> None:
    from localswarm.eval.sampling import normalise_base_url

    assert normalise_base_url(url) == want


def test_cli_dispatch() -> None:
    from localswarm.eval.__main__ import main

    assert main(["nope"]) == 2
    assert main(["--help"]) == 0
    assert main(["humaneval"]) == 2  # needs exactly one source


def test_optillm_rule_reimplementation() -> None:
    from localswarm.eval.report import optillm_sc_choice

    a = "def f(x):\n    return x + 1\n"
    b = "def f(x):\n    return x + 1  # add one\n"
    c = "completely different text about something else entirely"
    assert optillm_sc_choice([c, a, b], ["stop"] * 3) == 1  # largest cluster's first member
    assert optillm_sc_choice([a, b, c], ["length", "stop", "stop"]) == 1  # truncated dropped
    assert optillm_sc_choice([a, ""], ["length", "stop"]) is None  # nothing left
    assert optillm_sc_choice([c, a], ["stop", "stop"]) == 0  # tie: first cluster wins
