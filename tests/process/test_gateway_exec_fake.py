"""The ``exec`` vote through the real gateway over FAKE llama-servers (scripted answers:
the embedded 135M model cannot be made to disagree on purpose)."""

from __future__ import annotations

import json

from localswarm.config import Settings
from tests.helpers import RunningGateway, fake_backend, free_tcp_port, set_fake_replies

# The two wrong answers agree with each other: a text vote picks them; running them on the
# user's examples does not.
WRONG = "```python\ndef is_even(n):\n    return n % 2 == 1\n```"
WRONG_2 = "```python\ndef is_even(x):\n    return x % 2 == 1\n```"
GOOD = "```python\ndef is_even(n):\n    return n % 2 == 0\n```"
ASK = 'Write is_even.\n\n```python\ndef is_even(n):\n    """\n    >>> is_even(4)\n    True\n    >>> is_even(3)\n    False\n    """\n```'


def _ask(tmp_path, monkeypatch, content: str, **settings):
    set_fake_replies(monkeypatch, [WRONG, WRONG_2, GOOD])
    gw = RunningGateway(Settings(port=free_tcp_port(), quorum=1.0, **settings), fake_backend(tmp_path), instances=3)
    with gw, gw.client() as c:
        return c.post("/v1/chat/completions", json={
            "model": "swarm", "messages": [{"role": "user", "content": content}]})


def test_fake_swarm_runs_answers_on_the_doctest_and_the_passing_one_wins(tmp_path, monkeypatch):
    resp = _ask(tmp_path, monkeypatch, ASK, exec_check="on")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    meta = body["localswarm"]
    assert meta["strategy"] == "exec" and meta["winner"] == "inst-2"
    assert meta["exec"] == {"examples": 2, "winner": "2/2 examples",
                            "passed": {"inst-0": 0, "inst-1": 0, "inst-2": 2}}
    assert resp.headers["x-localswarm-exec"] == "2/2 examples"
    assert "n % 2 == 0" in body["choices"][0]["message"]["content"]


def test_fake_swarm_without_examples_or_with_exec_off_votes_by_text(tmp_path, monkeypatch):
    resp = _ask(tmp_path, monkeypatch, "Write is_even.", exec_check="on")
    meta = resp.json()["localswarm"]
    assert meta["strategy"] == "similarity" and meta["winner"] in ("inst-0", "inst-1")
    assert "exec" not in meta and "x-localswarm-exec" not in resp.headers
    resp = _ask(tmp_path, monkeypatch, ASK, exec_check="off")
    assert resp.json()["localswarm"]["strategy"] == "similarity"
    assert json.dumps(resp.json()).count("2/2 examples") == 0


def _write_call(i: int, content: str, path: str = "/work/even.py") -> dict:
    return {"content": None, "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {
        "name": "write", "arguments": json.dumps({"filePath": path, "content": content})}}]}


WRITE_TOOL = {"type": "function", "function": {"name": "write", "description": "Write a file", "parameters": {
    "type": "object", "properties": {"filePath": {"type": "string"}, "content": {"type": "string"}},
    "required": ["filePath", "content"]}}}


def _ask_tools(tmp_path, monkeypatch, replies, messages):
    set_fake_replies(monkeypatch, replies)
    gw = RunningGateway(Settings(port=free_tcp_port(), quorum=1.0, exec_check="on"), fake_backend(tmp_path),
                        instances=3)
    with gw, gw.client() as c:
        return c.post("/v1/chat/completions", json={"model": "swarm", "messages": messages, "tools": [WRITE_TOOL]})


def test_fake_swarm_checks_opencode_write_calls_of_python_files(tmp_path, monkeypatch):
    """opencode's `write` tool call carries the whole file: it runs on the conversation's
    examples like a fenced answer (the wrong pair agrees, the right one wins)."""
    wrong = "def is_even(n):\n    return n % 2 == 1\n"
    good = "def is_even(n):\n    return n % 2 == 0\n"
    messages = [
        {"role": "system", "content": "You are opencode."},
        {"role": "user", "content": "Create even.py with is_even(n). is_even(4) → True and is_even(3) → False."},
    ]
    resp = _ask_tools(tmp_path, monkeypatch, [_write_call(0, wrong), _write_call(1, wrong), _write_call(2, good)],
                      messages)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    meta = body["localswarm"]
    assert meta["strategy"] == "exec" and meta["exec"]["winner"] == "2/2 examples", meta
    assert meta["exec"]["passed"] == {"inst-0": 0, "inst-1": 0, "inst-2": 2}
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "write" and "n % 2 == 0" in json.loads(call["function"]["arguments"])["content"]


def test_fake_swarm_does_not_run_non_python_writes_or_edits(tmp_path, monkeypatch):
    """A write to a non-.py file, and an `edit` (a fragment), are voted on as text: nothing runs."""
    messages = [{"role": "user", "content": "Fix is_even. is_even(4) → True"}]
    md = "is_even(4) is True\n"
    resp = _ask_tools(tmp_path, monkeypatch, [_write_call(i, md, "/work/NOTES.md") for i in range(3)], messages)
    assert resp.status_code == 200, resp.text
    meta = resp.json()["localswarm"]
    assert "exec" not in meta and "x-localswarm-exec" not in resp.headers
    edit = {"content": None, "tool_calls": [{"id": "call_0", "type": "function", "function": {
        "name": "edit", "arguments": json.dumps({"filePath": "/work/even.py", "oldString": "== 1",
                                                 "newString": "== 0"})}}]}
    resp = _ask_tools(tmp_path, monkeypatch, [edit] * 3, messages)
    assert resp.status_code == 200, resp.text
    assert "exec" not in resp.json()["localswarm"]
