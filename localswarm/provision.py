"""From a model spec to files on disk: plan the swarm, fetch the GGUF, fall back offline.

``--model`` accepts ``embedded``, a path to a ``.gguf``, ``auto`` (the planner chooses for
this machine) or a registry id ``family:size:quant`` (e.g. ``qwen2.5-coder:7b:q4_k_m``).
"""

from __future__ import annotations

import json
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

    _HANDOFF = ("model_id", "embedded", "instances", "gpu_layers", "devices", "backend", "mlx_repo")

    def to_json(self) -> str:
        """What a detached child needs to run exactly this (the parent already downloaded it)."""
        return json.dumps({"path": str(self.path), **{k: getattr(self, k) for k in self._HANDOFF}})

    @classmethod
    def from_json(cls, text: str) -> ResolvedModel:
        data = json.loads(text)
        return cls(path=Path(data.pop("path")), **{k: data[k] for k in cls._HANDOFF})


#: The parent of ``up --detach`` resolves (and downloads) in the foreground and hands the
#: result to the child through this variable, so the child neither plans again nor downloads.
RESOLVED_ENV = "LOCALSWARM_RESOLVED_MODEL"


def _embedded(instances: int | None, note: str | None = None) -> ResolvedModel:
    """``--model embedded``: the 135M model on the CPU, no planner (it fits anywhere)."""
    return ResolvedModel(
        path=embedded_model_path(), model_id=EMBEDDED_MODEL_ID, embedded=True,
        instances=instances or DEFAULT_INSTANCES, gpu_layers="0", notes=[note] if note else [],
    )


def locate_cached(ref: Any) -> Path | None:
    """A registry entry's GGUF when it is already cached (so the planner reads its header)."""
    from localswarm.models.download import cached_model_path

    if getattr(ref, "embedded", False):
        return embedded_model_path()
    try:
        return cached_model_path(ref.hf_repo, ref.file, revision=getattr(ref, "revision", "main"))
    except Exception:  # noqa: BLE001 - a damaged cache only means "not local"
        return None


def make_plan(spec: str, *, instances: int | None, ctx: int, parallel: int,
              interactive: bool = False, chooser: Callable[..., Any] | None = None,
              devices: list[str] | None = None, offline: bool = False) -> Any:
    """Run the planner for ``auto`` or ``family:size:quant`` on the detected hardware.

    ``offline``: only models already in the cache (and the embedded one) are considered.
    """
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
    from localswarm.config import load_settings
    from localswarm.models.calibrate import machine_speeds

    return plan(profile, registry, model=model, instances=instances, ctx=ctx, parallel=parallel, locate=locate_cached,
                devices=devs, offline=offline, speeds=machine_speeds(profile),
                latency_target=load_settings().latency_target)


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
                  backend: str = "auto", say: Callable[[str], None] | None = None) -> ResolvedModel:
    """Turn ``--model`` into a file and an instance count, downloading if needed.

    With ``auto``, when the planned model can be neither found in the cache nor downloaded,
    the order is: the best cached registry model that fits this machine, then the embedded
    model; each step adds a note saying why. A model named explicitly is never swapped.
    ``say`` receives each note as soon as it is known (the plan before the download).
    """
    r = _resolve(spec, instances=instances, ctx=ctx, parallel=parallel, interactive=interactive,
                 progress=progress, devices=devices, backend=backend, say=say)
    return r


class _Notes(list):  # type: ignore[type-arg]
    """Notes that are also said as they are added."""

    def __init__(self, say: Callable[[str], None] | None) -> None:
        super().__init__()
        self.say = say

    def append(self, note: str) -> None:  # type: ignore[override]
        super().append(note)
        if self.say:
            self.say(note)


