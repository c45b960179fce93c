"""The short soak: 500 mixed requests against `localswarm up --instances 2` (FAKE llama-server).

The same code as bench/soak.py (10,000 requests, figures in docs/benchmarks.md): a real
gateway process over two instances of tests/fakes/fake_llama_server.py (not llama.cpp),
streamed, tools, n > 1, completions, clients that leave midway and bad inputs, 8 at a time.
No 5xx, every valid request answered and every bad one refused in OpenAI's shape, gateway
RSS within 20 MiB of the warm-up's, its open fds accounted for (no client socket left, upstream
sockets within the keep-alive pools, the rest flat), no instance restarted.
"""

from __future__ import annotations

from tests.helpers import load_bench


bench = load_bench("soak")


def test_500_mixed_requests_no_5xx_no_leak_no_restart_fake_llama_server() -> None:
    r = bench.soak(500, 8, warmup=100)
    assert sum(r.kinds.values()) == 500
    assert all(r.kinds[k] for k in bench.MIX)  # every kind was sent at least once
    assert r.statuses[200] and r.statuses[400] and r.statuses[413]  # answers and refusals both seen
    assert r.failures() == [], r.failures()
