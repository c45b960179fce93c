"""Send one request to every ready instance, gather answers until quorum or timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from localswarm.consensus import Candidate, assemble_stream_deltas
from localswarm.gateway.errors import APIError
from localswarm.supervisor.instance import Instance

logger = logging.getLogger(__name__)

# Fields the gateway owns: never forwarded as the client sent them.
_OWNED = {"stream", "stream_options", "n", "localswarm", "localswarm_strategy"}


def instance_bodies(body: dict[str, Any], count: int, *, default_temperature: float) -> list[dict[str, Any]]:
    """One upstream body per instance: distinct seeds so the vote sees diverse samples."""
    base = {k: v for k, v in body.items() if k not in _OWNED}
    if base.get("temperature") is None:
        base["temperature"] = default_temperature
    if base.get("max_tokens") is None and base.get("max_completion_tokens") is not None:
        base["max_tokens"] = base["max_completion_tokens"]
    base.pop("max_completion_tokens", None)
    seed = body.get("seed")
    first = seed if isinstance(seed, int) and not isinstance(seed, bool) else random.randrange(2**31)
    return [{**base, "seed": (first + i) % 2**32} for i in range(count)]


class UpstreamError(Exception):
    def __init__(self, status: int, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_


def upstream_error(resp: httpx.Response) -> UpstreamError:
    message = resp.text[:500]
    type_ = None
    with contextlib.suppress(Exception):
        err = resp.json().get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            type_ = err.get("type")
        elif isinstance(err, str):
            message = err
    return UpstreamError(resp.status_code, message, type_)


# llama-server's ex_wrapper (tools/server/server.cpp) answers std::invalid_argument and JSON
# type errors with 400, and every other exception with 500, which includes its parsers'
# std::runtime_error refusals of a malformed request: "Failed to parse tools: Missing tool
# type" (common/chat.cpp), "Failed to parse messages: ...", "Unsupported param: suffix",
# "Cannot use both json_schema and grammar", "tools param requires --jinja flag"
# (server-common.cpp), "Error: dry_sequence_breakers must be ..." (server-schema.cpp), and
# an input longer than the batch or context (server-context.cpp: "input (750 tokens) is too
# large to process. increase the physical batch size", found by the mutation fuzzer).
_REFUSAL_500 = re.compile(
    r"Failed to parse|Unsupported param|Cannot use|Cannot specify|requires --jinja|must be|is required"
    r"|\[json\.exception\.|json_schema|JSON schema|Only no echo|Invalid tool_choice|Invalid 'content'|Missing '"
    r"|Unknown reasoning format|is too large to process|larger than the max context size",
    re.IGNORECASE,
)


def is_refusal(err: UpstreamError) -> bool:
    """Did the instance refuse the request as malformed (the client's error, not the instance's)?

    A 400/413/422, or a 500 whose message is one of llama-server's parse errors. Such an
    answer is passed to the client as a 400 and does not count as the instance failing.
    """
    if err.status in (400, 413, 422):
        return True
    return err.status == 500 and bool(_REFUSAL_500.search(err.message))


@dataclass
class Sample:
    instance: Instance
    response: dict[str, Any]
    candidate: Candidate

    @property
    def usage(self) -> dict[str, int]:
        return self.response.get("usage") or {}


@dataclass
class Gathered:
    samples: list[Sample] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # instance → why it is not in the vote
    errors: list[UpstreamError] = field(default_factory=list)
    early_stop: bool = False
    asked: int = 0


def to_candidate(name: str, response: dict[str, Any], latency: float) -> Candidate:
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return Candidate(
        id=name,
        text=message.get("content") or "",
        tool_calls=message.get("tool_calls") or [],
        finish_reason=choice.get("finish_reason"),
        latency_s=latency,
    )


def record(inst: Instance, started: float, response: dict[str, Any] | None) -> None:
    """Account one finished upstream request in the instance's stats."""
    latency = time.monotonic() - started
    if response is None:
        inst.stats.failures += 1
        return
    inst.stats.latency_total += latency
    usage = response.get("usage") or {}
    timings = response.get("timings") or {}
    tokens = int(usage.get("completion_tokens") or timings.get("predicted_n") or 0)
    inst.stats.completion_tokens += tokens
    predicted_ms = timings.get("predicted_ms")
    inst.stats.generation_seconds += (predicted_ms / 1000) if predicted_ms else latency


async def call_instance(
    client: httpx.AsyncClient, inst: Instance, path: str, body: dict[str, Any], timeout: float
) -> Sample:
    """Ask one instance and rebuild a whole ``chat.completion`` from its stream.

    The upstream request streams even when the client's does not: llama-server notices a
    closed connection only when it writes, so cancelling a streamed request frees the slot
    at once, while a non-streamed one would keep decoding for nobody.
    """
    inst.stats.requests += 1
    inst.stats.in_flight += 1
    started = time.monotonic()
    response: dict[str, Any] | None = None
    refused = False
    upstream = streamed_body(inst, body)
    try:
        request = client.build_request("POST", inst.base_url + path, json=upstream, headers=inst.auth_headers(),
                                       timeout=httpx.Timeout(timeout, connect=5.0))
        resp = await send_with_retry(client, request)
        try:
            if resp.status_code != 200:
                await resp.aread()
                raise upstream_error(resp)
            response = await _collect(resp)
        finally:
            await resp.aclose()
        return Sample(inst, response, to_candidate(inst.name, response, time.monotonic() - started))
    except UpstreamError as exc:
        refused = is_refusal(exc)
        raise
    finally:
        inst.stats.in_flight -= 1
        if not refused:  # a refused malformed request is not the instance failing
            record(inst, started, response)


