"""One HTTP client per peer, with health tracking and exponential backoff.

A peer that fails ``failure_threshold`` times in a row is marked DOWN and not called
again until its backoff delay has elapsed (1 s, 2 s, 4 s ... capped). The first call after
the delay is a probe: success brings the peer UP and resets the delay, failure doubles it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from localswarm.federation.auth import FederationAuth
from localswarm.federation.errors import PeerError, PeerUnavailable, ProtocolError, ReplyAuthError
from localswarm.federation.protocol import HealthReply, InfoReply, VoteReply, VoteRequest

__all__ = ["PeerClient", "PeerHealth", "PeerState"]

logger = logging.getLogger(__name__)

VOTE_PATH = "/v1/federation/vote"
INFO_PATH = "/v1/federation/info"
HEALTH_PATH = "/v1/federation/health"

_T = TypeVar("_T")


class PeerState(str, enum.Enum):
    """Whether a peer is called (UP) or skipped until its retry time (DOWN)."""

    UP = "up"
    DOWN = "down"


@dataclass
class PeerHealth:
    """Consecutive failures, backoff and latency (EWMA) of one peer. Pure bookkeeping."""

    failure_threshold: int = 3
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    state: PeerState = PeerState.UP
    consecutive_failures: int = 0
    down_count: int = 0
    retry_at: float = 0.0
    latency_s: float | None = None
    last_error: str = ""

    def available(self, now: float) -> bool:
        """True if the peer may be called now (UP, or DOWN with its delay elapsed)."""
        return self.state is PeerState.UP or now >= self.retry_at

    def record_success(self, latency_s: float) -> None:
        """A call succeeded: reset failures, mark UP, fold the latency into the average."""
        if self.state is PeerState.DOWN:
            logger.info("peer is back up after %d failures", self.consecutive_failures)
        self.state = PeerState.UP
        self.consecutive_failures = 0
        self.down_count = 0
        self.last_error = ""
        self.latency_s = latency_s if self.latency_s is None else 0.7 * self.latency_s + 0.3 * latency_s

    def record_failure(self, error: str, now: float) -> None:
        """A call failed: count it; past the threshold (or on a failed probe) back off."""
        self.consecutive_failures += 1
        self.last_error = error
        if self.state is PeerState.DOWN or self.consecutive_failures >= self.failure_threshold:
            delay = min(self.backoff_base_s * (2**self.down_count), self.backoff_max_s)
            self.down_count += 1
            self.state = PeerState.DOWN
            self.retry_at = now + delay
            logger.warning("peer marked down after %d failures, retry in %.1f s: %s",
                           self.consecutive_failures, delay, error)


class PeerClient:
    """Calls one peer's federation endpoints with its own connection pool and timeouts.

    ``auth`` is usually :class:`~localswarm.federation.auth.FederationAuth`; ``transport``
    lets tests plug in ``httpx.MockTransport``. Use as an async context manager or call
    :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        node_id: str = "",
        auth: httpx.Auth | None = None,
        vote_timeout_s: float = 120.0,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        failure_threshold: int = 3,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_latency: Callable[[str, float], None] | None = None,
        on_bad_reply: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.node_id = node_id
        self.on_latency = on_latency  # (peer url, seconds) of each successful call, e.g. for metrics
        self.on_bad_reply = on_bad_reply  # (peer url) of each reply dropped for failing verification
        self.bad_replies = 0
        self.vote_timeout_s = vote_timeout_s
        self.health = PeerHealth(
            failure_threshold=failure_threshold, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s
        )
        self._clock = clock
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth if auth is not None else FederationAuth(None),
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
            # Peers are on the LAN: never route them through a configured HTTP proxy.
            trust_env=False,
        )

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    @property
    def state(self) -> PeerState:
        """UP or DOWN."""
        return self.health.state

    @property
    def available(self) -> bool:
        """True if the next call would go out (not inside a backoff delay)."""
        return self.health.available(self._clock())

    def record_failure(self, reason: str) -> None:
        """Count a failure seen by the caller (e.g. a vote cancelled at the overall timeout)."""
        self.health.record_failure(reason, self._clock())

    async def vote(self, request: VoteRequest, *, timeout_s: float | None = None) -> VoteReply:
        """``POST /v1/federation/vote``: the peer's local vote on ``request``."""
        t = self.vote_timeout_s if timeout_s is None else timeout_s
        return await self._call("POST", VOTE_PATH, VoteReply.from_dict, json=request.to_dict(), timeout=t)

    async def info(self) -> InfoReply:
        """``GET /v1/federation/info``."""
        return await self._call("GET", INFO_PATH, InfoReply.from_dict)

    async def check_health(self) -> HealthReply:
        """``GET /v1/federation/health`` (never generates text on the peer)."""
        return await self._call("GET", HEALTH_PATH, HealthReply.from_dict)

    async def _call(self, method: str, path: str, parse: Callable[[Any], _T], **kwargs: Any) -> _T:
        now = self._clock()
        if not self.health.available(now):
            raise PeerUnavailable(
                f"peer {self.base_url} is down ({self.health.last_error}); retry in "
                f"{self.health.retry_at - now:.1f} s",
                peer=self.base_url,
            )
        start = time.perf_counter()
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise self._failed(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise self._failed(f"unreachable ({type(exc).__name__}: {exc})") from exc
        except ReplyAuthError as exc:  # altered, forged or replayed on the way: dropped, counted
            self.bad_replies += 1
            logger.warning("dropped a reply from peer %s: %s", self.base_url, exc.reason)
            if self.on_bad_reply:
                self.on_bad_reply(self.base_url)
            raise self._failed(f"reply failed verification: {exc.reason}") from exc
        latency = time.perf_counter() - start
        if response.status_code != 200:
            detail = response.text[:200]
            error = self._failed(f"HTTP {response.status_code}: {detail}", status_code=response.status_code)
            raise error
        try:
            result = parse(response.json())
        except (ValueError, ProtocolError) as exc:
            raise self._failed(f"invalid reply: {exc}") from exc
        self.health.record_success(latency)
        if self.on_latency:
            self.on_latency(self.base_url, latency)
        return result

    def _failed(self, message: str, *, status_code: int | None = None) -> PeerError:
        self.health.record_failure(message, self._clock())
        return PeerError(f"peer {self.base_url}: {message}", peer=self.base_url, status_code=status_code)
