"""Fan-out, vote and streaming through the real gateway over FAKE llama-servers.

The instances here are tests/fakes/fake_llama_server.py processes (not llama.cpp):
they let each instance give a chosen answer, including tool calls, which the embedded
135M model never emits.
"""

from __future__ import annotations

import json
import socket
import time

import openai

from localswarm.config import Settings
from tests.helpers import RunningGateway, fake_backend, free_tcp_port, set_fake_replies

CODE_A = "Here you go:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
CODE_A_RENAMED = "Sure!\n\n```python\ndef add(x, y):\n    return x + y\n```\n"
CODE_B = "```python\nimport functools\n\ndef add(*nums):\n    return functools.reduce(lambda p, q: p * q, nums, 1)\n```"


def _gateway(tmp_path, **settings):
    return RunningGateway(Settings(port=free_tcp_port(), **settings), fake_backend(tmp_path), instances=3)


def test_majority_wins_and_metadata_travels(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, [CODE_B, CODE_A, CODE_A_RENAMED])
    with _gateway(tmp_path) as gw, gw.client() as c:
        resp = c.post("/v1/chat/completions", json={"model": "anything", "messages": [{"role": "user", "content": "add"}]})
    assert resp.status_code == 200
    body = resp.json()
    content = body["choices"][0]["message"]["content"]
    assert "a + b" in content or "x + y" in content
    meta = body["localswarm"]
    assert meta["votes"] == 2 and meta["n"] == 3
    assert meta["winner"] in ("inst-1", "inst-2")
    assert resp.headers["x-localswarm-winner"] == meta["winner"]
    assert resp.headers["x-localswarm-votes"] == "2/3"
    assert 0 < float(resp.headers["x-localswarm-confidence"]) <= 1
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert meta["usage_total"]["completion_tokens"] >= body["usage"]["completion_tokens"]


def test_openai_client_streams_the_voted_answer_with_usage(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, [CODE_A, CODE_B, CODE_A_RENAMED])
    with _gateway(tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused")
        stream = client.chat.completions.create(
            model="swarm", messages=[{"role": "user", "content": "add"}], stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "return" in text and "reduce" not in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


TOOL = {
    "type": "function",
    "function": {"name": "read", "description": "Read a file",
                 "parameters": {"type": "object", "properties": {"filePath": {"type": "string"}}}},
}


def _call(name: str, args: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def test_opencode_shaped_streamed_tool_call_is_voted(tmp_path, monkeypatch):
    """10 tools, streamed, include_usage: the voted call arrives as delta.tool_calls."""
    set_fake_replies(monkeypatch, [
        {"content": None, "tool_calls": [_call("read", {"filePath": "src/app.py"}, "c1")]},
        {"content": None, "tool_calls": [_call("bash", {"command": "ls"}, "c2")]},
        {"content": None, "tool_calls": [_call("read", {"filePath": "src/app.py"}, "c3")]},
    ])
    names = ["bash", "edit", "glob", "grep", "read", "skill", "task", "todowrite", "webfetch", "write"]
    tools = [{**TOOL, "function": {**TOOL["function"], "name": n}} for n in names]
    with _gateway(tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused")
        stream = client.chat.completions.create(
            model="localswarm/swarm", messages=[{"role": "system", "content": "You are opencode."},
                                                {"role": "user", "content": "show app.py"}],
            tools=tools, tool_choice="auto", stream=True, stream_options={"include_usage": True},
        )
        chunks = list(stream)
    calls: dict[int, dict] = {}
    for c in chunks:
        for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            slot = calls.setdefault(d.index, {"name": "", "arguments": "", "id": None})
            slot["id"] = slot["id"] or d.id
            if d.function and d.function.name:
                slot["name"] += d.function.name
            if d.function and d.function.arguments:
                slot["arguments"] += d.function.arguments
    assert list(calls) == [0]
    assert calls[0]["name"] == "read"
    assert json.loads(calls[0]["arguments"]) == {"filePath": "src/app.py"}
    assert calls[0]["id"]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert chunks[-1].usage is not None


def test_fastest_stream_mode_relays_the_first_instance(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, [
        {"content": "slow answer", "delay": 3},
        {"content": "quick answer"},
        {"content": "slow answer", "delay": 3},
    ])
    with _gateway(tmp_path, stream_mode="fastest") as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused")
        chunks = list(client.chat.completions.create(
            model="swarm", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True}))
        status = gw.client().get("/localswarm/status").json()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "quick answer"
    assert chunks[-1].usage is not None
    assert all(i["in_flight"] == 0 for i in status["instances"])


def test_strategy_header_picks_fastest_non_streamed(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, [
        {"content": CODE_A, "delay": 1.5}, {"content": CODE_B}, {"content": CODE_A, "delay": 1.5},
    ])
    with _gateway(tmp_path) as gw, gw.client() as c:
        resp = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
                      headers={"x-localswarm-strategy": "fastest"})
    assert resp.status_code == 200
    assert resp.headers["x-localswarm-strategy"] == "fastest"
    assert resp.json()["localswarm"]["winner"] == "inst-1"


def test_models_and_health(tmp_path, monkeypatch):
    with _gateway(tmp_path) as gw, gw.client() as c:
        models = c.get("/v1/models").json()
        health = c.get("/health")
    ids = [m["id"] for m in models["data"]]
    assert ids[0] == "fake-model" and "swarm" in ids
    assert health.status_code == 200 and health.json()["ready"] == 3


def _raw_stream(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
    return sock


def test_fastest_mode_disconnect_releases_every_instance(tmp_path, monkeypatch):
    set_fake_replies(monkeypatch, [{"content": "late", "delay": 3}])
    with _gateway(tmp_path, stream_mode="fastest", keepalive_interval=0.2) as gw:
        sock = _raw_stream(gw.settings.port, {"messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert b": keep-alive" in sock.recv(4096) + sock.recv(4096)
        sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(i.stats.in_flight for i in gw.supervisor.instances):
            time.sleep(0.05)
        assert [i.stats.in_flight for i in gw.supervisor.instances] == [0, 0, 0]


def test_fastest_mode_reports_an_instance_that_dies_mid_stream(tmp_path, monkeypatch):
    words = " ".join(f"w{i}" for i in range(40))
    set_fake_replies(monkeypatch, [{"content": words, "die_after": 5, "word_delay": 0.05}])
    with _gateway(tmp_path, stream_mode="fastest") as gw, gw.client() as c:
        with c.stream("POST", "/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][5:])
    assert error["error"]["code"] == "upstream_error"
    assert "mid-stream" in error["error"]["message"] or "before [DONE]" in error["error"]["message"]
    assert not any('"finish_reason":"stop"' in line.replace(" ", "") for line in lines)