def _resolve(spec: str | None, *, instances: int | None, ctx: int, parallel: int, interactive: bool,
             progress: bool, devices: list[str] | None, backend: str,
             say: Callable[[str], None] | None) -> ResolvedModel:
    spec = (spec or "auto").strip()
    if spec == "embedded" and not interactive:
        return _embedded(instances)
    if spec.endswith(".gguf") or "/" in spec or Path(spec).exists():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"model file not found: {path}")
        r = _explicit_file(path.absolute(), instances=instances, ctx=ctx, parallel=parallel, devices=devices)
        for note in r.notes if say else ():
            say(note)
        return r
    p = make_plan(spec, instances=instances, ctx=ctx, parallel=parallel, interactive=interactive, devices=devices)
    notes = _Notes(say)
    for line in [f"plan: {p.summary()}", *[f"  - {r}" for r in p.reasons]]:
        notes.append(line)
    if p.embedded:
        return _from_plan(p, embedded_model_path(), list(notes))
    from localswarm.backends import mlx

    if mlx.prefer_mlx(p.model_id, backend):  # MLX-format weights, fetched once for every instance
        repo = mlx.mlx_repo_for(p.model_id)
        assert repo is not None
        if progress:
            _stderr(f"fetching the MLX weights {repo} (once, for every instance)")
        folder = mlx.prefetch(repo, progress=progress)
        notes.append(f"backend: mlx_lm.server with {repo} ({folder})")
        return ResolvedModel(path=Path(folder), model_id=p.model_id, embedded=False, instances=p.instances,
                             notes=list(notes), plan=p, backend="mlx", mlx_repo=folder)
    cached = locate_cached(_ref(p.model_id))
    try:
        path = fetch_plan(p, progress=progress)
    except DownloadError as exc:
        if spec != "auto" or interactive:
            raise  # the user asked for this model by name: say why it cannot be had
        return _fallback(p, exc, instances=instances, ctx=ctx, parallel=parallel, devices=devices, notes=notes)
    notes.append(f"model: {p.model_id} {'cached' if cached else 'downloaded'} ({path})")
    return _from_plan(p, path, list(notes))


def _explicit_file(path: Path, *, instances: int | None, ctx: int, parallel: int,
                   devices: list[str] | None) -> ResolvedModel:
    """A ``.gguf`` given by path gets the placement the planner computes from its own header."""
    from localswarm.hardware import detect
    from localswarm.models.planner import PlanError, plan
    from localswarm.models.registry import load_registry

    registry = load_registry()
    # A registry model's file keeps its registry entry (architecture, size); any other file is
    # planned through a stand-in entry whose estimate then comes from the file's own header.
    stand_in = next((r for r in registry.refs() if r.file.lower() == path.name.lower()), registry.embedded())
    devs = [int(d) if d.isdigit() else d for d in devices] if devices else None
    try:
        p = plan(detect(), registry, model=stand_in.id, instances=instances, ctx=ctx,
                 parallel=parallel, devices=devs, locate=lambda ref: path)
    except PlanError as exc:
        return ResolvedModel(path=path, model_id=path.stem.lower(), embedded=False,
                             instances=instances or DEFAULT_INSTANCES, gpu_layers="0",
                             notes=[f"{path.name}: {exc}; running on the CPU"])
    r = _from_plan(p, path, [f"plan for {path.name}: {p.instances} instance(s) of "
                             f"{p.per_instance_memory / 2**30:.1f} GiB (from its GGUF header) on "
                             f"{', '.join(sorted(set(p.devices())))}"])
    r.model_id, r.embedded = path.stem.lower(), False
    return r


def _ref(model_id: str) -> Any:
    from localswarm.models.registry import load_registry

    return load_registry().resolve(model_id)


def _from_plan(p: Any, path: Path, notes: list[str]) -> ResolvedModel:
    """The plan's placement, whatever the route: every instance's device and GPU offload."""
    devices = p.devices()
    on_gpu = any(d != "cpu" for d in devices)
    return ResolvedModel(path=path, model_id=p.model_id, embedded=p.embedded, instances=p.instances,
                         gpu_layers="999" if on_gpu else "0", devices=devices, notes=notes, plan=p)


def _fallback(planned: Any, exc: Exception, *, instances: int | None, ctx: int, parallel: int,
              devices: list[str] | None, notes: list[str]) -> ResolvedModel:
    """Planned model unavailable: the best cached model that fits, else the embedded one."""
    notes.append(f"{planned.model_id} is not cached and cannot be downloaded: {exc}")
    p = make_plan("auto", instances=instances, ctx=ctx, parallel=parallel, devices=devices, offline=True)
    if p.embedded:
        notes.append("no cached registry model fits this machine: falling back to the embedded model "
                     f"({p.model_id})")
        return _from_plan(p, embedded_model_path(), list(notes))
    path = locate_cached(_ref(p.model_id))
    assert path is not None  # offline planning only picks cached models
    notes.append(f"falling back to {p.model_id}, the best cached model that fits this machine ({path})")
    return _from_plan(p, path, list(notes))
