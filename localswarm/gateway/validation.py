"""Reading a request body as strict JSON and checking it against the schema.

What a valid request is lives in :mod:`localswarm.gateway.schema`; this module only runs it
and turns its complaints into OpenAI errors (``{"error": {"message", "type", "param",
"code"}}``) whose ``param`` is the offending path, e.g. ``tools[0].type``.

Strict JSON: Python's parser takes ``NaN``, ``Infinity`` and numbers that overflow to
infinity, lone UTF-16 surrogates and any depth; none of them can be sent on to an
instance (the gateway would fail to serialise them, or llama-server to parse them), so
they are refused here, anywhere in the body, including fields the gateway ignores.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from localswarm.gateway import schema
from localswarm.gateway.errors import APIError, invalid

#: how much of a body over ``max_body_bytes`` is still read (and dropped) so its 413 reaches the client
DRAIN_BYTES = 32 * 2**20
MAX_DEPTH = 64  # nesting of arrays/objects; real requests (tool schemas included) stay far below


async def read_capped(request: Request, max_bytes: int) -> bytes | None:
    """The raw body, or None when it exceeds ``max_bytes`` (declared or read; see :func:`_drain`).

    The one body reader of the app: the OpenAI routes (:func:`read_json`) and federation's
    routes each turn None into their own 413.
    """
    declared = request.headers.get("content-length")
    over = bool(declared and declared.isdigit() and int(declared) > max_bytes)
    if over and int(declared or 0) > max_bytes + DRAIN_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if over or size > max_bytes:
            await _drain(stream, size - max_bytes)
            return None
        chunks.append(chunk)
    return None if over else b"".join(chunks)


async def _drain(stream: AsyncIterator[bytes], past: int) -> None:
    """Read and drop the rest of an oversized body, up to DRAIN_BYTES past the limit.

    A client sends its whole body before it reads the answer (the openai SDK, httpx and
    requests do). Closing the connection with that body unread makes the kernel reset it,
    and the reset destroys the 413 already sent: the client sees a connection error (and
    retries) instead of the refusal. Reading the rest lets the 413 arrive; the time it may
    take is bounded by ``body_timeout``, and a body more than DRAIN_BYTES over is dropped.
    """
    try:
        async for chunk in stream:
            past += len(chunk)
            if past > DRAIN_BYTES:
                return
    except ClientDisconnect:
        return


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, refusing oversized or malformed input with OpenAI errors."""
    raw = await read_capped(request, max_bytes)
    if raw is None:
        raise _too_large(max_bytes)
    return parse_json(raw)


def _too_large(max_bytes: int) -> APIError:
    return APIError(
        413, f"The request body is larger than the limit of {max_bytes} bytes.", code="request_too_large"
    )


