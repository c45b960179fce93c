"""Gateway logic at the HTTP seam (FAKE instances through httpx.MockTransport, see
tests/unit/gateway_seam.py): vote, quorum, stream rendering, error mapping, the fastest
relay and a federated round with fake peers. No process or socket; seconds in all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from localswarm.federation.node import Federation
from localswarm.federation.pool import PeerPool
from localswarm.federation.protocol import AnswerMessage, VoteReply, VoteRequest
from localswarm.federation.table import Peer, PeerTable
from tests.unit.gateway_seam import Reply, gateway, sse_chunks

CHAT = {"model": "swarm", "messages": [{"role": "user", "content": "add two numbers"}]}
ADD = "def add(a, b):\n    return a + b"
ADD_RENAMED = "def add(x, y):\n    return x + y"
OTHER = "import os\nprint(os.listdir('.'))"
CALL = {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}


def test_vote_picks_the_agreeing_answer_and_says_so(tmp_path: Path) -> None:
    """Two of three agree (after AST normalisation): one of them wins, 2/3 votes, honest usage."""
    with gateway([Reply(OTHER), Reply(ADD), Reply(ADD_RENAMED)], tmp_path) as (c, fakes, sup):
        resp = c.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    meta = body["localswarm"]
    assert body["choices"][0]["message"]["content"] in (ADD, ADD_RENAMED)
    assert meta["votes"] == 2 and meta["n"] == 3 and meta["winner"] in ("inst-1", "inst-2")
    assert resp.headers["x-localswarm-votes"] == "2/3" and resp.headers["x-localswarm-winner"] == meta["winner"]
    assert body["usage"]["prompt_tokens"] == 7  # the prompt once, not once per instance
    # each instance got its own seed, the served model id, and a streamed request
    sent = [b[0] for b in fakes.bodies]
    assert len({b["seed"] for b in sent}) == 3 and {b["model"] for b in sent} == {"fake-model"}
    assert all(b["stream"] is True for b in sent)
    assert [i.stats.requests for i in sup.instances] == [1, 1, 1]
    assert all(i.stats.in_flight == 0 and i.stats.failures == 0 for i in sup.instances)


def test_quorum_ends_the_wait_and_cancels_the_straggler(tmp_path: Path) -> None:
    """Two agreeing answers of three are a majority: the slow third is cut off, not waited for."""
    replies = [Reply(ADD), Reply(ADD_RENAMED), Reply(OTHER, delay=60)]
    with gateway(replies, tmp_path, instance_timeout=120) as (c, _, sup):
        resp = c.post("/v1/chat/completions", json=CHAT)
    meta = resp.json()["localswarm"]
    assert resp.status_code == 200 and meta["early_stop"] is True
    assert meta["left_out"] == {"inst-2": "cancelled: quorum reached"}
    assert resp.headers["x-localswarm-instances"] == "2/3"
    assert sup.instances[2].stats.in_flight == 0 and sup.instances[2].stats.failures == 1


def test_streamed_vote_renders_role_words_finish_usage_and_done(tmp_path: Path) -> None:
    """Consensus streaming: the voted answer as chunks, metadata on the finish, usage last."""
    with gateway([Reply(ADD), Reply(ADD)], tmp_path) as (c, _, _sup):
        resp = c.post("/v1/chat/completions",
                      json={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-accel-buffering"] == "no" and resp.text.rstrip().endswith("data: [DONE]")
    chunks = sse_chunks(resp.text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == ADD
    finish = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert finish[0]["localswarm"]["votes"] == 2
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert len({ch["id"] for ch in chunks}) == 1


def test_streamed_tool_calls_are_reassembled_and_voted(tmp_path: Path) -> None:
    """Tool-call deltas from the instances become one voted call, streamed as deltas again."""
    same = '{ "command" : "ls" }'  # the same call, spelled differently
    replies = [Reply(tool_calls=[CALL]), Reply(tool_calls=[{**CALL, "function": {"name": "bash", "arguments": same}}]),
               Reply("I would run ls.")]
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    with gateway(replies, tmp_path) as (c, _, _sup):
        resp = c.post("/v1/chat/completions", json={**CHAT, "tools": tools, "stream": True})
        plain = c.post("/v1/chat/completions", json={**CHAT, "tools": tools}).json()
    chunks = sse_chunks(resp.text)
    deltas = [d for ch in chunks if ch["choices"] for d in ch["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas and deltas[0]["function"]["name"] == "bash"
    args = "".join(d["function"].get("arguments") or "" for d in deltas)
    assert json.loads(args) == {"command": "ls"}
    assert [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]][-1] == "tool_calls"
    call = plain["choices"][0]["message"]["tool_calls"][0]
    assert plain["choices"][0]["finish_reason"] == "tool_calls" and json.loads(call["function"]["arguments"]) == {"command": "ls"}


def test_n_choices_winner_first_then_the_others(tmp_path: Path) -> None:
    """n=3 over three instances: the winner, then the other answers; usage counts what is returned."""
    with gateway([Reply(OTHER), Reply(ADD), Reply(ADD_RENAMED)], tmp_path) as (c, _, _sup):
        body = c.post("/v1/chat/completions", json={**CHAT, "n": 3}).json()
    texts = [ch["message"]["content"] for ch in body["choices"]]
    assert [ch["index"] for ch in body["choices"]] == [0, 1, 2]
    assert texts[0] in (ADD, ADD_RENAMED) and sorted(texts) == sorted([OTHER, ADD, ADD_RENAMED])


@pytest.mark.parametrize(
    ("replies", "status", "code"),
    [
        ([Reply(status=400, message="request exceeds the available context size")] * 2, 400, "context_length_exceeded"),
        ([Reply(status=500, message="boom")] * 2, 502, "upstream_error"),
        ([Reply(status=500, message="boom"), Reply(status=400, message="bad grammar")], 400, None),
    ],
)
def test_instance_errors_map_to_openai_errors(tmp_path: Path, replies: list[Reply], status: int, code: str | None) -> None:
    """Every instance refusing gives the client one error in OpenAI's shape, with the right status."""
    with gateway(replies, tmp_path) as (c, _, sup):
        resp = c.post("/v1/chat/completions", json=CHAT)
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    for r in (resp, streamed):  # an error before any event is a real HTTP error, streamed or not
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code and set(err) == {"message", "type", "param", "code"}
    assert all(i.stats.in_flight == 0 for i in sup.instances)


