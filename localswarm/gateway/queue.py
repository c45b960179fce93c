"""Queue, don't refuse (issue 13): a bounded, fair FIFO in front of generation.

llama-server queues every request and Ollama lets requests to a loaded model wait without
limit; the OpenAI SDKs retry a 429 only twice. So a generating request waits here for
instance slots instead of being refused, and a 429 with ``Retry-After`` comes only when
the queue is full (``queue_depth``) or the estimated wait exceeds ``queue_timeout``.

- **Slots.** The swarm has ``ready instances × parallel`` slots. A request admitted with
  width ``w`` (the number of instances it asks) holds ``w`` slots until it ends.
- **Adaptive width.** When a request is admitted, the free slots are shared by the waiting
  requests: ``width = free // waiting``, between ``min_voters`` and the ready instances. Idle,
  every instance votes; under load each request asks fewer, down to ``min_voters``.
  ``min_voters`` at the instance count gives a fixed fan-out.
- **Fair.** Waiters are grouped by client (API key sent and client address); the queue
  serves the clients round-robin, each client's own requests first-in first-out.
- **Leaving.** A waiter that is cancelled (the client went away) leaves its place at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request

from localswarm.errors import APIError
from localswarm.gateway.streaming import DONE, KEEPALIVE, sse
from localswarm.supervisor.instance import Instance

T = TypeVar("T")

INITIAL_SERVICE_S = 5.0  # assumed duration of a request before one has been measured


def client_key(request: Request) -> str:
    """Who is asking: the key the client sent (hashed, never kept) and its address."""
    auth = request.headers.get("authorization") or request.headers.get("x-api-key") or ""
    host = request.client.host if request.client else "?"
    digest = hashlib.sha256(auth.encode()).hexdigest()[:12] if auth else "-"
    return f"{digest}@{host}"


@dataclass(eq=False)
class Ticket:
    """A request's place: waiting, then admitted with a width (slots held) until released."""

    key: str
    joined: float = field(default_factory=time.monotonic)
    width: int = 0
    admitted_at: float | None = None
    released: bool = False
    granted: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def waited(self) -> float:
        return (self.admitted_at or time.monotonic()) - self.joined


@dataclass
class QueueStats:
    admitted: int = 0
    rejected_full: int = 0
    rejected_wait: int = 0
    left_waiting: int = 0  # clients that went away while waiting
    wait_total_s: float = 0.0
    wait_max_s: float = 0.0
    widths: dict[int, int] = field(default_factory=dict)  # width → requests admitted with it


