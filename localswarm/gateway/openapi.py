"""The OpenAPI 3.1 description served at ``/openapi.json``, generated from the schema.

Request and answer bodies come from the pydantic models of
:mod:`localswarm.gateway.schema` (the same models validation runs), so a property-based
fuzzer (schemathesis, ``tests/integration/test_fuzz_openapi.py``) generates requests from
exactly what the gateway checks. This module adds only the routes around them.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from localswarm import __version__
from localswarm.gateway import schema

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def components() -> dict[str, Any]:
    """Every request and answer schema, keyed by model name (requests as validated)."""
    models = [(m, "validation") for m in schema.REQUESTS.values()] + \
             [(m, "serialization") for m in schema.RESPONSES.values()]
    _, defs = models_json_schema(models, ref_template=_REF)
    return defs["$defs"]


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {400: "Invalid request (OpenAI error shape; `param` names the offending field; "
                    "`context_length_exceeded` for too long a prompt)",
               401: "Missing or wrong API key", 404: "Not found", 413: "Body too large",
               429: "The swarm is busy; see Retry-After", 502: "Every instance failed",
               503: "No instance ready", 504: "No instance answered in time"}
    return {str(c): {"description": reasons[c], "content": {"application/json": {"schema": _ref("Error")}}}
            for c in codes}


def _json(body: dict[str, Any], description: str = "OK", *, sse: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": body}}
    if sse:
        content["text/event-stream"] = {"schema": {"type": "string"},
                                        "description": "With stream: true: chunks, then `data: [DONE]`."}
    return {"description": description, "content": content}


def _post(summary: str, request: str, response: dict[str, Any], *, sse: bool = True) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
            "responses": {"200": _json(response, sse=sse), **_errors(400, 401, 404, 413, 429, 502, 503, 504)},
        }
    }


def openapi_schema(server_url: str = "") -> dict[str, Any]:
    """The document; ``server_url`` is where this gateway answers."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "localswarm gateway", "version": __version__,
                 "description": "OpenAI-compatible API over a swarm of llama-server instances that vote."},
        "servers": [{"url": server_url}] if server_url else [],
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "Only when the gateway has an API key."}},
        },
        "paths": {
            "/v1/chat/completions": _post("Chat completion, voted by the swarm", "ChatCompletionRequest",
                                          _ref("ChatCompletion")),
            "/v1/completions": _post("Legacy text completion, voted on the text", "CompletionRequest",
                                     _ref("TextCompletion")),
            "/v1/embeddings": _post("Embeddings (when enabled)", "EmbeddingRequest", {"type": "object"}, sse=False),
            "/v1/models": {"get": {"summary": "The served model and its aliases",
                                   "responses": {"200": _json(_ref("ModelList")), **_errors(401)}}},
            "/v1/models/{model_id}": {"get": {
                "summary": "Any id resolves to the swarm (404 for a path-like id: .., //, backslash, control characters)",
                "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Model")), **_errors(401, 404)},
            }},
            "/health": {"get": {"summary": "Ready instances (no API key needed)", "security": [],
                                "responses": {"200": _json(_ref("Health")),
                                              "503": _json(_ref("Health"), "No instance ready")}}},
            "/localswarm/status": {"get": {"summary": "Instances, votes, request counters",
                                           "responses": {"200": _json({"type": "object"}), **_errors(401)}}},
        },
    }
