"""Starlette routes a node serves to its peers: vote, info and health.

The gateway mounts ``federation_routes(coordinator, secret=...)`` only when federation is
enabled; otherwise the endpoints do not exist. Every request is checked for the hop limit
and, when a secret is configured, for a valid signature, a fresh timestamp and an unseen
nonce; the reply to an authenticated request is then signed too, bound to the request's
nonce (:func:`~localswarm.federation.auth.sign_reply`). A vote runs on the local swarm
only: a federated request is never forwarded.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from typing import Any, Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localswarm.federation.auth import HEADER_NODE, HEADER_NONCE, ReplayCache, check_hops, sign_reply, verify
from localswarm.federation.errors import AuthError, HopLimitError, ProtocolError
from localswarm.federation.peers import HEALTH_PATH, INFO_PATH, VOTE_PATH
from localswarm.federation.protocol import HealthReply, InfoReply, VoteReply, VoteRequest
from localswarm.gateway.validation import read_capped

__all__ = ["MAX_BODY_BYTES", "FederationCoordinator", "federation_routes"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 2**20


@runtime_checkable
class FederationCoordinator(Protocol):
    """What the gateway provides to the federation routes.

    ``local_vote(body)`` runs the OpenAI chat request ``body`` (``stream`` forced off) on
    this node's own instances only (never on peers) and returns its vote. ``info()``
    describes the node. An optional ``health()`` returning :class:`HealthReply` is used
    when present; otherwise health is ``ok`` with the instance count from ``info()``.
    """

    async def local_vote(self, body: dict[str, Any]) -> VoteReply:
        """Vote on ``body`` with the local swarm only."""
        ...

    def info(self) -> InfoReply:
        """This node's identity, model and capacity."""
        ...


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def federation_routes(
    coordinator: FederationCoordinator,
    *,
    secret: bytes | None,
    replay_cache: ReplayCache | None = None,
) -> list[Route]:
    """Routes for ``POST /v1/federation/vote``, ``GET /v1/federation/info`` and ``/health``.

    ``secret=None`` disables signature checks: only acceptable when the gateway listens on
    loopback (see :func:`~localswarm.federation.auth.resolve_secret`). The hop limit is
    always enforced.
    """
    cache = replay_cache if replay_cache is not None else ReplayCache()

    async def authenticate(request: Request, body: bytes) -> Response | None:
        try:
            check_hops(request.headers)
            if secret is not None:
                raw_path = request.scope.get("raw_path") or request.url.path.encode()
                target = raw_path.decode("latin-1")
                if request.url.query:
                    target += "?" + request.url.query
                verify(request.method, target, request.headers, body, secret, cache)
        except AuthError as exc:
            client = request.client.host if request.client else "?"
            logger.warning("refused federated %s %s from %s: %s", request.method, request.url.path, client, exc.reason)
            status = 508 if isinstance(exc, HopLimitError) else 401
            return _error(status, "federation_auth", exc.reason)
        return None

    def signed(request: Request, response: Response) -> Response:
        """``response`` with the reply signature bound to the (authenticated) request's nonce."""
        if secret is not None:
            nonce = request.headers.get(HEADER_NONCE, "")
            response.headers.update(sign_reply(response.status_code, nonce, bytes(response.body), secret))
        return response

    async def read_body(request: Request) -> bytes | Response:
        raw = await read_capped(request, MAX_BODY_BYTES)
        return _error(413, "too_large", f"body over {MAX_BODY_BYTES} bytes") if raw is None else raw

    async def vote(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        refused = await authenticate(request, body)
        if refused is not None:
            return refused
        try:
            vote_request = VoteRequest.from_dict(json.loads(body))
        except (ValueError, ProtocolError) as exc:
            return signed(request, _error(400, "invalid_request", str(exc)))
        chat = {**vote_request.request, "stream": False}
        try:
            reply = await coordinator.local_vote(chat)
        except Exception as exc:  # the peer reports failure; the coordinator falls back
            logger.exception("local vote for federated request %s (from %s) failed",
                             vote_request.request_id, request.headers.get(HEADER_NODE, "?"))
            return signed(request, _error(503, "vote_failed", f"{type(exc).__name__}: {exc}"))
        if not reply.request_id:
            reply = dataclasses.replace(reply, request_id=vote_request.request_id)
        return signed(request, JSONResponse(reply.to_dict()))

    async def info(request: Request) -> Response:
        body = await read_body(request)
        refused = body if isinstance(body, Response) else await authenticate(request, body)
        return refused or signed(request, JSONResponse(coordinator.info().to_dict()))

    async def health(request: Request) -> Response:
        body = await read_body(request)
        refused = body if isinstance(body, Response) else await authenticate(request, body)
        if refused is not None:
            return refused
        probe = getattr(coordinator, "health", None)
        if callable(probe):
            reply = probe()
            if inspect.isawaitable(reply):
                reply = await reply
        else:
            node = coordinator.info()
            reply = HealthReply(node_id=node.node_id, status="ok", ready_instances=node.instances,
                                instances=node.instances)
        return signed(request, JSONResponse(reply.to_dict(), status_code=200 if reply.status != "down" else 503))

    return [
        Route(VOTE_PATH, vote, methods=["POST"], name="federation_vote"),
        Route(INFO_PATH, info, methods=["GET"], name="federation_info"),
        Route(HEALTH_PATH, health, methods=["GET"], name="federation_health"),
    ]

