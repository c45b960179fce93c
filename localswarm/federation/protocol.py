"""Versioned JSON bodies exchanged between federated swarms, with explicit validation.

Every body carries ``"v": PROTOCOL_VERSION``. ``from_dict`` checks types and ranges and
raises :class:`~localswarm.federation.errors.ProtocolError` (a ``ValueError``) naming the
offending field; ``to_dict`` produces the wire form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from localswarm.consensus.model import Candidate
from localswarm.federation.errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "AnswerMessage",
    "HealthReply",
    "InfoReply",
    "VoteReply",
    "VoteRequest",
]

PROTOCOL_VERSION = 1


def _require_mapping(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_version(data: dict[str, Any], what: str) -> None:
    v = data.get("v")
    if v is None:
        raise ProtocolError(f"{what}: missing protocol version field 'v'")
    if v != PROTOCOL_VERSION or isinstance(v, bool):
        raise ProtocolError(f"{what}: protocol version {v!r} is not supported (this node speaks {PROTOCOL_VERSION})")


def _str(data: dict[str, Any], key: str, what: str, *, optional: bool = False, empty: bool = False) -> str:
    value = data.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{what}.{key}: expected a string, got {type(value).__name__}")
    if not empty and not value:
        raise ProtocolError(f"{what}.{key}: must not be empty")
    return value


def _int(data: dict[str, Any], key: str, what: str, *, minimum: int = 0) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{what}.{key}: expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise ProtocolError(f"{what}.{key}: must be >= {minimum}, got {value}")
    return value


def _float(data: dict[str, Any], key: str, what: str, *, lo: float = 0.0, hi: float = math.inf) -> float:
    value = data.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ProtocolError(f"{what}.{key}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ProtocolError(f"{what}.{key}: must be finite")
    if not (lo <= value <= hi):
        raise ProtocolError(f"{what}.{key}: must be within [{lo}, {hi}], got {value}")
    return value


def _bool(data: dict[str, Any], key: str, what: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ProtocolError(f"{what}.{key}: expected true or false, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """Ask a peer to run an OpenAI chat request on its local swarm and vote."""

    request_id: str
    request: dict[str, Any]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ProtocolError unless this looks like a chat completion request."""
        what = "VoteRequest"
        if not self.request_id or not isinstance(self.request_id, str) or len(self.request_id) > 200:
            raise ProtocolError(f"{what}.request_id: expected a non-empty string of at most 200 characters")
        req = _require_mapping(self.request, f"{what}.request")
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProtocolError(f"{what}.request.messages: expected a non-empty list")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise ProtocolError(f"{what}.request.messages[{i}]: expected an object with a string 'role'")

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"v": PROTOCOL_VERSION, "request_id": self.request_id, "request": self.request}

    @classmethod
    def from_dict(cls, data: Any) -> VoteRequest:
        """Parse and validate a wire body."""
        what = "VoteRequest"
        d = _require_mapping(data, what)
        _check_version(d, what)
        return cls(request_id=_str(d, "request_id", what), request=_require_mapping(d.get("request"), f"{what}.request"))


@dataclass(frozen=True, slots=True)
class AnswerMessage:
    """The best answer of one swarm: text and/or tool calls."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form (an OpenAI assistant message without the role)."""
        return {"content": self.content, "tool_calls": self.tool_calls}

    @classmethod
    def from_dict(cls, data: Any, what: str = "message") -> AnswerMessage:
        """Parse and validate."""
        d = _require_mapping(data, what)
        content = d.get("content")
        if content is not None and not isinstance(content, str):
            raise ProtocolError(f"{what}.content: expected a string or null")
        calls = d.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise ProtocolError(f"{what}.tool_calls: expected a list of objects or null")
        return cls(content=content, tool_calls=calls or None)


