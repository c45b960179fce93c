"""Queue, don't refuse (issue 13): the fair queue alone, and the gateway in front of FAKE instances.

The gateway tests run the real app at its HTTP seam (tests/unit/gateway_seam.py: instances
answered by ``httpx.MockTransport`` the way llama-server streams), many clients at once
through ``httpx.ASGITransport`` inside the test client's event loop. No timing is asserted:
the fakes' delays only keep requests in flight long enough for others to queue behind them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from localswarm.errors import APIError
from localswarm.gateway.queue import AdmissionQueue
from localswarm.gateway.streaming import KEEPALIVE
from tests.unit.gateway_seam import Reply, gateway, sse_chunks

HI = [{"role": "user", "content": "hi"}]


def _queue(ready: int = 1, parallel: int = 1, **kw: Any) -> AdmissionQueue:
    return AdmissionQueue(ready=lambda: ready, parallel=parallel, **kw)


# -- the queue alone -----------------------------------------------------------------------


def test_clients_are_served_round_robin_each_in_fifo_order() -> None:
    async def main() -> list[str]:
        q = _queue()
        running = q.join("a")  # takes the only slot
        tickets = [q.join("a") for _ in range(6)] + [q.join("b"), q.join("b")]
        names = {id(t): f"{t.key}{i}" for i, t in enumerate(tickets)}
        order = []
        current = running
        for _ in tickets:
            q.release(current)
            current = next(t for t in tickets if t.admitted_at is not None and names[id(t)] not in order)
            order.append(names[id(current)])
        return order

    order = asyncio.run(main())
    # b's two requests, sent after a's six, are served in turn with a's, not after them
    assert order[:4] == ["a0", "b6", "a1", "b7"]
    assert order[4:] == ["a2", "a3", "a4", "a5"]


def test_a_waiter_that_leaves_frees_its_place_at_once() -> None:
    async def main() -> None:
        q = _queue(depth=2)
        first = q.join("a")
        leaving = asyncio.ensure_future(q.run(q.join("b"), lambda width: asyncio.sleep(0)))
        staying = q.join("c")
        await asyncio.sleep(0)
        assert q.count == 2
        with pytest.raises(APIError):
            q.join("d")  # full
        leaving.cancel()  # the client went away
        await asyncio.gather(leaving, return_exceptions=True)
        assert q.count == 1 and q.stats.left_waiting == 1
        fourth = q.join("d")  # its place is free again
        q.release(first)
        assert staying.admitted_at is not None and fourth.admitted_at is None  # c was ahead of d
        q.release(staying)
        assert fourth.admitted_at is not None and q.used == 1

    asyncio.run(main())


def test_width_adapts_to_the_queue_idle_everyone_votes_loaded_min_voters() -> None:
    async def main() -> None:
        q = _queue(ready=3, parallel=2)  # 6 slots
        idle = q.join("a")
        assert idle.width == 3  # alone: every instance votes
        second = q.join("b")
        assert second.width == 3  # 3 free slots, nobody else waiting
        waiting = [q.join(k) for k in "cdef"]
        assert all(t.admitted_at is None for t in waiting)
        q.release(idle)  # 3 slots free, 4 waiting: each asks min_voters
        assert [t.width for t in waiting[:3]] == [1, 1, 1] and waiting[3].admitted_at is None
        fixed = _queue(ready=3, parallel=2, min_voters=3)  # min_voters = instances: fixed fan-out
        tickets = [fixed.join(k) for k in "abc"]
        fixed.release(tickets[0])
        assert tickets[2].width == 3

    asyncio.run(main())


def test_full_queue_and_too_long_a_wait_are_429_with_retry_after() -> None:
    async def main() -> None:
        q = _queue(depth=1)
        q.join("a")
        q.join("b")
        with pytest.raises(APIError) as full:
            q.join("c")
        assert full.value.status == 429 and full.value.headers["Retry-After"].isdigit()
        slow = _queue(depth=100, timeout=10)
        slow.service_s = 4.0  # each request takes about 4 s: the third waiter would wait 12 s
        slow.join("a"), slow.join("b"), slow.join("c")
        with pytest.raises(APIError) as long:
            slow.join("d")
        assert long.value.status == 429 and "queue_timeout" in long.value.message
        assert slow.stats.rejected_wait == 1 and q.stats.rejected_full == 1

    asyncio.run(main())


def test_a_streamed_waiter_gets_keepalives_then_its_events() -> None:
    async def main() -> list[str]:
        q = _queue()
        first = q.join("a")
        ticket = q.join("b")

        async def events(width: int):  # type: ignore[no-untyped-def]
            yield f"width {width}"

        out: list[str] = []
        stream = q.stream(ticket, events, keepalive=0.01)
        while len(out) < 3:
            out.append(await stream.__anext__())
        q.release(first)
        out += [event async for event in stream]
        assert q.used == 0 and q.count == 0
        return out

    out = asyncio.run(main())
    assert out[:3] == [KEEPALIVE] * 3 and out[-1] == "width 1"


# -- the gateway over FAKE instances -------------------------------------------------------


def _many(client: Any, bodies: list[dict[str, Any]], addresses: list[str]) -> list[httpx.Response]:
    """POST every body at once, each from its own client address, in the app's event loop."""
    app = client.app

    async def post(body: dict[str, Any], host: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://swarm", timeout=120) as c:
            return await c.post("/v1/chat/completions", json=body)

    async def all_of() -> list[httpx.Response]:
        return list(await asyncio.gather(*(post(b, h) for b, h in zip(bodies, addresses))))

    return client.portal.call(all_of)


def test_200_concurrent_clients_against_2_instances_are_all_answered_fake(tmp_path: Path) -> None:
    replies = [Reply("the answer", delay=0.02), Reply("the answer", delay=0.02)]
    with gateway(replies, tmp_path, parallel=2) as (client, fakes, _):
        bodies = [{"messages": HI, "max_tokens": 16, "stream": i % 2 == 0} for i in range(200)]
        responses = _many(client, bodies, [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(200)])
        status = client.get("/localswarm/status").json()
        metrics = client.app.state.metrics.render().decode()  # /metrics without scraping the fakes
    assert [r.status_code for r in responses] == [200] * 200
    for r, body in zip(responses, bodies):
        if body["stream"]:
            assert "".join(c["choices"][0]["delta"].get("content") or "" for c in sse_chunks(r.text)
                           if c.get("choices")) == "the answer"
        else:
            assert r.json()["choices"][0]["message"]["content"] == "the answer"
            assert r.headers["x-localswarm-width"] == str(r.json()["localswarm"]["width"])
    queue = status["queue"]
    assert queue["admitted"] == 200 and queue["rejected_full"] == queue["rejected_wait"] == 0
    assert queue["waiting"] == 0 and queue["running"] == 0 and queue["slots_used"] == 0
    assert "1" in queue["widths"]  # under load, requests asked fewer instances
    assert sum(len(b) for b in fakes.bodies) < 400  # ... so the swarm did less than 200 full fan-outs
    assert "localswarm_queue_wait_seconds_count 200.0" in metrics
    assert "localswarm_queue_waiting 0.0" in metrics


def test_idle_swarm_asks_every_instance_and_says_so(tmp_path: Path) -> None:
    with gateway([Reply("same"), Reply("same")], tmp_path) as (client, _, _):
        r = client.post("/v1/chat/completions", json={"messages": HI})
        streamed = client.post("/v1/chat/completions", json={"messages": HI, "stream": True})
    assert r.headers["x-localswarm-width"] == "2" and r.json()["localswarm"]["width"] == 2
    assert streamed.headers["x-localswarm-width"] == "2"
    final = [c for c in sse_chunks(streamed.text) if c.get("localswarm")]
    assert final[-1]["localswarm"]["width"] == 2


def test_full_queue_answers_429_with_retry_after_in_openai_shape(tmp_path: Path) -> None:
    with gateway([Reply("slow", delay=1.0)], tmp_path, parallel=1, queue_depth=3) as (client, _, _):
        responses = _many(client, [{"messages": HI}] * 8, [f"10.1.0.{i + 1}" for i in range(8)])
        status = client.get("/localswarm/status").json()
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 4 + [429] * 4  # one running, three waiting, the rest refused
    busy = next(r for r in responses if r.status_code == 429)
    assert int(busy.headers["retry-after"]) >= 1
    assert busy.json()["error"]["type"] == "rate_limit_error" and busy.json()["error"]["code"] == "swarm_busy"
    assert status["queue"]["rejected_full"] == 4 and status["requests"]["rejected_busy"] == 4


def test_a_client_that_leaves_the_queue_frees_its_place_fake(tmp_path: Path) -> None:
    with gateway([Reply("slow", delay=0.5)], tmp_path, parallel=1, queue_depth=1) as (client, fakes, _):
        app = client.app

        async def scenario() -> tuple[int, int, dict[str, Any]]:
            def post(host: str) -> Any:
                transport = httpx.ASGITransport(app=app, client=(host, 1))
                c = httpx.AsyncClient(transport=transport, base_url="http://swarm", timeout=60)
                return asyncio.ensure_future(c.post("/v1/chat/completions", json={"messages": HI}))

            state = app.state.gateway
            running = post("10.2.0.1")
            while state.queue.running == 0:
                await asyncio.sleep(0.01)
            leaving = post("10.2.0.2")
            while state.queue.count == 0:
                await asyncio.sleep(0.01)
            leaving.cancel()  # the client goes away while it waits
            await asyncio.gather(leaving, return_exceptions=True)
            after_leave = state.queue.count
            third = await post("10.2.0.3")  # the queue holds one: it has room again
            return after_leave, third.status_code, (await running).json()

        after_leave, third, first = client.portal.call(scenario)
        status = client.get("/localswarm/status").json()
    assert after_leave == 0 and third == 200 and first["choices"][0]["message"]["content"] == "slow"
    assert status["queue"]["left_waiting"] == 1
    assert len(fakes.bodies[0]) == 2  # the one that left never reached the instance


def test_streamed_request_that_waits_gets_keepalives(tmp_path: Path) -> None:
    with gateway([Reply("slow", delay=0.6)], tmp_path, parallel=1, keepalive_interval=0.05) as (client, _, _):
        responses = _many(client, [{"messages": HI}, {"messages": HI, "stream": True}], ["10.3.0.1", "10.3.0.2"])
    streamed = responses[1]
    assert streamed.status_code == 200
    assert streamed.text.startswith(": keep-alive")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in sse_chunks(streamed.text)
                   if c.get("choices")) == "slow"
    assert json.loads(responses[0].text)["choices"][0]["message"]["content"] == "slow"


def test_one_voter_stream_is_relayed_chunk_by_chunk_not_voted(tmp_path: Path) -> None:
    """One ready instance: nothing to vote on, so its stream is relayed as it comes."""
    with gateway([Reply("one two three four five six seven")], tmp_path) as (client, _, _):
        r = client.post("/v1/chat/completions", json={"messages": HI, "stream": True})
    chunks = sse_chunks(r.text)
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
    # the instance's own chunks, one per word (a voted answer is re-cut in 3-word pieces)
    assert [p for p in pieces if p] == ["one ", "two ", "three ", "four ", "five ", "six ", "seven"]
    assert r.headers["x-localswarm-width"] == "1"
    assert chunks[-1]["localswarm"] == {"strategy": "similarity", "winner": "inst-0", "n": 1, "width": 1}
