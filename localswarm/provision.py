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
    # The plan's context per slot and slots (its fill, a phone's 2048); None: the settings'.
    ctx_size: int | None = None
    parallel: int | None = None

    _HANDOFF = ("model_id", "embedded", "instances", "gpu_layers", "devices", "backend", "mlx_repo",
                "ctx_size", "parallel")

    def to_json(self) -> str:
        """What a detached child needs to run exactly this (the parent already downloaded it)."""
        return json.dumps({"path": str(self.path), **{k: getattr(self, k) for k in self._HANDOFF}})

    @classmethod
    def from_json(cls, text: str) -> ResolvedModel:
        data = json.loads(text)
        return cls(path=Path(data.pop("path")), **{k: data[k] for k in cls._HANDOFF if k in data})


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


@dataclass(frozen=True)
class PlanPolicy:
    """The user's bounds on the planner (the seed plan's ``swarm``/``models``/``hardware`` keys)."""

    min_instances: int | None = None
    max_instances: int | None = None
    preferred_models: tuple[str, ...] = ()  # families "auto" tries first, in this order
    gpu_memory_fraction: float = 1.0
    ram_fraction: float = 0.5
    #: Seconds opencode's first turn may take (issue 15); None: memory alone decides.
    latency_target: float | None = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> PlanPolicy:
        return cls(min_instances=settings.min_instances, max_instances=settings.max_instances,
                   preferred_models=tuple(settings.preferred_models),
                   gpu_memory_fraction=settings.gpu_memory_fraction, ram_fraction=settings.ram_fraction,
                   latency_target=settings.latency_target)

    def rules(self) -> Any:
        """The budget rules: ``ram_fraction`` for CPU and Apple Silicon; ``gpu_memory_fraction``
        of each GPU, the 10 % (>= 1 GiB) reserve for the driver kept whatever it says."""
        from localswarm.hardware.budget import BudgetRules

        default = BudgetRules()
        return BudgetRules(gpu_reserve_fraction=max(default.gpu_reserve_fraction, 1.0 - self.gpu_memory_fraction),
                           apple_fraction=self.ram_fraction, cpu_fraction=self.ram_fraction)


def make_plan(spec: str, *, instances: int | None, ctx: int, parallel: int,
              interactive: bool = False, chooser: Callable[..., Any] | None = None,
              devices: list[str] | None = None, offline: bool = False, policy: PlanPolicy | None = None,
              calibrate: bool = False, say: Callable[[str], None] | None = None) -> Any:
    """Run the planner for ``auto`` or ``family:size:quant`` on the detected hardware.

    ``calibrate``: measure this machine's speed first when no calibration of it (and of
    this llama-server binary) is cached (``up`` does; ``say`` gets one line about it).

    ``offline``: only models already in the cache (and the embedded one) are considered.
    ``policy``: the user's budget fractions, instance bounds and preferred families.
    """
    import dataclasses

    from localswarm.hardware import detect
    from localswarm.models.planner import PlanError, list_variants, plan
    from localswarm.models.registry import load_registry

    policy = policy or PlanPolicy()
    rules = policy.rules()
    profile = detect()
    registry = load_registry()
    if interactive:
        from localswarm.ui.menu import choose_plan

        return (chooser or choose_plan)(profile, registry, ctx=ctx, parallel=parallel, locate=locate_cached)
    model = None if spec == "auto" else spec
    devs = [int(d) if d.isdigit() else d for d in devices] if devices else None
    from localswarm.models.calibrate import auto_calibration, machine_speeds

    speeds = machine_speeds(profile, calibrate_now=calibrate and auto_calibration(), say=say)
    reasons: list[str] = []
    if model is None and policy.preferred_models and not offline:
        rows = list_variants(profile, registry, ctx=ctx, parallel=parallel,
                             instances=instances or policy.min_instances or 1, rules=rules, devices=devs,
                             locate=locate_cached, speeds=speeds, latency_target=policy.latency_target)
        for family in policy.preferred_models:
            row = next((r for r in rows if r.fits and not r.embedded
                        and r.model_id.split(":")[0].lower() == family.lower()), None)
            if row is not None:
                model = row.model_id
                reasons.append(f"preferred_models: {family} → {model}, its best variant that fits")
                break
        else:
            reasons.append(f"preferred_models: none of {', '.join(policy.preferred_models)} fits this machine "
                           "(or is in the registry): planned as auto")

    def run(count: int | None) -> Any:
        return plan(profile, registry, model=model, instances=count, ctx=ctx, parallel=parallel,
                    locate=locate_cached, devices=devs, offline=offline, rules=rules, speeds=speeds,
                    latency_target=policy.latency_target)

    p = run(instances)
    if instances is None and policy.max_instances and p.instances > policy.max_instances:
        p = run(policy.max_instances)
        reasons.append(f"max_instances: {policy.max_instances}")
    elif instances is None and policy.min_instances and p.instances < policy.min_instances:
        try:
            p = run(policy.min_instances)
        except PlanError as exc:
            raise PlanError(f"min_instances {policy.min_instances}: {exc}") from None
        reasons.append(f"min_instances: {policy.min_instances}")
    if reasons:
        p = dataclasses.replace(p, reasons=(*p.reasons, *reasons))
    return p


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
                  backend: str = "auto", say: Callable[[str], None] | None = None,
                  policy: PlanPolicy | None = None) -> ResolvedModel:
    """Turn ``--model`` into a file and an instance count, downloading if needed.

    With ``auto``, when the planned model can be neither found in the cache nor downloaded,
    the order is: the best cached registry model that fits this machine, then the embedded
    model; each step adds a note saying why. A model named explicitly is never swapped.
    ``say`` receives each note as soon as it is known (the plan before the download).
    """
    r = _resolve(spec, instances=instances, ctx=ctx, parallel=parallel, interactive=interactive,
                 progress=progress, devices=devices, backend=backend, say=say, policy=policy)
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
             say: Callable[[str], None] | None, policy: PlanPolicy | None = None) -> ResolvedModel:
    spec = (spec or "auto").strip()
    if spec == "embedded" and not interactive:
        return _embedded(instances)
    from localswarm.models.hf_names import parse_hf_name

    hf = None if spec.endswith(".gguf") or interactive else parse_hf_name(spec)
    if hf is not None:
        return _from_hub(hf, instances=instances, ctx=ctx, parallel=parallel, devices=devices,
                         progress=progress, say=say)
    if spec.endswith(".gguf") or "/" in spec or Path(spec).exists():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"model file not found: {path}")
        r = _explicit_file(path.absolute(), instances=instances, ctx=ctx, parallel=parallel, devices=devices)
        for note in r.notes if say else ():
            say(note)
        return r
    p = make_plan(spec, instances=instances, ctx=ctx, parallel=parallel, interactive=interactive, devices=devices,
                  policy=policy, calibrate=True, say=say)
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
        return _fallback(p, exc, instances=instances, ctx=ctx, parallel=parallel, devices=devices, notes=notes,
                         policy=policy)
    notes.append(f"model: {p.model_id} {'cached' if cached else 'downloaded'} ({path})")
    return _from_plan(p, path, list(notes))


