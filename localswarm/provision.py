"""From a model spec to files on disk: plan the swarm, fetch the GGUF, fall back offline.

``--model`` accepts ``embedded``, a path to a ``.gguf``, ``auto`` (the planner chooses for
this machine) or a registry id ``family:size:quant`` (e.g. ``qwen2.5-coder:7b:q4_k_m``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from localswarm.backends.llama_server import EMBEDDED_MODEL_ID, embedded_model_path
from localswarm.errors import DownloadError, ModelNotFound

logger = logging.getLogger(__name__)

DEFAULT_INSTANCES = 2  # the embedded model on CPU, or any explicit .gguf


@dataclass
class ResolvedModel:
    path: Path
    model_id: str
    embedded: bool
    instances: int
    gpu_layers: str | None = None
    devices: list[str] = field(default_factory=list)  # per instance: "gpu0", "cpu", ...
    notes: list[str] = field(default_factory=list)  # what was chosen and why (shown at start)
    plan: Any = None
    backend: str = "llama-server"  # or "mlx" (Apple Silicon with mlx-lm installed)
    mlx_repo: str | None = None


def _embedded(instances: int | None, note: str | None = None) -> ResolvedModel:
    return ResolvedModel(
        path=embedded_model_path(), model_id=EMBEDDED_MODEL_ID, embedded=True,
        instances=instances or DEFAULT_INSTANCES, notes=[note] if note else [],
    )


def locate_cached(ref: Any) -> Path | None:
    """A registry entry's GGUF when it is already cached (so the planner reads its header)."""
    from localswarm.models.download import cached_model_path

    if getattr(ref, "embedded", False):
        return embedded_model_path()
    try:
        return cached_model_path(ref.hf_repo, ref.file)
    except Exception:  # noqa: BLE001 - a damaged cache only means "not local"
        return None


def make_plan(spec: str, *, instances: int | None, ctx: int, parallel: int,
              interactive: bool = False, chooser: Callable[..., Any] | None = None,
              devices: list[str] | None = None) -> Any:
    """Run the planner for ``auto`` or ``family:size:quant`` on the detected hardware."""
    from localswarm.hardware import detect
    from localswarm.models.planner import plan
    from localswarm.models.registry import load_registry

    profile = detect()
    registry = load_registry()
    if interactive:
        from localswarm.ui.menu import choose_plan

        return (chooser or choose_plan)(profile, registry, ctx=ctx, parallel=parallel, locate=locate_cached)
    model = None if spec == "auto" else spec
    devs = [int(d) if d.isdigit() else d for d in devices] if devices else None
    return plan(profile, registry, model=model, instances=instances, ctx=ctx, parallel=parallel, locate=locate_cached,
                devices=devs)


def fetch_plan(p: Any, *, progress: bool = True, announce: Callable[[str], None] | None = None) -> Path:
    """The plan's GGUF on disk: cached, or downloaded from Hugging Face and verified.

    The file is checked against the size and sha256 the Hub reports for the exact revision
    (the registry's pinned commit, else ``main`` resolved once and recorded); the registry's
    sizes are only the planner's estimates and never refuse a download.
    """
    from localswarm.models.download import download_model

    if p.embedded:
        return embedded_model_path()
    if p.local_path:
        return Path(p.local_path)
    return download_model(p.hf_repo, p.gguf_file, revision=_revision(p.model_id), progress=progress,
                          announce=announce or (_stderr if progress else None))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _revision(model_id: str) -> str:
    from localswarm.models.registry import load_registry

    try:
        return load_registry().resolve(model_id).revision
    except Exception:  # noqa: BLE001 - not a registry id: the branch
        return "main"


def resolve_model(spec: str | None, *, instances: int | None = None, ctx: int = 4096, parallel: int = 2,
                  interactive: bool = False, progress: bool = True, devices: list[str] | None = None,
                  ) -> ResolvedModel:
    """Turn ``--model`` into a file and an instance count, downloading if needed.

    Offline (or when the hub refuses), falls back to the embedded model with a clear note
    instead of failing: the swarm still starts.
    """
    spec = (spec or "auto").strip()
    if spec == "embedded" and not interactive:
        return _embedded(instances)
    if spec.endswith(".gguf") or "/" in spec or Path(spec).exists():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"model file not found: {path}")
        return ResolvedModel(path=path.resolve(), model_id=path.stem.lower(), embedded=False,
                             instances=instances or DEFAULT_INSTANCES)
    p = make_plan(spec, instances=instances, ctx=ctx, parallel=parallel, interactive=interactive, devices=devices)
    notes = [f"plan: {p.summary()}", *[f"  - {r}" for r in p.reasons]]
    if p.embedded:
        r = _embedded(instances or p.instances)
        r.notes, r.plan = notes, p
        return r
    from localswarm.backends import mlx

    if mlx.prefer_mlx(p.model_id):  # mlx_lm.server fetches its own (MLX-format) weights
        repo = mlx.mlx_repo_for(p.model_id)
        return ResolvedModel(path=Path(repo), model_id=p.model_id, embedded=False, instances=p.instances,
                             notes=[*notes, f"backend: mlx_lm.server with {repo}"], plan=p,
                             backend="mlx", mlx_repo=repo)
    try:
        path = fetch_plan(p, progress=progress)
    except DownloadError as exc:
        if spec != "auto":
            raise  # the user asked for this model by name: say why it cannot be had
        return _embedded(instances, f"offline or download refused: falling back to the embedded model ({exc})")
    devices = p.devices()
    on_gpu = any(d != "cpu" for d in devices)
    return ResolvedModel(path=path, model_id=p.model_id, embedded=False, instances=p.instances,
                         gpu_layers="999" if on_gpu else None, devices=devices, notes=notes, plan=p)
