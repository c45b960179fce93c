"""The one parser of an instance's server-sent events (``data: {...}`` lines, ``[DONE]``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from localswarm.errors import UpstreamError

__all__ = ["EventReader"]


class EventReader:
    """Iterate the JSON chunks of an SSE stream; ``done`` turns True at ``data: [DONE]``.

    A chunk carrying ``error`` (llama-server reports failures mid-stream that way) raises
    :class:`~localswarm.errors.UpstreamError`; comments and blank lines are skipped. The
    reader can be iterated again after a ``break``: it resumes where it stopped.
    """

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.done = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        if self.done:
            return
        async for line in self._lines:
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                self.done = True
                return
            chunk = json.loads(payload)
            if isinstance(chunk, dict) and "error" in chunk:
                err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                raise UpstreamError(int(err.get("code") or 500), str(err.get("message")), err.get("type"))
            yield chunk
