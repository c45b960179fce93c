"""One vote round and its typed outcome, :class:`Round`, which every renderer reads.

A round fans the request out (:mod:`localswarm.gateway.fanout`), votes
(:mod:`localswarm.consensus`) and, for ``n > 1``, gathers extra answers. With federation
on and a client's request, :meth:`Federation.vote_round
<localswarm.federation.node.Federation.vote_round>` runs the local round beside the peers'
and returns the same :class:`Round` with its ``federated`` part set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localswarm import upstream
from localswarm.consensus import Candidate, VoteResult, quorum_reached
from localswarm.consensus.examples import body_text
from localswarm.errors import APIError
from localswarm.gateway import fanout
from localswarm.sandbox.check import checked_vote
from localswarm.supervisor.instance import Instance
from localswarm.upstream import Answer

if TYPE_CHECKING:
    from localswarm.federation.node import FederatedOutcome
    from localswarm.gateway.state import GatewayState

CHAT = "/v1/chat/completions"


def shaped_winner(answers: Sequence[Answer], result: VoteResult) -> Answer:
    """The winning answer as the vote shaped it: the voted (maybe combined) tool calls, or
    none when the vote chose "no call"."""
    answer = answers[result.winner]
    if result.tool_calls:
        return dataclasses.replace(answer, tool_calls=result.tool_calls, finish_reason="tool_calls")
    if answer.tool_calls and result.tool_calls is None and any(a.tool_calls for a in answers):
        return dataclasses.replace(answer, tool_calls=[], finish_reason="stop")
    return answer


@dataclass
class Round:
    """A vote's outcome: the local answers, the vote, the answer chosen, extra answers for ``n``.

    ``result`` is None only in a federated round whose local vote failed (the answer then
    comes from the peers); ``winner_index`` is the winner's place among the local answers
    (None when a peer's answer won); ``federated`` describes the cross-machine vote.
    """

    gathered: fanout.Gathered
    result: VoteResult | None
    winner: Answer
    winner_index: int | None
    confidence: float
    strategy: str
    extra: list[Answer] = field(default_factory=list)
    federated: FederatedOutcome | None = None

    @property
    def answers(self) -> list[Answer]:
        return self.gathered.answers

    def choices(self, n: int) -> list[Answer]:
        """Up to ``n`` answers: the winner, then the other answers, best cluster first, then extras."""
        picked = [self.winner]
        if n > 1:
            skip = self.winner_index
            clusters = self.result.clusters if self.result is not None else []
            order = [i for cluster in clusters for i in cluster if i != skip]
            order += [i for i in range(len(self.answers)) if i != skip and i not in order]
            others = [self.answers[i] for i in order] + list(self.extra)
            picked += others[: n - 1]
        return picked

    def metadata(self, latency: float) -> dict[str, Any]:
        """The ``localswarm`` extension of the response: who voted, who won, how sure."""
        if self.federated is not None:
            meta = self.federated.metadata(self, latency)
        else:
            assert self.result is not None
            meta = local_metadata(self.answers, self.gathered, self.result, latency)
        if self.extra:
            meta["usage_total"] = swarm_total([*self.answers, *self.extra])
            meta["extra_samples"] = len(self.extra)
        return meta

    def headers(self, meta: dict[str, Any]) -> dict[str, str]:
        """The ``x-localswarm-*`` response headers, from :meth:`metadata`'s result."""
        headers = {
            "x-localswarm-strategy": self.strategy,
            "x-localswarm-confidence": f"{self.confidence:.3f}",
            "x-localswarm-votes": f"{meta.get('votes')}/{meta.get('n')}",
            "x-localswarm-winner": str(meta.get("winner")),
            "x-localswarm-instances": f"{len(self.answers)}/{self.gathered.asked}",
            "x-localswarm-width": str(self.gathered.asked),
        }
        checked = self.result.exec_summary() if self.result is not None else None
        if checked is not None:  # the answers were run on the request's examples
            headers["x-localswarm-exec"] = checked
        if self.federated is not None:  # strategy, peers answered/asked, local-only or latency notes
            headers.update(self.federated.headers())
        return headers


def local_metadata(
    answers: Sequence[Answer], gathered: fanout.Gathered, result: VoteResult, latency: float
) -> dict[str, Any]:
    """What the local vote decided, named by instance."""
    meta = result.metadata(list(answers))
    meta.update(
        {
            "n": gathered.asked,
            "asked": gathered.asked,
            "width": gathered.asked,  # instances asked: fewer than ready while requests wait (issue 13)
            "answered": len(answers),
            "left_out": gathered.failed,
            "early_stop": gathered.early_stop,
            "latency_s": round(latency, 3),
            "usage_total": {
                "prompt_tokens": sum(a.prompt_tokens for a in answers),
                "completion_tokens": sum(a.completion_tokens for a in answers),
            },
        }
    )
    return meta


def usage(picked: Sequence[Answer]) -> dict[str, Any]:
    """Prompt tokens once (the client sent the prompt once), completion tokens of the choices returned."""
    prompt = picked[0].prompt_tokens if picked else 0
    completion = sum(a.completion_tokens for a in picked)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    cached = (picked[0].usage.get("prompt_tokens_details") or {}).get("cached_tokens") if picked else None
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    return out


def swarm_total(answers: Sequence[Answer]) -> dict[str, int]:
    """What every instance asked spent, prompt tokens included once per instance."""
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def ready_instances(state: GatewayState) -> list[Instance]:
    """The instances able to answer now, or a 503 the client may retry."""
    instances = state.supervisor.ready_instances()
    if not instances:
        raise APIError(503, "No instance is ready yet; retry shortly.", code="swarm_unavailable",
                       headers={"Retry-After": "2"})
    return instances


async def local_round(
    state: GatewayState, instances: Sequence[Instance], body: dict[str, Any], strategy: str, *, path: str = CHAT
) -> Round:
    """One vote on this node's own instances only (what a peer runs for a federated request).

    ``path`` is the upstream route: chat, or the legacy ``/v1/completions``.
    """
    settings = state.settings
    bodies = upstream.instance_bodies(body, len(instances), default_temperature=settings.temperature)

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
    # Keep arrival order: the `fastest` strategy and tie-breaks rely on it. Where the request
    # carries runnable examples, the answers are run on them first (sandbox/check.py).
    result = await checked_vote(list(gathered.answers), body_text(body), strategy=strategy,
                                threshold=settings.similarity_threshold, mode=settings.exec_check)
    # Support is counted against every instance asked: one that crashed, timed out or was
    # cut off by the quorum is a missing vote, not an abstention.
    result.confidence *= len(gathered.answers) / gathered.asked
    state.record_vote(result, gathered)
    return Round(gathered, result, shaped_winner(gathered.answers, result), result.winner, result.confidence,
                 result.strategy)


async def vote_round(
    state: GatewayState, instances: Sequence[Instance], body: dict[str, Any], strategy: str,
    *, n: int = 1, path: str = CHAT,
) -> Round:
    """Vote on ``body``: locally, or across machines when this node coordinates a federated
    vote (chat only); then ``n - 1`` more answers when the vote brought too few."""
    federation = state.federation
    if path == CHAT and federation is not None and federation.should_coordinate():
        outcome = await federation.vote_round(instances, body, strategy)
    else:
        outcome = await local_round(state, instances, body, strategy, path=path)
    if n > 1:
        outcome.extra = await more_answers(state, instances, body, n - len(outcome.answers), path=path)
    return outcome


async def more_answers(
    state: GatewayState, instances: Sequence[Instance], body: dict[str, Any], needed: int, *, path: str = CHAT
) -> list[Answer]:
    """``needed`` more answers, spread over the instances (each slot busy), each with its own seed."""
    found: list[Answer] = []
    width = max(1, len(instances) * state.settings.parallel)
    rounds = 0
    while needed > 0 and rounds < needed // width + 2:
        rounds += 1
        batch = [instances[i % len(instances)] for i in range(min(needed, width))]
        # distinct from the vote round's seed + i
        round_body = upstream.reseeded(body, len(instances) + (rounds - 1) * width)
        bodies = upstream.instance_bodies(round_body, len(batch), default_temperature=state.settings.temperature)
        gathered = await fanout.gather(state.client, batch, bodies, timeout=state.settings.instance_timeout, path=path)
        found += gathered.answers
        needed -= len(gathered.answers)
        if not gathered.answers:
            break
    return found
