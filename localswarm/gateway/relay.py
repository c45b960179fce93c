"""``fastest`` streaming: relay the first instance to produce output, cancel the others."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator

import anyio
import httpx

from localswarm.gateway import fanout
from localswarm.gateway.errors import APIError
from localswarm.gateway.state import GatewayState
from localswarm.gateway.streaming import DONE, KEEPALIVE, ChunkWriter, sse


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
            if "error" in chunk:
                err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                raise fanout.UpstreamError(int(err.get("code") or 500), str(err.get("message")), err.get("type"))
            stream.buffered.append(chunk)
            if _has_output(chunk):
                break
        return stream
    except BaseException:
        await response.aclose()
        raise


async def relay_fastest(
    state: GatewayState, instances: list[Any], body: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    """Relay the first instance to produce output; cancel the others.

    Raises :class:`APIError` (before any event) when every instance refuses or fails.
    """
    settings = state.settings
    bodies = fanout.instance_bodies(body, len(instances), default_temperature=settings.temperature)
    writer = ChunkWriter(f"chatcmpl-{uuid.uuid4().hex}", state.model_id)
    tasks: dict[asyncio.Task[_Stream], Any] = {}
    for inst, b in zip(instances, bodies):
        b = fanout.streamed_body(inst, b)
        tasks[asyncio.create_task(_open_stream(state.client, inst, b, settings.instance_timeout))] = inst
    for inst in instances:
        inst.stats.requests += 1
        inst.stats.in_flight += 1
    pending = set(tasks)
    winner: _Stream | None = None
    failed = fanout.Gathered(asked=len(instances))
    started = time.monotonic()
    yielded = False
    try:
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, timeout=settings.keepalive_interval,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                if time.monotonic() - started > settings.instance_timeout:
                    for task in pending:
                        failed.failed[tasks[task].name] = f"timed out after {settings.instance_timeout:g}s"
                    break
                yielded = True
                yield KEEPALIVE
                continue
            for task in done:
                inst = tasks[task]
                inst.stats.in_flight -= 1
                exc = task.exception()
                if exc is None and winner is None:
                    winner = task.result()
                    inst.stats.in_flight += 1  # still streaming
                elif exc is None:
                    await task.result().response.aclose()
                else:
                    if not (isinstance(exc, fanout.UpstreamError) and fanout.is_refusal(exc)):
                        inst.stats.failures += 1
                    if isinstance(exc, fanout.UpstreamError):
                        failed.errors.append(exc)
                        failed.failed[inst.name] = f"HTTP {exc.status}: {exc.message}"
                    else:
                        failed.failed[inst.name] = f"{type(exc).__name__}: {exc}".rstrip(": ")
        dropping, pending = pending, set()
        await _drop(dropping, tasks)
        if winner is None:
            try:
                fanout.raise_for_nothing(failed)
            except APIError as exc:
                if not yielded:
                    raise
                yield sse(exc.body())
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
        finished = winner.finished
        if not finished:
            try:
                async for line in winner.lines:
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        finished = True
                        break
                    if (event := rewrite(json.loads(payload))) is not None:
                        yield event
            except (httpx.HTTPError, ValueError) as exc:
                problem = f"failed mid-stream: {type(exc).__name__}: {exc}"
            else:
                problem = "ended its stream before [DONE]"
            if not finished:  # a crash or a timeout after the first tokens: say so, don't fake success
                winner.inst.stats.failures += 1
                yield sse(APIError(502, f"{winner.inst.name} {problem}", code="upstream_error").body())
                yield DONE
                return
        if include_usage and usage is not None:
            keys = ("prompt_tokens", "completion_tokens", "total_tokens")
            yield sse(writer.usage_chunk({k: usage[k] for k in keys if k in usage}))
        yield DONE
        if usage:
            winner.inst.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
            state.record_tokens(usage)
        winner.inst.stats.latency_total += time.monotonic() - started
        winner.inst.stats.generation_seconds += time.monotonic() - started
    finally:
        # Count first, without awaiting: the response's cancel scope re-cancels every await.
        if winner is not None:
            winner.inst.stats.in_flight -= 1
        with anyio.CancelScope(shield=True):
            await _drop(pending, tasks)
            if winner is not None:
                await winner.response.aclose()


async def _drop(pending: set[asyncio.Task[_Stream]], tasks: dict[asyncio.Task[_Stream], Any]) -> None:
    """Stop the streams that lost: uncount them, cancel, and close any that opened meanwhile."""
    for task in pending:
        tasks[task].stats.in_flight -= 1
    if not pending:
        return
    with anyio.CancelScope(shield=True):
        await fanout.cancel_and_wait(pending)
        for task in pending:  # finished before the cancel landed: its stream is open
            if not task.cancelled() and task.exception() is None:
                await task.result().response.aclose()
