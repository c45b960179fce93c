"""The OpenAI routes: /v1/chat/completions, /v1/models, /health, and our /localswarm/status."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, AsyncIterator

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localswarm.consensus import strategy_from_request, tool_calls_to_stream_deltas
from localswarm.gateway import fanout, voting
from localswarm.gateway.errors import APIError
from localswarm.gateway.state import GatewayState
from localswarm.gateway.streaming import DONE, KEEPALIVE, ChunkWriter, SSEResponse, sse
from localswarm.gateway.validation import read_json, validate_chat

logger = logging.getLogger(__name__)


def _state(request: Request) -> GatewayState:
    return request.app.state.gateway


async def health(request: Request) -> Response:
    state = _state(request)
    ready = len(state.supervisor.ready_instances())
    body = {"status": "ok" if ready else "unavailable", "ready": ready, "instances": len(state.supervisor.instances)}
    return JSONResponse(body, status_code=200 if ready else 503)


async def models(request: Request) -> Response:
    state = _state(request)
    created = int(state.started_at)
    data = [
        {"id": model_id, "object": "model", "created": created, "owned_by": "localswarm"}
        for model_id in state.model_ids()
    ]
    return JSONResponse({"object": "list", "data": data})


async def status(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(state.status())


def _strategy(request: Request, body: dict[str, Any], default: str) -> str:
    try:
        return strategy_from_request(request.headers, body, default)
    except ValueError as exc:
        raise APIError(400, str(exc), param="x-localswarm-strategy", code="invalid_value") from None


async def chat_completions(request: Request) -> Response:
    state = _state(request)
    body = await read_json(request, state.settings.max_body_bytes)
    validate_chat(body)
    strategy = _strategy(request, body, state.settings.strategy)
    instances = state.supervisor.ready_instances()
    if not instances:
        raise APIError(503, "No instance is ready yet; retry shortly.", code="swarm_unavailable",
                       headers={"Retry-After": "2"})
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if state.settings.stream_mode == "fastest" or strategy == "fastest":
            events = _relay_fastest(state, instances, body, include_usage)
        else:
            events = _stream_consensus(state, instances, body, strategy, include_usage)
        return SSEResponse(events, headers={"x-localswarm-strategy": strategy,
                                            "x-localswarm-instances": str(len(instances))})
    started = time.monotonic()
    voted = await _unless_client_leaves(request, voting.vote_round(state, instances, body, strategy))
    if voted is None:
        return Response(status_code=499)  # nobody is listening; the work was cancelled
    gathered, result = voted
    completion = voting.completion(state, gathered, result, body, time.monotonic() - started)
    meta = completion["localswarm"]
    headers = {
        "x-localswarm-strategy": result.strategy,
        "x-localswarm-confidence": f"{result.confidence:.3f}",
        "x-localswarm-votes": f"{meta['votes']}/{meta['n']}",
        "x-localswarm-winner": meta["winner"],
        "x-localswarm-instances": f"{len(gathered.samples)}/{gathered.asked}",
    }
    return JSONResponse(completion, headers=headers)


async def _unless_client_leaves(request: Request, work: Any) -> Any:
    """Await ``work`` but cancel it (and its upstream requests) if the client disconnects."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            await fanout.cancel_and_wait({task})
        watcher.cancel()
    if task.cancelled():
        logger.info("client disconnected; upstream work cancelled")
        return None
    return task.result()


async def _stream_consensus(
    state: GatewayState, instances: list[Any], body: dict[str, Any], strategy: str, include_usage: bool
) -> AsyncIterator[str]:
    """Vote first (keep-alive comments meanwhile), then stream the winner as chunks."""
    started = time.monotonic()
    writer = ChunkWriter(f"chatcmpl-{uuid.uuid4().hex}", state.model_id)
    task = asyncio.create_task(voting.vote_round(state, instances, body, strategy))
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=state.settings.keepalive_interval)
            if not done:
                yield KEEPALIVE
        try:
            gathered, result = task.result()
        except APIError as exc:
            yield sse(exc.body())
            yield DONE
            return
        message, finish, usage = voting.winning_message(gathered, result)
        meta = voting.metadata(gathered, result, time.monotonic() - started)
        deltas = tool_calls_to_stream_deltas(message.get("tool_calls") or [])
        for event in writer.answer(message, finish, deltas, meta):
            yield event
        if include_usage:
            yield sse(writer.usage_chunk(usage))
        yield DONE
    finally:
        if not task.done():
            await fanout.cancel_and_wait({task})