def _bad_json(why: str) -> APIError:
    return invalid(f"We could not parse the JSON body of your request ({why}). The body must be a JSON object.",
                   code="invalid_json")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def parse_json(raw: bytes) -> dict[str, Any]:
    """Strict JSON: an object, no NaN/Infinity, finite numbers, valid Unicode, bounded depth."""
    if not raw.strip():
        raise invalid("The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise _bad_json(f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, NaN, overflow, >4300-digit integers
        raise _bad_json(str(exc)) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    _check_tree(body)
    return body


def _check_tree(body: dict[str, Any]) -> None:
    """Refuse bodies nested deeper than MAX_DEPTH, or holding strings that are not valid Unicode."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _bad_json("a string holds an unpaired UTF-16 surrogate") from None
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise _bad_json(f"nested deeper than {MAX_DEPTH} levels")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


# --- the schema's verdict as an OpenAI error ------------------------------------------

_WORDS = {"string": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "list": "an array",
          "dict": "an object", "model": "an object", "model_attributes": "an object", "none": "null"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _where(loc: tuple[Any, ...], body: Any, missing: bool) -> tuple[str, int]:
    """The path of ``loc`` in the body as OpenAI writes it (``tools[0].function``), and its depth.

    pydantic puts union member names in ``loc``; walking the body keeps only real keys.
    """
    parts: list[str] = []
    cur = body
    for i, key in enumerate(loc):
        if isinstance(key, int) and isinstance(cur, list) and 0 <= key < len(cur):
            parts.append(f"[{key}]")
            cur = cur[key]
        elif isinstance(key, str) and isinstance(cur, dict) and key in cur and key != "[key]":
            parts.append(f".{key}" if parts else key)
            cur = cur[key]
        elif missing and i == len(loc) - 1 and isinstance(key, str) and _NAME.match(key):
            parts.append(f".{key}" if parts else key)
    return "".join(parts), len(parts)


def _join(param: str, child: str) -> str:
    return f"{param}.{child}" if param else child


def _one(err: dict[str, Any], body: Any) -> tuple[str, int, str, str]:
    """(param, depth, code, message) for one pydantic error."""
    kind, loc = err["type"], err["loc"]
    if "[key]" in loc:  # a bad key of a mapping (logit_bias): name the mapping
        loc = loc[: loc.index("[key]") - 1]
    param, depth = _where(loc, body, kind == "missing")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, schema.FieldError):
        param = _join(param, cause.param)
        return param, depth + 1, cause.code, f"Invalid '{param}': {cause.message}"
    if kind == "missing":
        return param, depth, "missing_required_parameter", f"Missing required parameter: '{param}'."
    tagged = schema.TAGGED.get(str(ctx.get("discriminator", "")).rstrip("()"))
    if kind == "union_tag_not_found" and tagged:
        field, expected = tagged
        if isinstance(err.get("input"), dict):
            got = err["input"].get(field)
            param = _join(param, field)
            if got is None:
                return param, depth + 1, "missing_required_parameter", f"Missing required parameter: '{param}'."
            return param, depth + 1, "invalid_value", \
                f"Invalid value for '{param}': expected one of {expected}, got {got!r}."
        return param, depth, "invalid_type", f"Invalid type for '{param}': expected an object."
    if kind == "union_tag_not_found" and ctx.get("discriminator", "").rstrip("()") in schema.SHAPES:
        shape = schema.SHAPES[ctx["discriminator"].rstrip("()")]
        return param, depth, "invalid_type", f"Invalid type for '{param}': expected {shape}."
    if kind == "too_short" and err.get("input") == []:
        return param, depth, "empty_array", f"'{param}' must not be empty."
    if "[key]" in err["loc"]:
        return param, depth, "invalid_value", f"Invalid key {err['input']!r} in '{param}': {err['msg']}."
    if kind.endswith("_type"):
        word = _WORDS.get(kind[: -len("_type")], err["msg"])
        return param, depth, "invalid_type", f"Invalid type for '{param}': expected {word}."
    return param, depth, "invalid_value", f"Invalid value for '{param}': {err['msg']}."


def to_api_error(exc: ValidationError, body: Any) -> APIError:
    """The most precise of pydantic's errors (the deepest path) as one OpenAI 400."""
    found = [_one(err, body) for err in exc.errors(include_url=False)]
    deepest = max(depth for _, depth, _, _ in found)
    param = next(p for p, depth, _, _ in found if depth == deepest)
    same = [(code, msg) for p, depth, code, msg in found if depth == deepest and p == param]
    if len(same) > 1 and all(code == "invalid_type" for code, _ in same):
        words = [msg.rsplit("expected ", 1)[-1].rstrip(".") for _, msg in same]
        return invalid(f"Invalid type for '{param}': expected {' or '.join(dict.fromkeys(words))}.",
                       param=param or None, code="invalid_type")
    code, message = next(((c, m) for c, m in same if c != "invalid_type"), same[0])
    return invalid(message, param=param or None, code=code)


def check(model: type[BaseModel], body: dict[str, Any]) -> BaseModel:
    """``body`` validated by ``model``; an OpenAI 400 naming the parameter when it is not valid."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise to_api_error(exc, body) from None


def validate_chat(body: dict[str, Any]) -> None:
    """Check a ``/v1/chat/completions`` request."""
    check(schema.ChatCompletionRequest, body)


def prompts_of(value: Any) -> list[Any]:
    """A (valid) ``prompt`` / ``input`` as a list of single prompts (a string or a token list)."""
    if isinstance(value, str) or (value and all(isinstance(t, int) for t in value)):
        return [value]
    return list(value)


def validate_completion(body: dict[str, Any]) -> list[Any]:
    """Check a legacy ``/v1/completions`` request; return its prompts."""
    check(schema.CompletionRequest, body)
    return prompts_of(body["prompt"])


def validate_embeddings(body: dict[str, Any]) -> list[Any]:
    """Check an ``/v1/embeddings`` request; return its inputs."""
    check(schema.EmbeddingRequest, body)
    return prompts_of(body["input"])
