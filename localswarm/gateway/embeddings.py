"""``POST /v1/embeddings`` when the swarm runs with ``embeddings`` on.

Embeddings are deterministic, so there is nothing to vote on: the request goes to the
least busy ready instance (llama-server started with ``--embeddings``).
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localswarm import upstream
from localswarm.errors import APIError, UpstreamError
from localswarm.gateway.request import parse_embeddings
from localswarm.gateway.rounds import ready_instances
from localswarm.gateway.state import gateway_state


async def embeddings(request: Request) -> Response:
    state = gateway_state(request)
    if not state.settings.embeddings:
        raise APIError(404, "Embeddings are off on this swarm; start it with embeddings enabled "
                            "(`embeddings: true`, LOCALSWARM_EMBEDDINGS=1).", code="embeddings_disabled")
    body = await parse_embeddings(request, state.settings)
    inst = min(ready_instances(state), key=lambda i: i.stats.in_flight)
    state.counters.embeddings += 1
    forwarded = {"input": body["input"], "encoding_format": body.get("encoding_format") or "float"}
    with inst.request() as work:
        try:
            data = await upstream.post_json(state.client, inst, "/v1/embeddings", forwarded,
                                            state.settings.instance_timeout)
        except httpx.TimeoutException:
            work.abandoned()
            raise APIError(504, f"{inst.name} did not answer in time.", code="upstream_timeout") from None
        except httpx.HTTPError as exc:
            raise APIError(502, f"{inst.name} failed: {exc}", code="upstream_error") from None
        except UpstreamError as err:
            work.abandoned()
            if 400 <= err.status < 500 or err.refusal:
                code = "context_length_exceeded" if "context" in err.message.lower() else None
                raise APIError(400, err.message, param="input", code=code) from None
            raise APIError(502, f"{inst.name} failed: HTTP {err.status}: {err.message}", code="upstream_error") from None
        work.abandoned()  # nothing decoded: keep embeddings out of latency and tokens/s
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
