"""The figures a selection method is judged by (pure functions, numpy only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from math import comb

import numpy as np

__all__ = ["auroc", "bootstrap_ci", "pass_at_k", "percentile", "selection_efficiency"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021) from ``n`` samples of which ``c`` passed."""
    if not (0 <= c <= n) or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def selection_efficiency(voted: float, random: float, oracle: float, eps: float = 1e-12) -> float | None:
    """(voted - random) / (oracle - random): 0 = no better than chance, 1 = as good as an oracle.

    None when oracle == random (every problem has all samples passing or all failing:
    no choice could matter). Negative when the vote is worse than chance.
    """
    gap = oracle - random
    if abs(gap) <= eps:
        return None
    return (voted - random) / gap


def auroc(scores: Sequence[float], labels: Sequence[bool | int]) -> float | None:
    """Area under the ROC curve of ``scores`` separating positive from negative ``labels``.

    Mann-Whitney U with average ranks, so ties count one half. None when only one class
    is present (undefined).
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ValueError("scores and labels differ in length")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=float)
    sorted_s = s[order]
    i = 0
    while i < s.size:  # average ranks over ties
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation); None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def bootstrap_ci(
    columns: Mapping[str, Sequence[float]],
    stat: Callable[[Mapping[str, np.ndarray]], float | None],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``stat`` over problems.

    ``columns`` holds one value per problem in each column (same length); each resample
    draws problems with replacement and passes the resampled columns to ``stat``.
    Resamples where ``stat`` is undefined (None) are skipped; None when all are.
    """
    arrays = {k: np.asarray(v, dtype=float) for k, v in columns.items()}
    sizes = {a.size for a in arrays.values()}
    if len(sizes) != 1:
        raise ValueError("columns differ in length")
    size = sizes.pop()
    if size == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, size, size)
        v = stat({k: a[idx] for k, a in arrays.items()})
        if v is not None:
            values.append(v)
    if not values:
        return None
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
