"""What of a client's request reaches an instance: the one home of the forwarding policy (issue 5).

Clients send more than any one server understands (opencode, the AI SDK and OpenAI's
own clients add ``user``, ``store``, ``metadata``, ``service_tier``...). The policy:

- OpenAI fields that llama-server implements are forwarded (``FORWARDED``);
- llama-server's own sampling extras are forwarded too (``LLAMA_EXTRAS``: ``ignore_eos``,
  ``top_k``, ``min_p``, ``grammar``, ``cache_prompt``...), so power users keep them;
- fields the gateway owns (``stream``, ``stream_options``, ``n``, ``seed``) are rewritten
  per instance (:func:`instance_bodies`, :func:`for_instance`): every instance gets its own
  seed and is always asked to stream, with usage, under the model id it serves;
- everything else is dropped, silently for the client (OpenAI's "unknown fields are
  ignored") and at debug level in the log. Dropping rather than forwarding keeps fields
  that would change llama-server's response shape (``response_fields``, ``n_probs``,
  ``return_tokens``) or its slot handling (``id_slot``, ``lora``) away from the vote.

Content-part arrays are flattened to strings when every part is text: llama-server and
mlx_lm take strings everywhere, while only some chat templates take parts.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from localswarm.errors import invalid

if TYPE_CHECKING:
    from localswarm.supervisor.instance import Instance

__all__ = ["ALLOWED", "FORWARDED", "LLAMA_EXTRAS", "for_instance", "instance_bodies", "upstream_body"]

logger = logging.getLogger(__name__)

# OpenAI chat/completions fields llama-server understands.
FORWARDED = frozenset(
    {
        "model", "messages", "prompt", "suffix", "echo",
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
        "presence_penalty", "frequency_penalty", "logit_bias",
        "response_format", "tools", "tool_choice", "parallel_tool_calls",
        "logprobs", "top_logprobs", "user", "reasoning_effort",
    }
)

# llama-server extensions (tools/server/README.md, "POST /completion" options).
LLAMA_EXTRAS = frozenset(
    {
        "ignore_eos", "top_k", "min_p", "typical_p", "top_n_sigma", "repeat_penalty", "repeat_last_n",
        "penalize_nl", "mirostat", "mirostat_tau", "mirostat_eta", "dynatemp_range",
        "dynatemp_exponent", "xtc_probability", "xtc_threshold", "dry_multiplier", "dry_base",
        "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers", "samplers",
        "grammar", "json_schema", "min_keep", "n_keep", "n_indent", "t_max_predict_ms",
        "cache_prompt", "chat_template_kwargs", "reasoning_format", "add_generation_prompt",
        "enable_thinking", "thinking_budget_tokens",
    }
)

ALLOWED = FORWARDED | LLAMA_EXTRAS | {"stream", "stream_options", "n"}

TEXT_PARTS = {"text", "input_text"}


def flatten_content(content: Any, where: str) -> Any:
    """A content-part array as one string; non-text parts are refused (text-only models)."""
    if not isinstance(content, list):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"'{where}.content[{j}].text' must be a string.", param=f"{where}.content[{j}].text",
                              code="invalid_type")
            texts.append(text)
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise invalid(
                f"'{where}.content[{j}]' is a {kind!r} part; this swarm's model reads text only "
                "(send 'text' parts).",
                param=f"{where}.content[{j}].type",
                code="unsupported_content",
            )
    return "\n".join(texts)


def upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request as llama-server should see it (see the module docstring)."""
    out: dict[str, Any] = {}
    dropped = []
    for key, value in body.items():
        if key in ALLOWED:
            out[key] = value
        else:
            dropped.append(key)
    if dropped:
        logger.debug("dropped fields llama-server does not know: %s", ", ".join(sorted(dropped)))
    if isinstance(out.get("messages"), list):
        messages = []
        for i, msg in enumerate(out["messages"]):
            if isinstance(msg, dict) and isinstance(msg.get("content"), list):
                msg = {**msg, "content": flatten_content(msg["content"], f"messages[{i}]")}
            messages.append(msg)
        out["messages"] = messages
    if out.get("logprobs") is False:
        out.pop("top_logprobs", None)
    if out.get("top_logprobs") is not None and not out.get("logprobs") and "messages" in out:
        out["logprobs"] = True  # OpenAI requires both; llama-server needs the flag
    return out


# Fields the gateway owns: never forwarded as the client sent them.
_OWNED = {"stream", "stream_options", "n", "localswarm", "localswarm_strategy"}


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def instance_bodies(body: dict[str, Any], count: int, *, default_temperature: float) -> list[dict[str, Any]]:
    """One upstream body per instance: distinct seeds so the vote sees diverse samples.

    ``seed`` given: instance ``i`` gets ``seed + i``; otherwise a random first seed.
    """
    base = {k: v for k, v in body.items() if k not in _OWNED}
    if base.get("temperature") is None:
        base["temperature"] = default_temperature
    if base.get("max_tokens") is None and base.get("max_completion_tokens") is not None:
        base["max_tokens"] = base["max_completion_tokens"]
    base.pop("max_completion_tokens", None)
    seed = _seed(body)
    first = seed if seed is not None else random.randrange(2**31)
    return [{**base, "seed": (first + i) % 2**32} for i in range(count)]


def reseeded(body: dict[str, Any], offset: int) -> dict[str, Any]:
    """``body`` for an extra round: the client's seed moved by ``offset`` (so it differs from
    the vote round's ``seed + i``), or no seed (each instance then draws its own)."""
    out = {k: v for k, v in body.items() if k != "seed"}
    seed = _seed(body)
    if seed is not None:
        out["seed"] = (seed + offset) % 2**32
    return out


def for_instance(inst: Instance, body: dict[str, Any]) -> dict[str, Any]:
    """What one instance is sent: always streamed with usage, always the served model id.

    Streamed even when the client's request is not: llama-server notices a closed
    connection only when it writes, so cancelling a streamed request frees the slot at
    once, while a non-streamed one would keep decoding for nobody. The served id because
    mlx_lm.server would try to load any other name it is sent.
    """
    # The name the server serves under: llama-server's alias, mlx_lm.server's "default_model".
    served = getattr(inst.backend, "upstream_model", None) or inst.backend.model_id
    return {**body, "model": served, "stream": True, "stream_options": {"include_usage": True}}