def test_bad_input_and_no_ready_instance(tmp_path: Path) -> None:
    """Malformed JSON is a 400 before any instance is asked; no ready instance is a 503 to retry."""
    with gateway([Reply(ADD)], tmp_path) as (c, fakes, sup):
        bad = c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        sup.instances[0].state = sup.instances[0].state.STARTING
        busy = c.post("/v1/chat/completions", json=CHAT)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert busy.status_code == 503 and busy.headers["retry-after"] == "2"
    assert fakes.bodies == [[]]


def test_fastest_relays_the_first_and_releases_the_others(tmp_path: Path) -> None:
    """stream_mode fastest: the quick instance is relayed live, the slow one dropped (not a failure)."""
    with gateway([Reply(OTHER, delay=60), Reply(ADD)], tmp_path, stream_mode="fastest",
                 instance_timeout=120) as (c, _, sup):
        resp = c.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    chunks = sse_chunks(resp.text)
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == ADD
    final = [ch for ch in chunks if ch.get("localswarm")]
    assert final[-1]["localswarm"] == {"strategy": "fastest", "winner": "inst-1", "n": 2, "width": 2}
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert [(i.stats.in_flight, i.stats.failures) for i in sup.instances] == [(0, 0), (0, 0)]
    assert sup.instances[1].stats.completion_tokens > 0


def test_fastest_reports_a_crash_mid_stream(tmp_path: Path) -> None:
    """The relayed instance breaks after two words: the client gets an error event, not a fake finish."""
    with gateway([Reply("one two three four", break_after=2)], tmp_path, stream_mode="fastest") as (c, _, sup):
        resp = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    chunks = sse_chunks(resp.text)
    assert chunks[-1]["error"]["code"] == "upstream_error" and "inst-0 failed mid-stream" in chunks[-1]["error"]["message"]
    assert sup.instances[0].stats.failures == 1 and sup.instances[0].stats.in_flight == 0


