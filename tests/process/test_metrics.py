"""Prometheus metrics: the middleware, vote/token hooks, instance and llama-server metrics.

The gateway tests run the real gateway app over FAKE llama-servers
(tests/fakes/fake_llama_server.py processes), with the metrics ``create_app`` wires itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from types import SimpleNamespace
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from localswarm.config import Settings
from localswarm.consensus import VoteResult
from localswarm.metrics import UNMATCHED_ROUTE, Metrics, MetricsMiddleware, metrics_endpoint
from localswarm.supervisor.states import State
from tests.helpers import RunningGateway, fake_backend, free_tcp_port, set_fake_replies


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed with prometheus-client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


def _vote(confidence: float, *, degenerate: bool = False, strategy: str = "similarity") -> VoteResult:
    return VoteResult(winner=0, strategy=strategy, confidence=confidence, cluster=[0, 1], cohesion=1.0,
                      clusters=[[0, 1]], excluded=[], degenerate=degenerate, tool_calls=None)


def test_each_metrics_has_its_own_registry():
    """Two gateways in one process do not collide on metric names."""
    a, b = Metrics(), Metrics()
    a.observe_tokens(3, 4)
    parsed_a, parsed_b = samples(a.render().decode()), samples(b.render().decode())
    assert value(parsed_a, "localswarm_tokens_total", direction="in") == 3
    assert value(parsed_a, "localswarm_tokens_total", direction="out") == 4
    assert value(parsed_b, "localswarm_tokens_total", direction="in") is None


def test_middleware_labels_route_templates_not_raw_paths():
    """/items/1 and /items/2 share one series; unknown paths share <unmatched>."""

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["id"])

    metrics = Metrics()
    app = Starlette(routes=[Route("/items/{id}", item, methods=["GET"]),
                            Route("/metrics", metrics_endpoint(metrics), methods=["GET"])],
                    middleware=[Middleware(MetricsMiddleware, metrics=metrics)])
    with TestClient(app) as client:
        for path in ("/items/1", "/items/2", "/nope/1", "/nope/2"):
            client.get(path)
        client.post("/items/3")
        text = client.get("/metrics").text
    parsed = samples(text)
    assert value(parsed, "localswarm_http_requests_total", route="/items/{id}", method="GET", status="200") == 2
    assert value(parsed, "localswarm_http_requests_total", route="/items/{id}", method="POST", status="405") == 1
    assert value(parsed, "localswarm_http_requests_total", route=UNMATCHED_ROUTE, method="GET", status="404") == 2
    assert value(parsed, "localswarm_http_request_duration_seconds_count", route="/items/{id}", method="GET") == 2
    assert not any("/items/1" in str(key) for key in parsed)


def test_observe_vote_counts_confidence_early_stops_and_degenerate():
    m = Metrics()
    m.observe_vote(_vote(0.9), answered=2, asked=3, early_stop=True)
    m.observe_vote(_vote(0.4, degenerate=True), answered=3, asked=3, early_stop=False)
    parsed = samples(m.render().decode())
    assert value(parsed, "localswarm_votes_total", strategy="similarity") == 2
    assert value(parsed, "localswarm_vote_early_stops_total") == 1
    assert value(parsed, "localswarm_vote_degenerate_total") == 1
    assert value(parsed, "localswarm_vote_confidence_count") == 2
    assert abs(value(parsed, "localswarm_vote_confidence_sum") - 1.3) < 1e-9
    assert value(parsed, "localswarm_vote_confidence_bucket", le="0.5") == 1
    assert value(parsed, "localswarm_vote_samples_total", kind="answered") == 5
    assert value(parsed, "localswarm_vote_samples_total", kind="asked") == 6


def test_peer_hooks():
    m = Metrics()
    m.set_peers(3, available=2)
    m.observe_peer_latency("10.0.0.2:8000", 0.02)
    parsed = samples(m.render().decode())
    assert value(parsed, "localswarm_peers", state="known") == 3
    assert value(parsed, "localswarm_peers", state="available") == 2
    assert value(parsed, "localswarm_peer_request_duration_seconds_count", peer="10.0.0.2:8000") == 1


def _inst(name: str, port: int, state: State = State.READY) -> Any:
    stats = SimpleNamespace(requests=0, failures=0, in_flight=0, completion_tokens=0, restarts=0)
    return SimpleNamespace(name=name, port=port, state=state, base_url=f"http://127.0.0.1:{port}", pid=None,
                           stats=stats, auth_headers=lambda: {"Authorization": f"Bearer key-{name}"})


UPSTREAM = (
    "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
    "# TYPE llamacpp:prompt_tokens_total counter\n"
    "llamacpp:prompt_tokens_total {n}\n"
    "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n"
)


async def test_upstream_scrape_relabels_merges_and_tolerates_dead_instances():
    """Live instances are fetched with their key and relabelled; dead, slow or garbled ones are skipped."""
    seen: dict[int, str] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        port = request.url.port
        seen[port] = request.headers.get("authorization", "")
        if port == 1001:
            raise httpx.ConnectError("refused", request=request)
        if port == 1002:
            await asyncio.sleep(5)  # hangs: cut by the scrape timeout
        if port == 1003:
            return httpx.Response(200, text="this { is not prometheus")
        return httpx.Response(200, text=UPSTREAM.format(n=port))

    sup = SimpleNamespace(instances=[
        _inst("inst-0", 1000), _inst("inst-1", 1001), _inst("inst-2", 1002), _inst("inst-3", 1003),
        _inst("inst-4", 1004), _inst("inst-5", 0, State.BACKOFF),
    ])
    m = Metrics(sup)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        started = time.monotonic()
        await m.refresh_upstream(client, timeout=0.3)
        assert time.monotonic() - started < 2  # concurrent, bounded
    assert seen[1000] == "Bearer key-inst-0" and 0 not in seen
    text = m.render().decode()
    assert text.count("# TYPE llamacpp:prompt_tokens_total counter") == 1
    parsed = samples(text)
    assert value(parsed, "llamacpp:prompt_tokens_total", instance="inst-0") == 1000
    assert value(parsed, "llamacpp:prompt_tokens_total", instance="inst-4") == 1004
    assert value(parsed, "llamacpp:requests_processing", instance="inst-4") == 1
    assert value(parsed, "llamacpp:prompt_tokens_total", instance="inst-1") is None
    ups = {name: value(parsed, "localswarm_upstream_up", instance=name) for name in
           ("inst-0", "inst-1", "inst-2", "inst-3", "inst-4", "inst-5")}
    assert ups == {"inst-0": 1, "inst-1": 0, "inst-2": 0, "inst-3": 0, "inst-4": 1, "inst-5": 0}
    assert value(parsed, "localswarm_instance_state", instance="inst-5", state="backoff") == 1
    assert value(parsed, "localswarm_instance_state", instance="inst-5", state="ready") == 0


def test_gateway_over_fake_instances_counts_requests_votes_tokens_and_restarts(tmp_path, monkeypatch):
    """The real gateway app: counters move with traffic and with a crash."""
    set_fake_replies(monkeypatch, ["def add(a, b): return a + b", "def add(x, y): return x + y"])
    settings = Settings(port=free_tcp_port(), backoff_initial=0.1, health_interval=0.2)
    gw = RunningGateway(settings, fake_backend(tmp_path), instances=2)
    with gw, gw.client() as c:
        before = samples(c.get("/metrics").text)
        bodies = [c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "add two"}]}).json()
                  for _ in range(2)]
        assert c.get("/v1/nothing-here").status_code == 404
        after = samples(c.get("/metrics").text)

        victim = gw.supervisor.instances[1]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (victim.stats.restarts < 1 or not victim.ready):
            time.sleep(0.05)
        restarted = samples(c.get("/metrics").text)

    chat = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert value(before, "localswarm_http_requests_total", **chat) is None
    assert value(after, "localswarm_http_requests_total", **chat) == 2
    assert value(after, "localswarm_http_requests_total", route=UNMATCHED_ROUTE, method="GET", status="404") == 1
    assert value(after, "localswarm_http_request_duration_seconds_count",
                 route="/v1/chat/completions", method="POST") == 2
    assert value(after, "localswarm_votes_total", strategy="similarity") == 2
    assert value(after, "localswarm_vote_confidence_count") == 2
    prompt = sum(b["usage"]["prompt_tokens"] for b in bodies)
    completion = sum(b["usage"]["completion_tokens"] for b in bodies)
    assert value(after, "localswarm_tokens_total", direction="in") == prompt > 0
    assert value(after, "localswarm_tokens_total", direction="out") == completion > 0
    for name in ("inst-0", "inst-1"):
        assert value(after, "localswarm_instance_state", instance=name, state="ready") == 1
        assert value(after, "localswarm_instance_requests_total", instance=name) == 2
        assert value(after, "localswarm_upstream_up", instance=name) == 1
        # The fake llama-server's own counter, relabelled by instance.
        assert value(after, "llamacpp:tokens_predicted_total", instance=name) > 0
    assert value(restarted, "localswarm_instance_restarts_total", instance="inst-1") == 1
    assert value(restarted, "localswarm_instance_restarts_total", instance="inst-0") == 0
