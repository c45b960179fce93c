"""The MLX backend against a STAND-IN mlx_lm.server (tests/fakes/fake_mlx_server.py).

Real MLX needs Apple Silicon; this Linux CI cannot run it. The stand-in reproduces what
matters to the supervisor: /health says 200 before the model is loaded.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from localswarm.backends import mlx
from localswarm.backends.mlx import MlxBackend
from localswarm.supervisor.instance import InstanceTiming
from localswarm.supervisor.supervisor import Supervisor
from tests.helpers import REPO


def _stand_in_python(tmp_path: Path) -> str:
    """A `python` that runs the stand-in when asked for `-m mlx_lm.server`."""
    script = tmp_path / "python-mlx-stand-in"
    script.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{REPO}/tests/fakes/fake_mlx_server.py" "$@"\n')
    script.chmod(0o755)
    return str(script)


def test_argv_has_loopback_port_and_max_tokens():
    spec = MlxBackend(model="mlx-community/Qwen2.5-Coder-7B-Instruct-4bit", model_id="q").launch_spec(
        port=1234, api_key="k", threads=1, seed=1)
    assert spec.argv[1:3] == ["-m", "mlx_lm.server"]
    assert ["--host", "127.0.0.1"] == spec.argv[5:7] and "1234" in spec.argv and "--max-tokens" in spec.argv


def test_mlx_repo_mapping_and_auto_choice(monkeypatch):
    assert mlx.mlx_repo_for("qwen2.5-coder:7b:q4_k_m") == "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit"
    assert mlx.mlx_repo_for("qwen2.5-coder:1.5b:q8_0") == "mlx-community/Qwen2.5-Coder-1.5B-Instruct-8bit"
    assert mlx.mlx_repo_for("codellama:7b:q4_k_m") is None
    monkeypatch.setattr(mlx, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(mlx, "mlx_available", lambda: True)
    assert mlx.prefer_mlx("qwen2.5-coder:7b:q4_k_m")
    monkeypatch.setattr(mlx, "is_apple_silicon", lambda: False)
    assert not mlx.prefer_mlx("qwen2.5-coder:7b:q4_k_m")


async def test_ready_only_after_a_real_request_not_health(tmp_path, monkeypatch):
    log = tmp_path / "mlx.log"
    monkeypatch.setenv("FAKE_MLX_LOAD_DELAY", "1.5")
    monkeypatch.setenv("FAKE_MLX_LOG", str(log))
    backend = MlxBackend(model="stand-in-model", model_id="stand-in", python=_stand_in_python(tmp_path))
    timing = InstanceTiming(health_interval=0.3, start_timeout=20, backoff_initial=0.1)
    sup = Supervisor(backend, instances=2, log_dir=tmp_path / "logs", timing=timing)
    started = time.monotonic()
    sup.start()
    try:
        assert await sup.wait_ready(20, all_=True)
        assert time.monotonic() - started >= 1.4  # not fooled by the instant /health 200
        lines = log.read_text().splitlines()
        ready_posts = [line for line in lines if line.startswith("POST /v1/chat/completions")]
        assert ready_posts and all("model=stand-in-model max_tokens=1" in line for line in ready_posts)
        before = len(ready_posts)
        await asyncio.sleep(1.0)  # periodic health checks run: they list models and never generate
        after = [line for line in log.read_text().splitlines() if line.startswith("POST")]
        assert len(after) == before
        assert any(line.startswith("GET /v1/models loaded=True") for line in log.read_text().splitlines())
    finally:
        await sup.stop()
