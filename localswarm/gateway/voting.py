"""One vote round: fan out, gather, vote; and the OpenAI objects built from its result.

Federation (cross-machine voting) hooks in here: a coordinator node combines the local
result with its peers' before the answer is built.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any, Sequence

from localswarm.consensus import Candidate, VoteResult, quorum_reached
from localswarm.consensus.examples import request_text
from localswarm.gateway import choices, fanout
from localswarm.gateway.state import GatewayState
from localswarm.sandbox.check import checked_vote


def examples_text(body: dict[str, Any]) -> str:
    """Where a request's runnable examples are: its messages, or a completion's prompt."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    return request_text(body.get("messages"))


async def vote_round(
    state: GatewayState, instances: list[Any], body: dict[str, Any], strategy: str
) -> tuple[fanout.Gathered, VoteResult]:
    """Vote on ``body``: locally, and with every healthy peer when federation is on.

    With federation on and no ``x-localswarm-hops`` on the client's request, this node
    coordinates: it votes locally while asking its peers in parallel (one timeout), then
    pools the answers (``cross_vote``). The result is the same pair as a local round; the
    returned ``gathered`` then carries the cross-vote, which :func:`metadata` reports.
    """
    federation = state.federation
    if federation is not None and federation.should_coordinate():
        return await federation.vote_round(state, instances, body, strategy, local_vote_round)
    return await local_vote_round(state, instances, body, strategy)


async def local_vote_round(
    state: GatewayState, instances: list[Any], body: dict[str, Any], strategy: str,
    *, path: str = "/v1/chat/completions",
) -> tuple[fanout.Gathered, VoteResult]:
    """One vote on this node's own instances only (what a peer runs for a federated request).

    ``path`` is the upstream route: chat, or the legacy ``/v1/completions``.
    """
    settings = state.settings
    bodies = fanout.instance_bodies(body, len(instances), default_temperature=settings.temperature)

    def quorum(cands: list[Candidate], n: int) -> bool:
        if strategy == "fastest":
            return True
        if strategy == "quality":
            return False
        return quorum_reached(cands, n, quorum=settings.quorum, threshold=settings.similarity_threshold)

    gathered = await fanout.gather(
        state.client, instances, bodies, timeout=settings.instance_timeout, quorum=quorum, path=path
    )
    fanout.raise_for_nothing(gathered)
    # Keep arrival order: the `fastest` strategy and tie-breaks rely on it.
    result = await checked_vote([s.candidate for s in gathered.samples], examples_text(body),
                                strategy=strategy, threshold=settings.similarity_threshold,
                                mode=settings.exec_check)
    # Support is counted against every instance asked: one that crashed, timed out or was
    # cut off by the quorum is a missing vote, not an abstention.
    result.confidence *= len(gathered.samples) / gathered.asked
    state.record_vote(result, gathered)
    return gathered, result


def metadata(gathered: fanout.Gathered, result: VoteResult, latency: float) -> dict[str, Any]:
    federated = getattr(gathered, "federation", None)
    if federated is not None:  # a cross-vote: local part first, then the pooled decision
        return federated.metadata(gathered, result, latency, _local_metadata)
    return _local_metadata(gathered.samples, gathered, result, latency)


def _local_metadata(
    samples: list[fanout.Sample], gathered: fanout.Gathered, result: VoteResult, latency: float
) -> dict[str, Any]:
    candidates = [s.candidate for s in samples]
    meta = result.metadata(candidates)
    meta.update(
        {
            "n": gathered.asked,
            "asked": gathered.asked,
            "answered": len(samples),
            "left_out": gathered.failed,
            "early_stop": gathered.early_stop,
            "latency_s": round(latency, 3),
            "usage_total": {
                "prompt_tokens": sum(int(s.usage.get("prompt_tokens") or 0) for s in samples),
                "completion_tokens": sum(int(s.usage.get("completion_tokens") or 0) for s in samples),
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
    state: GatewayState,
    gathered: fanout.Gathered,
    result: VoteResult,
    body: dict[str, Any],
    latency: float,
    *,
    extra: Sequence[fanout.Sample] = (),
) -> dict[str, Any]:
    """The ``chat.completion`` object: the winner, ``n - 1`` other samples, honest usage.

    ``extra`` holds samples from additional rounds when ``n`` exceeds the instances asked.
    """
    message, finish, _ = winning_message(gathered, result)
    picked = choices.pick(gathered, result, (message, finish), n=body.get("n") or 1, extra=extra)
    meta = metadata(gathered, result, latency)
    if extra:
        meta["usage_total"] = choices.swarm_total([*gathered.samples, *extra])
        meta["extra_samples"] = len(extra)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_id,
        "system_fingerprint": f"localswarm-{state.model_id}",
        "choices": [c.as_choice(i, with_logprobs=bool(body.get("logprobs"))) for i, c in enumerate(picked)],
        "usage": choices.usage(picked),
        "localswarm": meta,
    }