@dataclass(frozen=True, slots=True)
class VoteReply:
    """One swarm's vote: its best answer plus the statistics of its local vote."""

    node_id: str
    message: AnswerMessage
    finish_reason: str
    cluster_size: int
    n: int
    cohesion: float
    confidence: float
    latency_s: float
    model: str
    request_id: str = ""

    def __post_init__(self) -> None:
        what = "VoteReply"
        if not self.node_id:
            raise ProtocolError(f"{what}.node_id: must not be empty")
        if self.n < 1:
            raise ProtocolError(f"{what}.n: must be >= 1, got {self.n}")
        if not (0 <= self.cluster_size <= self.n):
            raise ProtocolError(f"{what}.cluster_size: must be within [0, n={self.n}], got {self.cluster_size}")
        for name in ("cohesion", "confidence"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ProtocolError(f"{what}.{name}: must be within [0, 1], got {value}")
        if not (self.latency_s >= 0.0):
            raise ProtocolError(f"{what}.latency_s: must be >= 0, got {self.latency_s}")

    def candidate(self) -> Candidate:
        """The answer as the consensus engine compares it."""
        return Candidate(id=self.node_id, text=self.message.content or "",
                         tool_calls=list(self.message.tool_calls or []), finish_reason=self.finish_reason,
                         latency_s=self.latency_s)

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {
            "v": PROTOCOL_VERSION,
            "request_id": self.request_id,
            "node_id": self.node_id,
            "message": self.message.to_dict(),
            "finish_reason": self.finish_reason,
            "cluster_size": self.cluster_size,
            "n": self.n,
            "cohesion": self.cohesion,
            "confidence": self.confidence,
            "latency_s": self.latency_s,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: Any) -> VoteReply:
        """Parse and validate a wire body."""
        what = "VoteReply"
        d = _require_mapping(data, what)
        _check_version(d, what)
        return cls(
            node_id=_str(d, "node_id", what),
            message=AnswerMessage.from_dict(d.get("message"), f"{what}.message"),
            finish_reason=_str(d, "finish_reason", what),
            cluster_size=_int(d, "cluster_size", what),
            n=_int(d, "n", what, minimum=1),
            cohesion=_float(d, "cohesion", what, hi=1.0),
            confidence=_float(d, "confidence", what, hi=1.0),
            latency_s=_float(d, "latency_s", what),
            model=_str(d, "model", what, empty=True),
            request_id=_str(d, "request_id", what, optional=True, empty=True),
        )


@dataclass(frozen=True, slots=True)
class InfoReply:
    """What a node says about itself on ``GET /v1/federation/info``."""

    node_id: str
    name: str
    model: str
    instances: int
    hw: str = ""
    auth: bool = False
    software: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {
            "v": PROTOCOL_VERSION,
            "node_id": self.node_id,
            "name": self.name,
            "model": self.model,
            "instances": self.instances,
            "hw": self.hw,
            "auth": self.auth,
            "software": self.software,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any) -> InfoReply:
        """Parse and validate a wire body."""
        what = "InfoReply"
        d = _require_mapping(data, what)
        _check_version(d, what)
        extra = d.get("extra") or {}
        return cls(
            node_id=_str(d, "node_id", what),
            name=_str(d, "name", what, empty=True),
            model=_str(d, "model", what, empty=True),
            instances=_int(d, "instances", what),
            hw=_str(d, "hw", what, optional=True, empty=True),
            auth=_bool(d, "auth", what) if "auth" in d else False,
            software=_str(d, "software", what, optional=True, empty=True),
            extra=_require_mapping(extra, f"{what}.extra"),
        )


HEALTH_STATUSES = ("ok", "degraded", "down")


@dataclass(frozen=True, slots=True)
class HealthReply:
    """``GET /v1/federation/health``: can this node take a vote now? Never generates text."""

    node_id: str
    status: str = "ok"
    ready_instances: int = 0
    instances: int = 0

    def __post_init__(self) -> None:
        if self.status not in HEALTH_STATUSES:
            raise ProtocolError(f"HealthReply.status: expected one of {HEALTH_STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {
            "v": PROTOCOL_VERSION,
            "node_id": self.node_id,
            "status": self.status,
            "ready_instances": self.ready_instances,
            "instances": self.instances,
        }

    @classmethod
    def from_dict(cls, data: Any) -> HealthReply:
        """Parse and validate a wire body."""
        what = "HealthReply"
        d = _require_mapping(data, what)
        _check_version(d, what)
        return cls(
            node_id=_str(d, "node_id", what),
            status=_str(d, "status", what),
            ready_instances=_int(d, "ready_instances", what),
            instances=_int(d, "instances", what),
        )
