"""Group answers: exact buckets first, then threshold clustering around medoids.

Clustering is greedy "star" clustering over buckets: the bucket with the most answers
within ``threshold`` of it (counting bucket sizes) founds a cluster and takes those
neighbours; repeat on what is left. Unlike single linkage this cannot chain two
different solutions together through one answer halfway between them.

All functions work on indices into a similarity matrix and are pure.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = [
    "best_cluster",
    "cohesion",
    "exact_buckets",
    "medoid",
    "star_clusters",
]


def exact_buckets(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices grouped by equal key, in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())


def _bucket_sim(sim: np.ndarray, a: list[int], b: list[int]) -> float:
    return float(sim[np.ix_(a, b)].mean())


def star_clusters(
    sim: np.ndarray, buckets: list[list[int]], threshold: float, *, weights: Sequence[float] | None = None
) -> list[list[int]]:
    """Partition the buckets' members into clusters (each sorted, clusters by founding order).

    Two buckets are linked when their mean pairwise similarity is >= ``threshold``.
    The founder is the bucket with the largest linked support (own size plus linked
    sizes); ties go to the higher mean similarity to its neighbours, then to the
    earlier bucket. ``weights`` replaces the sizes (the cross-machine vote weighs each
    swarm's answer by its cluster size).
    """
    nb = len(buckets)
    if nb == 0:
        return []
    bsim = np.ones((nb, nb))
    for a in range(nb):
        for b in range(a + 1, nb):
            bsim[a, b] = bsim[b, a] = _bucket_sim(sim, buckets[a], buckets[b])
    sizes = np.array(weights if weights is not None else [len(b) for b in buckets], dtype=float)
    linked = bsim >= threshold
    remaining = list(range(nb))
    clusters: list[list[int]] = []
    while remaining:
        best = None
        best_score: tuple[float, float, int] | None = None
        for a in remaining:
            neigh = [b for b in remaining if b != a and linked[a, b]]
            support = sizes[a] + sum(sizes[b] for b in neigh)
            closeness = float(np.mean([bsim[a, b] for b in neigh])) if neigh else 0.0
            score = (support, closeness, -a)
            if best_score is None or score > best_score:
                best, best_score = a, score
        assert best is not None
        members_b = [best] + [b for b in remaining if b != best and linked[best, b]]
        remaining = [b for b in remaining if b not in members_b]
        clusters.append(sorted(i for b in members_b for i in buckets[b]))
    return clusters


def cohesion(sim: np.ndarray, members: Sequence[int]) -> float:
    """Mean pairwise similarity inside a cluster; 1.0 for a single member."""
    m = len(members)
    if m < 2:
        return 1.0
    sub = sim[np.ix_(members, members)]
    return float((sub.sum() - np.trace(sub)) / (m * (m - 1)))


def medoid(sim: np.ndarray, members: Sequence[int], prefer: Sequence[float] | None = None) -> int:
    """The member with the highest total similarity to the others.

    Ties go to the lowest ``prefer`` value (e.g. latency) when given, then to the lowest index.
    """
    if len(members) == 1:
        return members[0]
    sub = sim[np.ix_(members, members)]
    totals = sub.sum(axis=1)
    order = sorted(
        range(len(members)),
        key=lambda k: (
            -round(float(totals[k]), 9),
            prefer[members[k]] if prefer is not None else 0.0,
            members[k],
        ),
    )
    return members[order[0]]


def best_cluster(sim: np.ndarray, clusters: list[list[int]]) -> tuple[int, float]:
    """Index of the winning cluster (largest, then most cohesive, then earliest) and its cohesion."""
    if not clusters:
        raise ValueError("no clusters")
    scored = [(len(c), round(cohesion(sim, c), 9), -min(c)) for c in clusters]
    k = max(range(len(clusters)), key=lambda i: scored[i])
    return k, cohesion(sim, clusters[k])