def _has_output(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("finish_reason"):
            return True
    return False


class _Stream:
    """One instance's upstream stream, opened and read up to its first output."""

    def __init__(self, inst: Any, response: httpx.Response, lines: AsyncIterator[str]) -> None:
        self.inst, self.response, self.lines = inst, response, lines
        self.buffered: list[dict[str, Any]] = []
        self.finished = False


async def _open_stream(client: httpx.AsyncClient, inst: Any, body: dict[str, Any], timeout: float) -> _Stream:
    request = client.build_request(
        "POST", inst.base_url + "/v1/chat/completions", json=body, headers=inst.auth_headers(),
        timeout=httpx.Timeout(timeout, connect=5.0),
    )
    response = await client.send(request, stream=True)
    try:
        if response.status_code != 200:
            await response.aread()
            raise fanout.upstream_error(response)
        stream = _Stream(inst, response, response.aiter_lines())
        async for line in stream.lines:
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                stream.finished = True
                break
            chunk = json.loads(payload)
            stream.buffered.append(chunk)
            if _has_output(chunk):
                break
        return stream
    except BaseException:
        await response.aclose()
        raise


async def _relay_fastest(
    state: GatewayState, instances: list[Any], body: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    """Relay the first instance to produce output; cancel the others."""
    settings = state.settings
    bodies = fanout.instance_bodies(body, len(instances), default_temperature=settings.temperature)
    writer = ChunkWriter(f"chatcmpl-{uuid.uuid4().hex}", state.model_id)
    tasks: dict[asyncio.Task[_Stream], Any] = {}
    for inst, b in zip(instances, bodies):
        b = {**b, "stream": True, "stream_options": {"include_usage": True}}
        tasks[asyncio.create_task(_open_stream(state.client, inst, b, settings.instance_timeout))] = inst
    for inst in instances:
        inst.stats.requests += 1
        inst.stats.in_flight += 1
    pending = set(tasks)
    winner: _Stream | None = None
    errors: list[str] = []
    started = time.monotonic()
    try:
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, timeout=settings.keepalive_interval,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                if time.monotonic() - started > settings.instance_timeout:
                    break
                yield KEEPALIVE
                continue
            for task in done:
                inst = tasks[task]
                inst.stats.in_flight -= 1
                if task.exception() is None and winner is None:
                    winner = task.result()
                    inst.stats.in_flight += 1  # still streaming
                elif task.exception() is None:
                    await task.result().response.aclose()
                else:
                    inst.stats.failures += 1
                    errors.append(f"{inst.name}: {task.exception()}")
        if pending:
            await fanout.cancel_and_wait(pending)
            for task in pending:
                tasks[task].stats.in_flight -= 1
        pending = set()
        if winner is None:
            message = "; ".join(errors) or "no instance produced output in time"
            yield sse(APIError(502, f"Every instance failed ({message}).", code="upstream_error").body())
            yield DONE
            return
        meta = {"strategy": "fastest", "winner": winner.inst.name, "n": len(instances)}
        usage: dict[str, Any] | None = None

        def rewrite(chunk: dict[str, Any]) -> str | None:
            nonlocal usage
            if chunk.get("usage") and not chunk.get("choices"):
                usage = chunk["usage"]
                return None
            chunk.pop("usage", None)
            chunk.pop("timings", None)
            chunk.update(id=writer.id, model=writer.model, created=writer.created)
            if any(c.get("finish_reason") for c in chunk.get("choices") or []):
                chunk["localswarm"] = meta
            return sse(chunk)

        for chunk in winner.buffered:
            if (event := rewrite(chunk)) is not None:
                yield event
        if not winner.finished:
            async for line in winner.lines:
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                if (event := rewrite(json.loads(payload))) is not None:
                    yield event
        if include_usage and usage is not None:
            yield sse(writer.usage_chunk({k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage}))
        yield DONE
        if usage:
            winner.inst.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
        winner.inst.stats.latency_total += time.monotonic() - started
        winner.inst.stats.generation_seconds += time.monotonic() - started
    finally:
        if pending:
            await fanout.cancel_and_wait(pending)
            for task in pending:
                tasks[task].stats.in_flight -= 1
        if winner is not None:
            winner.inst.stats.in_flight -= 1
            await winner.response.aclose()


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/health", health, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/localswarm/status", status, methods=["GET"]),
]
