"""PeerClient health/backoff and PeerPool voting, at the HTTP seam (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from localswarm.federation.auth import HEADER_NONCE, HEADER_SIGNATURE, FederationAuth, sign_reply
from localswarm.federation.errors import PeerError, PeerUnavailable
from localswarm.federation.peers import PeerClient, PeerHealth, PeerState
from localswarm.federation.pool import PeerPool
from localswarm.federation.protocol import AnswerMessage, HealthReply, VoteReply, VoteRequest
from localswarm.federation.table import Peer, PeerTable

REQUEST = VoteRequest(request_id="r1", request={"messages": [{"role": "user", "content": "hi"}]})


def reply(node: str = "p1") -> dict[str, object]:
    return VoteReply(node_id=node, message=AnswerMessage(content="ok"), finish_reason="stop", cluster_size=2, n=3,
                     cohesion=1.0, confidence=0.66, latency_s=0.1, model="m").to_dict()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def client_with(handler, clock: Clock | None = None, **kw: object) -> PeerClient:  # type: ignore[no-untyped-def]
    return PeerClient("http://peer:8080", transport=httpx.MockTransport(handler), clock=clock or Clock(),
                      failure_threshold=2, backoff_base_s=1.0, backoff_max_s=4.0, **kw)  # type: ignore[arg-type]


async def test_vote_success_records_latency_and_signs() -> None:
    """A good (signed) reply parses; latency is recorded; the request carries a signature."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert json.loads(request.content)["request_id"] == "r1"
        body = json.dumps(reply()).encode()
        return httpx.Response(200, content=body, headers=sign_reply(200, request.headers[HEADER_NONCE], body,
                                                                    b"x" * 16))

    async with client_with(handler, auth=FederationAuth(b"x" * 16)) as client:
        got = await client.vote(REQUEST)
    assert got.node_id == "p1"
    assert client.health.latency_s is not None and client.state is PeerState.UP
    assert HEADER_SIGNATURE in seen[0].headers


async def test_failing_peer_is_marked_down_then_backs_off_exponentially() -> None:
    """Threshold failures -> DOWN; no call during the delay; failed probes double the delay."""
    calls = 0
    healthy = False

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if not healthy:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=HealthReply(node_id="p1").to_dict())

    clock = Clock()
    async with client_with(handler, clock) as client:
        for _ in range(2):
            with pytest.raises(PeerError, match="unreachable"):
                await client.check_health()
        assert client.state is PeerState.DOWN and calls == 2
        with pytest.raises(PeerUnavailable, match="retry in 1.0 s"):
            await client.check_health()
        assert calls == 2  # no network call while backing off

        clock.now += 1.0  # delay elapsed: one probe goes out, fails, delay doubles
        with pytest.raises(PeerError):
            await client.check_health()
        assert calls == 3 and client.health.retry_at == clock.now + 2.0
        clock.now += 2.0
        with pytest.raises(PeerError):
            await client.check_health()
        assert client.health.retry_at == clock.now + 4.0
        clock.now += 4.0
        with pytest.raises(PeerError):
            await client.check_health()
        assert client.health.retry_at == clock.now + 4.0  # capped

        healthy = True
        clock.now += 4.0
        await client.check_health()
        assert client.state is PeerState.UP and client.health.consecutive_failures == 0


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(401, json={"error": "bad signature"}), "HTTP 401"),
        (httpx.Response(200, text="not json"), "invalid reply"),
        (httpx.Response(200, json={"v": 99}), "invalid reply"),
    ],
)
async def test_bad_answers_count_as_failures(response: httpx.Response, match: str) -> None:
    async with client_with(lambda r: response) as client:
        with pytest.raises(PeerError, match=match):
            await client.vote(REQUEST)
        assert client.health.consecutive_failures == 1


def test_peer_health_is_pure() -> None:
    h = PeerHealth(failure_threshold=1, backoff_base_s=0.5)
    h.record_failure("x", now=0)
    assert not h.available(0.4) and h.available(0.5)


async def test_pool_gathers_votes_with_timeout_and_failures() -> None:
    """Fast peers count, a slow one is cut at the timeout, a broken one is reported."""

    async def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "10.0.0.3":
            await asyncio.sleep(5)
        if host == "10.0.0.4":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=reply(node=f"n{host[-1]}"))

    table = PeerTable(self_node_id="me")
    for i in (2, 3, 4):
        table.upsert(Peer(node_id=f"n{i}", host=f"10.0.0.{i}", port=8080), "mdns")
    table.upsert(Peer(node_id="old", host="10.0.0.9", port=8080, version=0), "mdns")  # incompatible
    transport = httpx.MockTransport(handler)
    async with PeerPool(table, probe_interval_s=0, transport=transport) as pool:
        assert set(pool.clients()) == {"n2", "n3", "n4"}
        got = await pool.gather_votes(REQUEST, timeout_s=0.3)
        assert [r.node_id for r in got.replies] == ["n2"]
        assert "timed out" in got.failures["n3"] and "unreachable" in got.failures["n4"]
        states = {row["node_id"]: row["state"] for row in pool.status()}
        assert states["old"] == "incompatible" and states["n2"] == "up"

        table.remove("n2", "mdns")
        assert set(pool.clients()) == {"n3", "n4"}


async def test_max_peers_choice_and_early_stop() -> None:
    """``choose``: peers never timed first, then the fastest votes; ``stop`` cancels the rest
    without counting them as failures (the ``latency`` strategy)."""
    delays = {"10.0.0.2": 0.05, "10.0.0.3": 0.4}

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delays.get(request.url.host, 0.0))
        return httpx.Response(200, json=reply(node=f"n{request.url.host[-1]}"))

    table = PeerTable(self_node_id="me")
    for i in (2, 3):
        table.upsert(Peer(node_id=f"n{i}", host=f"10.0.0.{i}", port=8080), "mdns")
    async with PeerPool(table, probe_interval_s=0, transport=httpx.MockTransport(handler)) as pool:
        assert pool.choose(None) == (["n2", "n3"], [])
        first, skipped = pool.choose(1)
        got = await pool.gather_votes(REQUEST, timeout_s=2, keys=first)
        assert got.asked == first and [r.node_id for r in got.replies] == first and len(skipped) == 1
        second, _ = pool.choose(1)
        assert second == skipped  # the peer never timed is measured next
        await pool.gather_votes(REQUEST, timeout_s=2, keys=second)
        assert pool.choose(1) == (["n2"], ["n3"])  # both timed: the fastest is asked

        stop = asyncio.Event()
        seen: list[str] = []
        got = await pool.gather_votes(REQUEST, timeout_s=2, stop=stop,
                                      on_reply=lambda r: (seen.append(r.node_id), stop.set()))
        assert seen == ["n2"] and got.cancelled == ["n3"] and not got.failures
        assert pool.clients()["n3"].health.consecutive_failures == 0
