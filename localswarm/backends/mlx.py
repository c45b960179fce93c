"""mlx_lm.server on Apple Silicon: one process per instance, MLX-format weights.

Differences from llama-server that the supervisor and gateway must respect:

- its ``/health`` answers 200 at once, before the model is loaded, so readiness is probed
  with a real request (``/v1/models`` and a one-token completion); the periodic health
  check while READY only lists models (it never generates text);
- it has no API key: instances listen on loopback only, and the gateway is the one door;
- a request whose ``model`` differs from the served id makes it load that model, so the
  gateway always sends the served id (``fanout`` does);
- errors are ``{"error": "<string>"}`` (handled by ``fanout.upstream_error``).
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from dataclasses import dataclass

import httpx

from localswarm.backends.base import LaunchSpec, get_ok

# MLX builds of the registry's GGUF variants (mlx-community), by family:size → bits.
MLX_REPOS: dict[str, dict[str, str]] = {
    f"qwen2.5-coder:{size}": {
        "4bit": f"mlx-community/Qwen2.5-Coder-{size.upper()}-Instruct-4bit",
        "8bit": f"mlx-community/Qwen2.5-Coder-{size.upper()}-Instruct-8bit",
    }
    for size in ("0.5b", "1.5b", "3b", "7b", "14b", "32b")
}


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def mlx_available() -> bool:
    return importlib.util.find_spec("mlx_lm") is not None


def mlx_repo_for(model_id: str) -> str | None:
    """The MLX repo matching ``family:size:quant`` (4-bit for Q4/Q5, 8-bit for Q6/Q8)."""
    parts = model_id.split(":")
    if len(parts) != 3:
        return None
    family_size, quant = ":".join(parts[:2]), parts[2].lower()
    bits = "4bit" if quant.startswith(("q4", "q5")) else "8bit"
    return MLX_REPOS.get(family_size, {}).get(bits)


def prefer_mlx(model_id: str) -> bool:
    """Chosen automatically on Apple Silicon when mlx-lm is installed and an MLX build exists."""
    return is_apple_silicon() and mlx_available() and mlx_repo_for(model_id) is not None


@dataclass(kw_only=True)
class MlxBackend:
    """``python -m mlx_lm.server`` per instance."""

    model: str  # an MLX repo id or a local MLX model directory
    model_id: str
    python: str = sys.executable
    max_tokens: int = 4096  # mlx_lm.server's own default is 512: always raise it
    name: str = "mlx_lm.server"

    def launch_spec(self, *, port: int, api_key: str, threads: int, seed: int) -> LaunchSpec:
        # No API key support upstream: `api_key` is unused, the instance binds loopback only.
        argv = [self.python, "-m", "mlx_lm.server", "--model", self.model,
                "--host", "127.0.0.1", "--port", str(port), "--max-tokens", str(self.max_tokens)]
        return LaunchSpec(argv=argv)

    async def probe_ready(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                          timeout: float) -> bool:
        if not await get_ok(client, base_url + "/v1/models", headers, timeout):
            return False
        resp = await client.post(
            base_url + "/v1/chat/completions", headers=headers, timeout=max(timeout, 60.0),
            json={"model": self.model, "max_tokens": 1,
                  "messages": [{"role": "user", "content": "hi"}]},
        )
        return resp.status_code == 200 and bool(resp.json().get("choices"))

    async def probe_health(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                           timeout: float) -> bool:
        return await get_ok(client, base_url + "/v1/models", headers, timeout)
