"""The OpenAPI 3.1 description served at ``/openapi.json`` (hand-written, issue 5).

It describes what the gateway accepts as precisely as its validation checks it (types,
ranges, enums), so a property-based fuzzer (schemathesis, ``tests/integration/
test_fuzz_openapi.py``) can generate requests from it. Fields not listed are accepted and
ignored or forwarded per :mod:`localswarm.gateway.params`.
"""

from __future__ import annotations

from typing import Any

from localswarm import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STOP = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}],
         "description": "Up to 16 sequences where generation stops."}

_SAMPLING: dict[str, Any] = {
    "model": {"type": "string", "description": "Any name: every model id resolves to the swarm."},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2,
                    "description": "Default: the swarm's `temperature` setting (diversity for the vote)."},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stop": _STOP,
    "seed": {"type": "integer", "description": "Instance i samples with seed + i."},
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "logit_bias": {"type": "object", "propertyNames": {"pattern": "^-?[0-9]{1,9}$"},
                   "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}},
    "n": {"type": "integer", "minimum": 1, "maximum": 128,
          "description": "Choices: the voted answer first, then other instances' samples (extra rounds if needed)."},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "user": {"type": "string"},
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "ContentPart": {
        "oneOf": [
            {"type": "object", "required": ["type", "text"],
             "properties": {"type": {"const": "text"}, "text": {"type": "string"}}},
            {"type": "object", "required": ["type", "image_url"],
             "description": "Refused with 400 unsupported_content: the swarm's models read text only.",
             "properties": {"type": {"const": "image_url"},
                            "image_url": {"type": "object", "properties": {"url": {"type": "string"}}}}},
        ]
    },
    "ToolCall": {
        "type": "object",
        "required": ["type", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "function"},
            "function": {"type": "object", "required": ["name", "arguments"],
                         "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}},
        },
    },
    "Message": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
            "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _ref("ContentPart")},
                                  {"type": "null"}],
                        "description": "Required except on an assistant message carrying tool_calls."},
            "name": {"type": "string"},
            "tool_calls": {"type": "array", "items": _ref("ToolCall")},
            "tool_call_id": {"type": "string"},
        },
    },
    "Tool": {
        "type": "object",
        "required": ["type", "function"],
        "properties": {
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                               "parameters": {"type": "object"}, "strict": {"type": "boolean"}},
            },
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            **_SAMPLING,
            "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
            "response_format": {
                "oneOf": [
                    {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
                    {"type": "object", "required": ["type", "json_schema"],
                     "properties": {"type": {"const": "json_schema"},
                                    "json_schema": {"type": "object", "required": ["name"],
                                                    "properties": {"name": {"type": "string"},
                                                                   "schema": {"type": "object"},
                                                                   "strict": {"type": "boolean"}}}}},
                ]
            },
            "tools": {"type": "array", "items": _ref("Tool")},
            "tool_choice": {
                "oneOf": [
                    {"enum": ["none", "auto", "required"]},
                    {"type": "object", "required": ["type", "function"],
                     "description": "The named function must be among `tools`.",
                     "properties": {"type": {"const": "function"},
                                    "function": {"type": "object", "required": ["name"],
                                                 "properties": {"name": {"type": "string"}}}}},
                ]
            },
            "parallel_tool_calls": {"type": "boolean"},
            "logprobs": {"type": "boolean"},
            "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            **_SAMPLING,
            "prompt": {"oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "maxItems": 32, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
            ]},
            "echo": {"type": "boolean"},
            "suffix": {"type": "string"},
            "logprobs": {"type": "integer", "minimum": 0, "maximum": 5},
            "best_of": {"type": "integer", "minimum": 1, "maximum": 128},
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {"oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string"}},
            ]},
            "model": {"type": "string"},
            "encoding_format": {"enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1, "maximum": 65536},
            "user": {"type": "string"},
        },
    },
    "Usage": {
        "type": "object",
        "required": ["prompt_tokens", "total_tokens"],
        "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                       "total_tokens": {"type": "integer"}},
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "usage": _ref("Usage"),
            "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"]}},
            "localswarm": {"type": "object", "description": "The vote: winner, votes, confidence, usage_total."},
        },
    },
    "TextCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {"object": {"const": "text_completion"},
                       "choices": {"type": "array", "items": {"type": "object", "required": ["index", "text"]}}},
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                       "owned_by": {"type": "string"}},
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {400: "Invalid request (OpenAI error shape; `context_length_exceeded` for too long a prompt)",
               401: "Missing or wrong API key", 404: "Not found", 413: "Body too large",
               429: "The swarm is busy; see Retry-After", 502: "Every instance failed",
               503: "No instance ready", 504: "No instance answered in time"}
    return {str(c): {"description": reasons[c], "content": {"application/json": {"schema": _ref("Error")}}}
            for c in codes}


def _json(schema: dict[str, Any], description: str = "OK", *, sse: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
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
    """The schema; ``server_url`` is where this gateway answers."""
    list_models = {"type": "object", "properties": {"object": {"const": "list"},
                                                    "data": {"type": "array", "items": _ref("Model")}}}
    health = {"type": "object", "properties": {"status": {"type": "string"}, "ready": {"type": "integer"},
                                               "instances": {"type": "integer"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "localswarm gateway", "version": __version__,
                 "description": "OpenAI-compatible API over a swarm of llama-server instances that vote."},
        "servers": [{"url": server_url}] if server_url else [],
        "components": {
            "schemas": _SCHEMAS,
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
                                   "responses": {"200": _json(list_models), **_errors(401)}}},
            "/v1/models/{model_id}": {"get": {
                "summary": "Any id resolves to the swarm (404 for a path-like id: .., //, backslash, control characters)",
                "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Model")), **_errors(401, 404)},
            }},
            "/health": {"get": {"summary": "Ready instances (no API key needed)", "security": [],
                                "responses": {"200": _json(health), "503": _json(health, "No instance ready")}}},
            "/localswarm/status": {"get": {"summary": "Instances, votes, request counters",
                                           "responses": {"200": _json({"type": "object"}), **_errors(401)}}},
        },
    }
