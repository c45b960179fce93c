"""``POST /v1/embeddings`` when the swarm runs with ``embeddings`` on.

Embeddings are deterministic, so there is nothing to vote on: the request goes to the
least busy ready instance (llama-server started with ``--embeddings``).
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localswarm.gateway import fanout
from localswarm.gateway.chat import counters, gateway_state, ready_instances
from localswarm.gateway.errors import APIError
from localswarm.gateway.validation import read_json, validate_embeddings


async def embeddings(request: Request) -> Response:
    state = gateway_state(request)
    if not state.settings.embeddings:
        raise APIError(404, "Embeddings are off on this swarm; start it with embeddings enabled "
                            "(`embeddings: true`, LOCALSWARM_EMBEDDINGS=1).", code="embeddings_disabled")
    body = await read_json(request, state.settings.max_body_bytes)
    validate_embeddings(body)
    inst = min(ready_instances(state), key=lambda i: i.stats.in_flight)
    counters(request).embeddings += 1
    upstream = {"input": body["input"], "encoding_format": body.get("encoding_format") or "float"}
    inst.stats.requests += 1
    inst.stats.in_flight += 1
    try:
        resp = await state.client.post(inst.base_url + "/v1/embeddings", json=upstream, headers=inst.auth_headers(),
                                       timeout=httpx.Timeout(state.settings.instance_timeout, connect=5.0))
    except httpx.TimeoutException:
        raise APIError(504, f"{inst.name} did not answer in time.", code="upstream_timeout") from None
    except httpx.HTTPError as exc:
        inst.stats.failures += 1
        raise APIError(502, f"{inst.name} failed: {exc}", code="upstream_error") from None
    finally:
        inst.stats.in_flight -= 1
    if resp.status_code != 200:
        err = fanout.upstream_error(resp)
        if 400 <= err.status < 500 or fanout.is_refusal(err):
            code = "context_length_exceeded" if "context" in err.message.lower() else None
            raise APIError(400, err.message, param="input", code=code)
        raise APIError(502, f"{inst.name} failed: HTTP {err.status}: {err.message}", code="upstream_error")
    data = resp.json()
    dims = body.get("dimensions")
    vectors = data.get("data") or []
    if dims is not None and vectors and isinstance(vectors[0].get("embedding"), list) \
            and len(vectors[0]["embedding"]) != dims:
        raise APIError(400, f"This model returns {len(vectors[0]['embedding'])} dimensions; "
                            f"'dimensions' cannot change that.", param="dimensions", code="invalid_value")
    usage = data.get("usage") or {}
    return JSONResponse({
        "object": "list",
        "data": vectors,
        "model": state.model_id,
        "usage": {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                  "total_tokens": int(usage.get("total_tokens") or usage.get("prompt_tokens") or 0)},
    })
