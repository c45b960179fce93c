"""The data the gateway hands to the vote and gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Candidate", "VoteResult"]


@dataclass
class Candidate:
    """One instance's answer to a request.

    ``tool_calls`` is OpenAI's list of ``{id, type: "function", function: {name,
    arguments}}`` with ``arguments`` a JSON string. ``latency_s`` is the time from
    fan-out to the answer's completion (used by ``fastest`` and to break ties).
    """

    id: str
    text: str
    tool_calls: list[dict] = field(default_factory=list)
    finish_reason: str | None = "stop"
    latency_s: float = 0.0


@dataclass
class VoteResult:
    """Outcome of ``vote``.

    ``winner`` indexes the candidates list passed in. ``confidence`` is
    ``len(cluster) / n * cohesion`` where ``n`` counts every candidate passed in
    (excluded ones too): a lone answer gets 1.0, so read it together with ``n``
    (``metadata()`` reports both). ``tool_calls`` holds the voted calls, possibly
    combined from several candidates (``synthesized``); None when no call wins.
    ``excluded`` lists answers dropped as truncated, unparsable, empty or with
    invalid tool arguments; it is empty when every answer was like that (then
    nothing is dropped and ``notes`` says so). ``degenerate`` flags two or more
    byte-identical answers (temperature 0 or a shared seed): fake agreement.
    """

    winner: int
    strategy: str
    confidence: float
    cluster: list[int]
    cohesion: float
    clusters: list[list[int]]
    excluded: list[int]
    degenerate: bool
    tool_calls: list[dict] | None
    synthesized: bool = False
    notes: list[str] = field(default_factory=list)
    #: ``exec`` only: examples passed per candidate (None: no Python code), out of ``examples``.
    checks: list[int | None] | None = None
    examples: int = 0

    def exec_summary(self) -> str | None:
        """``"3/3 examples"`` for the winner of an ``exec`` vote, else None."""
        if self.checks is None:
            return None
        return f"{self.checks[self.winner] or 0}/{self.examples} examples"

    def metadata(self, candidates: list[Candidate]) -> dict[str, Any]:
        """JSON-able summary for responses, logs and metrics (instance ids, not indices)."""

        def ids(idx: list[int]) -> list[str]:
            return [candidates[i].id for i in idx]

        meta: dict[str, Any] = {
            "strategy": self.strategy,
            "confidence": round(self.confidence, 4),
            "votes": len(self.cluster),
            "n": len(candidates),
            "winner": candidates[self.winner].id,
            "cluster": ids(self.cluster),
            "clusters": [ids(c) for c in self.clusters],
            "excluded": ids(self.excluded),
            "degenerate": self.degenerate,
            "cohesion": round(self.cohesion, 4),
            "tool_call": self.tool_calls is not None,
            "synthesized": self.synthesized,
        }
        if self.checks is not None:
            meta["exec"] = {
                "examples": self.examples,
                "winner": self.exec_summary(),
                "passed": {candidates[i].id: p for i, p in enumerate(self.checks)},
            }
        if self.notes:
            meta["notes"] = list(self.notes)
        return meta
