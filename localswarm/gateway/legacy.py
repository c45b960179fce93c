"""``POST /v1/completions`` (legacy text completion), voted on the text like chat answers.

Each prompt (``prompt`` may be an array) gets its own vote round over the instances;
choice ``i * n + j`` is prompt ``i``'s ``j``-th choice, as OpenAI numbers them. ``echo``
is done here (llama-server does not echo), ``best_of`` is ignored: the vote already picks
the best of the instances' samples.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localswarm.consensus import VoteResult
from localswarm.gateway import choices, fanout, params, voting
from localswarm.gateway.chat import counters, extra_samples, gateway_state, ready_instances, request_strategy
from localswarm.gateway.state import GatewayState
from localswarm.gateway.streaming import DONE, ChunkWriter, SSEResponse, keepalive_then, prefetch, sse, unless_client_leaves
from localswarm.gateway.validation import read_json, validate_completion

PATH = "/v1/completions"


async def _vote_text(
    state: GatewayState, instances: list[Any], body: dict[str, Any], strategy: str
) -> tuple[fanout.Gathered, VoteResult]:
    """A local vote round on ``/v1/completions`` (chat's round, on another upstream path)."""
    return await voting.local_vote_round(state, instances, body, strategy, path=PATH)


def legacy_logprobs(entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
    """llama-server's per-token entries in the legacy ``tokens``/``token_logprobs`` shape."""
    if not entries:
        return None
    tokens = [str(e.get("token", "")) for e in entries]
    offsets, at = [], offset
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [e.get("logprob") for e in entries],
        "top_logprobs": [{str(t.get("token", "")): t.get("logprob") for t in e.get("top_logprobs") or []} for e in entries],
        "text_offset": offsets,
    }


class _Answer:
    """One prompt's vote: its choices and what the swarm spent on it."""

    def __init__(self, prompt: Any, gathered: fanout.Gathered, result: VoteResult, extra: list[fanout.Sample],
                 n: int) -> None:
        message, finish, _ = voting.winning_message(gathered, result)
        self.prompt = prompt
        self.picked = choices.pick(gathered, result, (message, finish), n=n, extra=extra)
        self.samples = [*gathered.samples, *extra]
        self.gathered, self.result = gathered, result


async def _answer(state: GatewayState, instances: list[Any], body: dict[str, Any], prompt: Any, strategy: str,
                  n: int) -> _Answer:
    b = {**body, "prompt": prompt}
    gathered, result = await _vote_text(state, instances, b, strategy)
    extra = await extra_samples(state, instances, b, n - len(gathered.samples), path=PATH) if n > 1 else []
    return _Answer(prompt, gathered, result, extra, n)


def _text_choices(answers: list[_Answer], body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    echo = bool(body.get("echo"))
    for answer in answers:
        prefix = answer.prompt if echo and isinstance(answer.prompt, str) else ""
        for choice in answer.picked:
            out.append({
                "index": len(out),
                "text": prefix + (choice.message.get("content") or ""),
                "logprobs": legacy_logprobs(choice.logprobs, len(prefix)) if body.get("logprobs") is not None else None,
                "finish_reason": choice.finish_reason or "stop",
            })
    return out


def _usage(answers: list[_Answer]) -> dict[str, Any]:
    prompt = sum(choices.usage(a.picked)["prompt_tokens"] for a in answers)
    completion = sum(choices.usage(a.picked)["completion_tokens"] for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _meta(answers: list[_Answer], latency: float) -> dict[str, Any]:
    meta = voting.metadata(answers[0].gathered, answers[0].result, latency)
    meta["usage_total"] = choices.swarm_total([s for a in answers for s in a.samples])
    if len(answers) > 1:
        meta["prompts"] = len(answers)
    return meta


async def _run(state: GatewayState, instances: list[Any], body: dict[str, Any], prompts: list[Any], strategy: str,
               n: int) -> list[_Answer]:
    tasks = [asyncio.ensure_future(_answer(state, instances, body, p, strategy, n)) for p in prompts]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        pending = {t for t in tasks if not t.done()}
        if pending:
            await fanout.cancel_and_wait(pending)


async def completions(request: Request) -> Response:
    state = gateway_state(request)
    body = await read_json(request, state.settings.max_body_bytes)
    prompts = validate_completion(body)
    strategy = request_strategy(request, body, state.settings.strategy)
    upstream = params.upstream_body(body)
    upstream.pop("echo", None)
    instances = ready_instances(state)
    n = int(body.get("n") or 1)
    counters(request).completions += 1
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = await prefetch(_stream(state, instances, upstream, body, prompts, strategy, n, include_usage))
        return SSEResponse(events, headers={"x-localswarm-strategy": strategy})
    started = time.monotonic()
    answers = await unless_client_leaves(request, _run(state, instances, upstream, prompts, strategy, n))
    if answers is None:
        return Response(status_code=499)
    return JSONResponse({
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": state.model_id,
        "system_fingerprint": f"localswarm-{state.model_id}",
        "choices": _text_choices(answers, body),
        "usage": _usage(answers),
        "localswarm": _meta(answers, time.monotonic() - started),
    }, headers={"x-localswarm-strategy": strategy})


async def _stream(
    state: GatewayState, instances: list[Any], upstream: dict[str, Any], body: dict[str, Any], prompts: list[Any],
    strategy: str, n: int, include_usage: bool,
) -> AsyncIterator[str]:
    started = time.monotonic()
    writer = ChunkWriter(f"cmpl-{uuid.uuid4().hex}", state.model_id, object="text_completion")
    task = asyncio.ensure_future(_run(state, instances, upstream, prompts, strategy, n))
    try:
        ran: list[Any] = []
        async for event in keepalive_then(task, state.settings.keepalive_interval, ran):
            yield event
        if not ran:
            return
        answers = ran[0]
        meta = _meta(answers, time.monotonic() - started)
        for choice in _text_choices(answers, body):
            yield sse(writer.text_chunk(choice["text"], index=choice["index"], logprobs=choice["logprobs"]))
            last = choice["index"] == len(answers) * n - 1
            yield sse(writer.text_chunk("", choice["finish_reason"], index=choice["index"],
                                        **({"localswarm": meta} if last else {})))
        if include_usage:
            chunk = writer.usage_chunk(_usage(answers))
            chunk["object"] = "text_completion"
            yield sse(chunk)
        yield DONE
    finally:
        if not task.done():
            await fanout.cancel_and_wait({task})
