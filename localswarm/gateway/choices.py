"""The choices of an answer: the voted winner first, then (``n > 1``) other samples; honest usage.

``n > 1`` asks for several samples (issue 5): choice 0 is the vote's winner, further
choices are the other instances' answers, best cluster first, then answers from extra
rounds when the swarm has fewer instances than ``n``.

Usage counts the prompt once (every instance read the same prompt, but the client sent it
once) and the completion tokens of the choices returned, as OpenAI does for ``n``; what the
whole swarm spent is in the ``localswarm.usage_total`` extension.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

from localswarm.consensus import VoteResult
from localswarm.gateway.fanout import Gathered, Sample


@dataclass
class Choice:
    """One answer to send: the message, why it stopped, its tokens and logprobs."""

    message: dict[str, Any]
    finish_reason: str | None
    usage: dict[str, Any]
    logprobs: list[dict[str, Any]] | None

    def as_choice(self, index: int, *, with_logprobs: bool) -> dict[str, Any]:
        lp = {"content": self.logprobs, "refusal": None} if with_logprobs and self.logprobs else None
        return {"index": index, "message": self.message, "logprobs": lp, "finish_reason": self.finish_reason}


def _logprobs(sample: Sample) -> list[dict[str, Any]] | None:
    choice = (sample.response.get("choices") or [{}])[0]
    return ((choice.get("logprobs") or {}).get("content")) or None


def from_sample(sample: Sample) -> Choice:
    choice = copy.deepcopy((sample.response.get("choices") or [{}])[0])
    message = choice.get("message") or {"role": "assistant", "content": ""}
    return Choice(message, choice.get("finish_reason"), dict(sample.usage), _logprobs(sample))


def pick(
    gathered: Gathered,
    result: VoteResult,
    winner: tuple[dict[str, Any], str | None],
    *,
    n: int = 1,
    extra: Sequence[Sample] = (),
) -> list[Choice]:
    """Up to ``n`` choices: the winner (as the vote shaped it), then other samples."""
    sample = gathered.samples[result.winner]
    message, finish = winner
    picked = [Choice(message, finish, dict(sample.usage), _logprobs(sample))]
    if n > 1:
        order = [i for cluster in result.clusters for i in cluster if i != result.winner]
        order += [i for i in range(len(gathered.samples)) if i != result.winner and i not in order]
        others = [gathered.samples[i] for i in order] + list(extra)
        picked += [from_sample(s) for s in others[: n - 1]]
    return picked


def usage(picked: Sequence[Choice]) -> dict[str, Any]:
    """Prompt tokens once, completion tokens of the choices returned."""
    prompt = int(picked[0].usage.get("prompt_tokens") or 0) if picked else 0
    completion = sum(int(c.usage.get("completion_tokens") or 0) for c in picked)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    cached = (picked[0].usage.get("prompt_tokens_details") or {}).get("cached_tokens") if picked else None
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    return out


def swarm_total(samples: Sequence[Sample]) -> dict[str, int]:
    """What every instance asked spent, prompt tokens included once per instance."""
    prompt = sum(int(s.usage.get("prompt_tokens") or 0) for s in samples)
    completion = sum(int(s.usage.get("completion_tokens") or 0) for s in samples)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
