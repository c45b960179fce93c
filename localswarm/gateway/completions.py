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
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localswarm.gateway import fanout
from localswarm.gateway.request import CompletionRequest, parse_completion
from localswarm.gateway.rounds import Round, ready_instances, swarm_total, usage, vote_round
from localswarm.gateway.queue import client_key, pick
from localswarm.gateway.state import GatewayState, gateway_state
from localswarm.gateway.streaming import (
    DONE,
    ChunkWriter,
    SSEResponse,
    keepalive_then,
    prefetch,
    sse,
    unless_client_leaves,
)
from localswarm.supervisor.instance import Instance

PATH = "/v1/completions"


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


async def _rounds(state: GatewayState, instances: Sequence[Instance], req: CompletionRequest) -> list[Round]:
    """One vote round per prompt, in parallel."""
    tasks = [asyncio.ensure_future(vote_round(state, instances, {**req.upstream, "prompt": p}, req.strategy,
                                              n=req.n, path=PATH)) for p in req.prompts]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        pending = {t for t in tasks if not t.done()}
        if pending:
            await fanout.cancel_and_wait(pending)


def _text_choices(rounds: list[Round], req: CompletionRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for prompt, voted in zip(req.prompts, rounds):
        prefix = prompt if req.echo and isinstance(prompt, str) else ""
        for answer in voted.choices(req.n):
            out.append({
                "index": len(out),
                "text": prefix + (answer.message().get("content") or ""),
                "logprobs": legacy_logprobs(answer.logprobs, len(prefix)) if req.logprobs else None,
                "finish_reason": answer.finish_reason or "stop",
            })
    return out


def _usage(rounds: list[Round], n: int) -> dict[str, Any]:
    prompt = sum(usage(r.choices(n))["prompt_tokens"] for r in rounds)
    completion = sum(usage(r.choices(n))["completion_tokens"] for r in rounds)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _meta(rounds: list[Round], latency: float) -> dict[str, Any]:
    meta = rounds[0].metadata(latency)
    meta.pop("extra_samples", None)
    meta["usage_total"] = swarm_total([a for r in rounds for a in (*r.answers, *r.extra)])
    if len(rounds) > 1:
        meta["prompts"] = len(rounds)
    return meta


async def completions(request: Request) -> Response | SSEResponse:
    state = gateway_state(request)
    req = await parse_completion(request, state.settings)
    instances = ready_instances(state)
    state.counters.completions += 1
    ticket = state.queue.join(client_key(request))  # wait for slots in the fair queue (issue 13)
    if req.stream:
        events = await prefetch(state.queue.stream(
            ticket, lambda width: _stream(state, pick(instances, width), req), state.settings.keepalive_interval))
        return SSEResponse(events, headers={"x-localswarm-strategy": req.strategy})
    started = time.monotonic()

    async def run(width: int) -> list[Round]:
        return await _rounds(state, pick(instances, width), req)

    rounds = await unless_client_leaves(request, state.queue.run(ticket, run))
    if rounds is None:
        return Response(status_code=499)
    return JSONResponse({
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": state.model_id,
        "system_fingerprint": f"localswarm-{state.model_id}",
        "choices": _text_choices(rounds, req),
        "usage": _usage(rounds, req.n),
        "localswarm": _meta(rounds, time.monotonic() - started),
    }, headers={"x-localswarm-strategy": req.strategy})


async def _stream(state: GatewayState, instances: Sequence[Instance], req: CompletionRequest) -> AsyncIterator[str]:
    started = time.monotonic()
    writer = ChunkWriter(f"cmpl-{uuid.uuid4().hex}", state.model_id, object="text_completion")
    task = asyncio.ensure_future(_rounds(state, instances, req))
    try:
        ran: list[list[Round]] = []
        async for event in keepalive_then(task, state.settings.keepalive_interval, ran):
            yield event
        if not ran:
            return
        rounds = ran[0]
        meta = _meta(rounds, time.monotonic() - started)
        for choice in _text_choices(rounds, req):
            yield sse(writer.text_chunk(choice["text"], index=choice["index"], logprobs=choice["logprobs"]))
            last = choice["index"] == len(rounds) * req.n - 1
            yield sse(writer.text_chunk("", choice["finish_reason"], index=choice["index"],
                                        **({"localswarm": meta} if last else {})))
        if req.include_usage:
            chunk = writer.usage_chunk(_usage(rounds, req.n))
            chunk["object"] = "text_completion"
            yield sse(chunk)
        yield DONE
    finally:
        if not task.done():
            await fanout.cancel_and_wait({task})
