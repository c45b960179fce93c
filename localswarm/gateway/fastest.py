"""``fastest`` streaming: relay the first instance to produce output, cancel the others."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import httpx

from localswarm import upstream
from localswarm.errors import APIError, UpstreamError
from localswarm.gateway import fanout
from localswarm.gateway.state import GatewayState
from localswarm.gateway.streaming import DONE, KEEPALIVE, ChunkWriter, sse
from localswarm.supervisor.instance import Instance, Work

PATH = "/v1/chat/completions"


async def relay_fastest(
    state: GatewayState, instances: Sequence[Instance], body: dict[str, Any], include_usage: bool,
    *, strategy: str = "fastest",
) -> AsyncIterator[str]:
    """Relay the first instance to produce output; cancel the others.

    With one instance this is the one-voter path of any strategy (``strategy`` names it in
    the metadata): the stream is relayed chunk by chunk as the instance sends it.

    Raises :class:`~localswarm.errors.APIError` (before any event) when every instance
    refuses or fails.
    """
    settings = state.settings
    bodies = upstream.instance_bodies(body, len(instances), default_temperature=settings.temperature)
    writer = ChunkWriter(f"chatcmpl-{uuid.uuid4().hex}", state.model_id)
    tasks: dict[asyncio.Task[upstream.Stream], Instance] = {}
    work: dict[Instance, Work] = {}
    for inst, b in zip(instances, bodies):
        work[inst] = inst.request()
        tasks[asyncio.create_task(upstream.open_stream(state.client, inst, PATH, b, settings.instance_timeout))] = inst
    pending = set(tasks)
    winner: upstream.Stream | None = None
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
                exc = task.exception()
                if exc is None and winner is None:
                    winner = task.result()  # still streaming: its work stays open
                elif exc is None:
                    work[inst].abandoned()
                    await task.result().aclose()
                else:
                    if isinstance(exc, UpstreamError) and exc.refusal:
                        work[inst].abandoned()  # a malformed request: the client's error
                    else:
                        work[inst].failed()
                    if isinstance(exc, UpstreamError):
                        failed.errors.append(exc)
                        failed.failed[inst.name] = f"HTTP {exc.status}: {exc.message}"
                    else:
                        failed.failed[inst.name] = f"{type(exc).__name__}: {exc}".rstrip(": ")
        dropping, pending = pending, set()
        await _drop(dropping, tasks, work)
        if winner is None:
            try:
                fanout.raise_for_nothing(failed)
            except APIError as exc:
                if not yielded:
                    raise
                yield sse(exc.body())
                yield DONE
            return
        meta = {"strategy": strategy, "winner": winner.inst.name, "n": len(instances), "width": len(instances)}
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
        if not winner.events.done:
            try:
                async for chunk in winner.events:
                    if (event := rewrite(chunk)) is not None:
                        yield event
            except (httpx.HTTPError, ValueError, UpstreamError) as exc:
                problem = f"failed mid-stream: {type(exc).__name__}: {exc}"
            else:
                problem = "ended its stream before [DONE]"
            if not winner.events.done:  # a crash or a timeout after the first tokens: say so, don't fake success
                work[winner.inst].failed()
                yield sse(APIError(502, f"{winner.inst.name} {problem}", code="upstream_error").body())
                yield DONE
                return
        if include_usage and usage is not None:
            keys = ("prompt_tokens", "completion_tokens", "total_tokens")
            yield sse(writer.usage_chunk({k: usage[k] for k in keys if k in usage}))
        yield DONE
        if usage:
            state.record_tokens(usage)
        work[winner.inst].done(tokens=int((usage or {}).get("completion_tokens") or 0))
    finally:
        # Close the books first, without awaiting: the response's cancel scope re-cancels every await.
        if winner is not None:
            work[winner.inst].abandoned()  # a no-op when already closed
        with anyio.CancelScope(shield=True):
            await _drop(pending, tasks, work)
            if winner is not None:
                await winner.aclose()


async def _drop(
    pending: set[asyncio.Task[upstream.Stream]], tasks: dict[asyncio.Task[upstream.Stream], Instance],
    work: dict[Instance, Work],
) -> None:
    """Stop the streams that lost: close their work, cancel, and close any that opened meanwhile."""
    for task in pending:
        work[tasks[task]].abandoned()
    if not pending:
        return
    with anyio.CancelScope(shield=True):
        await fanout.cancel_and_wait(pending)
        for task in pending:  # finished before the cancel landed: its stream is open
            if not task.cancelled() and task.exception() is None:
                await task.result().aclose()