def streamed_body(inst: Instance, body: dict[str, Any]) -> dict[str, Any]:
    """What one instance is sent: always streamed with usage, always the served model id.

    The served id because mlx_lm.server would try to load any other name it is sent.
    """
    return {**body, "model": inst.backend.model_id, "stream": True, "stream_options": {"include_usage": True}}


async def send_with_retry(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send (streamed); retry once when a pooled keep-alive connection turns out closed.

    llama-server closes the connection after a streamed response; a pooled connection can
    be reused in the instant before that close is seen, and the request then fails before
    the server read it. Nothing was generated, so sending it again is safe.
    """
    try:
        return await client.send(request, stream=True)
    except httpx.RemoteProtocolError:
        return await client.send(request, stream=True)


async def _collect(resp: httpx.Response) -> dict[str, Any]:
    content: list[str] = []
    reasoning: list[str] = []
    tool_deltas: list[dict[str, Any]] = []
    logprobs: list[Any] = []
    finish: str | None = None
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        chunk = json.loads(payload)
        if "error" in chunk:
            err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise UpstreamError(int(err.get("code") or 500), str(err.get("message")), err.get("type"))
        usage = chunk.get("usage") or usage
        timings = chunk.get("timings") or timings
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            if choice.get("text"):  # a legacy /v1/completions stream
                content.append(choice["text"])
            if delta.get("reasoning_content"):
                reasoning.append(delta["reasoning_content"])
            if delta.get("tool_calls"):
                tool_deltas.append({"tool_calls": delta["tool_calls"]})
            if (choice.get("logprobs") or {}).get("content"):
                logprobs.extend(choice["logprobs"]["content"])
            finish = choice.get("finish_reason") or finish
    tool_calls = assemble_stream_deltas(tool_deltas) if tool_deltas else []
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content or not tool_calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice_out: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish,
                                  "logprobs": {"content": logprobs} if logprobs else None}
    return {"choices": [choice_out], "usage": usage, "timings": timings}


async def gather(
    client: httpx.AsyncClient,
    instances: list[Instance],
    bodies: list[dict[str, Any]],
    *,
    timeout: float,
    path: str = "/v1/chat/completions",
    quorum: Callable[[list[Candidate], int], bool] | None = None,
) -> Gathered:
    """Fan out; return when all answered, a quorum agrees, or the timeout strikes.

    Stragglers are cancelled (their connections closed) and named in ``failed``.
    """
    result = Gathered(asked=len(instances))
    tasks = {
        asyncio.create_task(call_instance(client, inst, path, body, timeout), name=f"fanout-{inst.name}"): inst
        for inst, body in zip(instances, bodies)
    }
    pending = set(tasks)
    deadline = time.monotonic() + timeout
    try:
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                for task in pending:
                    result.failed[tasks[task].name] = f"timed out after {timeout:g}s"
                break
            for task in done:
                name = tasks[task].name
                exc = task.exception()
                if exc is None:
                    result.samples.append(task.result())
                elif isinstance(exc, UpstreamError):
                    result.errors.append(exc)
                    result.failed[name] = f"HTTP {exc.status}: {exc.message}"
                else:
                    result.failed[name] = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    logger.warning("%s failed: %r", name, exc)
            if pending and quorum and result.samples and quorum(
                [s.candidate for s in result.samples], len(instances)
            ):
                result.early_stop = True
                for task in pending:
                    result.failed[tasks[task].name] = "cancelled: quorum reached"
                break
    finally:
        await cancel_and_wait(pending)
    return result


async def cancel_and_wait(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel tasks once and wait for their cleanup (closing upstream connections).

    ``asyncio.wait`` rather than ``gather``: cancelling a waiting ``gather`` cancels its
    children a second time, which interrupts httpx mid-close and leaves the upstream
    connection open, so llama-server keeps decoding for nobody.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


def raise_for_nothing(gathered: Gathered) -> None:
    """No sample came back: answer with the instances' own 4xx if they agree, else 502/504."""
    if gathered.samples:
        return
    client_errors = [e for e in gathered.errors if 400 <= e.status < 500 or is_refusal(e)]
    if client_errors:
        e = client_errors[0]
        code = "context_length_exceeded" if "context" in e.message.lower() else None
        raise APIError(400 if e.status != 404 else 404, e.message, code=code)
    reasons = "; ".join(f"{k}: {v}" for k, v in gathered.failed.items())
    if gathered.failed and all(v.startswith("timed out") for v in gathered.failed.values()):
        raise APIError(504, f"No instance answered in time ({reasons}).", code="upstream_timeout")
    raise APIError(502, f"Every instance failed ({reasons or 'no instance asked'}).", code="upstream_error")
