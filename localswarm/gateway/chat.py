"""``POST /v1/chat/completions``: parse, vote (or relay the fastest), answer or stream.

Streamed requests in ``consensus`` mode are voted first (``: keep-alive`` comments while
the vote runs), then the winner is streamed as chunks. ``n > 1`` gives several choices:
choice 0 is the vote's winner, then the other answers (see :meth:`Round.choices
<localswarm.gateway.rounds.Round.choices>`); when ``n`` exceeds the ready instances, extra
rounds with new seeds provide the rest. ``fastest`` streaming relays one instance live
and so answers ``n > 1`` through the consensus path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localswarm.consensus import tool_calls_to_stream_deltas
from localswarm.gateway import fanout
from localswarm.gateway.fastest import relay_fastest
from localswarm.gateway.queue import client_key
from localswarm.gateway.request import ChatRequest, parse_chat
from localswarm.gateway.rounds import Round, ready_instances, usage, vote_round
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
from localswarm.upstream import Answer

logger = logging.getLogger(__name__)


def choice_json(answer: Answer, index: int, *, with_logprobs: bool) -> dict[str, Any]:
    """One ``choices[i]`` of a ``chat.completion``."""
    lp = {"content": answer.logprobs, "refusal": None} if with_logprobs and answer.logprobs else None
    return {"index": index, "message": answer.message(), "logprobs": lp, "finish_reason": answer.finish_reason}


def _log(kind: str, req: ChatRequest, meta: dict[str, Any], stream: bool) -> None:
    body = req.body
    logger.info(
        "%s: voted strategy=%s stream=%s tools=%d n=%s max_tokens=%s winner=%s votes=%s/%s confidence=%s latency=%ss",
        kind, meta.get("strategy"), stream, len(body.get("tools") or []), req.n,
        body.get("max_tokens") or body.get("max_completion_tokens"), meta.get("winner"),
        meta.get("votes"), meta.get("n"), meta.get("confidence"), meta.get("latency_s"),
    )


async def chat_completions(request: Request) -> Response | SSEResponse:
    state = gateway_state(request)
    req = await parse_chat(request, state.settings)
    instances = ready_instances(state)
    count = state.counters
    count.chat += 1
    count.with_tools += int(req.tools)
    count.multi_choice += int(req.n > 1)
    # Wait for instance slots in the fair queue (a 429 only when it is full); the width
    # granted is how many instances this request asks (issue 13).
    queue = state.queue
    ticket = queue.join(client_key(request))
    if req.stream:
        count.streamed += 1
        fastest = state.settings.stream_mode == "fastest" or req.strategy == "fastest"
        widths: list[int] = []

        def events_for(width: int) -> AsyncIterator[str]:
            widths.append(width)
            chosen = state.affinity.choose(state.supervisor.ready_instances() or instances, width, req.body)
            federated = state.federation is not None and state.federation.should_coordinate()
            if req.n == 1 and (fastest or (len(chosen) == 1 and not federated)):
                # One voter, or the fastest wins: relay the upstream stream as it comes (a
                # federated request has more voters: the peers).
                return relay_fastest(state, chosen, req.upstream, req.include_usage,
                                     strategy="fastest" if fastest else req.strategy)
            return _stream_consensus(state, chosen, req)

        events = await prefetch(queue.stream(ticket, events_for, state.settings.keepalive_interval))
        headers = {"x-localswarm-strategy": req.strategy, "x-localswarm-instances": str(len(instances))}
        if widths:  # admitted before the first event (else the width is in the last chunk's metadata)
            headers["x-localswarm-width"] = str(widths[0])
        return SSEResponse(events, headers=headers)
    started = time.monotonic()

    async def vote(width: int) -> Round:
        chosen = state.affinity.choose(state.supervisor.ready_instances() or instances, width, req.body)
        return await vote_round(state, chosen, req.upstream, req.strategy, n=req.n)

    voted = await unless_client_leaves(request, queue.run(ticket, vote))
    if voted is None:
        return Response(status_code=499)  # nobody is listening; the work was cancelled
    meta = voted.metadata(time.monotonic() - started)
    picked = voted.choices(req.n)
    total = usage(picked)
    completion = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_id,
        "system_fingerprint": f"localswarm-{state.model_id}",
        "choices": [choice_json(a, i, with_logprobs=req.logprobs) for i, a in enumerate(picked)],
        "usage": total,
        "localswarm": meta,
    }
    count.voted += 1
    state.record_tokens(total)
    _log("chat", req, meta, False)
    return JSONResponse(completion, headers=voted.headers(meta))


def answer_events(writer: ChunkWriter, picked: Sequence[Answer], meta: dict[str, Any], *, logprobs: bool) -> list[str]:
    """The chunks of every choice: role, content, tool-call deltas, finish (metadata on choice 0)."""
    events: list[str] = []
    for index, answer in enumerate(picked):
        deltas = tool_calls_to_stream_deltas(answer.tool_calls or [])
        events += writer.answer(answer.message(), answer.finish_reason, deltas, meta if index == 0 else None,
                                index=index, logprobs=answer.logprobs if logprobs else None)
    return events


async def _stream_consensus(state: GatewayState, instances: Sequence[Instance], req: ChatRequest) -> AsyncIterator[str]:
    """Vote first (keep-alive comments meanwhile), then stream the chosen answers as chunks.

    Raises :class:`~localswarm.errors.APIError` when the vote fails before any event went out.
    """
    started = time.monotonic()
    writer = ChunkWriter(f"chatcmpl-{uuid.uuid4().hex}", state.model_id)
    task = asyncio.create_task(vote_round(state, instances, req.upstream, req.strategy, n=req.n))
    try:
        voted: list[Round] = []
        async for event in keepalive_then(task, state.settings.keepalive_interval, voted):
            yield event
        if not voted:
            return
        outcome = voted[0]
        picked = outcome.choices(req.n)
        meta = outcome.metadata(time.monotonic() - started)
        meta.pop("extra_samples", None)
        count = state.counters
        count.voted += 1
        count.voted_streamed_with_tools += int(req.tools)
        _log("chat", req, meta, True)
        for event in answer_events(writer, picked, meta, logprobs=req.logprobs):
            yield event
        state.record_tokens(usage(picked))
        if req.include_usage:
            yield sse(writer.usage_chunk(usage(picked), localswarm={"usage_total": meta.get("usage_total")}))
        yield DONE
    finally:
        if not task.done():
            await fanout.cancel_and_wait({task})
