"""Figures over several independent runs: per run and pooled, problems resampled together."""

from __future__ import annotations

import pytest

from localswarm.eval.report import ProblemEval
from localswarm.eval.runs import common_task_ids, multi_run_figures, render_multi


def pe(tid: str, passed: list[bool], voted: int, quality: int = 0, exec_: int | None = None) -> ProblemEval:
    return ProblemEval(task_id=tid, passed=passed, how=["function"] * len(passed), finish=["stop"] * len(passed),
                       voted=voted, voted_quality=quality, voted_exec=voted if exec_ is None else exec_)


def test_per_run_and_pooled_figures() -> None:
    T, F = True, False
    run_a = [pe("p0", [T, F], voted=0), pe("p1", [F, F], voted=0), pe("p2", [T, T], voted=1)]
    run_b = [pe("p0", [T, F], voted=1, exec_=0), pe("p1", [F, T], voted=0), pe("p2", [T, T], voted=0)]
    fig = multi_run_figures([run_a, run_b], 2, resamples=200)
    a, b, pooled = fig["runs"][0], fig["runs"][1], fig["pooled"]
    # run a: random (0.5 + 0 + 1) / 3, oracle 2/3, similarity picks the passing one on p0
    assert a["random"] == pytest.approx(0.5) and a["oracle"] == pytest.approx(2 / 3)
    assert a["similarity"]["pass1"] == pytest.approx(2 / 3) and a["similarity"]["se"] == pytest.approx(1.0)
    assert a["deciding"] == 1
    # run b: random (0.5 + 0.5 + 1) / 3, oracle 1, similarity fails both deciding problems
    assert b["similarity"]["pass1"] == pytest.approx(1 / 3) and b["similarity"]["se"] == pytest.approx(-1.0)
    assert b["exec"]["pass1"] == pytest.approx(2 / 3) and b["exec"]["se"] == pytest.approx(0.0)
    assert b["deciding"] == 2
    # pooled: per-problem means over the runs
    assert pooled["random"] == pytest.approx((0.5 + 0.25 + 1) / 3)
    assert pooled["oracle"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert pooled["similarity"]["pass1"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert pooled["deciding"] == 1.5
    lo, hi = pooled["similarity"]["pass1_ci"]
    assert lo <= pooled["similarity"]["pass1"] <= hi
    text = render_multi(fig, ["A", "B"])
    assert "| `similarity` | 66.7% [" in text and "| `exec` | 66.7% [" in text
    assert "| `similarity` | 1.00 [" in text and "| 1 of 3 | 2 of 3 | 1.5 of 3 |" in text


def test_runs_must_cover_the_same_problems() -> None:
    with pytest.raises(ValueError, match="same problems"):
        multi_run_figures([[pe("p0", [True], 0)], [pe("p1", [True], 0)]], 1)
    assert common_task_ids([{"a": [], "b": []}, {"b": [], "c": []}]) == {"b"}
