"""One vote round: fan out, gather, vote; and the OpenAI objects built from its result.

Federation (cross-machine voting) hooks in here: a coordinator node combines the local
result with its peers' before the answer is built.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from localswarm.consensus import Candidate, VoteResult, quorum_reached, vote
from localswarm.gateway import fanout
from localswarm.gateway.state import GatewayState


async def vote_round(
    state: GatewayState, instances: list[Any], body: dict[str, Any], strategy: str
) -> tuple[fanout.Gathered, VoteResult]:
    settings = state.settings
    bodies = fanout.instance_bodies(body, len(instances), default_temperature=settings.temperature)

    def quorum(cands: list[Candidate], n: int) -> bool:
        if strategy == "fastest":
            return True
        if strategy == "quality":
            return False
        return quorum_reached(cands, n, quorum=settings.quorum, threshold=settings.similarity_threshold)

    gathered = await fanout.gather(
        state.client, instances, bodies, timeout=settings.instance_timeout, quorum=quorum
    )
    fanout.raise_for_nothing(gathered)
    # Keep arrival order: the `fastest` strategy and tie-breaks rely on it.
    result = vote([s.candidate for s in gathered.samples], strategy=strategy,
                  threshold=settings.similarity_threshold)
    # Support is counted against every instance asked: one that crashed, timed out or was
    # cut off by the quorum is a missing vote, not an abstention.
    result.confidence *= len(gathered.samples) / gathered.asked
    state.record_vote(result, gathered)
    return gathered, result


def metadata(gathered: fanout.Gathered, result: VoteResult, latency: float) -> dict[str, Any]:
    candidates = [s.candidate for s in gathered.samples]
    meta = result.metadata(candidates)
    meta.update(
        {
            "n": gathered.asked,
            "asked": gathered.asked,
            "answered": len(gathered.samples),
            "left_out": gathered.failed,
            "early_stop": gathered.early_stop,
            "latency_s": round(latency, 3),
            "usage_total": {
                "prompt_tokens": sum(int(s.usage.get("prompt_tokens") or 0) for s in gathered.samples),
                "completion_tokens": sum(int(s.usage.get("completion_tokens") or 0) for s in gathered.samples),
            },
        }
    )
    return meta


def winning_message(gathered: fanout.Gathered, result: VoteResult) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    sample = gathered.samples[result.winner]
    choice = copy.deepcopy((sample.response.get("choices") or [{}])[0])
    message = choice.get("message") or {"role": "assistant", "content": ""}
    finish = choice.get("finish_reason")
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
        finish = "tool_calls"
    elif message.get("tool_calls") and result.tool_calls is None and any(s.candidate.tool_calls for s in gathered.samples):
        message.pop("tool_calls", None)  # the vote chose "no call"
        finish = "stop"
    usage = sample.usage
    usage = {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "total_tokens": int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0),
    }
    return message, finish, usage


def completion(
    state: GatewayState, gathered: fanout.Gathered, result: VoteResult, body: dict[str, Any], latency: float
) -> dict[str, Any]:
    message, finish, usage = winning_message(gathered, result)
    choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
    n = body.get("n") or 1
    if n > 1:  # further choices: the other samples, best cluster first
        order = [i for c in result.clusters for i in c if i != result.winner]
        for i in order[: n - 1]:
            other = copy.deepcopy(gathered.samples[i].response["choices"][0])
            other["index"] = len(choices)
            choices.append(other)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_id,
        "system_fingerprint": f"localswarm-{state.model_id}",
        "choices": choices,
        "usage": usage,
        "localswarm": metadata(gathered, result, latency),
    }
