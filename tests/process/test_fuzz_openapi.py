"""Property-based fuzzing (schemathesis + hypothesis) of every route in /openapi.json.

The gateway runs over FAKE llama-servers (tests/fakes/fake_llama_server.py) so a thousand
requests take seconds; the property is the gateway's own: no 5xx and no crash for any
request the schema describes (positive) or violates (negative), and every refusal comes in
OpenAI's error shape.
"""

from __future__ import annotations

import json
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from localswarm.config import Settings
from tests.helpers import RunningGateway, fake_backend, free_tcp_port

pytestmark = pytest.mark.integration

# generated requests per operation and mode; the total is asserted below (>= 1000)
BUDGET = {
    ("POST", "/v1/chat/completions"): (250, 120),
    ("POST", "/v1/completions"): (150, 80),
    ("POST", "/v1/embeddings"): (150, 100),
    ("GET", "/v1/models"): (30, 0),
    ("GET", "/v1/models/{model_id}"): (250, 0),
    ("GET", "/health"): (20, 0),
    ("GET", "/localswarm/status"): (20, 0),
}


def _fuzz(operation, mode: GenerationMode, examples: int, base_url: str, seen: list[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call(base_url=base_url, timeout=30)
        seen.append(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}\n{case.body!r}"
        if response.status_code >= 400:
            error = json.loads(response.text)["error"]
            assert isinstance(error["message"], str) and isinstance(error["type"], str)

    run()


def test_fuzz_every_route_from_the_openapi_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_REPLIES", json.dumps(["Hello from a fake.", {"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]))
    gateway = RunningGateway(
        Settings(port=free_tcp_port(), embeddings=True, keepalive_interval=0.5, instance_timeout=20),
        fake_backend(tmp_path, embeddings=True), instances=2,
    )
    seen: list[int] = []
    with gateway as gw:
        schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
        operations = {(op.method.upper(), op.path): op for op in (r.ok() for r in schema.get_all_operations())}
        assert set(BUDGET) == set(operations), "the budget must cover every operation in the schema"
        for key, (positive, negative) in BUDGET.items():
            started, before = time.monotonic(), len(seen)
            _fuzz(operations[key], GenerationMode.POSITIVE, positive, gw.url, seen)
            if negative:
                _fuzz(operations[key], GenerationMode.NEGATIVE, negative, gw.url, seen)
            print(f"{key}: {len(seen) - before} requests in {time.monotonic() - started:.1f}s")
        assert gw.thread.is_alive()
        assert len(gw.supervisor.ready_instances()) == 2  # no instance crashed either
    ok = sum(1 for s in seen if s == 200)
    print(f"fuzz: {len(seen)} requests, {ok} answered 200, statuses {sorted(set(seen))}")
    assert len(seen) >= 1000
    assert ok >= 200  # the positive cases reach the instances, not only the validation
