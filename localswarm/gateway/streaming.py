"""Server-sent events: a response that stops the work when the client goes, and the chunks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any, AsyncIterator, TypeVar

import anyio
import anyio.lowlevel
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from localswarm.gateway import fanout
from localswarm.gateway.errors import APIError

logger = logging.getLogger(__name__)

T = TypeVar("T")

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
                        # Let the loop run between events: a voted answer's events are all ready at
                        # once, and without this a client that left gets every one of them written
                        # to its dead socket (asyncio logs "socket.send() raised exception.")
                        # before the disconnect is seen. Found by bench/soak.py.
                        await anyio.lowlevel.checkpoint()
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:  # the client went away while we were writing
                    pass
                except Exception:  # a bug or an unexpected upstream failure: end the stream cleanly
                    logger.exception("stream failed")
                    with contextlib.suppress(Exception):
                        error = {"error": {"message": "The stream failed inside the gateway; see its log.",
                                           "type": "server_error", "param": None, "code": "internal_error"}}
                        await send({"type": "http.response.body", "body": (sse(error) + DONE).encode(),
                                    "more_body": False})
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


async def prefetch(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Pull the first event before the response starts.

    An error the generator raises before its first event (an instance's 400 for a prompt
    longer than the context, no instance able to answer) then becomes a plain HTTP error
    with its real status instead of an error event inside a 200 stream. Generators yield
    a keep-alive after ``keepalive_interval``, so this waits at most that long.
    """
    first = await events.__anext__()

    async def rest() -> AsyncIterator[str]:
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return rest()


async def keepalive_then(task: asyncio.Future[Any], interval: float, out: list[Any]) -> AsyncIterator[str]:
    """``: keep-alive`` lines every ``interval`` until ``task`` is done; then its result goes in ``out``.

    An :class:`APIError` is raised as is while nothing went out yet (so :func:`prefetch`
    turns it into a real HTTP error); after keep-alives it becomes an error event and
    ``[DONE]``, and ``out`` stays empty.
    """
    yielded = False
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=interval)
        if not done:
            yielded = True
            yield KEEPALIVE
    try:
        out.append(task.result())
    except APIError as exc:
        if not yielded:
            raise
        yield sse(exc.body())
        yield DONE


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work`` but cancel it (and its upstream requests) if the client disconnects.

    Returns None when the client left.
    """
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


_PIECE = re.compile(r"\S+\s*|\s+")


def split_text(text: str, words: int = 3) -> list[str]:
    """Cut a whole answer into word-sized pieces so a client renders it as a stream."""
    pieces = _PIECE.findall(text)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


def _logprob_pieces(text: str, logprobs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]] | None:
    """One (piece, logprob entry) per token when the tokens spell ``text`` exactly, else None."""
    if not logprobs or "".join(str(e.get("token", "")) for e in logprobs) != text:
        return None
    return [(str(e.get("token", "")), e) for e in logprobs]


class ChunkWriter:
    """Builds ``chat.completion.chunk`` objects sharing one id, model and timestamp."""

    def __init__(self, completion_id: str, model: str, *, object: str = "chat.completion.chunk") -> None:
        self.id = completion_id
        self.model = model
        self.object = object
        self.created = int(time.time())

    def chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        *,
        index: int = 0,
        logprobs: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
            **extra,
        }

    def text_chunk(
        self, text: str, finish_reason: str | None = None, *, index: int = 0, logprobs: Any = None, **extra: Any
    ) -> dict[str, Any]:
        """A legacy ``text_completion`` chunk (``/v1/completions``)."""
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
            **extra,
        }

    def usage_chunk(self, usage: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
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
        metadata: dict[str, Any] | None,
        *,
        index: int = 0,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> list[str]:
        """The events of a whole answer: role, content pieces, tool-call deltas, finish.

        With ``logprobs`` (the winner's per-token entries) the content goes out one token
        per chunk, each carrying its entry, as llama-server itself streams them.
        """
        events = [sse(self.chunk({"role": "assistant", "content": ""}, index=index))]
        content = message.get("content") or ""
        pieces = _logprob_pieces(content, logprobs or [])
        if pieces is not None:
            for piece, entry in pieces:
                events.append(sse(self.chunk({"content": piece}, index=index, logprobs={"content": [entry]})))
        else:
            first = True
            for piece in split_text(content):
                lp = {"content": logprobs} if logprobs and first else None
                events.append(sse(self.chunk({"content": piece}, index=index, logprobs=lp)))
                first = False
        if message.get("reasoning_content"):
            events.insert(1, sse(self.chunk({"reasoning_content": message["reasoning_content"]}, index=index)))
        for delta in tool_call_deltas:  # each already {"tool_calls": [...]}
            events.append(sse(self.chunk(delta, index=index)))
        extra = {"localswarm": metadata} if metadata is not None else {}
        events.append(sse(self.chunk({}, finish_reason or "stop", index=index, **extra)))
        return events
