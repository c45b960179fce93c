"""mlx_lm.server on Apple Silicon: one process per instance, MLX-format weights.

Differences from llama-server that the supervisor and gateway must respect:

- its ``/health`` answers 200 at once, before the model is loaded, so readiness is probed
  with a real request (``/v1/models`` and a one-token completion); the periodic health
  check while READY only lists models (it never generates text);
- it has no API key: instances listen on loopback only, and the gateway is the one door;
- a request's ``model`` other than ``"default_model"`` (its name for ``--model``) makes it load
  that model — a Hub download, one model resident at a time — so the gateway sends
  :attr:`MlxBackend.upstream_model` (``"default_model"``) and never the plan's id;
- it answers HTTP at once and queues requests while its weights load: the weights are
  prefetched once (:func:`prefetch`) before any instance starts, and the readiness probe
  (a one-token request) is given the time a load takes;
- errors are ``{"error": "<string>"}`` (handled by ``upstream.upstream_error``).

Facts: mlx-lm 0.32.2 ``mlx_lm/server.py`` (real-services.md §3).
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


BACKENDS = ("auto", "llama-server", "mlx")
#: What mlx_lm.server fetches for a model (``mlx_lm.utils`` ``_download``'s allow_patterns).
WEIGHT_PATTERNS = ["*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model",
                   "*.txt", "*.jsonl", "*.jinja"]
LOAD_TIMEOUT = 600.0  # seconds an instance may take to load weights from disk before it is "not ready"


def prefer_mlx(model_id: str, backend: str = "auto") -> bool:
    """Whether to serve ``model_id`` with mlx_lm.server, by the ``backend`` setting.

    ``auto``: on Apple Silicon with mlx-lm installed and an MLX build of the model;
    ``llama-server``: never; ``mlx``: always, or a clear error saying what is missing.
    """
    from localswarm.errors import ConfigError

    if backend == "llama-server":
        return False
    usable = is_apple_silicon() and mlx_available()
    if backend == "mlx":
        if not is_apple_silicon():
            raise ConfigError("backend 'mlx' needs Apple Silicon (macOS on arm64)")
        if not mlx_available():
            raise ConfigError("backend 'mlx' needs mlx-lm: pip install 'localswarm[mlx]'")
        if mlx_repo_for(model_id) is None:
            raise ConfigError(f"no MLX build of {model_id} is known; use backend 'llama-server'")
        return True
    if backend != "auto":
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return usable and mlx_repo_for(model_id) is not None


def prefetch(repo: str, *, progress: bool = True, cache_dir: str | None = None) -> str:
    """Download ``repo``'s MLX weights once (resumable, with progress); returns the local folder.

    Instances then start with ``--model <folder>``: none of them downloads, and a request naming
    ``default_model`` never triggers a fetch. Offline, the cached snapshot is used. The weights
    live in localswarm's model cache, beside the GGUFs.
    """
    import os

    from huggingface_hub import snapshot_download

    from localswarm.errors import DownloadError
    from localswarm.models.download import hub_endpoint, is_offline, models_cache_dir, with_retries

    kwargs = {"allow_patterns": WEIGHT_PATTERNS, "cache_dir": str(models_cache_dir(cache_dir))}
    if not progress:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        if is_offline():
            return snapshot_download(repo, local_files_only=True, **kwargs)
        return with_retries(lambda: snapshot_download(repo, endpoint=hub_endpoint(), **kwargs),
                            f"downloading {repo}")
    except Exception as exc:  # noqa: BLE001 - the library's many errors, one clear message
        raise DownloadError(f"cannot fetch the MLX weights {repo}: {type(exc).__name__}: {exc}") from None


@dataclass(kw_only=True)
class MlxBackend:
    """``python -m mlx_lm.server`` per instance."""

    model: str  # an MLX repo id or a local MLX model directory
    model_id: str
    python: str = sys.executable
    max_tokens: int = 4096  # mlx_lm.server's own default is 512: always raise it
    name: str = "mlx_lm.server"
    upstream_model: str = "default_model"  # what it serves without loading anything else

    def launch_spec(self, *, port: int, api_key: str, threads: int, seed: int) -> LaunchSpec:
        # No API key support upstream: `api_key` is unused, the instance binds loopback only.
        argv = [self.python, "-m", "mlx_lm.server", "--model", self.model,
                "--host", "127.0.0.1", "--port", str(port), "--max-tokens", str(self.max_tokens)]
        return LaunchSpec(argv=argv)

    async def probe_ready(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                          timeout: float) -> bool:
        # /health and /v1/models answer before the weights are in; a one-token request is queued
        # until they are, so it is the readiness signal, given the time a load takes.
        if not await get_ok(client, base_url + "/health", headers, timeout):
            return False
        resp = await client.post(
            base_url + "/v1/chat/completions", headers=headers, timeout=LOAD_TIMEOUT,
            json={"model": self.upstream_model, "max_tokens": 1,
                  "messages": [{"role": "user", "content": "hi"}]},
        )
        return resp.status_code == 200 and bool(resp.json().get("choices"))

    async def probe_health(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                           timeout: float) -> bool:
        # 0.32+: 503 {"status": "unavailable"} once the generation thread has died.
        return await get_ok(client, base_url + "/health", headers, timeout)
