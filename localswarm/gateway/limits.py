"""Concurrency limit (issue 5): past ``max_concurrent`` requests in flight, answer 429 at once.

Every generating request occupies a slot on every instance (the vote asks them all), so
more than a few per slot only queue inside llama-server while the client waits. A prompt
429 with ``Retry-After`` lets clients (the OpenAI SDKs retry 429s) back off instead.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from localswarm.config import Settings
from localswarm.gateway.errors import APIError

LIMITED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def max_concurrent(settings: Settings) -> int:
    """The configured limit; None means 4 per slot with a floor of 8; 0 means unlimited."""
    if settings.max_concurrent is not None:
        return settings.max_concurrent
    return max(8, 4 * settings.parallel)


class Limiter:
    """Counts requests in flight and estimates when a slot frees up."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.mean_seconds = 5.0  # moving average of request durations

    def try_acquire(self) -> bool:
        if self.limit and self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self, seconds: float) -> None:
        self.in_flight -= 1
        self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil(self.mean_seconds / 2)))


class ConcurrencyMiddleware:
    def __init__(self, app: ASGIApp, *, limiter: Limiter, on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in LIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.limiter.try_acquire():
            if self.on_reject:
                self.on_reject()
            wait = self.limiter.retry_after()
            error = APIError(
                429, f"The swarm is busy ({self.limiter.limit} requests in flight); retry in {wait} s.",
                type="rate_limit_error", code="swarm_busy", headers={"Retry-After": str(wait)},
            )
            await error.response()(scope, receive, send)
            return
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.limiter.release(time.monotonic() - started)
