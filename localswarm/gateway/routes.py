"""The routes: OpenAI's (/v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings),
/health, /openapi.json and our /localswarm/status.

The generating routes live in their own modules (:mod:`~localswarm.gateway.chat`,
:mod:`~localswarm.gateway.completions`, :mod:`~localswarm.gateway.embeddings`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localswarm.gateway.chat import chat_completions
from localswarm.gateway.completions import completions
from localswarm.gateway.embeddings import embeddings
from localswarm.gateway.errors import APIError
from localswarm.gateway.openapi import openapi_schema
from localswarm.gateway.state import gateway_state


async def health(request: Request) -> Response:
    state = gateway_state(request)
    sup = state.supervisor
    ready = len(sup.ready_instances())
    degraded = sup.degraded  # serving, with instances the memory guard keeps stopped (issue 13)
    body: dict[str, object] = {"status": ("degraded" if degraded else "ok") if ready else "unavailable",
                               "ready": ready, "instances": len(sup.instances)}
    if degraded and sup.guard is not None:
        body["degraded"] = {"reason": "memory", "held": dict(sup.guard.held)}
    return JSONResponse(body, status_code=200 if ready else 503)


def _model(model_id: str, created: int, served: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "localswarm",
            "localswarm": {"served": served}}


async def models(request: Request) -> Response:
    """The served model and its aliases."""
    state = gateway_state(request)
    created = int(state.started_at)
    data = [_model(model_id, created, state.model_id) for model_id in state.model_ids()]
    return JSONResponse({"object": "list", "data": data})


def _plain_name(name: str) -> bool:
    """A model name, not a path trick: no ``.``/``..`` or empty segment, no backslash or control character."""
    segments = name.split("/")
    return bool(name) and all(seg not in ("", ".", "..") for seg in segments) and not any(
        c == "\\" or ord(c) < 32 or ord(c) == 127 for c in name)


async def model(request: Request) -> Response:
    """Any model id resolves to the swarm: clients may name it whatever they like (but not a path)."""
    state = gateway_state(request)
    model_id = request.path_params["model_id"]
    if not _plain_name(model_id):
        raise APIError(404, f"The model {model_id!r} does not exist.", code="model_not_found")
    return JSONResponse(_model(model_id, int(state.started_at), state.model_id))


async def status(request: Request) -> Response:
    state = gateway_state(request)
    body = state.status()
    body["requests"] = state.counters.as_dict()
    body["queue"] = state.queue.status()
    body["auth"] = bool(request.app.state.api_key_set)
    body["embeddings"] = state.settings.embeddings
    return JSONResponse(body)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_schema(str(request.base_url).rstrip("/")))


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/health", health, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", model, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/localswarm/status", status, methods=["GET"]),
]
