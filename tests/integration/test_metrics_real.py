"""`/metrics` on the real gateway over real llama-server instances (embedded SmolLM2).

Scraped before and after real requests and parsed with prometheus-client's own parser:
the HTTP, vote and token counters move by exactly what the responses report, each
llama-server's own counters appear relabelled by instance, and a SIGKILLed instance
shows up as a restart.
``create_app`` serves ``/metrics`` and ``GatewayState`` reports each vote to it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from tests.helpers import RunningGateway, free_tcp_port

pytestmark = pytest.mark.integration

PROMPT = {"messages": [{"role": "user", "content": "Write a Python function that adds two numbers."}],
          "max_tokens": 24}


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def get(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def _streamed_usage(client: httpx.Client) -> dict[str, int]:
    usage: dict[str, int] = {}
    with client.stream("POST", "/v1/chat/completions",
                       json={**PROMPT, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunk = json.loads(line[5:])
                usage = chunk.get("usage") or usage
    assert usage, "no usage chunk"
    return usage


def test_metrics_counters_move_with_real_requests(real_llama):
    binary, model = real_llama
    settings = Settings(port=free_tcp_port(), ctx_size=1024, parallel=1, health_interval=0.5, backoff_initial=0.2)
    backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2", ctx_size=1024,
                                 parallel=1)
    gw = RunningGateway(settings, backend, instances=2)
    with gw, gw.client(timeout=120) as c:
        before = scrape(c)

        usages = []
        for _ in range(2):
            resp = c.post("/v1/chat/completions", json=PROMPT)
            assert resp.status_code == 200, resp.text
            usages.append(resp.json()["usage"])
        usages.append(_streamed_usage(c))
        assert c.get("/v1/models").status_code == 200
        assert c.get("/no/such/route").status_code == 404
        after = scrape(c)

        # llama-server guards its own /metrics with the per-instance key: the scrape used it.
        inst = gw.supervisor.instances[0]
        assert httpx.get(inst.base_url + "/metrics").status_code == 401

        victim = gw.supervisor.instances[1]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (victim.stats.restarts < 1 or not victim.ready):
            time.sleep(0.1)
        restarted = scrape(c)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    # HTTP: by route template, method and status; the latency histogram counts the same requests.
    chat = {"route": "/v1/chat/completions", "method": "POST"}
    assert delta("localswarm_http_requests_total", status="200", **chat) == 3
    assert delta("localswarm_http_request_duration_seconds_count", **chat) == 3
    assert delta("localswarm_http_request_duration_seconds_sum", **chat) > 0
    assert delta("localswarm_http_requests_total", route="/v1/models", method="GET", status="200") == 1
    assert delta("localswarm_http_requests_total", route="<unmatched>", method="GET", status="404") == 1
    assert get(after, "localswarm_http_requests_total", route="/metrics", method="GET", status="200") >= 1

    # Consensus: three votes (the streamed one is voted before it is streamed).
    assert delta("localswarm_votes_total", strategy="similarity") == 3
    assert delta("localswarm_vote_confidence_count") == 3
    assert 0 < delta("localswarm_vote_confidence_sum") <= 3
    assert delta("localswarm_vote_samples_total", kind="asked") == 6
    early = delta("localswarm_vote_early_stops_total")
    assert 0 <= early <= 3

    # Tokens in and out: exactly what the three responses reported.
    assert delta("localswarm_tokens_total", direction="in") == sum(u["prompt_tokens"] for u in usages) > 0
    assert delta("localswarm_tokens_total", direction="out") == sum(u["completion_tokens"] for u in usages) > 0

    # Instances, read from the supervisor at scrape time.
    for name in ("inst-0", "inst-1"):
        assert get(after, "localswarm_instance_state", instance=name, state="ready") == 1
        assert get(after, "localswarm_instance_state", instance=name, state="fatal") == 0
        assert delta("localswarm_instance_requests_total", instance=name) == 3
        assert get(after, "localswarm_instance_memory_rss_bytes", instance=name) > 10 * 2**20
        assert get(after, "localswarm_upstream_up", instance=name) == 1
    assert get(after, "localswarm_instances_ready") == 2

    # Each llama-server's own metrics, relabelled per instance.
    predicted = sum(delta("llamacpp:tokens_predicted_total", instance=n) for n in ("inst-0", "inst-1"))
    prompt_tokens = sum(delta("llamacpp:prompt_tokens_total", instance=n) for n in ("inst-0", "inst-1"))
    assert predicted >= sum(u["completion_tokens"] for u in usages)
    assert prompt_tokens > 0
    assert ("llamacpp:requests_processing", frozenset({("instance", "inst-1")})) in after

    # A crash: the restart is counted, and the new process's metrics are scraped again.
    assert get(restarted, "localswarm_instance_restarts_total", instance="inst-1") == 1
    assert get(restarted, "localswarm_instance_restarts_total", instance="inst-0") == 0
    assert get(restarted, "localswarm_instance_state", instance="inst-1", state="ready") == 1
    assert get(restarted, "localswarm_upstream_up", instance="inst-1") == 1
    # The fresh llama-server has served nothing yet: its own counter starts again from zero.
    fresh = ("llamacpp:tokens_predicted_total", frozenset({("instance", "inst-1")}))
    assert fresh in restarted and restarted[fresh] == 0
