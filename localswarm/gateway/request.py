"""The request parser: the only code that reads a client's body.

It reads and checks the body (through :mod:`localswarm.gateway.validation`), resolves the
strategy, and hands the routes a typed request whose ``upstream`` is what the instances
may see (:func:`localswarm.upstream.upstream_body`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from localswarm import upstream
from localswarm.config import Settings
from localswarm.consensus import strategy_from_request
from localswarm.errors import APIError
from localswarm.gateway.validation import read_json, validate_chat, validate_completion, validate_embeddings

__all__ = ["ChatRequest", "CompletionRequest", "parse_chat", "parse_completion", "parse_embeddings", "strategy_of"]


def strategy_of(headers: Mapping[str, str], body: dict[str, Any], default: str) -> str:
    """The voting strategy a request asks for (header, then body), or a 400."""
    try:
        return strategy_from_request(headers, body, default)
    except ValueError as exc:
        raise APIError(400, str(exc), param="x-localswarm-strategy", code="invalid_value") from None


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat request: the client's body, what goes upstream, and the gateway's knobs."""

    body: dict[str, Any]
    upstream: dict[str, Any]
    strategy: str
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    tools: bool


@dataclass(frozen=True)
class CompletionRequest:
    """A checked legacy ``/v1/completions`` request; ``prompts`` one entry per prompt."""

    body: dict[str, Any]
    upstream: dict[str, Any]
    prompts: list[Any]
    strategy: str
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: bool


def _include_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


async def parse_chat(request: Request, settings: Settings) -> ChatRequest:
    body = await read_json(request, settings.max_body_bytes)
    validate_chat(body)
    strategy = strategy_of(request.headers, body, settings.strategy)
    return ChatRequest(
        body=body, upstream=upstream.upstream_body(body), strategy=strategy, n=int(body.get("n") or 1),
        stream=bool(body.get("stream")), include_usage=_include_usage(body), logprobs=bool(body.get("logprobs")),
        tools=bool(body.get("tools")),
    )


async def parse_completion(request: Request, settings: Settings) -> CompletionRequest:
    body = await read_json(request, settings.max_body_bytes)
    prompts = validate_completion(body)
    strategy = strategy_of(request.headers, body, settings.strategy)
    forwarded = upstream.upstream_body(body)
    forwarded.pop("echo", None)  # done here: llama-server does not echo
    return CompletionRequest(
        body=body, upstream=forwarded, prompts=prompts, strategy=strategy, n=int(body.get("n") or 1),
        stream=bool(body.get("stream")), include_usage=_include_usage(body), echo=bool(body.get("echo")),
        logprobs=body.get("logprobs") is not None,
    )


async def parse_embeddings(request: Request, settings: Settings) -> dict[str, Any]:
    """The upstream body of an embeddings request (``dimensions`` is checked on the answer)."""
    body = await read_json(request, settings.max_body_bytes)
    validate_embeddings(body)
    return body
