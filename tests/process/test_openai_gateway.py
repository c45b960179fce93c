"""The OpenAI surface of the gateway over FAKE llama-servers (tests/fakes/fake_llama_server.py).

The fake, not llama.cpp, is used where the embedded model cannot show the behaviour:
tool calls, chosen answers per instance, a saturated swarm. Real-model coverage of the
same fields is in tests/integration/test_openai_client.py.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from localswarm.config import Settings
from tests.helpers import RunningGateway, fake_backend, free_tcp_port, set_fake_replies

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": "{\"path\": \"a.py\"}"}}
TOOLS = [{"type": "function", "function": {"name": "read", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}}}}}]
HI = [{"role": "user", "content": "hi"}]


def _gateway(tmp_path, instances=2, backend_kw=None, **settings):
    settings.setdefault("keepalive_interval", 0.5)
    return RunningGateway(Settings(port=free_tcp_port(), **settings), fake_backend(tmp_path, **(backend_kw or {})),
                          instances=instances)


def _client(gw, key="unused"):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def _last_upstream(gw):
    bodies = []
    for inst in gw.supervisor.instances:
        bodies += httpx.get(inst.base_url + "/fake/last_bodies", headers=inst.auth_headers()).json()
    return bodies[-1]


def test_n_larger_than_the_swarm_gets_n_choices_from_extra_rounds(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, ["alpha beta", "gamma delta epsilon"])
    with _gateway(tmp_path) as gw:
        resp = _client(gw).chat.completions.with_raw_response.create(model="swarm", messages=HI, n=5)
    body = json.loads(resp.text)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3, 4]
    assert body["localswarm"]["extra_samples"] == 3
    assert body["usage"]["completion_tokens"] == sum(len(c["message"]["content"].split()) for c in body["choices"])
    assert body["usage"]["prompt_tokens"] == 6  # counted once (the fake: 1 word + 5)
    assert body["localswarm"]["usage_total"]["prompt_tokens"] == 6 * 5


def test_streamed_n_gives_each_choice_its_index(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, ["alpha beta", "gamma delta"])
    with _gateway(tmp_path) as gw:
        chunks = list(_client(gw).chat.completions.create(model="x", messages=HI, n=3, stream=True,
                                                          stream_options={"include_usage": True}))
    texts: dict[int, str] = {}
    finishes = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert set(texts) == {0, 1, 2} and finishes == {0: "stop", 1: "stop", 2: "stop"}
    assert chunks[-1].usage.completion_tokens == sum(len(t.split()) for t in texts.values())


def test_logprobs_survive_the_vote_streamed_and_not(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, ["one two three"])
    with _gateway(tmp_path) as gw:
        client = _client(gw)
        plain = client.chat.completions.create(model="x", messages=HI, logprobs=True, top_logprobs=1)
        chunks = list(client.chat.completions.create(model="x", messages=HI, logprobs=True, top_logprobs=1,
                                                     stream=True))
        without = client.chat.completions.create(model="x", messages=HI)
    tokens = [e.token for e in plain.choices[0].logprobs.content]
    assert "".join(tokens) == plain.choices[0].message.content == "one two three"
    streamed = [e.token for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert streamed == tokens
    assert without.choices[0].logprobs is None


def test_voted_tool_calls_stream_in_openai_form_and_are_counted(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, [{"content": None, "tool_calls": [TOOL_CALL]}])
    with _gateway(tmp_path) as gw:
        client = _client(gw)
        chunks = list(client.chat.completions.create(
            model="swarm", messages=HI, tools=TOOLS, tool_choice="auto", parallel_tool_calls=False, stream=True,
            stream_options={"include_usage": True},
        ))
        plain = client.chat.completions.create(model="swarm", messages=HI, tools=TOOLS,
                                               tool_choice={"type": "function", "function": {"name": "read"}})
        status = httpx.get(gw.url + "/localswarm/status").json()
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert calls[0].function.name == "read" and json.loads(arguments) == {"path": "a.py"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert plain.choices[0].message.tool_calls[0].function.name == "read"
    assert status["requests"]["voted_streamed_with_tools"] == 1 and status["requests"]["with_tools"] == 2


def test_unknown_fields_are_dropped_llama_extras_kept_content_parts_flattened(tmp_path):
    with _gateway(tmp_path) as gw, gw.client() as c:
        resp = c.post("/v1/chat/completions", json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                         {"type": "text", "text": "b"}]}],
            "store": True, "metadata": {"x": "y"}, "service_tier": "auto", "id_slot": 3, "user": "u1",
            "ignore_eos": True, "top_k": 5, "max_completion_tokens": 7,
        })
        assert resp.status_code == 200, resp.text
        sent = _last_upstream(gw)
        image = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]})
    assert sent["messages"][0]["content"] == "a\nb"
    assert sent["ignore_eos"] is True and sent["top_k"] == 5 and sent["max_tokens"] == 7 and sent["user"] == "u1"
    assert not {"store", "metadata", "service_tier", "id_slot", "max_completion_tokens"} & set(sent)
    assert image.status_code == 400 and image.json()["error"]["code"] == "unsupported_content"


@pytest.mark.parametrize("stream_mode", ["consensus", "fastest"])
def test_a_prompt_longer_than_the_context_is_a_400_streamed_or_not(tmp_path, stream_mode):
    long = " ".join(["word"] * 300)
    with _gateway(tmp_path, backend_kw={"ctx_size": 128, "parallel": 1}, stream_mode=stream_mode) as gw:
        client = _client(gw)
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as info:
                resp = client.chat.completions.create(model="x", messages=[{"role": "user", "content": long}],
                                                      stream=stream)
                list(resp)
            assert info.value.code == "context_length_exceeded"
            assert info.value.status_code == 400


def test_models_list_aliases_and_any_id_resolves(tmp_path):
    with _gateway(tmp_path) as gw:
        client = _client(gw)
        ids = [m.id for m in client.models.list()]
        one = client.models.retrieve("gpt-4o-mini")
    assert ids == ["fake-model", "swarm", "localswarm"]
    assert one.id == "gpt-4o-mini" and one.owned_by == "localswarm"


def test_legacy_completions_voted_streamed_and_not(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, ["once upon a time", "once upon a time", "zzz"])
    with _gateway(tmp_path, instances=3) as gw:
        client = _client(gw)
        plain = client.completions.create(model="x", prompt="Tell", max_tokens=8, logprobs=1, echo=True)
        chunks = list(client.completions.create(model="x", prompt=["a", "b"], n=2, stream=True,
                                                stream_options={"include_usage": True}))
    assert plain.choices[0].text == "Tellonce upon a time"
    assert plain.choices[0].logprobs.tokens[0] == "once "
    assert plain.usage.completion_tokens == 4
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1, 2, 3}
    assert chunks[-1].usage.total_tokens > 0


def test_embeddings_when_enabled_and_404_when_not(tmp_path):
    with _gateway(tmp_path, embeddings=True, backend_kw={"embeddings": True}) as gw:
        result = _client(gw).embeddings.create(model="x", input=["a", "b b"])
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
    assert result.model == "fake-model"
    with _gateway(tmp_path) as gw, pytest.raises(openai.NotFoundError) as info:
        _client(gw).embeddings.create(model="x", input="a")
    assert info.value.code == "embeddings_disabled"


def test_api_key_guards_all_but_health_in_constant_shape(tmp_path):
    with _gateway(tmp_path, api_key="s3cret") as gw, gw.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        missing = c.post("/v1/chat/completions", json={"messages": HI})
        wrong = c.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert c.get("/v1/models", headers={"X-Api-Key": "s3cret"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            _client(gw, key="nope").models.list()
        answer = _client(gw, key="s3cret").chat.completions.create(model="x", messages=HI)
        status = c.get("/localswarm/status", headers={"Authorization": "Bearer s3cret"}).json()
    assert missing.status_code == 401 and wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}
    assert answer.choices[0].message.content
    assert status["auth"] is True and status["requests"]["rejected_auth"] == 3


def test_api_key_file_must_be_private(tmp_path):
    from localswarm.errors import ConfigError
    from localswarm.gateway.auth import load_api_key

    key = tmp_path / "key"
    key.write_text("abc\n")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_api_key(Settings(api_key_file=str(key)))
    key.chmod(0o600)
    assert load_api_key(Settings(api_key_file=str(key))) == "abc"
    assert load_api_key(Settings()) is None


def test_cors_is_off_by_default_and_on_for_listed_origins(tmp_path):
    origin = {"Origin": "http://app.example"}
    with _gateway(tmp_path) as gw, gw.client() as c:
        assert "access-control-allow-origin" not in c.get("/v1/models", headers=origin).headers
    with _gateway(tmp_path, cors_origins=["http://app.example"], api_key="k") as gw, gw.client() as c:
        pre = c.options("/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST",
                                                          "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://app.example"


def test_full_queue_answers_429_with_retry_after(tmp_path, monkeypatch):
    """One FAKE instance with one slot and a queue of one: the third request is refused."""
    monkeypatch.setenv("FAKE_DELAY", "1.5")
    with _gateway(tmp_path, instances=1, parallel=1, queue_depth=1) as gw, gw.client() as c:
        queue = gw.app.state.gateway.queue
        results: dict = {}
        threads = []
        for name, wanted in (("first", lambda: queue.running), ("second", lambda: queue.count)):
            t = threading.Thread(target=lambda n=name: results.update({n: c.post("/v1/chat/completions",
                                                                                 json={"messages": HI})}))
            t.start()
            threads.append(t)
            deadline = time.monotonic() + 10
            while wanted() == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        busy = httpx.post(gw.url + "/v1/chat/completions", json={"messages": HI})
        for t in threads:
            t.join()
    assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
    assert busy.json()["error"]["type"] == "rate_limit_error"
    assert results["first"].status_code == 200 and results["second"].status_code == 200  # the second waited


def test_openapi_schema_describes_the_routes(tmp_path):
    with _gateway(tmp_path) as gw, gw.client() as c:
        schema = c.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/models/{model_id}",
            "/health"} <= set(schema["paths"])
    chat = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    for field in ("messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
                  "presence_penalty", "frequency_penalty", "response_format", "tools", "tool_choice",
                  "parallel_tool_calls", "stream", "stream_options", "logprobs", "top_logprobs", "user", "n"):
        assert field in chat, field