def test_legacy_completions_vote_each_prompt(tmp_path: Path) -> None:
    """/v1/completions with two prompts: one vote per prompt, choices numbered across them, echo done here."""
    with gateway([Reply("four"), Reply("four")], tmp_path) as (c, fakes, _sup):
        body = c.post("/v1/completions", json={"model": "swarm", "prompt": ["2+2=", "3+1="], "echo": True}).json()
    assert [ch["text"] for ch in body["choices"]] == ["2+2=four", "3+1=four"]
    assert body["localswarm"]["prompts"] == 2
    assert all("echo" not in b for bodies in fakes.bodies for b in bodies)


# -- a federated round with fake peers -----------------------------------------------------


class _Discovery:
    """What Federation reads of discovery (no multicast here)."""

    def __init__(self, table: PeerTable) -> None:
        self.node_id, self.name, self.table, self.addresses = "node-local", "local:8000", table, ["127.0.0.1"]
        self.advert = type("Advert", (), {"hw": "cpu"})()

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _peers(answers: dict[str, str | None]) -> tuple[PeerTable, httpx.MockTransport, list[dict[str, Any]]]:
    """Peers that answer POST /v1/federation/vote with a VoteReply (``None``: HTTP 503)."""
    table = PeerTable(self_node_id="node-local")
    ports = {}
    for i, node in enumerate(answers):
        ports[9100 + i] = node
        table.upsert(Peer(node_id=node, host="127.0.0.1", port=9100 + i, name=f"{node}:8000"), "static")
    asked: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        node = ports[request.url.port]
        vote = VoteRequest.from_dict(json.loads(request.content))
        asked.append(vote.request)
        if answers[node] is None:
            return httpx.Response(503, json={"error": {"type": "vote_failed", "message": "no instance ready"}})
        reply = VoteReply(node_id=node, message=AnswerMessage(content=answers[node]), finish_reason="stop",
                          cluster_size=3, n=3, cohesion=1.0, confidence=1.0, latency_s=0.1, model="fake-model",
                          request_id=vote.request_id)
        return httpx.Response(200, json=reply.to_dict())

    return table, httpx.MockTransport(handle), asked


def test_federated_round_lets_agreeing_peers_win(tmp_path: Path) -> None:
    """Two peers (3 votes each) agree against the local pair: a peer's answer is served, streamed
    too, with every node named; a failing peer is left out, not fatal."""
    table, transport, asked = _peers({"peer-a": ADD, "peer-b": ADD_RENAMED, "peer-c": None})
    with gateway([Reply(OTHER), Reply(OTHER)], tmp_path) as (c, _, _sup):
        state = c.app.state.gateway  # type: ignore[attr-defined]
        pool = PeerPool(table, node_id="node-local", transport=transport, failure_threshold=5)
        state.federation = Federation(state, secret=None, discovery=_Discovery(table), pool=pool)  # type: ignore[arg-type]
        resp = c.post("/v1/chat/completions", json=CHAT)
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        state.federation = None
    body = resp.json()
    meta = body["localswarm"]
    assert body["choices"][0]["message"]["content"] in (ADD, ADD_RENAMED)
    assert meta["mode"] == "federated" and meta["votes"] == 6 and meta["n"] == 8  # 3 + 3 + the local 2
    assert meta["winner"] in ("peer-a:8000", "peer-b:8000") and meta["local"]["winner"] in ("inst-0", "inst-1")
    assert {n["node_id"]: n["agreed"] for n in meta["nodes"]} == {"peer-a": True, "peer-b": True, "node-local": False}
    assert "peer-c" in " ".join(meta["federation"]["left_out"])
    assert all("stream" not in a for a in asked)  # peers are asked for a whole answer
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in sse_chunks(streamed.text) if ch["choices"])
    assert text in (ADD, ADD_RENAMED)
