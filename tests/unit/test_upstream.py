"""localswarm.upstream, the only code that talks to an instance: its SSE parser, its retry,
its error translation and the accounting through Instance.request() (FAKE instance over
httpx.MockTransport, answering as llama-server does; see tests/unit/gateway_seam.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from localswarm import upstream
from localswarm.errors import UpstreamError
from localswarm.hosts import client_host, is_wildcard
from localswarm.statefile import gateway_url
from localswarm.supervisor.instance import InstanceStats, Work
from tests.unit.gateway_seam import FakeSupervisor


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _all(reader: upstream.EventReader) -> list[dict]:
    return [chunk async for chunk in reader]


def test_event_reader_skips_comments_stops_at_done_and_resumes() -> None:
    reader = upstream.EventReader(_lines(": keep-alive", "", 'data: {"a": 1}', "data:{\"a\": 2}", "data: [DONE]",
                                         'data: {"a": 3}'))

    async def run() -> tuple[list[dict], list[dict]]:
        first = []
        async for chunk in reader:
            first.append(chunk)
            break  # a relay reads up to the first output, then resumes
        return first, await _all(reader)

    first, rest = asyncio.run(run())
    assert first == [{"a": 1}] and rest == [{"a": 2}] and reader.done


def test_event_reader_raises_the_instances_error_chunk() -> None:
    reader = upstream.EventReader(_lines('data: {"error": {"code": 500, "message": "slot crashed", "type": "server_error"}}'))
    with pytest.raises(UpstreamError) as err:
        asyncio.run(_all(reader))
    assert (err.value.status, err.value.message, err.value.type) == (500, "slot crashed", "server_error")
    ended = upstream.EventReader(_lines('data: {"a": 1}'))
    assert asyncio.run(_all(ended)) == [{"a": 1}] and not ended.done  # no [DONE]: the caller can tell


def _sse(*chunks: dict) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def test_ask_retries_a_stale_keepalive_once_and_counts_the_request(tmp_path: Path) -> None:
    """A pooled connection closed under us fails before the server read anything: sent again, once."""
    inst = FakeSupervisor(1, tmp_path).instances[0]
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, content=_sse(
            {"choices": [{"index": 0, "delta": {"content": "hi "}}]},
            {"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]},
            {"choices": [{"index": 0, "delta": {"content": "there"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2},
             "timings": {"predicted_n": 2, "predicted_ms": 500.0}},
        ))

    async def run() -> upstream.Answer:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            return await upstream.ask(client, inst, "/v1/chat/completions", {"messages": [], "seed": 1}, 5.0)

    answer = asyncio.run(run())
    assert len(calls) == 2 and calls[1]["stream"] is True and calls[1]["model"] == "fake-model"
    assert calls[1]["stream_options"] == {"include_usage": True}
    assert (answer.id, answer.text, answer.reasoning, answer.finish_reason) == ("inst-0", "hi there", "think", "stop")
    assert answer.message() == {"role": "assistant", "content": "hi there", "reasoning_content": "think"}
    s = inst.stats
    assert (s.requests, s.in_flight, s.failures, s.completion_tokens, s.generation_seconds) == (1, 0, 0, 2, 0.5)


@pytest.mark.parametrize("status,message,failure", [
    (400, "too long", False),                                  # the client's error: a refusal
    (500, "Failed to parse tools: Missing tool type", False),  # llama-server's 500 for a malformed request
    (500, "llama_decode failed", True),                        # the instance's own failure
])
def test_ask_translates_an_error_and_counts_only_real_failures(tmp_path: Path, status: int, message: str,
                                                               failure: bool) -> None:
    inst = FakeSupervisor(1, tmp_path).instances[0]
    transport = httpx.MockTransport(lambda r: httpx.Response(status, json={"error": {
        "code": status, "message": message, "type": "exceed_context_size_error"}}))

    async def run() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await upstream.ask(client, inst, "/v1/chat/completions", {}, 5.0)

    with pytest.raises(UpstreamError) as err:
        asyncio.run(run())
    assert (err.value.status, err.value.message, err.value.type) == (status, message, "exceed_context_size_error")
    assert err.value.refusal is not failure
    assert (inst.stats.requests, inst.stats.in_flight, inst.stats.failures) == (1, 0, int(failure))


def test_policy_seeds_and_gateway_fields() -> None:
    """Each instance its own seed (client's seed + i), gateway-owned fields never forwarded."""
    body = {"messages": [], "seed": 41, "n": 3, "stream": True, "max_completion_tokens": 9, "localswarm": {}}
    bodies = upstream.instance_bodies(body, 3, default_temperature=0.7)
    assert [b["seed"] for b in bodies] == [41, 42, 43]
    assert all(b["temperature"] == 0.7 and b["max_tokens"] == 9 for b in bodies)
    assert not any({"n", "stream", "localswarm", "max_completion_tokens"} & set(b) for b in bodies)
    assert upstream.reseeded(body, 5)["seed"] == 46 and "seed" not in upstream.reseeded({"messages": []}, 5)


def test_work_closes_once_with_one_outcome() -> None:
    stats = InstanceStats()
    with Work(stats) as work:
        assert stats.in_flight == 1
        work.abandoned()
        work.failed()  # already closed: no effect
    assert (stats.requests, stats.in_flight, stats.failures, stats.latency_total) == (1, 0, 0, 0.0)
    with pytest.raises(asyncio.CancelledError), Work(stats):
        raise asyncio.CancelledError  # a straggler cut off by the quorum: a failure, as before
    assert (stats.requests, stats.in_flight, stats.failures) == (2, 0, 1)
    with Work(stats) as work:
        work.done(tokens=5, generation_s=2.0)
    assert (stats.completion_tokens, stats.generation_seconds, stats.in_flight) == (5, 2.0, 0)


@pytest.mark.parametrize(
    ("bind", "url_host"),
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "[::1]"), ("[::]", "[::1]"), ("fe80::1", "[fe80::1]"),
     ("192.168.1.5", "192.168.1.5"), ("localhost", "localhost")],
)
def test_wildcard_binds_are_reached_on_loopback_of_their_family(bind: str, url_host: str) -> None:
    assert client_host(bind) == url_host
    assert is_wildcard(bind) == (bind in ("0.0.0.0", "", "::", "[::]"))
    assert gateway_url({"host": bind, "port": 8123}) == f"http://{url_host}:8123"
    httpx.URL(gateway_url({"host": bind, "port": 8123}) or "")  # a URL httpx accepts


def test_gateway_url_without_a_swarm() -> None:
    assert gateway_url(None) is None and gateway_url({"host": "127.0.0.1"}) is None
