"""One request schema (issue 17): what it refuses, what it must keep accepting, and that
/openapi.json and validation cannot disagree. Gateway tests here run over FAKE llama-servers
(tests/fakes/fake_llama_server.py); the real llama-server is in
tests/integration/test_fuzz_mutations.py.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest

from localswarm.config import Settings
from localswarm import upstream
from localswarm.gateway import fanout, schema
from localswarm.gateway.errors import APIError
from localswarm.gateway.openapi import openapi_schema
from localswarm.gateway.validation import parse_json, validate_chat, validate_completion, validate_embeddings
from tests import mutation_fuzz
from tests.helpers import RunningGateway, fake_backend, free_tcp_port

HI = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
ISSUE_17 = {"model": "x", "messages": HI, "max_tokens": 4,
            "tools": [{"function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]}


def _refusal(check, body) -> dict:
    with pytest.raises(APIError) as info:
        check(body)
    assert info.value.status == 400
    return info.value.body()["error"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw")
    with RunningGateway(Settings(port=free_tcp_port(), embeddings=True, keepalive_interval=0.5),
                        fake_backend(tmp, embeddings=True), instances=2) as gw:
        yield gw


def _upstream_bodies(gw) -> list:
    bodies = []
    for inst in gw.supervisor.instances:
        bodies += httpx.get(inst.base_url + "/fake/last_bodies", headers=inst.auth_headers()).json()
    return bodies


def test_the_issue_example_is_a_400_naming_tools_0_type_before_any_instance_fake(gateway):
    before = len(_upstream_bodies(gateway))
    with gateway.client() as c:
        resp = c.post("/v1/chat/completions", json=ISSUE_17)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err == {"message": "Missing required parameter: 'tools[0].type'.", "type": "invalid_request_error",
                   "param": "tools[0].type", "code": "missing_required_parameter"}
    assert len(_upstream_bodies(gateway)) == before  # no instance spent a slot on it


@pytest.mark.parametrize("route,raw", [
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 2, "unknown": NaN}'),  # the issue's second example
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 2, "extra": {"deep": [Infinity]}}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "temperature": -Infinity}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "top_k": 1e999}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),
    ("/v1/embeddings", b'{"input": "x", "user": "\\udfff"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "x": ' + b"1" * 5000 + b"}"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'),
])
def test_strict_json_anywhere_in_the_body_is_a_400_not_a_502_fake(gateway, route, raw):
    with gateway.client() as c:
        resp = c.post(route, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_json"


CHAT_REFUSALS = [
    # tools: every field llama-server's parser needs, and OpenAI's rules
    ({"tools": [{"type": "function"}]}, "tools[0].function", "missing_required_parameter"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type", "invalid_value"),
    ({"tools": [{"type": None, "function": {"name": "f"}}]}, "tools[0].type", "invalid_value"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", "missing_required_parameter"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name", "invalid_value"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "tools[0].function.parameters", "invalid_type"),
    ({"tools": [TOOL, "f"]}, "tools[1]", "invalid_type"),
    ({"tools": {}}, "tools", "invalid_type"),
    # tool_choice
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "tool_choice.function.name", "invalid_value"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice.function.name", "invalid_value"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": 5}}},
     "tool_choice.function.name", "invalid_type"),
    ({"tools": [TOOL], "logprobs": True}, "logprobs", "invalid_value"),
    ({"tools": [TOOL], "grammar": "root ::= \"a\""}, "grammar", "invalid_value"),
    # messages: roles and content parts
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "missing_required_parameter"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
    ({"messages": [{"role": "assistant"}]}, "messages[0].content", "missing_required_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
     "messages[0].content[0].type", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0].type",
     "missing_required_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text",
     "missing_required_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages[0].content[0].text",
     "invalid_type"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "missing_required_parameter"),
    ({"messages": [{"role": "user", "content": "x", "name": 3}]}, "messages[0].name", "invalid_type"),
    ({"messages": [*HI, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]},
     "messages[1].tool_calls[0].function.arguments", "missing_required_parameter"),
    ({"messages": [*HI, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[1].tool_calls[0].type", "missing_required_parameter"),
    # response_format
    ({"response_format": "json"}, "response_format", "invalid_type"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "missing_required_parameter"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name", "missing_required_parameter"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": []}}},
     "response_format.json_schema.schema", "invalid_type"),
    # stop, logit_bias, n, stream_options, numbers
    ({"stop": ["s"] * (schema.MAX_STOP + 1)}, "stop", "invalid_value"),
    ({"stop": ["a", 1]}, "stop[1]", "invalid_type"),
    ({"logit_bias": {"hello": 1}}, "logit_bias", "invalid_value"),
    ({"logit_bias": {"-3": 1}}, "logit_bias", "invalid_value"),
    ({"logit_bias": {"42": 101}}, "logit_bias.42", "invalid_value"),
    ({"logit_bias": {"42": "1"}}, "logit_bias.42", "invalid_type"),
    ({"n": 0}, "n", "invalid_value"),
    ({"n": 129}, "n", "invalid_value"),
    ({"n": 2.0}, "n", "invalid_type"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", "invalid_type"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_tokens": True}, "max_tokens", "invalid_type"),
    ({"seed": "7"}, "seed", "invalid_type"),
    ({"top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"top_k": -1}, "top_k", "invalid_value"),
    ({"dry_sequence_breakers": []}, "dry_sequence_breakers", "empty_array"),
    ({"grammar": "root ::= \"a\"", "json_schema": {}}, "grammar", "invalid_value"),
]


@pytest.mark.parametrize("extra,param,code", CHAT_REFUSALS)
def test_chat_refusals_name_the_parameter(extra, param, code):
    err = _refusal(validate_chat, {"messages": HI, **extra})
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error"), err
    assert param in err["message"] or err["code"] == "invalid_value"


@pytest.mark.parametrize("body,param,code", [
    ({"prompt": []}, "prompt", "empty_array"),
    ({"prompt": 5}, "prompt", "invalid_type"),
    ({"prompt": ["a", 5]}, "prompt[1]", "invalid_type"),
    ({"prompt": [1, "a"]}, "prompt[1]", "invalid_type"),
    ({"prompt": [-1]}, "prompt[0]", "invalid_value"),
    ({"prompt": ["a"] * (schema.MAX_PROMPTS + 1)}, "prompt", "invalid_value"),
    ({"prompt": "x", "suffix": "y"}, "suffix", "unsupported_parameter"),  # llama-server: 500 "Unsupported param"
    ({"prompt": "x", "logprobs": True}, "logprobs", "invalid_type"),
    ({"prompt": "x", "n": 3, "best_of": 2}, "best_of", "invalid_value"),
    ({"prompt": "x", "echo": "yes"}, "echo", "invalid_type"),
])
def test_completion_refusals_name_the_parameter(body, param, code):
    err = _refusal(validate_completion, body)
    assert (err["param"], err["code"]) == (param, code), err


@pytest.mark.parametrize("body,param,code", [
    ({}, "input", "missing_required_parameter"),
    ({"input": ""}, "input", "invalid_value"),
    ({"input": [""]}, "input[0]", "invalid_value"),
    ({"input": ["a"] * (schema.MAX_INPUTS + 1)}, "input", "invalid_value"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format", "invalid_value"),
    ({"input": "a", "dimensions": 0}, "dimensions", "invalid_value"),
])
def test_embedding_refusals_name_the_parameter(body, param, code):
    err = _refusal(validate_embeddings, body)
    assert (err["param"], err["code"]) == (param, code), err


ACCEPTED_CHAT = [
    # what real clients send (openai, opencode/AI SDK, llama.cpp's webui): must keep passing
    {"messages": [{"role": "developer", "content": "x"}, *HI], "store": False, "metadata": {"a": "b"},
     "service_tier": "auto", "stream": True, "stream_options": {"include_usage": True}},
    {"messages": [*HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "ok"}]}],
     "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": True},
    {"messages": [*HI, {"role": "assistant", "tool_calls": []}], "tools": [TOOL], "tool_choice": "none"},
    {"messages": HI, "tool_choice": "auto", "response_format": {"type": "json_object"}},
    {"messages": HI, "response_format": {"type": "json_schema", "json_schema": {
        "name": "person", "strict": True, "schema": {"type": "object"}}}},
    {"messages": HI, "stop": "\n", "logit_bias": {"1": -100, "2": 100}, "n": 128, "seed": -1, "temperature": 0,
     "top_p": 1, "max_completion_tokens": 7, "logprobs": True, "top_logprobs": 20, "user": "u"},
    {"messages": HI, "top_k": 5, "min_p": 0.1, "ignore_eos": True, "cache_prompt": False, "samplers": ["top_k"],
     "chat_template_kwargs": {"enable_thinking": False}, "reasoning_format": "none"},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
    {"messages": HI, "max_tokens": None, "temperature": None, "tools": None, "stream_options": None},
    {"messages": [{"role": "function", "name": "f", "content": None}, *HI]},
]


@pytest.mark.parametrize("body", ACCEPTED_CHAT)
def test_what_clients_send_is_still_accepted(body):
    validate_chat(body)


def test_completion_and_embedding_prompts_keep_their_shape():
    assert validate_completion({"prompt": "a"}) == ["a"]
    assert validate_completion({"prompt": [1, 2]}) == [[1, 2]]
    assert validate_completion({"prompt": ["a", [1, 2]]}) == ["a", [1, 2]]
    assert validate_embeddings({"input": [[1], [2]]}) == [[1], [2]]


def _openapi_validator(name: str) -> jsonschema.protocols.Validator:
    doc = openapi_schema()
    target = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(target)


@pytest.mark.parametrize("route,name", [(mutation_fuzz.CHAT, "ChatCompletionRequest"),
                                        (mutation_fuzz.TEXT, "CompletionRequest"),
                                        (mutation_fuzz.EMBED, "EmbeddingRequest")])
def test_openapi_json_never_refuses_what_validation_accepts(route, name):
    """One source: every body validation accepts is valid against /openapi.json's schema.

    (The converse has exceptions by design: rules between fields live in model validators.)
    """
    check = {mutation_fuzz.CHAT: validate_chat, mutation_fuzz.TEXT: validate_completion,
             mutation_fuzz.EMBED: validate_embeddings}[route]
    validator = _openapi_validator(name)
    accepted = refused = 0
    for case in mutation_fuzz.cases(600, seed=11):
        if case.path != route:
            continue
        try:
            body = parse_json(case.body)
            check(body)
        except APIError:
            refused += 1
            continue
        accepted += 1
        errors = list(validator.iter_errors(body))
        assert not errors, f"validation accepts, /openapi.json refuses: {errors[0].message}\n{body}"
    assert accepted >= 20 and refused >= 20


def test_openapi_components_are_the_schema_models():
    components = openapi_schema()["components"]["schemas"]
    assert set(schema.REQUESTS) <= set(components) and set(schema.RESPONSES) <= set(components)
    chat = components["ChatCompletionRequest"]["properties"]
    tool = components["Tool"]
    assert tool["required"] == ["type", "function"] and set(chat) >= {"tools", "tool_choice", "stream_options"}
    assert chat["stop"]["anyOf"][1]["maxItems"] == schema.MAX_STOP


def test_an_instance_refusal_is_the_clients_400_and_not_an_instance_failure_fake(gateway):
    """All instances refuse (HTTP 500 "Failed to parse tools", as llama-server answers): 400, no failure counted.

    The body goes straight to the fan-out, as a request the schema let through would.
    """
    instances = gateway.supervisor.ready_instances()
    failures = [i.stats.failures for i in instances]
    body = {"messages": HI, "max_tokens": 2, "tools": [{"function": {"name": "f"}}]}

    async def ask() -> fanout.Gathered:
        async with httpx.AsyncClient() as client:
            return await fanout.gather(client, instances, [body] * len(instances), timeout=20)

    gathered = asyncio.run(ask())
    assert len(gathered.errors) == len(instances) and all(e.status == 500 for e in gathered.errors)
    with pytest.raises(APIError) as info:
        fanout.raise_for_nothing(gathered)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    assert info.value.message.startswith("Failed to parse tools: Missing tool type")
    assert [i.stats.failures for i in instances] == failures
    assert len(gateway.supervisor.ready_instances()) == len(instances)


@pytest.mark.parametrize("status,message,refusal", [
    (400, "exceed_context_size_error", True),
    (400, "anything", True),
    (500, "Failed to parse tools: Missing tool type: {}", True),
    (500, "Failed to parse messages: Missing 'role' in message", True),
    (500, "Unsupported param: suffix", True),
    (500, "Cannot use both json_schema and grammar", True),
    (500, "[json.exception.type_error.302] type must be string, but is number", True),
    (500, "Error: dry_sequence_breakers must be a non-empty array of strings", True),
    # found by tests/mutation_fuzz.py against the real llama-server: /v1/embeddings with a long input
    (500, "input (750 tokens) is too large to process. increase the physical batch size (current batch size: 512)",
     True),
    (500, "input (900 tokens) is larger than the max context size (512 tokens). skipping", True),
    (500, "CUDA error: out of memory", False),
    (500, "llama_decode failed", False),
    (503, "Loading model", False),
    (502, "Bad gateway", False),
])
def test_refusal_classifier(status, message, refusal):
    assert upstream.is_refusal(status, message) is refusal


def test_mutation_fuzzer_over_fakes_finds_no_5xx(gateway):
    """The fuzzer's own smoke run against the gateway over FAKE instances (real ones: integration)."""
    report = mutation_fuzz.run(gateway.url, mutation_fuzz.cases(300, seed=5))
    print(report.summary())
    assert not report.failures, "\n".join(report.failures[:5])
    assert report.statuses[200] >= 50 and report.statuses[400] >= 100
    assert report.valid_ok == report.valid_total > 0


def test_bodies_are_deterministic_per_seed_and_mostly_mutated():
    scalars = json.dumps(mutation_fuzz._SCALARS)
    a, b = mutation_fuzz.cases(200, seed=3), mutation_fuzz.cases(200, seed=3)
    assert json.dumps(mutation_fuzz._SCALARS) == scalars  # no mutation leaks into the shared values
    assert [c.body for c in a] == [c.body for c in b]
    assert {c.path for c in a} == {mutation_fuzz.CHAT, mutation_fuzz.TEXT, mutation_fuzz.EMBED}
    assert 0.75 < sum(c.mutated for c in a) / len(a) < 0.95
    assert any(b"NaN" in c.body for c in a) and any(b"\\ud800" in c.body or b"\\udfff" in c.body for c in a)
    for case in a:
        if not case.mutated:
            json.loads(case.body)  # the valid templates are plain JSON
