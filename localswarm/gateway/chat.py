"""``POST /v1/chat/completions``: validate, vote (or relay the fastest), answer or stream.

Streamed requests in ``consensus`` mode are voted first (``: keep-alive`` comments while
the vote runs), then the winner is streamed as chunks. ``n > 1`` gives several choices
(see :mod:`localswarm.gateway.choices`); when ``n`` exceeds the ready instances, extra
rounds with new seeds provide the rest. ``fastest`` streaming relays one instance live and
so answers ``n > 1`` through the consensus path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localswarm.consensus import VoteResult, strategy_from_request, tool_calls_to_stream_deltas
from localswarm.gateway import choices, fanout, params, voting
from localswarm.gateway.counters import RequestCounters
from localswarm.gateway.errors import APIError
from localswarm.gateway.relay import relay_fastest
from localswarm.gateway.state import GatewayState
from localswarm.gateway.streaming import DONE, ChunkWriter, SSEResponse, keepalive_then, prefetch, sse, unless_client_leaves
from localswarm.gateway.validation import read_json, validate_chat

logger = logging.getLogger(__name__)


def gateway_state(request: Request) -> GatewayState:
    return request.app.state.gateway


def counters(request: Request) -> RequestCounters:
    return request.app.state.counters


def request_strategy(request: Request, body: dict[str, Any], default: str) -> str:
    try:
        return strategy_from_request(request.headers, body, default)
    except ValueError as exc:
        raise APIError(400, str(exc), param="x-localswarm-strategy", code="invalid_value") from None


def ready_instances(state: GatewayState) -> list[Any]:
    instances = state.supervisor.ready_instances()
    if not instances:
        raise APIError(503, "No instance is ready yet; retry shortly.", code="swarm_unavailable",
                       headers={"Retry-After": "2"})
    return instances


async def extra_samples(
    state: GatewayState, instances: list[Any], body: dict[str, Any], needed: int, *, path: str = "/v1/chat/completions"
) -> list[fanout.Sample]:
    """``needed`` more samples, spread over the instances (each slot busy), each with its own seed."""
    found: list[fanout.Sample] = []
    seed = body.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    width = max(1, len(instances) * state.settings.parallel)
    rounds = 0
    while needed > 0 and rounds < needed // width + 2:
        rounds += 1
        batch = [instances[i % len(instances)] for i in range(min(needed, width))]
        round_body = {k: v for k, v in body.items() if k != "seed"}
        if seed is not None:  # distinct from the vote round's seed + i
            round_body["seed"] = (seed + len(instances) + (rounds - 1) * width) % 2**32
        bodies = fanout.instance_bodies(round_body, len(batch), default_temperature=state.settings.temperature)
        gathered = await fanout.gather(state.client, batch, bodies, timeout=state.settings.instance_timeout, path=path)
        found += gathered.samples
        needed -= len(gathered.samples)
        if not gathered.samples:
            break
    return found


async def _vote(
    state: GatewayState, instances: list[Any], body: dict[str, Any], strategy: str, n: int
) -> tuple[fanout.Gathered, VoteResult, list[fanout.Sample]]:
    gathered, result = await voting.vote_round(state, instances, body, strategy)
    extra = await extra_samples(state, instances, body, n - len(gathered.samples)) if n > 1 else []
    return gathered, result, extra


def _log(kind: str, body: dict[str, Any], meta: dict[str, Any], stream: bool) -> None:
    logger.info(
        "%s: voted strategy=%s stream=%s tools=%d n=%s max_tokens=%s winner=%s votes=%s/%s confidence=%s latency=%ss",
        kind, meta.get("strategy"), stream, len(body.get("tools") or []), body.get("n") or 1,
        body.get("max_tokens") or body.get("max_completion_tokens"), meta.get("winner"),
        meta.get("votes"), meta.get("n"), meta.get("confidence"), meta.get("latency_s"),
    )


async def chat_completions(request: Request) -> Response:
    state = gateway_state(request)
    body = await read_json(request, state.settings.max_body_bytes)
    validate_chat(body)
    strategy = request_strategy(request, body, state.settings.strategy)
    upstream = params.upstream_body(body)
    instances = ready_instances(state)
    n = int(body.get("n") or 1)
    count = counters(request)
    count.chat += 1
    count.with_tools += int(bool(body.get("tools")))
    count.multi_choice += int(n > 1)
    if body.get("stream"):
        count.streamed += 1
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        fastest = state.settings.stream_mode == "fastest" or strategy == "fastest"
        if fastest and n == 1:
            events = relay_fastest(state, instances, upstream, include_usage)
        else:
            events = _stream_consensus(request, state, instances, upstream, body, strategy, include_usage)
        events = await prefetch(events)
        return SSEResponse(events, headers={"x-localswarm-strategy": strategy,
                                            "x-localswarm-instances": str(len(instances))})
    started = time.monotonic()
    voted = await unless_client_leaves(request, _vote(state, instances, upstream, strategy, n))
    if voted is None:
        return Response(status_code=499)  # nobody is listening; the work was cancelled
    gathered, result, extra = voted
    completion = voting.completion(state, gathered, result, body, time.monotonic() - started, extra=extra)
    count.voted += 1
    state.record_tokens(completion.get("usage"))
    meta = completion["localswarm"]
    _log("chat", body, meta, False)
    headers = {
        "x-localswarm-strategy": result.strategy,
        "x-localswarm-confidence": f"{result.confidence:.3f}",
        "x-localswarm-votes": f"{meta.get('votes')}/{meta.get('n')}",
        "x-localswarm-winner": str(meta.get("winner")),
        "x-localswarm-instances": f"{len(gathered.samples)}/{gathered.asked}",
    }
    if (checked := result.exec_summary()) is not None:
        headers["x-localswarm-exec"] = checked
    return JSONResponse(completion, headers=headers)


async def _stream_consensus(
    request: Request,
    state: GatewayState,
    instances: list[Any],
    upstream: dict[str, Any],
    body: dict[str, Any],
    strategy: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Vote first (keep-alive comments meanwhile), then stream the chosen answers as chunks.

    Raises :class:`APIError` when the vote fails before any event went out.
    """
    started = time.monotonic()
    n = int(body.get("n") or 1)
    writer = ChunkWriter(f"chatcmpl-{uuid.uuid4().hex}", state.model_id)
    task = asyncio.create_task(_vote(state, instances, upstream, strategy, n))
    try:
        voted: list[Any] = []
        async for event in keepalive_then(task, state.settings.keepalive_interval, voted):
            yield event
        if not voted:
            return
        gathered, result, extra = voted[0]
        message, finish, _ = voting.winning_message(gathered, result)
        picked = choices.pick(gathered, result, (message, finish), n=n, extra=extra)
        meta = voting.metadata(gathered, result, time.monotonic() - started)
        if extra:
            meta["usage_total"] = choices.swarm_total([*gathered.samples, *extra])
        count = counters(request)
        count.voted += 1
        count.voted_streamed_with_tools += int(bool(body.get("tools")))
        _log("chat", body, meta, True)
        with_logprobs = bool(body.get("logprobs"))
        for index, choice in enumerate(picked):
            deltas = tool_calls_to_stream_deltas(choice.message.get("tool_calls") or [])
            for event in writer.answer(
                choice.message, choice.finish_reason, deltas, meta if index == 0 else None,
                index=index, logprobs=choice.logprobs if with_logprobs else None,
            ):
                yield event
        state.record_tokens(choices.usage(picked))
        if include_usage:
            yield sse(writer.usage_chunk(choices.usage(picked), localswarm={"usage_total": meta.get("usage_total")}))
        yield DONE
    finally:
        if not task.done():
            await fanout.cancel_and_wait({task})
