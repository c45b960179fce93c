"""Selection strategies and how a request chooses one.

* ``similarity`` (default): the medoid of the largest cluster of agreeing answers.
* ``quality``: the most complete answer: finished normally, code that parses, valid
  tool arguments, a sane length, then agreement with the others as a tie-breaker.
* ``fastest``: the earliest usable answer (lowest latency, then arrival order).
* ``exec``: every answer is run on the examples in the request (doctest, ``assert``
  and "call → value" lines) in the sandbox; most examples passed wins, agreement breaks
  ties. Where the request has no examples or the answers no Python, the vote is
  ``similarity`` (nothing is executed).

A request picks one with the header ``x-localswarm-strategy`` or an extra body field
that OpenAI clients pass through untouched: ``"localswarm_strategy": "quality"`` or
``"localswarm": {"strategy": "quality"}``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from localswarm import config

__all__ = [
    "BODY_FIELD",
    "BODY_NAMESPACE",
    "DEFAULT_STRATEGY",
    "HEADER",
    "STRATEGIES",
    "check_strategy",
    "fastest_index",
    "quality_scores",
    "strategy_from_request",
]

STRATEGIES: tuple[str, ...] = config.STRATEGIES  # declared once, with the settings
DEFAULT_STRATEGY = "similarity"
HEADER = "x-localswarm-strategy"
BODY_FIELD = "localswarm_strategy"
BODY_NAMESPACE = "localswarm"

_OK_FINISH = frozenset({None, "stop", "tool_calls", "function_call", "eos", "end_turn"})


def check_strategy(name: Any, *, source: str = "strategy") -> str:
    """Return the canonical strategy name, or raise ValueError naming the valid ones."""
    if not isinstance(name, str) or name.strip().lower() not in STRATEGIES:
        raise ValueError(
            f"unknown consensus strategy {name!r} (from {source}); "
            f"expected one of: {', '.join(STRATEGIES)}"
        )
    return name.strip().lower()


def _header(headers: Mapping[str, Any] | Sequence[tuple[Any, Any]] | None, name: str) -> Any:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if str(key).lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def strategy_from_request(
    headers: Mapping[str, Any] | Sequence[tuple[Any, Any]] | None,
    body: Mapping[str, Any] | None,
    default: str = DEFAULT_STRATEGY,
) -> str:
    """The strategy a request asks for: header, then body field, then ``default``.

    ``headers`` may be any mapping (case-insensitive lookup is done here) or a list of
    ``(name, value)`` pairs, bytes or str (ASGI scope form). An empty header value is
    ignored. Raises ValueError for an unknown name, saying where it came from.
    """
    value = _header(headers, HEADER)
    if value is not None and str(value).strip():
        return check_strategy(str(value), source=f"header {HEADER}")
    if body:
        if body.get(BODY_FIELD) is not None:
            return check_strategy(body[BODY_FIELD], source=f"body field {BODY_FIELD}")
        ns = body.get(BODY_NAMESPACE)
        if isinstance(ns, Mapping) and ns.get("strategy") is not None:
            return check_strategy(ns["strategy"], source=f"body field {BODY_NAMESPACE}.strategy")
    return check_strategy(default, source="configuration")


def quality_scores(
    finish_reasons: Sequence[str | None],
    parses: Sequence[bool | None],
    args_valid: Sequence[bool],
    lengths: Sequence[int],
    has_content: Sequence[bool],
    agreement: Sequence[float],
) -> list[float]:
    """Completeness score per answer (higher is better; pure arithmetic).

    code parses (or no code) +3, finished normally +2, tool arguments valid +1,
    non-empty +1, length within a third to three times the median +1, plus the
    answer's agreement with the others in [0, 1] as a tie-breaker.
    """
    sized = [n for n, c in zip(lengths, has_content) if c and n > 0]
    median = statistics.median(sized) if sized else 0
    scores = []
    for fr, ok, valid, n, content, agree in zip(
        finish_reasons, parses, args_valid, lengths, has_content, agreement
    ):
        s = 0.0
        s += 3.0 if ok is not False else 0.0
        s += 2.0 if fr in _OK_FINISH else 0.0
        s += 1.0 if valid else 0.0
        s += 1.0 if content else 0.0
        if content and (median == 0 or median / 3 <= max(n, 1) <= median * 3):
            s += 1.0
        s += max(0.0, min(1.0, agree))
        scores.append(s)
    return scores


def fastest_index(latencies: Sequence[float], members: Sequence[int]) -> int:
    """The member with the lowest latency; ties (or no timing) go to arrival order."""
    if not members:
        raise ValueError("no candidates")
    return min(members, key=lambda i: (latencies[i], i))
