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
    _check_common_sampling(body)
    _check_type(body, "tools", (list,), "an array")
    _check_type(body, "tool_choice", (str, dict), "a string or an object")
    _check_type(body, "response_format", (dict,), "an object")
    _check_number(body, "max_completion_tokens", 1, 10_000_000, integer=True)
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
            raise invalid(f"'tools[{i}]' must be a function tool object.", param=f"tools[{i}]", code="invalid_type")
        if not isinstance(tool["function"].get("name"), str):
            raise invalid(f"'tools[{i}].function.name' is required.", param=f"tools[{i}].function.name")
        params = tool["function"].get("parameters")
        if params is not None and not isinstance(params, dict):
            raise invalid(f"'tools[{i}].function.parameters' must be a JSON Schema object.",
                          param=f"tools[{i}].function.parameters", code="invalid_type")
    _check_tool_choice(body)
    _check_response_format(body)
    _check_type(body, "parallel_tool_calls", (bool,), "a boolean")
    _check_type(body, "logprobs", (bool,), "a boolean")
    _check_number(body, "top_logprobs", 0, 20, integer=True)
    _check_type(body, "user", (str,), "a string")
    for i, msg in enumerate(messages):
        _check_message_extras(msg, f"messages[{i}]")


def _check_message_extras(msg: dict[str, Any], where: str) -> None:
    if msg.get("name") is not None and not isinstance(msg["name"], str):
        raise invalid(f"'{where}.name' must be a string.", param=f"{where}.name", code="invalid_type")
    if msg["role"] == "tool" and msg.get("tool_call_id") is not None and not isinstance(msg["tool_call_id"], str):
        raise invalid(f"'{where}.tool_call_id' must be a string.", param=f"{where}.tool_call_id", code="invalid_type")
    calls = msg.get("tool_calls")
    if calls is None:
        return
    if msg["role"] != "assistant" or not isinstance(calls, list):
        raise invalid(f"'{where}.tool_calls' must be an array on an assistant message.", param=f"{where}.tool_calls",
                      code="invalid_type")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", ""), str):
            raise invalid(
                f"'{where}.tool_calls[{j}]' must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}} "
                "with string name and arguments.",
                param=f"{where}.tool_calls[{j}]", code="invalid_type",
            )
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise invalid(f"'{where}.tool_calls[{j}].id' must be a string.", param=f"{where}.tool_calls[{j}].id",
                          code="invalid_type")


def _check_tool_choice(body: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise invalid(f"'tool_choice' must be 'none', 'auto', 'required' or a function object, not {choice!r}.",
                          param="tool_choice", code="invalid_value")
        return
    fn = choice.get("function")
    if choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise invalid("'tool_choice' object must be {'type': 'function', 'function': {'name': ...}}.",
                      param="tool_choice", code="invalid_value")
    names = [t["function"]["name"] for t in body.get("tools") or []]
    if fn["name"] not in names:
        raise invalid(f"'tool_choice' names {fn['name']!r}, which is not among 'tools'.", param="tool_choice",
                      code="invalid_value")


def _check_response_format(body: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid(f"'response_format.type' must be 'text', 'json_object' or 'json_schema', not {kind!r}.",
                      param="response_format.type", code="invalid_value")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise invalid("'response_format.json_schema' must be an object with a 'schema' object.",
                          param="response_format.json_schema", code="invalid_type")
        if not isinstance(spec.get("name", ""), str):
            raise invalid("'response_format.json_schema.name' must be a string.",
                          param="response_format.json_schema.name", code="invalid_type")


def _check_logit_bias(body: dict[str, Any]) -> None:
    bias = body.get("logit_bias")
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise invalid("'logit_bias' must be an object mapping token ids to numbers.", param="logit_bias",
                      code="invalid_type")
    for key, value in bias.items():
        if not key.lstrip("-").isdigit() or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not -100 <= value <= 100:
            raise invalid("'logit_bias' maps token ids (strings of digits) to numbers in [-100, 100].",
                          param="logit_bias", code="invalid_value")


def _check_common_sampling(body: dict[str, Any]) -> None:
    _check_type(body, "model", (str,), "a string")
    _check_type(body, "stream", (bool,), "a boolean")
    _check_type(body, "stream_options", (dict,), "an object")
    _check_type(body, "stop", (str, list), "a string or an array of strings")
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    _check_number(body, "presence_penalty", -2, 2)
    _check_number(body, "frequency_penalty", -2, 2)
    _check_number(body, "max_tokens", 1, 10_000_000, integer=True)
    _check_number(body, "n", 1, 128, integer=True)
    _check_number(body, "seed", -(2**63), 2**64, integer=True)
    stop = body.get("stop")
    if isinstance(stop, list) and (len(stop) > 16 or not all(isinstance(s, str) for s in stop)):
        raise invalid("'stop' must be a string or an array of up to 16 strings.", param="stop", code="invalid_type")
    _check_logit_bias(body)
    include_usage = (body.get("stream_options") or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise invalid("'stream_options.include_usage' must be a boolean.", param="stream_options.include_usage",
                      code="invalid_type")


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in value
    )


def prompts_of(value: Any, name: str) -> list[Any]:
    """A legacy ``prompt`` / embeddings ``input`` as a list of single prompts (str or token list)."""
    if isinstance(value, str):
        return [value]
    if _is_tokens(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) or _is_tokens(v) for v in value):
        return list(value)
    raise invalid(
        f"'{name}' must be a string, an array of strings, an array of token ids, or an array of token-id arrays "
        "(non-empty).",
        param=name, code="invalid_type",
    )


def validate_completion(body: dict[str, Any]) -> list[Any]:
    """Check a legacy ``/v1/completions`` request; return its prompts."""
    if "prompt" not in body:
        raise invalid("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    prompts = prompts_of(body["prompt"], "prompt")
    if len(prompts) > 32:
        raise invalid("At most 32 prompts per request.", param="prompt", code="invalid_value")
    _check_common_sampling(body)
    _check_type(body, "echo", (bool,), "a boolean")
    _check_type(body, "suffix", (str,), "a string")
    _check_type(body, "user", (str,), "a string")
    _check_number(body, "logprobs", 0, 5, integer=True)
    _check_number(body, "best_of", 1, 128, integer=True)
    return prompts


def validate_embeddings(body: dict[str, Any]) -> list[Any]:
    """Check an ``/v1/embeddings`` request; return its inputs."""
    if "input" not in body:
        raise invalid("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    inputs = prompts_of(body["input"], "input")
    if len(inputs) > 2048:
        raise invalid("At most 2048 inputs per request.", param="input", code="invalid_value")
    _check_type(body, "model", (str,), "a string")
    _check_type(body, "user", (str,), "a string")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'.", param="encoding_format", code="invalid_value")
    _check_number(body, "dimensions", 1, 65536, integer=True)
    return inputs
