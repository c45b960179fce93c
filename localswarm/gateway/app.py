"""The Starlette app: one lifespan owns the supervisor and the pooled HTTP client."""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from localswarm.config import Settings
from localswarm.errors import APIError
from localswarm.federation.node import HopGuard, start_federation, stop_federation
from localswarm.gateway.auth import APIKeyMiddleware, load_api_key
from localswarm.gateway.counters import RequestCounters
from localswarm.gateway.routes import ROUTES
from localswarm.gateway.slowclients import BodyTimeoutMiddleware
from localswarm.gateway.state import GatewayState
from localswarm.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from localswarm.supervisor.instance import InstanceTiming
from localswarm.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)


def timing_from(settings: Settings) -> InstanceTiming:
    """The supervisor's timings from the settings (see :meth:`InstanceTiming.from_settings`)."""
    return InstanceTiming.from_settings(settings)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"Unknown route {request.url.path}.", 405: f"Method {request.method} not allowed on {request.url.path}."}
    return APIError(exc.status_code, messages.get(exc.status_code, str(exc.detail)),
                    code="not_found" if exc.status_code == 404 else None).response()


async def _client_left(request: Request, exc: Exception) -> Response:
    """The client hung up before its request body arrived: nobody to answer, nothing went wrong."""
    logger.info("client disconnected before its request to %s arrived", request.url.path)
    return Response(status_code=499)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s", request.url.path)
    return APIError(500, "The gateway hit an internal error; see its log.", code="internal_error").response()


def create_app(
    settings: Settings, supervisor: Supervisor, *, model_id: str, transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """Build the gateway around a (not yet started) supervisor.

    ``transport`` replaces the network under the pooled client that talks to the
    instances (tests pass an ``httpx.MockTransport``).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        n = len(supervisor.instances)
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max(16, n * settings.parallel * 4), max_keepalive_connections=n * 4),
            timeout=httpx.Timeout(settings.instance_timeout, connect=5.0),
            transport=transport,
        )
        app.state.gateway = GatewayState(settings=settings, supervisor=supervisor, client=client, model_id=model_id,
                                         metrics=metrics, counters=counters)
        metrics.watch_queue(app.state.gateway.queue)  # queue depth and waits in /metrics (issue 13)
        # federation (issue 6): a no-op unless settings.federate; mounts /v1/federation/* itself
        federation = await start_federation(app, app.state.gateway)
        supervisor.start()
        try:
            yield
        finally:
            await stop_federation(app, federation)  # federation (issue 6)
            await supervisor.stop()
            await client.aclose()

    # Access (issue 5). Outermost first: CORS answers preflights before the key check. The
    # queue in front of generation (issue 13) is the routes' (GatewayState.queue).
    api_key = load_api_key(settings)
    counters = RequestCounters()
    metrics = Metrics(supervisor)  # Prometheus (issue 7): its own registry per app
    # Outermost of all, so 401s and 429s are counted too (issue 7).
    # HopGuard records x-localswarm-hops, so a federated request is never fanned out again.
    middleware = [Middleware(MetricsMiddleware, metrics=metrics), Middleware(HopGuard)]
    # A body that never ends gets 408 and a closed connection (the head's own deadline is
    # the server protocol's: slowclients.server_options, passed to uvicorn by runner.run).
    middleware.append(Middleware(BodyTimeoutMiddleware, timeout=settings.body_timeout))
    if settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-localswarm-strategy"],
            expose_headers=["x-localswarm-strategy", "x-localswarm-confidence", "x-localswarm-votes",
                            "x-localswarm-winner", "x-localswarm-instances", "x-localswarm-exec",
                            "x-localswarm-width",
                            "retry-after"],
        ))
    if api_key:
        middleware.append(Middleware(APIKeyMiddleware, key=api_key, on_reject=counters.count_auth_rejection))
    app = Starlette(
        routes=[*ROUTES, Route("/metrics", metrics_endpoint(metrics), methods=["GET"])],
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={APIError: _api_error, HTTPException: _http_error, ClientDisconnect: _client_left,
                            Exception: _server_error},
    )
    app.state.counters = counters
    app.state.metrics = metrics
    app.state.api_key_set = api_key is not None
    return app
