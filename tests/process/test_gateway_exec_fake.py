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
