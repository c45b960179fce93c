"""Choose one answer out of N: ``vote`` and the early-quorum test ``quorum_reached``.

Pipeline (``similarity`` strategy):

1. Drop answers cut at the length limit, whose Python does not parse, that are empty,
   or whose tool arguments are not valid JSON, unless every answer is like that.
2. Call or no call: the side with more answers wins (a tie goes to the call).
3. No call: exact buckets on the normalised text, star clustering at ``threshold``
   (see ``cluster``), the largest cluster wins (ties by cohesion), its medoid is the
   answer. Call: see ``toolcalls.vote_tool_calls``.
4. Confidence = winning cluster size / N x cohesion, N counting every answer passed in.

``exec`` strategy: the caller has run every answer on the user's examples
(:mod:`localswarm.sandbox.check`) and passes the counts; the most examples passed is
the first key, then steps 1-3 among the answers tied on it (largest cluster, medoid).

Pure: no I/O, no clocks; results depend only on the arguments.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from localswarm import config

from .cluster import best_cluster, cohesion, exact_buckets, medoid, star_clusters
from .model import Candidate, VoteResult
from .similarity import Features, analyse, pair_similarity
from .strategies import check_strategy, fastest_index, quality_scores
from .toolcalls import ParsedCall, ToolVote, format_calls, parse_tool_calls, vote_tool_calls

__all__ = ["DEFAULT_THRESHOLD", "quorum_reached", "required_votes", "vote"]

#: Link threshold, declared once with the settings (see ``config.SIMILARITY_THRESHOLD``).
DEFAULT_THRESHOLD = config.SIMILARITY_THRESHOLD


@dataclass
class _Analysis:
    feats: list[Features]
    parsed: list[list[ParsedCall]]
    kept: list[int]
    excluded: list[int]
    notes: list[str]
    sim: np.ndarray
    text_clusters: list[list[int]]
    callers: list[int]
    talkers: list[int]
    tool: ToolVote | None


def _exclusion_reason(c: Candidate, f: Features, calls: list[ParsedCall]) -> str | None:
    if c.finish_reason == "length":
        return "truncated"
    if f.parses is False:
        return "python does not parse"
    if calls and not all(p.valid for p in calls):
        return "invalid tool arguments"
    if not calls and f.kind == "empty":
        return "empty"
    return None


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")


def _analyse(cands: list[Candidate], threshold: float, *, fallback: bool) -> _Analysis:
    n = len(cands)
    feats = [analyse(c.text or "") for c in cands]
    parsed = [parse_tool_calls(c.tool_calls) for c in cands]
    reasons = {i: r for i in range(n) if (r := _exclusion_reason(cands[i], feats[i], parsed[i]))}
    notes: list[str] = []
    if len(reasons) == n and fallback:
        kept, excluded = list(range(n)), []
        notes.append("every answer was truncated, unparsable, empty or invalid: none dropped")
    else:
        kept = [i for i in range(n) if i not in reasons]
        excluded = sorted(reasons)
        notes += [f"{cands[i].id}: {r}" for i, r in sorted(reasons.items()) if i in excluded]
    callers = [i for i in kept if parsed[i]]
    talkers = [i for i in kept if not parsed[i]]

    sim = np.eye(n)
    for a_i, a in enumerate(talkers):
        for b in talkers[a_i + 1 :]:
            sim[a, b] = sim[b, a] = pair_similarity(feats[a], feats[b])
    text_clusters: list[list[int]] = []
    if talkers:
        buckets = [[talkers[i] for i in b] for b in exact_buckets([feats[i].key for i in talkers])]
        text_clusters = star_clusters(sim, buckets, threshold)
    tool = None
    if callers:
        tool = vote_tool_calls({i: parsed[i] for i in callers}, callers, [c.latency_s for c in cands])
    return _Analysis(feats, parsed, kept, excluded, notes, sim, text_clusters, callers, talkers, tool)


def _degenerate(cands: list[Candidate]) -> bool:
    if len(cands) < 2:
        return False

    def sig(c: Candidate) -> tuple[str, str]:
        calls = [
            ((t.get("function") or {}).get("name"), (t.get("function") or {}).get("arguments"))
            for t in c.tool_calls or []
        ]
        return c.text or "", json.dumps(calls, sort_keys=True, default=str)

    first = sig(cands[0])
    return all(sig(c) == first for c in cands[1:])


def _all_clusters(an: _Analysis) -> list[tuple[list[int], float]]:
    """Every cluster (tool-call name groups, then text clusters) with its cohesion."""
    out: list[tuple[list[int], float]] = []
    if an.tool is not None:
        out += list(zip(an.tool.groups, an.tool.group_cohesions))
    out += [(c, cohesion(an.sim, c)) for c in an.text_clusters]
    return out


def _clean_calls(calls: list[ParsedCall]) -> list[dict] | None:
    return format_calls(calls) if calls else None


def _exec_vote(cands: list[Candidate], an: _Analysis, clusters: list[tuple[list[int], float]],
               passes: list[int | None], latency: list[float]) -> tuple[int, list[int], float]:
    """(winner, cluster, cohesion): most examples passed first, then agreement among the tied."""
    members = an.kept or list(range(len(cands)))
    best = max((passes[i] or 0) for i in members)
    tied = [i for i in members if (passes[i] or 0) == best]
    groups = [([i for i in c if i in tied], h) for c, h in clusters]
    groups = [(c, h) for c, h in groups if c]
    if not groups:
        return min(tied, key=lambda i: (latency[i], i)), [tied[0]], 1.0
    group, _ = max(groups, key=lambda g: (len(g[0]), g[1]))
    winner = medoid(an.sim, group, prefer=latency)
    coh = cohesion(an.sim, group)
    return winner, group, coh


def vote(
    candidates: list[Candidate],
    *,
    strategy: str = "similarity",
    threshold: float = DEFAULT_THRESHOLD,
    passes: list[int | None] | None = None,
    examples: int = 0,
) -> VoteResult:
    """Choose one answer among ``candidates`` (see the module docstring).

    ``passes`` (``exec`` only): examples passed per candidate out of ``examples``
    (None for a candidate without Python code).

    Raises ValueError on an empty list, an unknown strategy, a threshold outside
    [0, 1], or ``exec`` without one count per candidate. With a single candidate that
    candidate wins with confidence 1.0 and ``metadata()["n"] == 1``: no agreement was
    measured.
    """
    if not candidates:
        raise ValueError("vote() needs at least one candidate")
    strategy = check_strategy(strategy)
    _check_threshold(threshold)
    if strategy == "exec" and (passes is None or len(passes) != len(candidates)):
        raise ValueError("the exec strategy needs one examples-passed count per candidate")
    cands = list(candidates)
    n = len(cands)
    an = _analyse(cands, threshold, fallback=True)
    latency = [c.latency_s for c in cands]
    clusters = _all_clusters(an)
    degenerate = _degenerate(cands)
    notes = list(an.notes)
    if degenerate:
        notes.append("all answers byte-identical: temperature 0 or a shared seed?")

    if strategy == "similarity":
        if an.tool is not None and len(an.callers) >= len(an.talkers):
            tv = an.tool
            return VoteResult(
                winner=tv.representative,
                strategy=strategy,
                confidence=len(tv.group) / n * tv.cohesion,
                cluster=list(tv.group),
                cohesion=tv.cohesion,
                clusters=[c for c, _ in clusters],
                excluded=an.excluded,
                degenerate=degenerate,
                tool_calls=tv.tool_calls,
                synthesized=tv.synthesized,
                notes=notes,
            )
        k, coh = best_cluster(an.sim, an.text_clusters)
        cluster = an.text_clusters[k]
        winner = medoid(an.sim, cluster, prefer=latency)
        return VoteResult(
            winner, strategy, len(cluster) / n * coh, cluster, coh,
            [c for c, _ in clusters], an.excluded, degenerate, None, False, notes,
        )

    if strategy == "exec":
        assert passes is not None
        winner, cluster, coh = _exec_vote(cands, an, clusters, list(passes), latency)
        calls = an.parsed[winner]
        return VoteResult(
            winner, strategy, len(cluster) / n * coh, cluster, coh,
            [c for c, _ in clusters], an.excluded, degenerate,
            _clean_calls(calls), False, notes, checks=list(passes), examples=examples,
        )

    members = an.kept
    if strategy == "fastest":
        winner = fastest_index(latency, members)
    else:
        share = {i: len(c) / len(members) for c, _ in clusters for i in c}
        scores = quality_scores(
            [cands[i].finish_reason for i in members],
            [an.feats[i].parses for i in members],
            [all(p.valid for p in an.parsed[i]) for i in members],
            [
                sum(len(p.arguments) for p in an.parsed[i]) if an.parsed[i] else an.feats[i].length
                for i in members
            ],
            [bool(an.parsed[i]) or an.feats[i].kind != "empty" for i in members],
            [share.get(i, 0.0) for i in members],
        )
        best = max(range(len(members)), key=lambda k: (scores[k], -latency[members[k]], -members[k]))
        winner = members[best]
    cluster, coh = next(((c, h) for c, h in clusters if winner in c), ([winner], 1.0))
    return VoteResult(
        winner, strategy, len(cluster) / n * coh, list(cluster), coh,
        [c for c, _ in clusters], an.excluded, degenerate,
        _clean_calls(an.parsed[winner]), False, notes,
    )


def required_votes(n_total: int, quorum: float | int | None = None) -> int:
    """How many agreeing answers make a quorum out of ``n_total``.

    ``None``: a strict majority (``n_total // 2 + 1``). An ``int``: that many
    (1..n_total). A ``float`` in (0, 1]: at least that fraction, rounded up.
    """
    if isinstance(n_total, bool) or not isinstance(n_total, int) or n_total < 1:
        raise ValueError(f"n_total must be a positive int, got {n_total!r}")
    if quorum is None:
        return n_total // 2 + 1
    if isinstance(quorum, bool):
        raise ValueError("quorum must be None, an int count or a float fraction, not a bool")
    if isinstance(quorum, int):
        if not 1 <= quorum <= n_total:
            raise ValueError(f"quorum count must be within 1..{n_total}, got {quorum}")
        return quorum
    if isinstance(quorum, float) and 0.0 < quorum <= 1.0:
        return max(1, math.ceil(quorum * n_total - 1e-9))
    raise ValueError(f"quorum fraction must be within (0, 1], got {quorum!r}")


def quorum_reached(
    candidates: list[Candidate],
    n_total: int,
    *,
    quorum: float | int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> bool:
    """True once enough of the answers received so far agree to stop waiting.

    Agreement means one cluster as ``vote`` builds them: a text cluster, or a group of
    tool calls with the same function names (answers without a call never join a call
    group). Truncated, unparsable, empty and invalid answers never count.
    Each call analyses the answers it has not seen (results are cached per text), so
    calling it on every arrival also makes the final ``vote`` cheap.
    """
    need = required_votes(n_total, quorum)
    _check_threshold(threshold)
    if len(candidates) < need:
        for c in candidates:  # pre-pay: the final vote then only analyses the last answer
            analyse(c.text or "")
        return False
    an = _analyse(list(candidates), threshold, fallback=False)
    return any(len(c) >= need for c, _ in _all_clusters(an))
