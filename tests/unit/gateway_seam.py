"""The gateway at its HTTP seam: the real app, its instances answered by ``httpx.MockTransport``.

``FakeInstances`` answers each instance's ``POST /v1/chat/completions`` (and
``/v1/completions``) as llama-server streams them (tools/server/README.md, "OpenAI-compatible
Chat Completions API"; the same shape as ``tests/fakes/fake_llama_server.py``): a role
chunk, one chunk per word, tool-call deltas, a finish chunk, a usage chunk with
``timings``, then ``data: [DONE]``; errors as llama-server's ``{"error": {code, message,
type}}`` with its HTTP status. No process, no socket: these tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from starlette.testclient import TestClient

from localswarm.config import Settings
from localswarm.gateway.app import create_app
from localswarm.supervisor.instance import Instance
from localswarm.supervisor.states import State

MODEL = "fake-model"


@dataclass
class Reply:
    """What one instance answers: text and/or tool calls, after ``delay`` seconds.

    ``status`` (with ``message``) answers an HTTP error instead; ``break_after`` ends the
    stream with a transport error after that many words (a crash mid-stream).
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    delay: float = 0.0
    status: int = 200
    message: str = ""
    break_after: int | None = None


@dataclass
class FakeInstances:
    """Answers for the instances, by instance index, and every body each one was sent."""

    replies: list[Reply]
    bodies: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bodies = [[] for _ in self.replies]

    def transport(self, instances: list[Instance]) -> httpx.MockTransport:
        by_port = {inst.port: i for i, inst in enumerate(instances)}

        async def handle(request: httpx.Request) -> httpx.Response:
            i = by_port[request.url.port]
            body = json.loads(request.content)
            self.bodies[i].append(body)
            assert request.headers["authorization"] == f"Bearer {instances[i].api_key}"
            reply = self.replies[i]
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.status != 200:
                return httpx.Response(reply.status, json={"error": {
                    "code": reply.status, "message": reply.message, "type": "exceed_context_size_error"
                    if "context" in reply.message else "server_error"}})
            chat = request.url.path.endswith("/chat/completions")
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=_events(reply, body, chat=chat))

        return httpx.MockTransport(handle)


async def _events(reply: Reply, body: dict[str, Any], *, chat: bool) -> AsyncIterator[bytes]:
    def event(obj: object) -> bytes:
        return f"data: {json.dumps(obj)}\n\n".encode()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta.get("content") or ""
        return event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": MODEL, "choices": [choice]})

    words = (reply.content or "").split(" ") if reply.content else []
    words = [w + " " for w in words[:-1]] + words[-1:]
    if chat:
        yield chunk({"role": "assistant", "content": None})
    for n, word in enumerate(words):
        if reply.break_after is not None and n >= reply.break_after:
            raise httpx.ReadError("connection reset by peer")
        yield chunk({"content": word})
        await asyncio.sleep(0)
    for i, call in enumerate(reply.tool_calls or []):
        yield chunk({"tool_calls": [{"index": i, **call}]})
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    yield chunk({}, finish)
    completion = len(words) + (len(json.dumps(reply.tool_calls)) // 4 if reply.tool_calls else 0)
    usage = {"prompt_tokens": 7, "completion_tokens": completion, "total_tokens": 7 + completion}
    if (body.get("stream_options") or {}).get("include_usage"):
        yield event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage,
                     "timings": {"predicted_n": completion, "predicted_ms": 10.0}})
    yield b"data: [DONE]\n\n"


class FakeSupervisor:
    """Instances that are READY at once (no process): the gateway only reads them."""

    def __init__(self, count: int, tmp: Path) -> None:
        backend = SimpleNamespace(model_id=MODEL, name="llama-server")
        client = httpx.AsyncClient()
        self.instances = [
            Instance(name=f"inst-{i}", backend=backend, threads=1, seed=1000 + i, log_dir=tmp, client=client)  # type: ignore[arg-type]
            for i in range(count)
        ]
        for i, inst in enumerate(self.instances):
            inst.state, inst.port, inst.api_key = State.READY, 50000 + i, f"key-{i}"

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def ready_instances(self) -> list[Instance]:
        return [i for i in self.instances if i.ready]

    def status(self) -> list[dict[str, object]]:
        return [i.info() for i in self.instances]

    # No memory guard here (Supervisor's own when built without one).
    guard = None
    degraded = False

    def memory_status(self) -> None:
        return None


@contextmanager
def gateway(replies: list[Reply], tmp: Path, **settings: Any) -> Iterator[tuple[TestClient, FakeInstances, FakeSupervisor]]:
    """The real gateway app over fake instances; yields (client, the fakes, the supervisor)."""
    supervisor = FakeSupervisor(len(replies), tmp)
    fakes = FakeInstances(replies)
    app = create_app(Settings(**settings), supervisor, model_id=MODEL,  # type: ignore[arg-type]
                     transport=fakes.transport(supervisor.instances))
    with TestClient(app) as client:
        yield client, fakes, supervisor


def sse_chunks(text: str) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE body (comments and [DONE] left out)."""
    return [json.loads(line[5:]) for line in text.splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]
