"""Figures over several independent runs (different seed bases) of the same problems.

One run of a tiny model on HumanEval has a handful of problems where the choice matters,
so one problem moves selection efficiency by about 0.1. This module puts every run side
by side on the problems all of them cover, each with a 95% bootstrap interval, and pools
them: per problem, each selection's pass rate averaged over the runs, then problems
resampled (a problem's runs stay together: they share its difficulty, so resampling
run-problem pairs separately would understate the width).
"""

from __future__ import annotations

from typing import Any

from localswarm.eval.metrics import bootstrap_ci, selection_efficiency
from localswarm.eval.report import ProblemEval, methods_for

__all__ = ["common_task_ids", "multi_run_figures", "render_multi"]


def common_task_ids(groupeds: list[dict[str, list[dict]]]) -> set[str]:
    """The problems every run has all samples for."""
    if not groupeds:
        return set()
    common = set(groupeds[0])
    for g in groupeds[1:]:
        common &= set(g)
    return common


def _columns(runs: list[list[ProblemEval]], n: int, methods: tuple[tuple[str, str], ...]) -> dict[str, list[float]]:
    """Per problem (same order in every run), each column averaged over the runs."""
    cols: dict[str, list[float]] = {"random": [], "oracle": [], "deciding": []}
    for name, _ in methods:
        cols[name] = []
    for per_problem in zip(*runs):
        k = len(per_problem)
        cols["random"].append(sum(sum(e.passed) / n for e in per_problem) / k)
        cols["oracle"].append(sum(float(any(e.passed)) for e in per_problem) / k)
        cols["deciding"].append(sum(float(0 < sum(e.passed) < n) for e in per_problem) / k)
        for name, attr in methods:
            cols[name].append(sum(float(e.passed[getattr(e, attr)]) for e in per_problem) / k)
    return cols


def _figures(cols: dict[str, list[float]], methods: tuple[tuple[str, str], ...], *,
             resamples: int, seed: int) -> dict[str, Any]:
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    rnd, orc = mean(cols["random"]), mean(cols["oracle"])
    out: dict[str, Any] = {"random": rnd, "oracle": orc, "problems": len(cols["random"]),
                           "deciding": round(sum(cols["deciding"]), 2)}
    for name, _ in methods:
        p1 = mean(cols[name])
        out[name] = {
            "pass1": p1,
            "pass1_ci": bootstrap_ci(cols, lambda c, k=name: float(c[k].mean()), resamples=resamples, seed=seed),
            "se": selection_efficiency(p1, rnd, orc) if p1 is not None else None,
            "se_ci": bootstrap_ci(cols, lambda c, k=name: selection_efficiency(
                float(c[k].mean()), float(c["random"].mean()), float(c["oracle"].mean())),
                resamples=resamples, seed=seed),
        }
    return out


def multi_run_figures(runs: list[list[ProblemEval]], n: int, *, resamples: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Per run and pooled: pass@1 and selection efficiency with 95% intervals per method.

    Every run must list the same problems in the same order. ``deciding`` is the number
    of problems where some but not all samples pass (pooled: the mean over runs).
    """
    ids = [[e.task_id for e in r] for r in runs]
    if any(x != ids[0] for x in ids):
        raise ValueError("runs must cover the same problems in the same order")
    methods = methods_for([e for r in runs for e in r])
    per_run = [_figures(_columns([r], n, methods), methods, resamples=resamples, seed=seed) for r in runs]
    pooled = _figures(_columns(runs, n, methods), methods, resamples=resamples, seed=seed)
    return {"methods": [m for m, _ in methods], "runs": per_run, "pooled": pooled, "n": n}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(ci: tuple[float, float] | None, percent: bool) -> str:
    if ci is None:
        return "n/a"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if percent else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _se(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def render_multi(fig: dict[str, Any], run_labels: list[str]) -> str:
    """Markdown: pass@1 and selection efficiency per method (rows) and run (columns, then
    pooled), each with its 95% interval; then the problems that decide them per run."""
    cols = list(zip(run_labels, fig["runs"])) + [("**pooled**", fig["pooled"])]
    head = "| selection | " + " | ".join(label for label, _ in cols) + " |"
    rule = "| --- |" + " --- |" * len(cols)
    lines = ["pass@1, 95% interval:", "", head, rule]
    lines.append("| random pick (mean sample) | " + " | ".join(_pct(f["random"]) for _, f in cols) + " |")
    for m in fig["methods"]:
        lines.append(f"| `{m}` | " + " | ".join(
            f"{_pct(f[m]['pass1'])} {_ci(f[m]['pass1_ci'], True)}" for _, f in cols) + " |")
    lines.append("| oracle (any sample passes) | " + " | ".join(_pct(f["oracle"]) for _, f in cols) + " |")
    lines += ["", "Selection efficiency (voted − random) / (oracle − random), 95% interval:", "", head, rule]
    for m in fig["methods"]:
        lines.append(f"| `{m}` | " + " | ".join(
            f"{_se(f[m]['se'])} {_ci(f[m]['se_ci'], False)}" for _, f in cols) + " |")
    lines.append("| problems deciding every figure (some but not all samples pass; pooled: mean per run) | "
                 + " | ".join(f"{f['deciding']:g} of {f['problems']}" for _, f in cols) + " |")
    return "\n".join(lines) + "\n"
