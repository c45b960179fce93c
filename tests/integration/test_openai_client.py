"""The official openai client on every field, against real llama-servers with the embedded model.

One swarm (2 instances, small context, embeddings on) serves the whole module. Tool calls
are not here: SmolLM2's template has no tools (see tests/process/test_openai_gateway.py, FAKE).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import openai
import pytest

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from tests.helpers import RunningGateway, free_tcp_port

pytestmark = pytest.mark.integration

CTX = 512
HI = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module")
def swarm(real_llama, tmp_path_factory):
    binary, model = real_llama
    state = tmp_path_factory.mktemp("state")
    old = os.environ.get("LOCALSWARM_STATE_DIR")
    os.environ["LOCALSWARM_STATE_DIR"] = str(state)
    try:
        settings = Settings(port=free_tcp_port(), ctx_size=CTX, parallel=2, embeddings=True, keepalive_interval=0.5)
        backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2",
                                     ctx_size=CTX, parallel=2, embeddings=True, pooling="mean")
        with RunningGateway(settings, backend, instances=2) as gw:
            yield gw
    finally:
        if old is None:
            os.environ.pop("LOCALSWARM_STATE_DIR", None)
        else:
            os.environ["LOCALSWARM_STATE_DIR"] = old


@pytest.fixture
def client(swarm):
    return openai.OpenAI(base_url=swarm.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _stream_text(stream):
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


@pytest.mark.parametrize("stream", [False, True])
def test_sampling_fields(client, stream):
    kwargs = dict(model="gpt-4o", messages=HI, max_tokens=12, temperature=0.3, top_p=0.9, stop=["\n\n"], seed=7,
                  presence_penalty=0.1, frequency_penalty=0.1, user="tester",
                  extra_body={"ignore_eos": False, "top_k": 40, "store": True})
    if stream:
        chunks, text = _stream_text(client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                                   **kwargs))
        usage = chunks[-1].usage
        assert chunks[-1].choices == []
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        resp = client.chat.completions.create(**kwargs)
        text, usage = resp.choices[0].message.content, resp.usage
        assert resp.choices[0].finish_reason in ("stop", "length")
    assert text and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_completion_tokens_and_content_parts(client):
    resp = client.chat.completions.create(
        model="swarm", max_completion_tokens=5,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]}],
    )
    assert resp.usage.completion_tokens <= 5


def test_usage_is_honest_prompt_once_winner_completion_swarm_total(client):
    raw = client.chat.completions.with_raw_response.create(model="swarm", messages=HI, max_tokens=10)
    body = json.loads(raw.text)
    meta = body["localswarm"]
    assert body["usage"]["prompt_tokens"] * meta["answered"] == meta["usage_total"]["prompt_tokens"]
    assert body["usage"]["completion_tokens"] <= meta["usage_total"]["completion_tokens"]


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_json_object_and_json_schema(client, stream):
    formats = [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    ]
    for fmt in formats:
        kwargs = dict(model="swarm", messages=[{"role": "user", "content": "Give a person as JSON."}], max_tokens=60,
                      response_format=fmt, temperature=0.2)
        if stream:
            _, text = _stream_text(client.chat.completions.create(stream=True, **kwargs))
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        if fmt["type"] == "json_schema":
            data = json.loads(text)  # grammar-constrained: always valid
            assert set(data) == {"name", "age"} and isinstance(data["age"], int)
        else:
            assert text.lstrip().startswith("{")


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_and_top_logprobs(client, stream):
    kwargs = dict(model="swarm", messages=HI, max_tokens=6, logprobs=True, top_logprobs=2)
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        resp = client.chat.completions.create(**kwargs)
        entries, text = resp.choices[0].logprobs.content, resp.choices[0].message.content
    assert entries and all(e.logprob <= 0 for e in entries)
    assert "".join(e.token for e in entries) == text
    if not stream:
        assert all(len(e.top_logprobs) == 2 for e in entries)


def test_tools_fields_are_accepted_by_the_real_server(client):
    tools = [{"type": "function", "function": {"name": "read", "description": "Read a file",
                                               "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]
    for stream in (False, True):
        resp = client.chat.completions.create(model="swarm", messages=HI, max_tokens=8, tools=tools,
                                              tool_choice="auto", parallel_tool_calls=True, stream=stream)
        if stream:
            list(resp)
        else:
            assert resp.choices[0].finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.parametrize("stream", [False, True])
def test_n_greater_than_instances(client, stream):
    kwargs = dict(model="swarm", messages=HI, max_tokens=6, n=3)
    if stream:
        chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        indexes = {c.choices[0].index for c in chunks if c.choices}
        assert chunks[-1].usage.completion_tokens > 0
    else:
        indexes = {c.index for c in client.chat.completions.create(**kwargs).choices}
    assert indexes == {0, 1, 2}


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_context_is_400_context_length_exceeded(client, stream):
    long = "word " * (CTX * 2)
    with pytest.raises(openai.BadRequestError) as info:
        resp = client.chat.completions.create(model="swarm", messages=[{"role": "user", "content": long}],
                                              max_tokens=5, stream=stream)
        list(resp) if stream else None
    assert info.value.code == "context_length_exceeded"


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_completions(client, stream):
    kwargs = dict(model="swarm", prompt="Once upon a time", max_tokens=6, logprobs=2, seed=3)
    if stream:
        chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert chunks[-1].usage.completion_tokens > 0
    else:
        resp = client.completions.create(**kwargs)
        text = resp.choices[0].text
        assert resp.choices[0].logprobs.tokens and resp.usage.prompt_tokens > 0
    assert text


def test_models_and_embeddings(client):
    assert "smollm2" in [m.id for m in client.models.list()]
    assert client.models.retrieve("anything").id == "anything"
    emb = client.embeddings.create(model="swarm", input=["hello", "world"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 576
    assert emb.usage.prompt_tokens > 0
