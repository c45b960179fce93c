"""The calls to an instance: one send with retry, a whole answer, a live stream, a JSON post.

Every request to llama-server or mlx_lm.server goes through :func:`send`, and every
request is accounted through :meth:`Instance.request() <localswarm.supervisor.instance.Instance.request>`
by its caller, so the supervisor's counters (in flight, failures, tokens) stay its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import httpx

from localswarm.consensus import assemble_stream_deltas
from localswarm.errors import UpstreamError
from localswarm.upstream.answer import Answer
from localswarm.upstream.policy import for_instance
from localswarm.upstream.sse import EventReader

if TYPE_CHECKING:
    from localswarm.supervisor.instance import Instance

__all__ = ["Stream", "ask", "fetch_metrics", "has_output", "is_refusal", "open_stream", "post_json", "send",
           "upstream_error"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0


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


def is_refusal(status: int, message: str) -> bool:
    """Did the instance refuse the request as malformed (the client's error, not the instance's)?

    A 400/413/422, or a 500 whose message is one of llama-server's parse errors.
    """
    if status in (400, 413, 422):
        return True
    return status == 500 and bool(_REFUSAL_500.search(message))


def upstream_error(resp: httpx.Response) -> UpstreamError:
    """The instance's own error message and type from a non-200 response (read already)."""
    message = resp.text[:500]
    type_ = None
    with contextlib.suppress(Exception):
        err = resp.json().get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            type_ = err.get("type")
        elif isinstance(err, str):
            message = err
    return UpstreamError(resp.status_code, message, type_, refusal=is_refusal(resp.status_code, message))


async def send(
    client: httpx.AsyncClient, inst: Instance, path: str, body: dict[str, Any], timeout: float, *, stream: bool = True
) -> httpx.Response:
    """POST ``body`` to ``inst``; retry once when a pooled keep-alive connection turns out closed.

    llama-server closes the connection after a streamed response; a pooled connection can
    be reused in the instant before that close is seen, and the request then fails before
    the server read it. Nothing was generated, so sending it again is safe. A non-200
    answer is read and raised as :class:`~localswarm.errors.UpstreamError`.
    """
    request = client.build_request("POST", inst.base_url + path, json=body, headers=inst.auth_headers(),
                                   timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT))
    try:
        resp = await client.send(request, stream=True)
    except httpx.RemoteProtocolError:
        resp = await client.send(request, stream=True)
    if resp.status_code != 200:
        try:
            await resp.aread()
        finally:
            await resp.aclose()
        raise upstream_error(resp)
    if not stream:
        try:
            await resp.aread()
        finally:
            await resp.aclose()
    return resp


async def ask(client: httpx.AsyncClient, inst: Instance, path: str, body: dict[str, Any], timeout: float) -> Answer:
    """Ask one instance (streamed upstream, see :func:`~localswarm.upstream.policy.for_instance`)
    and collect its whole :class:`Answer`; the instance's stats record the outcome."""
    with inst.request() as work:
        started = time.monotonic()
        resp = await send(client, inst, path, for_instance(inst, body), timeout)
        try:
            answer = await collect(inst.name, EventReader(resp.aiter_lines()))
        finally:
            await resp.aclose()
        answer.latency_s = time.monotonic() - started
        work.done(tokens=answer.generated_tokens, generation_s=answer.generation_s)
        return answer


async def collect(name: str, events: EventReader) -> Answer:
    """Fold a chat (or legacy ``/v1/completions``) stream into one :class:`Answer`."""
    content: list[str] = []
    reasoning: list[str] = []
    tool_deltas: list[dict[str, Any]] = []
    logprobs: list[Any] = []
    finish: str | None = None
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    async for chunk in events:
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
    return Answer(
        id=name,
        text="".join(content),
        tool_calls=assemble_stream_deltas(tool_deltas) if tool_deltas else [],
        finish_reason=finish,
        reasoning="".join(reasoning),
        usage=usage,
        timings=timings,
        logprobs=logprobs or None,
    )


def has_output(chunk: dict[str, Any]) -> bool:
    """A chunk that carries text, a tool call or a finish (not only a role or usage)."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("finish_reason"):
            return True
    return False


class Stream:
    """One instance's live stream, read up to its first output (``buffered``)."""

    def __init__(self, inst: Instance, response: httpx.Response) -> None:
        self.inst, self.response = inst, response
        self.events = EventReader(response.aiter_lines())
        self.buffered: list[dict[str, Any]] = []

    async def aclose(self) -> None:
        await self.response.aclose()


async def open_stream(
    client: httpx.AsyncClient, inst: Instance, path: str, body: dict[str, Any], timeout: float
) -> Stream:
    """Send ``body`` streamed and read until the first chunk with output (or ``[DONE]``)."""
    response = await send(client, inst, path, for_instance(inst, body), timeout)
    try:
        stream = Stream(inst, response)
        async for chunk in stream.events:
            stream.buffered.append(chunk)
            if has_output(chunk):
                break
        return stream
    except BaseException:
        await response.aclose()
        raise


async def post_json(
    client: httpx.AsyncClient, inst: Instance, path: str, body: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """A plain (not streamed) JSON request, such as ``/v1/embeddings``; the caller accounts it."""
    resp = await send(client, inst, path, body, timeout, stream=False)
    data: dict[str, Any] = resp.json()
    return data



async def fetch_metrics(client: httpx.AsyncClient, inst: Instance, timeout: float) -> str | None:
    """An instance's own Prometheus text (``/metrics``), or None when it has none or is slow."""
    try:
        # wait_for bounds the whole exchange; httpx's timeout only bounds each read.
        resp = await asyncio.wait_for(
            client.get(inst.base_url + "/metrics", headers=inst.auth_headers(), timeout=timeout), timeout
        )
    except (httpx.HTTPError, asyncio.TimeoutError) as exc:
        logger.debug("%s: /metrics failed: %r", inst.name, exc)
        return None
    if resp.status_code != 200:
        # llama-server answers 501 when started without --metrics.
        logger.debug("%s: /metrics answered %d", inst.name, resp.status_code)
        return None
    return resp.text
