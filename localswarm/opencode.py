"""opencode provider config for a running swarm (``localswarm opencode [--write]``).

opencode (https://opencode.ai) reads ``opencode.json`` in the project folder. The swarm is
an ``@ai-sdk/openai-compatible`` provider named ``localswarm`` with one model, ``swarm``
(any model id resolves to the swarm). When the gateway needs an API key the config refers
to ``{env:LOCALSWARM_API_KEY}`` instead of writing the secret into the project.

``limit.context`` is the swarm's context per slot (one request gets one slot) and
``limit.output`` the answer budget: opencode compacts the conversation when it would outgrow
``context - output``, and sends ``output`` as ``max_tokens`` (without it: 32,000).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localswarm import statefile
from localswarm.config import OPENCODE_OUTPUT
from localswarm.errors import LocalSwarmError

PROVIDER_ID = "localswarm"
MODEL_ID = "swarm"
SCHEMA_URL = "https://opencode.ai/config.json"
CONFIG_NAME = "opencode.json"


def provider_config(
    base_url: str,
    *,
    auth: bool = False,
    context: int | None = None,
    output: int | None = None,
) -> dict[str, Any]:
    """The whole opencode config pointing at ``base_url`` (``http://host:port/v1``)."""
    options: dict[str, Any] = {"baseURL": base_url}
    if auth:
        options["apiKey"] = "{env:LOCALSWARM_API_KEY}"
    model: dict[str, Any] = {"name": "Local Swarm", "tool_call": True}
    if context or output:
        model["limit"] = {"context": int(context or 0), "output": int(output or 0)}
    return {
        "$schema": SCHEMA_URL,
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Local Swarm",
                "options": options,
                "models": {MODEL_ID: model},
            }
        },
        "model": f"{PROVIDER_ID}/{MODEL_ID}",
    }


def limits(ctx_size: int) -> tuple[int, int]:
    """``(context, output)`` for a slot of ``ctx_size`` tokens: the output budget is
    :data:`~localswarm.config.OPENCODE_OUTPUT`, at most a quarter of the context."""
    return ctx_size, min(OPENCODE_OUTPUT, ctx_size // 4)


def running_swarm_config() -> dict[str, Any]:
    """The config for the swarm found through the state file; LocalSwarmError if none runs."""
    data = statefile.read()
    if not data:
        raise LocalSwarmError("no swarm is running: start one with `localswarm up` first")
    url = statefile.gateway_url(data)  # a wildcard bind is reachable on loopback
    base_url = f"{url}/v1" if url else str(data["base_url"])
    ctx = data.get("ctx_size")
    context, output = limits(int(ctx)) if isinstance(ctx, int) and ctx > 0 else (None, None)
    return provider_config(base_url, auth=bool(data.get("auth")), context=context, output=output)


def merge(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """``ours`` merged into a project's config: our provider replaced, others kept, model set."""
    merged = dict(existing)
    merged.setdefault("$schema", SCHEMA_URL)
    providers = dict(merged.get("provider") or {})
    providers[PROVIDER_ID] = ours["provider"][PROVIDER_ID]
    merged["provider"] = providers
    merged["model"] = ours["model"]
    return merged


def write_config(project: Path, config: dict[str, Any]) -> Path:
    """Write (or merge into) ``project/opencode.json``; returns its path."""
    path = project / CONFIG_NAME
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise LocalSwarmError(f"{path} is not plain JSON ({exc}); fix or remove it first") from None
        if not isinstance(existing, dict):
            raise LocalSwarmError(f"{path} does not hold a JSON object")
    text = json.dumps(merge(existing, config), indent=2) + "\n"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
