"""The mutation fuzzer (tests/mutation_fuzz.py) against real llama-servers with the embedded model.

1,000 bodies (valid ones generate at most 2 tokens), 2 instances: no answer >= 500, every
refusal in OpenAI's error shape, every valid template answered, no instance counted as
failing. The 10,000-body run over 3 seeds is bench/fuzz_mutations.py (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from localswarm.gateway import fanout
from localswarm.gateway.errors import APIError
from tests import mutation_fuzz

pytestmark = pytest.mark.integration

TOKENS = 2
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def swarm(real_llama, tmp_path_factory):
    binary, model = real_llama
    old = os.environ.get("LOCALSWARM_STATE_DIR")
    os.environ["LOCALSWARM_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    try:
        with mutation_fuzz.real_swarm(binary, model, instances=2, tokens=TOKENS) as gw:
            yield gw
    finally:
        if old is None:
            os.environ.pop("LOCALSWARM_STATE_DIR", None)
        else:
            os.environ["LOCALSWARM_STATE_DIR"] = old


def test_the_issue_example_is_a_400_naming_tools_0_type(swarm):
    body = {"model": "x", "messages": HI, "max_tokens": 4,
            "tools": [{"function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]}
    resp = httpx.post(swarm.url + "/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "tools[0].type"


def test_real_llama_server_refusal_is_the_clients_400_and_no_failure(swarm):
    """Straight to the instances (as a body the schema let through): llama-server answers
    HTTP 500 "Failed to parse tools"; the gateway's verdict is a 400 with that reason."""
    instances = swarm.supervisor.ready_instances()
    failures = [i.stats.failures for i in instances]
    body = {"messages": HI, "max_tokens": 2, "tools": [{"function": {"name": "f"}}]}

    async def ask() -> fanout.Gathered:
        async with httpx.AsyncClient() as client:
            return await fanout.gather(client, instances, [body] * len(instances), timeout=60)

    gathered = asyncio.run(ask())
    assert [e.status for e in gathered.errors] == [500] * len(instances), gathered.failed
    with pytest.raises(APIError) as info:
        fanout.raise_for_nothing(gathered)
    assert info.value.status == 400 and "Missing tool type" in info.value.message
    assert [i.stats.failures for i in instances] == failures


def test_an_embedding_input_longer_than_the_batch_is_a_400(swarm):
    """Regression (mutation fuzzer): llama-server answers HTTP 500 "input (750 tokens) is too
    large to process. increase the physical batch size"; the client got a 502."""
    resp = httpx.post(swarm.url + "/v1/embeddings", json={"input": ["a" * 3000]}, timeout=120)
    assert resp.status_code == 400, resp.text
    assert "too large" in resp.json()["error"]["message"]
    assert sum(i.stats.failures for i in swarm.supervisor.instances) == 0


def test_1000_mutated_bodies_get_no_5xx_from_a_real_swarm(swarm):
    started = time.monotonic()
    report = mutation_fuzz.run(swarm.url, mutation_fuzz.cases(1000, seed=2026, tokens=TOKENS), concurrency=4)
    print(f"mutation fuzz, real swarm: {report.summary()} in {time.monotonic() - started:.0f}s")
    for route, counts in sorted(report.by_route.items()):
        print(f"  {route}: {dict(sorted(counts.items()))}")
    assert not report.failures, "\n".join(report.failures[:10])
    assert report.total == 1000
    assert report.valid_total > 100 and report.valid_ok == report.valid_total
    assert report.statuses[200] > 200 and report.statuses[400] > 300
    assert len(swarm.supervisor.ready_instances()) == 2
    assert sum(i.stats.failures for i in swarm.supervisor.instances) == 0
    assert sum(i.stats.restarts for i in swarm.supervisor.instances) == 0