class AdmissionQueue:
    """The queue and the slots it hands out. ``ready`` says how many instances can answer now."""

    def __init__(
        self,
        *,
        ready: Callable[[], int],
        parallel: int,
        depth: int = 256,
        timeout: float = 300.0,
        min_voters: int = 1,
        on_wait: Callable[[float], None] | None = None,
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        self.ready = ready
        self.parallel = parallel
        self.depth = depth
        self.timeout = timeout
        self.min_voters = min_voters
        self.on_wait = on_wait  # seconds each admitted request waited (the /metrics histogram)
        self.on_reject = on_reject  # each 429 (the status counters)
        self.used = 0  # slots held by admitted requests
        self.running = 0
        self.waiting: OrderedDict[str, deque[Ticket]] = OrderedDict()
        self.count = 0  # tickets waiting
        self.service_s = INITIAL_SERVICE_S  # moving average of admitted requests' durations
        self.stats = QueueStats()

    # -- capacity -------------------------------------------------------------------------

    def capacity(self) -> int:
        return max(1, self.ready()) * self.parallel

    def _bounds(self) -> tuple[int, int]:
        top = max(1, self.ready())
        return min(self.min_voters, top), top

    def estimated_wait(self, ahead: int) -> float:
        """Seconds before a request with ``ahead`` waiters in front of it gets its slots."""
        low, _ = self._bounds()
        per_round = max(1, self.capacity() // low)  # requests served at once under load
        if self.used + low <= self.capacity() and ahead == 0:
            return 0.0
        return math.ceil((ahead + 1) / per_round) * self.service_s

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil(self.service_s)))

    # -- joining and leaving ---------------------------------------------------------------

    def join(self, key: str) -> Ticket:
        """A place in the queue, or a 429 when it is full or the wait would be too long."""
        if self.depth and self.count >= self.depth:
            self.stats.rejected_full += 1
            raise self._busy(f"The swarm's queue is full ({self.count} requests waiting)")
        wait = self.estimated_wait(self.count)
        if wait > self.timeout:
            self.stats.rejected_wait += 1
            raise self._busy(f"The estimated wait ({wait:.0f} s) exceeds queue_timeout ({self.timeout:g} s)")
        ticket = Ticket(key)
        self.waiting.setdefault(key, deque()).append(ticket)
        self.count += 1
        self._dispatch()
        return ticket

    def _busy(self, why: str) -> APIError:
        if self.on_reject is not None:
            self.on_reject()
        wait = self.retry_after()
        return APIError(429, f"{why}; retry in {wait} s.", type="rate_limit_error", code="swarm_busy",
                        headers={"Retry-After": str(wait)})

    def _dispatch(self) -> None:
        """Admit waiters, clients in turn, while the free slots allow the narrowest width."""
        low, top = self._bounds()
        while self.count:
            free = self.capacity() - self.used
            if free < low and self.used:  # (with nothing running, admit anyway: never stall)
                return
            key, tickets = next(iter(self.waiting.items()))
            ticket = tickets.popleft()
            if tickets:
                self.waiting.move_to_end(key)  # round-robin: this client goes behind the others
            else:
                del self.waiting[key]
            self.count -= 1
            width = max(low, min(top, free // (self.count + 1)))
            self._admit(ticket, width)

    def _admit(self, ticket: Ticket, width: int) -> None:
        ticket.width = width
        ticket.admitted_at = time.monotonic()
        self.used += width
        self.running += 1
        st = self.stats
        st.admitted += 1
        st.widths[width] = st.widths.get(width, 0) + 1
        st.wait_total_s += ticket.waited
        st.wait_max_s = max(st.wait_max_s, ticket.waited)
        if self.on_wait is not None:
            self.on_wait(ticket.waited)
        ticket.granted.set_result(width)

    def release(self, ticket: Ticket) -> None:
        """The request ended (or its client left): free its place or its slots."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.admitted_at is None:
            tickets = self.waiting.get(ticket.key)
            if tickets is not None and ticket in tickets:
                tickets.remove(ticket)
                self.count -= 1
                if not tickets:
                    del self.waiting[ticket.key]
                self.stats.left_waiting += 1
            if not ticket.granted.done():
                ticket.granted.cancel()
        else:
            self.used -= ticket.width
            self.running -= 1
            self.service_s = 0.8 * self.service_s + 0.2 * (time.monotonic() - ticket.admitted_at)
        self._dispatch()

    async def wait(self, ticket: Ticket) -> int:
        """The width granted; 429 past ``queue_timeout`` of waiting."""
        try:
            return await asyncio.wait_for(asyncio.shield(ticket.granted), self.timeout)
        except asyncio.TimeoutError:
            self.release(ticket)
            raise self._busy(f"Waited {self.timeout:g} s (queue_timeout) for a slot") from None

    # -- running work inside a place ---------------------------------------------------------

    async def run(self, ticket: Ticket, work: Callable[[int], Awaitable[T]]) -> T:
        """Wait for ``ticket``'s slots, run ``work(width)``, free the slots however it ends."""
        try:
            width = await self.wait(ticket)
            return await work(width)
        finally:
            self.release(ticket)

    async def stream(
        self, ticket: Ticket, events: Callable[[int], AsyncIterator[str]], keepalive: float
    ) -> AsyncIterator[str]:
        """SSE keep-alives every ``keepalive`` seconds while waiting, then the events of
        ``events(width)``; the place or the slots are freed when the stream ends or is closed.

        A 429 raised before anything went out stays an exception (:func:`prefetch
        <localswarm.gateway.streaming.prefetch>` makes it an HTTP 429); after keep-alives it
        becomes an error event and ``[DONE]``.
        """
        yielded = False
        try:
            waiter = asyncio.ensure_future(self.wait(ticket))
            try:
                while True:
                    done, _ = await asyncio.wait({waiter}, timeout=keepalive)
                    if done:
                        break
                    yielded = True
                    yield KEEPALIVE
            finally:
                if not waiter.done():
                    waiter.cancel()
            try:
                width = waiter.result()
            except APIError as exc:
                if not yielded:
                    raise
                yield sse(exc.body())
                yield DONE
                return
            inner = events(width)
            try:
                async for event in inner:
                    yield event
            finally:
                await inner.aclose()  # type: ignore[attr-defined]  # its upstream streams close now
        finally:
            self.release(ticket)

    # -- reporting ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.stats
        return {
            "depth": self.depth,
            "waiting": self.count,
            "running": self.running,
            "slots_used": self.used,
            "slots": self.capacity(),
            "min_voters": self.min_voters,
            "timeout_s": self.timeout,
            "admitted": st.admitted,
            "rejected_full": st.rejected_full,
            "rejected_wait": st.rejected_wait,
            "left_waiting": st.left_waiting,
            "wait_mean_s": round(st.wait_total_s / st.admitted, 3) if st.admitted else None,
            "wait_max_s": round(st.wait_max_s, 3),
            "widths": {str(k): v for k, v in sorted(st.widths.items())},
            "estimated_wait_s": round(self.estimated_wait(self.count), 1),
        }


def pick(instances: Sequence[Instance], width: int) -> list[Instance]:
    """The ``width`` least busy instances (all of them when ``width`` covers the swarm)."""
    if width >= len(instances):
        return list(instances)
    return sorted(instances, key=lambda i: i.stats.in_flight)[:width]
