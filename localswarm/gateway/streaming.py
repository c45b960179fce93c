"""Server-sent events: a response that stops the work when the client goes, and the chunks."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, AsyncIterator

import anyio
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

KEEPALIVE = ": keep-alive\n\n"
DONE = "data: [DONE]\n\n"
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


class SSEResponse:
    """Streams ``body`` and races it against the client's disconnect.

    Whichever ends first cancels the other; cancelling the body generator cancels the
    upstream requests it awaits, which closes their connections and frees the slots.
    """

    def __init__(self, body: AsyncIterator[str], headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.headers = {**SSE_HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()],
            }
        )
        disconnected = False

        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                try:
                    async for text in self.body:
                        await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:  # the client went away while we were writing
                    pass
                finally:
                    tg.cancel_scope.cancel()

            async def watch() -> None:
                nonlocal disconnected
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        disconnected = True
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stream)
            tg.start_soon(watch)
        if disconnected:
            logger.info("client disconnected; upstream work cancelled")
        aclose = getattr(self.body, "aclose", None)
        if aclose:
            with anyio.CancelScope(shield=True):
                await aclose()


_PIECE = re.compile(r"\S+\s*|\s+")


def split_text(text: str, words: int = 3) -> list[str]:
    """Cut a whole answer into word-sized pieces so a client renders it as a stream."""
    pieces = _PIECE.findall(text)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


class ChunkWriter:
    """Builds ``chat.completion.chunk`` objects sharing one id, model and timestamp."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **extra,
        }

    def usage_chunk(self, usage: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
            **extra,
        }

    def answer(
        self,
        message: dict[str, Any],
        finish_reason: str | None,
        tool_call_deltas: list[dict[str, Any]],
        metadata: dict[str, Any],
    ) -> list[str]:
        """The events of a whole answer: role, content pieces, tool-call deltas, finish."""
        events = [sse(self.chunk({"role": "assistant", "content": ""}))]
        for piece in split_text(message.get("content") or ""):
            events.append(sse(self.chunk({"content": piece})))
        for delta in tool_call_deltas:  # each already {"tool_calls": [...]}
            events.append(sse(self.chunk(delta)))
        events.append(sse(self.chunk({}, finish_reason or "stop", localswarm=metadata)))
        return events
