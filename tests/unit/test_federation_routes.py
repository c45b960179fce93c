"""The federation endpoints: auth, replay, hop limit, validation, and absence when disabled."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from localswarm.federation.auth import HEADER_HOPS, FederationAuth, sign
from localswarm.federation.protocol import AnswerMessage, InfoReply, VoteReply, VoteRequest
from localswarm.federation.routes import FederationCoordinator, federation_routes

SECRET = b"route-secret-0123456789"
VOTE = VoteRequest(request_id="r9", request={"messages": [{"role": "user", "content": "hi"}], "stream": True})


class Coordinator:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def local_vote(self, body: dict[str, Any]) -> VoteReply:
        self.bodies.append(body)
        return VoteReply(node_id="me", message=AnswerMessage(content="x"), finish_reason="stop", cluster_size=1, n=1,
                         cohesion=1, confidence=1, latency_s=0, model="m")

    def info(self) -> InfoReply:
        return InfoReply(node_id="me", name="h:1", model="m", instances=2, auth=True)


def app(coordinator: Coordinator, secret: bytes | None = SECRET) -> Starlette:
    return Starlette(routes=federation_routes(coordinator, secret=secret))


def client(a: Starlette, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://node", auth=auth)


def test_coordinator_protocol() -> None:
    assert isinstance(Coordinator(), FederationCoordinator)


async def test_signed_vote_runs_locally_without_streaming() -> None:
    """A signed vote reaches local_vote with stream forced off and the request id echoed."""
    coord = Coordinator()
    async with client(app(coord), FederationAuth(SECRET, node_id="peer")) as c:
        r = await c.post("/v1/federation/vote", json=VOTE.to_dict())
    assert r.status_code == 200, r.text
    assert VoteReply.from_dict(r.json()).request_id == "r9"
    assert coord.bodies[0]["stream"] is False


@pytest.mark.parametrize("path", ["/v1/federation/info", "/v1/federation/health"])
async def test_info_and_health(path: str) -> None:
    async with client(app(Coordinator()), FederationAuth(SECRET)) as c:
        r = await c.get(path)
    assert r.status_code == 200 and r.json()["node_id"] == "me"


@pytest.mark.parametrize(
    "auth", [None, FederationAuth(b"wrong-secret-wrong-secret"), FederationAuth(None)], ids=["none", "wrong", "hops-only"]
)
async def test_unsigned_or_wrong_secret_is_401(auth: httpx.Auth | None) -> None:
    coord = Coordinator()
    async with client(app(coord), auth) as c:
        r = await c.post("/v1/federation/vote", json=VOTE.to_dict())
        assert (await c.get("/v1/federation/info")).status_code == 401
    assert r.status_code == 401 and r.json()["error"]["type"] == "federation_auth"
    assert coord.bodies == []


async def test_replay_is_401() -> None:
    """Byte-identical resend of a signed request is refused."""
    body = json.dumps(VOTE.to_dict()).encode()
    headers = {**sign("POST", "/v1/federation/vote", body, SECRET), HEADER_HOPS: "1", "content-type": "application/json"}
    async with client(app(Coordinator())) as c:
        assert (await c.post("/v1/federation/vote", content=body, headers=headers)).status_code == 200
        r = await c.post("/v1/federation/vote", content=body, headers=headers)
    assert r.status_code == 401 and "replayed" in r.json()["error"]["message"]


async def test_hop_limit_refuses_forwarded_requests() -> None:
    """A request that already went through a peer (hops=2) is refused: no loops."""
    async with client(app(Coordinator(), secret=None)) as c:
        r = await c.get("/v1/federation/info", headers={HEADER_HOPS: "2"})
    assert r.status_code == 508


async def test_invalid_body_is_400() -> None:
    async with client(app(Coordinator()), FederationAuth(SECRET)) as c:
        r = await c.post("/v1/federation/vote", json={"v": 2, "request_id": "x", "request": {}})
    assert r.status_code == 400 and "version 2" in r.json()["error"]["message"]


async def test_local_failure_is_503() -> None:
    class Failing(Coordinator):
        async def local_vote(self, body: dict[str, Any]) -> VoteReply:
            raise RuntimeError("no instance ready")

    async with client(app(Failing()), FederationAuth(SECRET)) as c:
        r = await c.post("/v1/federation/vote", json=VOTE.to_dict())
    assert r.status_code == 503 and "no instance ready" in r.text


async def test_disabled_federation_has_no_endpoints() -> None:
    """Without federation_routes mounted the endpoints are 404."""
    async with client(Starlette(routes=[]), FederationAuth(SECRET)) as c:
        assert (await c.post("/v1/federation/vote", json=VOTE.to_dict())).status_code == 404
        assert (await c.get("/v1/federation/health")).status_code == 404
