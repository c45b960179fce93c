"""The MLX backend against a STAND-IN mlx_lm.server (tests/fakes/fake_mlx_server.py).

Real MLX needs Apple Silicon; this Linux CI cannot run it. The stand-in reproduces what
matters (mlx-lm 0.32.2 server.py): /health says 200 before the model is loaded, requests
queue while it loads, and any ``model`` other than ``default_model`` makes it try to load
another model (404 for one it cannot fetch).
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
        assert ready_posts and all("model=default_model max_tokens=1" in line for line in ready_posts)
        before = len(ready_posts)
        await asyncio.sleep(1.0)  # periodic health checks run: they list models and never generate
        after = [line for line in log.read_text().splitlines() if line.startswith("POST")]
        assert len(after) == before
        assert any(line.startswith("GET /health loaded=True") for line in log.read_text().splitlines())
    finally:
        await sup.stop()


def _mlx_gateway(tmp_path: Path, monkeypatch):
    from localswarm.config import Settings
    from tests.helpers import RunningGateway, free_tcp_port

    monkeypatch.setenv("FAKE_MLX_LOAD_DELAY", "0.5")
    monkeypatch.setenv("FAKE_MLX_LOG", str(tmp_path / "mlx.log"))
    backend = MlxBackend(model=str(tmp_path), model_id="qwen2.5-coder:7b:q4_k_m", python=_stand_in_python(tmp_path))
    return RunningGateway(Settings(port=free_tcp_port(), start_timeout=30), backend, instances=2)


def test_stand_in_refuses_another_model_like_mlx_lm_server(tmp_path, monkeypatch):
    import httpx

    with _mlx_gateway(tmp_path, monkeypatch) as gw:
        inst = gw.supervisor.instances[0]
        other = httpx.post(inst.base_url + "/v1/chat/completions", timeout=30,
                           json={"model": "qwen2.5-coder:7b:q4_k_m", "messages": [{"role": "user", "content": "x"}]})
        assert other.status_code == 404 and "error" in other.json()
        same = httpx.post(inst.base_url + "/v1/chat/completions", timeout=30,
                          json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 3})
        assert same.status_code == 200 and same.json()["model"] == "default_model"


def test_gateway_chat_path_streamed_and_not_against_mlx_stand_in(tmp_path, monkeypatch):
    import json as _json

    with _mlx_gateway(tmp_path, monkeypatch) as gw, gw.client() as client:
        body = {"model": "qwen2.5-coder:7b:q4_k_m", "max_tokens": 32,
                "messages": [{"role": "user", "content": "Write add(a, b) in Python."}]}
        plain = client.post("/v1/chat/completions", json=body)
        assert plain.status_code == 200, plain.text
        data = plain.json()
        assert data["model"] == "qwen2.5-coder:7b:q4_k_m"  # the gateway names the planned model
        assert "return a + b" in data["choices"][0]["message"]["content"]
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
            assert resp.status_code == 200
            chunks = [_json.loads(line[6:]) for line in resp.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert "return a + b" in text and all(c["model"] == "qwen2.5-coder:7b:q4_k_m" for c in chunks)
    sent = [line for line in (tmp_path / "mlx.log").read_text().splitlines() if line.startswith("POST")]
    assert sent and all("model=default_model" in line for line in sent)  # never the plan id upstream


def test_backend_setting_chooses_the_server(monkeypatch):
    import pytest

    from localswarm.errors import ConfigError

    monkeypatch.setattr(mlx, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(mlx, "mlx_available", lambda: True)
    assert mlx.prefer_mlx("qwen2.5-coder:7b:q4_k_m", "auto")
    assert not mlx.prefer_mlx("qwen2.5-coder:7b:q4_k_m", "llama-server")
    with pytest.raises(ConfigError, match="no MLX build"):
        mlx.prefer_mlx("codellama:7b:q4_k_m", "mlx")
    monkeypatch.setattr(mlx, "mlx_available", lambda: False)
    assert not mlx.prefer_mlx("qwen2.5-coder:7b:q4_k_m", "auto")
    with pytest.raises(ConfigError, match=r"localswarm\[mlx\]"):
        mlx.prefer_mlx("qwen2.5-coder:7b:q4_k_m", "mlx")


def test_weights_are_prefetched_once_into_the_cache_fake_hub(tmp_path, monkeypatch):
    from localswarm import paths
    from tests.fakes.hf_mimic import HFMimic

    repo = "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit"
    with HFMimic() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        hub.add_file(repo, "config.json", b'{"model_type": "qwen2"}', lfs=False)
        hub.add_file(repo, "tokenizer_config.json", b"{}", lfs=False)
        hub.add_file(repo, "model.safetensors", b"\x00" * 300_000)
        hub.add_file(repo, "README.md", b"# not fetched", lfs=False)
        folder = Path(mlx.prefetch(repo, progress=False))
        assert folder.is_relative_to(paths.cache_dir() / "models")
        assert (folder / "model.safetensors").stat().st_size == 300_000
        assert not (folder / "README.md").exists()  # only what mlx_lm loads
        hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Path(mlx.prefetch(repo, progress=False)) == folder  # offline: the cached snapshot
