"""Reading and checking request bodies before any instance sees them."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from localswarm.gateway.errors import APIError, invalid

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, refusing oversized or malformed input with OpenAI errors."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise invalid("The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid(
            f"We could not parse the JSON body of your request ({exc}). "
            "The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    return body


def _too_large(max_bytes: int) -> APIError:
    return APIError(
        413, f"The request body is larger than the limit of {max_bytes} bytes.", code="request_too_large"
    )


def _check_number(body: dict[str, Any], name: str, lo: float, hi: float, *, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise invalid(f"'{name}' must be {kind}, not {type(value).__name__}.", param=name, code="invalid_type")
    if not lo <= value <= hi:
        raise invalid(f"'{name}' must be between {lo:g} and {hi:g}, not {value}.", param=name, code="invalid_value")


def _check_type(body: dict[str, Any], name: str, types: tuple[type, ...], label: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        raise invalid(f"'{name}' must be {label}, not {type(value).__name__}.", param=name, code="invalid_type")


def validate_chat(body: dict[str, Any]) -> None:
    """Check the fields of a chat completion request that we or llama-server rely on."""
    if "messages" not in body:
        raise invalid("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid("'messages' must be an array of message objects.", param="messages", code="invalid_type")
    if not messages:
        raise invalid("'messages' must contain at least one message.", param="messages", code="empty_array")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise invalid(f"'{where}' must be an object.", param=where, code="invalid_type")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(
                f"'{where}.role' must be one of {sorted(ROLES)}, not {role!r}.", param=f"{where}.role", code="invalid_value"
            )
        content = msg.get("content")
        if content is None:
            if role != "assistant" or not (msg.get("tool_calls") or msg.get("function_call")):
                if role != "assistant":
                    raise invalid(f"'{where}.content' is required.", param=f"{where}.content", code="missing_required_parameter")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise invalid(
                        f"'{where}.content[{j}]' must be a content part object with a 'type'.",
                        param=f"{where}.content[{j}]",
                        code="invalid_type",
                    )
        elif not isinstance(content, str):
            raise invalid(
                f"'{where}.content' must be a string or an array of content parts.",
                param=f"{where}.content",
                code="invalid_type",
            )
    _check_type(body, "model", (str,), "a string")
    _check_type(body, "stream", (bool,), "a boolean")
    _check_type(body, "stream_options", (dict,), "an object")
    _check_type(body, "tools", (list,), "an array")
    _check_type(body, "tool_choice", (str, dict), "a string or an object")
    _check_type(body, "stop", (str, list), "a string or an array of strings")
    _check_type(body, "response_format", (dict,), "an object")
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    _check_number(body, "presence_penalty", -2, 2)
    _check_number(body, "frequency_penalty", -2, 2)
    _check_number(body, "max_tokens", 1, 10_000_000, integer=True)
    _check_number(body, "max_completion_tokens", 1, 10_000_000, integer=True)
    _check_number(body, "n", 1, 128, integer=True)
    _check_number(body, "seed", -(2**63), 2**64, integer=True)
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise invalid("'stop' must be a string or an array of strings.", param="stop", code="invalid_type")
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
            raise invalid(f"'tools[{i}]' must be a function tool object.", param=f"tools[{i}]", code="invalid_type")
        if not isinstance(tool["function"].get("name"), str):
            raise invalid(f"'tools[{i}].function.name' is required.", param=f"tools[{i}].function.name")
