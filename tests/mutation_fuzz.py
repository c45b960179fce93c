"""A mutation fuzzer for the gateway's request bodies (issue 17), shared by tests and bench.

Schemathesis (tests/integration/test_fuzz_openapi.py) generates bodies from /openapi.json,
so it cannot find what the schema itself lets through. This fuzzer starts from valid
bodies of every kind the gateway serves (plain, streamed, tools, n > 1, legacy
completions, embeddings) and mutates them the way broken clients do: fields dropped,
duplicated or renamed, types swapped, odd Unicode, NaN/Infinity and huge numbers, nested
garbage, unknown fields. Bodies are bytes (NaN and duplicate keys have no Python form).

Valid bodies generate only a few tokens: the templates ask for ``max_tokens`` at most
``tokens``, and a mutation that leaves a body valid but expensive (a large but legal
``max_tokens`` or ``n``) is brought back under the limit, so a run of thousands of bodies
fits on a small machine. The property checked by :func:`run`: no answer ≥ 500 (status
or error event inside a 200 stream), and every refusal in OpenAI's error shape.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

CHAT, TEXT, EMBED = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"

_TOOL = {"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
_HI = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hi."}]


def templates(tokens: int) -> list[tuple[str, dict[str, Any]]]:
    """Valid bodies of every kind, each generating at most ``tokens`` tokens."""
    return [
        (CHAT, {"model": "gpt-4o", "messages": _HI, "max_tokens": tokens}),
        (CHAT, {"model": "x", "messages": _HI, "max_tokens": tokens, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": 0.7, "seed": 3}),
        (CHAT, {"messages": [{"role": "user", "content": "Read a.py"}], "max_tokens": tokens,
                "tools": [_TOOL], "tool_choice": "auto", "parallel_tool_calls": False}),
        (CHAT, {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "Read a.py"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "read_file", "arguments": "{\"path\": \"a.py\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "print(1)"}],
            "tools": [_TOOL], "tool_choice": {"type": "function", "function": {"name": "read_file"}},
            "max_completion_tokens": tokens, "stream": True}),
        (CHAT, {"messages": _HI, "max_tokens": tokens, "n": 2, "top_p": 0.9, "stop": ["\n\n", "END"],
                "presence_penalty": 0.1, "frequency_penalty": 0.1, "logit_bias": {"42": -5}, "user": "u"}),
        (CHAT, {"messages": _HI, "max_tokens": tokens, "logprobs": True, "top_logprobs": 2,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
        (CHAT, {"messages": _HI, "max_tokens": tokens, "response_format": {"type": "json_object"},
                "top_k": 20, "min_p": 0.05, "cache_prompt": True, "store": True, "metadata": {"k": "v"}}),
        (TEXT, {"model": "x", "prompt": "def add(a, b):", "max_tokens": tokens, "temperature": 0.2}),
        (TEXT, {"prompt": ["one", "two"], "max_tokens": tokens, "n": 2, "stream": True, "echo": True,
                "logprobs": 1, "stream_options": {"include_usage": True}}),
        (TEXT, {"prompt": [1, 2, 3], "max_tokens": tokens, "stop": "\n", "seed": 9}),
        (EMBED, {"model": "x", "input": "hello"}),
        (EMBED, {"input": ["a", "b c"], "encoding_format": "float"}),
        (EMBED, {"input": [[1, 2, 3]], "encoding_format": "base64"}),
    ]


_STRANGE_TEXT = ["", " ", "\u0000", "\ud800", "\udfff x \ud83d", "🤖" * 20, "\u202eevil", "e\u0301\u0301\u0301",
                 "\ufeff", "a" * 3000, "\U0010ffff", "<|im_end|>", "</s>", "{{ raise_exception('x') }}", "\\u0000",
                 "null", "function", "NaN"]
_STRANGE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "2147483648", "4294967296",
                    "18446744073709551616", "-9223372036854775809", "1" * 40, "-0", "0.0", "1e-320", "-1", "0",
                    "3.5", "100", "129"]
_SCALARS: list[Any] = [None, True, False, 0, -1, 1, 1.5, 2**31, "", "x", "auto", "function", [], {}, [1, "a"],
                       {"a": 1}, [None], [[]], {"type": None}]
_KEYS = ["role", "type", "content", "function", "name", "tools", "tool_choice", "messages", "prompt", "input",
         "stream", "n", "max_tokens", "stop", "logit_bias", "response_format", "json_schema", "arguments",
         "grammar", "json_schema", "samplers", "n_probs", "id_slot", "lora", "chat_template_kwargs",
         "reasoning_format", "continue_final_message", "__proto__", "", "mirostat", "dry_sequence_breakers"]


class _Raw:
    """A JSON token written as is (NaN, 1e999, a 40-digit integer)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into the body (keys and indexes), the root excluded."""
    out: list[tuple[Any, ...]] = []
    if len(path) > 12:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*path, k))
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*path, i))
            out += _nodes(v, (*path, i))
    return out


def _parent(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        body = body[key]
    return body


def _garbage(rng: random.Random, depth: int) -> Any:
    if depth <= 0 or rng.random() < 0.2:
        # a copy: the shared [] and {} of _SCALARS must never be mutated by a later mutation
        return copy.deepcopy(rng.choice(_SCALARS + [_Raw(rng.choice(_STRANGE_NUMBERS)), rng.choice(_STRANGE_TEXT)]))
    if rng.random() < 0.5:
        return [_garbage(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(_KEYS): _garbage(rng, depth - 1) for _ in range(rng.randint(0, 3))}


def _deep(rng: random.Random) -> _Raw:
    """Arrays or objects nested up to 100,000 deep (written as text: no recursion here)."""
    depth = rng.choice([5, 30, 63, 64, 65, 200, 2000, 100_000])
    if rng.random() < 0.5:
        return _Raw("[" * depth + "1" + "]" * depth)
    return _Raw('{"a": ' * depth + "null" + "}" * depth)


def _mutate_once(body: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """One mutation; returns the body and any keys to duplicate at the top when writing it."""
    paths = _nodes(body)
    kind = rng.choice(["drop", "swap", "text", "number", "garbage", "extra", "rename", "duplicate", "enum",
                       "empty", "deep", "dup_key"])
    path = rng.choice(paths) if paths else None
    if kind == "extra" or path is None:
        target = body if not paths or rng.random() < 0.6 else _parent(body, rng.choice(paths) + ("?",))
        if isinstance(target, dict):
            target[rng.choice(_KEYS + ["x_extra", "foo"])] = rng.choice(
                [_Raw(rng.choice(_STRANGE_NUMBERS)), _garbage(rng, 3), rng.choice(_STRANGE_TEXT)])
        return body, []
    parent, key = _parent(body, path), path[-1]
    if kind == "drop":
        del parent[key]
    elif kind == "swap":
        parent[key] = copy.deepcopy(rng.choice(_SCALARS))
    elif kind == "text":
        parent[key] = rng.choice(_STRANGE_TEXT) * rng.choice([1, 1, 1, 5])
    elif kind == "number":
        parent[key] = _Raw(rng.choice(_STRANGE_NUMBERS))
    elif kind == "garbage":
        parent[key] = _garbage(rng, rng.randint(1, 5))
    elif kind == "deep":
        parent[key] = _deep(rng)
    elif kind == "rename" and isinstance(parent, dict):
        parent[rng.choice(_KEYS) + rng.choice(["", "s", "_"])] = parent.pop(key)
    elif kind == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif kind == "enum":
        parent[key] = rng.choice(["system", "developer", "user", "assistant", "tool", "function", "text",
                                  "image_url", "json_object", "json_schema", "none", "required", "float", "base64"])
    elif kind == "empty":
        parent[key] = rng.choice([[], {}, ""])
    elif kind == "dup_key" and path and len(path) == 1:
        return body, [key]
    return body, []


def _write(value: Any, ascii_only: bool) -> str:
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_write(str(k), ascii_only)}: {_write(v, ascii_only)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_write(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(body: Any, rng: random.Random | None = None, duplicate: list[str] = ()) -> bytes:
    """``body`` as JSON bytes; ``duplicate`` top-level keys are written twice (first a garbage value)."""
    ascii_only = rng.random() < 0.5 if rng else True
    text = _write(body, ascii_only)
    if duplicate and isinstance(body, dict) and text.startswith("{") and len(text) > 2:
        extra = ", ".join(f"{json.dumps(k)}: {_write((rng or random).choice(_SCALARS), True)}" for k in duplicate)
        text = "{" + extra + ", " + text[1:]
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: send it escaped, as JSON allows
        return _write(body, True).encode("utf-8") if not duplicate else text.encode("utf-8", "surrogatepass")


def _keep_cheap(body: Any, tokens: int) -> None:
    """A valid but expensive value (``max_tokens`` 5000, ``n`` 100) is brought under the limits."""
    if not isinstance(body, dict):
        return
    for name, cap, top in (("max_tokens", tokens, 10_000_000), ("max_completion_tokens", tokens, 10_000_000),
                           ("n", 2, 128), ("best_of", 2, 128)):
        value = body.get(name)
        if isinstance(value, _Raw) and value.text.lstrip("-").isdigit():  # a number written as is
            value = int(value.text)
        if isinstance(value, int) and not isinstance(value, bool) and cap < value <= top:
            body[name] = cap
    for name in ("prompt", "input"):  # many prompts: one vote round each
        if isinstance(body.get(name), list) and len(body[name]) > 4 and not all(isinstance(t, int) for t in body[name]):
            body[name] = body[name][:4]


@dataclass
class Case:
    path: str
    body: bytes
    mutated: bool


def cases(count: int, seed: int, *, tokens: int = 4, valid_share: float = 0.15) -> list[Case]:
    """``count`` bodies: a share left valid, the rest with 1-3 mutations each. Deterministic per seed."""
    rng = random.Random(seed)
    base = templates(tokens)
    out = []
    for _ in range(count):
        path, body = rng.choice(base)
        body = copy.deepcopy(body)
        if rng.random() < valid_share:
            out.append(Case(path, encode(body, rng), False))
            continue
        duplicate: list[str] = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            body, dup = _mutate_once(body, rng)
            duplicate += dup
        _keep_cheap(body, tokens)
        if rng.random() < 0.03:
            path = rng.choice([CHAT, TEXT, EMBED])  # a body sent to the wrong route
        out.append(Case(path, encode(body, rng, duplicate), True))
    return out


@dataclass
class Report:
    statuses: Counter = field(default_factory=Counter)
    by_route: dict[str, Counter] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # >= 500, 5xx inside a stream, or a malformed error
    valid_ok: int = 0
    valid_total: int = 0

    def add(self, case: Case, status: int, problem: str | None) -> None:
        self.statuses[status] += 1
        self.by_route.setdefault(case.path, Counter())[status] += 1
        if not case.mutated:
            self.valid_total += 1
            self.valid_ok += int(status == 200)
        if problem:
            self.failures.append(f"{case.path} -> {problem}\n  body: {case.body[:600]!r}")

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        counts = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (f"{self.total} bodies; statuses {{{counts}}}; valid templates answered 200: "
                f"{self.valid_ok}/{self.valid_total}; failures (>= 500 or malformed errors): {len(self.failures)}")


def _problem(resp: httpx.Response, text: str) -> str | None:
    if resp.status_code >= 500:
        return f"HTTP {resp.status_code}: {text[:400]}"
    if resp.status_code >= 400:
        try:
            err = json.loads(text)["error"]
            assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
            assert set(err) == {"message", "type", "param", "code"}
        except Exception:  # noqa: BLE001 - any deviation from the shape is the finding
            return f"HTTP {resp.status_code} not in OpenAI's error shape: {text[:400]}"
        return None
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        for line in text.splitlines():
            if line.startswith("data:") and '"error"' in line:
                payload = line[5:].strip()
                try:
                    err = json.loads(payload).get("error") or {}
                except ValueError:
                    return f"unparseable stream event: {payload[:200]}"
                if err.get("type") in ("server_error", "timeout_error", "unavailable_error") or \
                        str(err.get("code", "")).startswith("upstream"):
                    return f"error event inside a 200 stream: {payload[:400]}"
    return None


def send(client: httpx.Client, case: Case) -> tuple[int, str | None]:
    try:
        resp = client.post(case.path, content=case.body, headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        return 599, f"transport error: {exc!r}"
    return resp.status_code, _problem(resp, resp.text)


def run(base_url: str, bodies: list[Case], *, concurrency: int = 4, timeout: float = 120,
        progress: Callable[[int], None] | None = None) -> Report:
    """Send every body; return the status counts and the findings."""
    report = Report()
    with httpx.Client(base_url=base_url, timeout=timeout) as client, ThreadPoolExecutor(concurrency) as pool:
        for i, (case, (status, problem)) in enumerate(zip(bodies, pool.map(lambda c: send(client, c), bodies))):
            report.add(case, status, problem)
            if progress and (i + 1) % 500 == 0:
                progress(i + 1)
    return report


def real_swarm(binary: Any, model: Any, *, instances: int = 2, tokens: int = 4, ctx: int = 256) -> Any:
    """A gateway over real llama-servers sized for fuzzing: small context, embeddings on, no
    concurrency limit, and ``-n tokens`` as the instances' default for bodies without ``max_tokens``.
    """
    from pathlib import Path

    from localswarm.backends.llama_server import LlamaServerBackend
    from localswarm.config import Settings
    from tests.helpers import RunningGateway, free_tcp_port

    settings = Settings(port=free_tcp_port(), ctx_size=ctx, parallel=2, embeddings=True,
                        keepalive_interval=1.0, instance_timeout=120)
    backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2", ctx_size=ctx,
                                 parallel=2, embeddings=True, pooling="mean", extra_args=("-n", str(tokens)))
    return RunningGateway(settings, backend, instances=instances)
