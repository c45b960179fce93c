"""`localswarm detect --calibrate` through the real llama-server, and the plan it leads to.

The measurement is llama-server's own ``timings``; what is asserted is that they were read
(both requests, positive rates, a cached entry this machine and binary find again) and
that, with them, this kind of machine no longer gets a 7B plan. Figures against the
estimate are bench/speed_estimate.py's (docs/planner.md), not a timed assertion here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localswarm.hardware import detect
from localswarm.models import calibrate as cal
from localswarm.models.planner import plan
from localswarm.models.registry import load_registry

pytestmark = pytest.mark.integration


def test_detect_calibrate_real_llama_server(real_llama: tuple[str, str], tmp_path: Path) -> None:
    binary, _model = real_llama
    env = {**os.environ, "LOCALSWARM_CACHE_DIR": str(tmp_path), "LOCALSWARM_LLAMA_SERVER": binary}
    out = subprocess.run([sys.executable, "-m", "localswarm", "detect", "--calibrate", "--json"],
                         capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    speed = json.loads(out.strip().splitlines()[-1])["calibration"]
    print(speed)
    assert speed["flops"] > 1e8 and speed["bandwidth"] > 1e7
    assert "calibrated" in speed["source"] and "tok/s at 784 tokens" in speed["source"]
    profile = detect()
    stored = cal.cached(profile, Path(binary), tmp_path)
    assert stored is not None and stored.flops == pytest.approx(speed["flops"])
    # the planner with this machine's measured speed, as a 2-core 24 GiB host sees it
    p = plan(profile, load_registry(), locate=lambda _r: None,
             speeds=cal.machine_speeds(profile, binary=Path(binary), directory=tmp_path))
    print(p.summary(), p.speed)
    assert p.speed is not None and "calibrated" in p.speed.source
    if (profile.cpu.physical_cores or 1) <= 4 and not profile.gpus:
        assert p.size not in ("7b", "6.7b", "14b", "32b", "30b-a3b", "13b")