def _from_hub(hf: Any, *, instances: int | None, ctx: int, parallel: int, devices: list[str] | None,
              progress: bool, say: Callable[[str], None] | None) -> ResolvedModel:
    """A Hugging Face name: its file chosen, its memory planned from the GGUF header (read with
    Range requests) before the download, then downloaded, verified and planned like a file."""
    import tempfile

    from localswarm.hardware import detect
    from localswarm.models.download import download_model
    from localswarm.models.hf_names import inspect_remote
    from localswarm.models.planner import PlanError, plan
    from localswarm.models.registry import load_registry

    registry = load_registry()
    devs = [int(d) if d.isdigit() else d for d in devices] if devices else None
    notes = _Notes(say)
    with tempfile.TemporaryDirectory(prefix="localswarm-header-") as tmp:
        try:
            remote = inspect_remote(hf, workdir=Path(tmp))
        except DownloadError as exc:  # offline, or the Hub unreachable: a downloaded copy will do
            from localswarm.models.local import find

            cached = find(str(hf))
            if not cached:
                raise
            r = _explicit_file(Path(cached[0].path), instances=instances, ctx=ctx, parallel=parallel, devices=devices)
            r.model_id = cached[0].name.lower()
            r.notes = [f"{hf}: the Hub cannot be reached ({exc}); using the downloaded {cached[0].path}", *r.notes]
            for note in r.notes if say else ():
                say(note)
            return r
        try:
            p = plan(detect(), registry, model=registry.embedded().id, instances=instances, ctx=ctx,
                     parallel=parallel, devices=devs, locate=lambda ref: remote.header)
        except PlanError as exc:
            raise PlanError(f"{hf} ({remote.filename}): {exc}; not downloaded") from None
    notes.append(f"plan for {hf} ({remote.filename}, read from its GGUF header before the download): "
                 f"{p.instances} instance(s) of {p.per_instance_memory / 2**30:.1f} GiB on "
                 f"{', '.join(sorted(set(p.devices())))}")
    path = download_model(remote.repo, remote.filename, revision=remote.commit, progress=progress,
                          announce=_stderr if progress else None)
    r = _explicit_file(path.absolute(), instances=instances or p.instances, ctx=ctx, parallel=parallel,
                       devices=devices)
    r.model_id = remote.model_id
    r.notes = [*notes, *r.notes, f"model: {remote.repo}/{remote.filename} ({path})"]
    for note in r.notes[len(notes):] if say else ():
        say(note)
    return r


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
                         gpu_layers="999" if on_gpu else "0", devices=devices, notes=notes, plan=p,
                         ctx_size=p.ctx, parallel=p.parallel)


def _fallback(planned: Any, exc: Exception, *, instances: int | None, ctx: int, parallel: int,
              devices: list[str] | None, notes: list[str], policy: PlanPolicy | None = None) -> ResolvedModel:
    """Planned model unavailable: the best cached model that fits, else the embedded one."""
    notes.append(f"{planned.model_id} is not cached and cannot be downloaded: {exc}")
    p = make_plan("auto", instances=instances, ctx=ctx, parallel=parallel, devices=devices, offline=True,
                  policy=policy)
    if p.embedded:
        notes.append("no cached registry model fits this machine: falling back to the embedded model "
                     f"({p.model_id})")
        return _from_plan(p, embedded_model_path(), list(notes))
    path = locate_cached(_ref(p.model_id))
    assert path is not None  # offline planning only picks cached models
    notes.append(f"falling back to {p.model_id}, the best cached model that fits this machine ({path})")
    return _from_plan(p, path, list(notes))
