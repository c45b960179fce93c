"""Queue, don't refuse (issue 13) on real llama-servers with the embedded model.

12 clients at once against 2 instances with 2 slots each: before the queue, 4 of them got
429 (the old ``max(8, 4 × parallel)`` limit); now every one is answered, some by fewer
instances than the swarm has (adaptive fan-out), and the queue is empty afterwards.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from tests.helpers import RunningGateway, free_tcp_port

pytestmark = pytest.mark.integration

CTX = 512


def test_12_clients_on_2_real_instances_are_all_answered(real_llama, tmp_path, monkeypatch):
    binary, model = real_llama
    monkeypatch.setenv("LOCALSWARM_STATE_DIR", str(tmp_path))
    settings = Settings(port=free_tcp_port(), ctx_size=CTX, parallel=2, keepalive_interval=0.5)
    backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2",
                                 ctx_size=CTX, parallel=2)
    with RunningGateway(settings, backend, instances=2) as gw:

        def ask(i: int) -> httpx.Response:
            body = {"messages": [{"role": "user", "content": f"Count to {i + 2}."}], "max_tokens": 8,
                    "stream": i % 2 == 1}
            return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=300)

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(ask, range(12)))
        status = httpx.get(gw.url + "/localswarm/status").json()
        metrics = httpx.get(gw.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 12, [r.text[:200] for r in responses]
    for i, r in enumerate(responses):
        if i % 2 == 0:
            meta = r.json()["localswarm"]
            assert r.json()["choices"][0]["message"]["content"]
            assert 1 <= meta["width"] <= 2 and r.headers["x-localswarm-width"] == str(meta["width"])
        else:
            assert "data: [DONE]" in r.text and '"content"' in r.text
    queue = status["queue"]
    assert queue["admitted"] == 12 and queue["rejected_full"] == 0 and queue["rejected_wait"] == 0
    assert queue["waiting"] == 0 and queue["running"] == 0 and queue["slots_used"] == 0
    assert "localswarm_queue_wait_seconds_count 12.0" in metrics
