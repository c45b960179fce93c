"""One instance's whole answer, typed: what the stream said, as the vote and the renderers read it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from localswarm.consensus import Candidate

__all__ = ["Answer"]


@dataclass
class Answer(Candidate):
    """A :class:`~localswarm.consensus.Candidate` (what the vote compares) plus what the
    client gets back: reasoning, token usage, llama-server's timings and per-token logprobs.

    ``id`` names where it came from (an instance, or a peer node in a federated vote).
    """

    reasoning: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] | None = None

    @property
    def prompt_tokens(self) -> int:
        return int(self.usage.get("prompt_tokens") or 0)

    @property
    def completion_tokens(self) -> int:
        return int(self.usage.get("completion_tokens") or 0)

    @property
    def generated_tokens(self) -> int:
        """Tokens decoded, from usage or else from llama-server's timings."""
        return int(self.usage.get("completion_tokens") or self.timings.get("predicted_n") or 0)

    @property
    def generation_s(self) -> float | None:
        """Decoding time as llama-server measured it (None when it did not say)."""
        ms = self.timings.get("predicted_ms")
        return ms / 1000 if ms else None

    def message(self) -> dict[str, Any]:
        """A fresh OpenAI assistant message (content is None for a call-only answer)."""
        out: dict[str, Any] = {"role": "assistant", "content": self.text if self.text or not self.tool_calls else None}
        if self.reasoning:
            out["reasoning_content"] = self.reasoning
        if self.tool_calls:
            out["tool_calls"] = copy.deepcopy(self.tool_calls)
        return out
