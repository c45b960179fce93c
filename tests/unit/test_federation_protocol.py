"""Versioned federation bodies: round trips and clear validation errors."""

from __future__ import annotations

from typing import Any

import pytest

from localswarm.federation.errors import ProtocolError
from localswarm.federation.protocol import (
    PROTOCOL_VERSION,
    AnswerMessage,
    HealthReply,
    InfoReply,
    VoteReply,
    VoteRequest,
)


def reply_dict(**over: Any) -> dict[str, Any]:
    d = VoteReply(
        node_id="n1", message=AnswerMessage(content="x"), finish_reason="stop", cluster_size=2, n=3,
        cohesion=0.9, confidence=0.66, latency_s=1.5, model="m", request_id="r",
    ).to_dict()
    d.update(over)
    return d


def test_round_trips() -> None:
    """to_dict/from_dict are inverse and carry the version."""
    req = VoteRequest(request_id="r1", request={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert req.to_dict()["v"] == PROTOCOL_VERSION
    assert VoteRequest.from_dict(req.to_dict()) == req
    assert VoteReply.from_dict(reply_dict()).to_dict() == reply_dict()
    info = InfoReply(node_id="n", name="h:1", model="m", instances=2, hw="4cpu", auth=True)
    assert InfoReply.from_dict(info.to_dict()) == info
    health = HealthReply(node_id="n", status="degraded", ready_instances=1, instances=2)
    assert HealthReply.from_dict(health.to_dict()) == health


def test_tool_call_answer() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    r = VoteReply.from_dict(reply_dict(message={"content": None, "tool_calls": calls}))
    assert r.message.tool_calls == calls and r.message.content is None


def test_errors_are_value_errors() -> None:
    assert issubclass(ProtocolError, ValueError)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"v": 2}, "version 2 is not supported"),
        ({"v": None}, "missing protocol version"),
        ({"node_id": ""}, "node_id: must not be empty"),
        ({"n": 0}, r"n: must be >= 1"),
        ({"cluster_size": 4}, "cluster_size"),
        ({"cluster_size": "2"}, "cluster_size: expected an integer"),
        ({"cluster_size": True}, "cluster_size: expected an integer"),
        ({"confidence": 1.5}, "confidence"),
        ({"cohesion": float("nan")}, "cohesion"),
        ({"latency_s": -1}, "latency_s"),
        ({"message": "text"}, "message: expected a JSON object"),
        ({"message": {"content": 3}}, "content"),
        ({"message": {"tool_calls": "x"}}, "tool_calls"),
        ({"finish_reason": None}, "finish_reason"),
    ],
)
def test_vote_reply_validation(over: dict[str, Any], match: str) -> None:
    """Each bad field is reported by name."""
    d = reply_dict(**over)
    if over.get("v", 1) is None:
        del d["v"]
    with pytest.raises(ProtocolError, match=match):
        VoteReply.from_dict(d)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "expected a JSON object"),
        ({"v": 1, "request": {"messages": []}}, "request_id"),
        ({"v": 1, "request_id": "r", "request": {"messages": []}}, "messages: expected a non-empty list"),
        ({"v": 1, "request_id": "r", "request": {"messages": [{"content": "x"}]}}, r"messages\[0\]"),
        ({"v": 1, "request_id": "r", "request": "x"}, "request: expected a JSON object"),
    ],
)
def test_vote_request_validation(body: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        VoteRequest.from_dict(body)


def test_health_status_is_checked() -> None:
    with pytest.raises(ProtocolError, match="status"):
        HealthReply.from_dict({"v": 1, "node_id": "n", "status": "great", "ready_instances": 0, "instances": 0})
