"""One launch contract for every route: from the resolved model to each instance's argv.

Whatever way the model was chosen (``--model auto``, ``family:size:quant``, ``--interactive``,
an explicit ``.gguf`` or MLX), :mod:`localswarm.provision` returns a :class:`ResolvedModel`
carrying the plan's placement, and this module alone turns it into processes:

- the binary: :func:`find_llama_server` (one resolution order for everyone);
- GPU offload: ``-ngl 999`` when the plan puts instances on a GPU, ``-ngl 0`` on the CPU
  (never llama-server's own ``auto``, which would offload what we budgeted for RAM);
- pinning: ``--split-mode none --main-gpu N`` for an instance placed on ``gpuN``;
- threads: the cores divided among instances (``-t``/``-tb``);
- slots and context: ``-np parallel``, ``-c ctx_size × parallel``, the plan's where it set
  them (:func:`planned_settings`: the fill into free memory, a phone's 2048), the context per
  slot capped at what the model was trained for (its GGUF header's ``<arch>.context_length``,
  :func:`slot_context`): llama-server would only warn and clamp it.

``docs/launch.md`` shows the resulting argv on the reference machines, and
``tests/process/test_launch_contract.py`` holds every route to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from localswarm.backends.base import Backend
from localswarm.backends.llama_server import LlamaServerBackend, find_llama_server
from localswarm.backends.mlx import MlxBackend

if TYPE_CHECKING:
    from localswarm.config import Settings
    from localswarm.provision import ResolvedModel


def slot_context(settings: Settings, model: ResolvedModel) -> tuple[int, str | None]:
    """The context per slot for ``model``: ``settings.ctx_size``, at most the model's trained
    context (GGUF ``<arch>.context_length``); and a one-line notice when it was capped.

    An unreadable header (or an MLX model) leaves ``ctx_size`` as set.
    """
    from localswarm.models.gguf_meta import GGUFFormatError, read_gguf_meta

    if model.backend == "mlx":
        return settings.ctx_size, None
    try:
        trained = read_gguf_meta(model.path).context_length
    except GGUFFormatError:
        return settings.ctx_size, None
    if trained <= 0 or settings.ctx_size <= trained:
        return settings.ctx_size, None
    return trained, (f"ctx_size {settings.ctx_size} is more than {model.model_id} was trained for: "
                     f"each slot gets its {trained} tokens (GGUF context_length)")


def fit_context(settings: Settings, model: ResolvedModel, say: Callable[[str], None] | None = None) -> Settings:
    """``settings`` with the context per slot :func:`slot_context` allows; ``say`` hears the notice."""
    ctx, notice = slot_context(settings, model)
    if notice is None:
        return settings
    if say is not None:
        say(notice)
    return settings.replace(ctx_size=ctx)


def planned_settings(settings: Settings, model: ResolvedModel) -> Settings:
    """``settings`` with the plan's context per slot and slots, where the plan set them: the
    planner grows them into memory the model left free, and holds a phone to 2048. The
    gateway (slots, queue) and the instances then agree with what was budgeted."""
    changes = {k: v for k in ("ctx_size", "parallel")
               if (v := getattr(model, k, None)) and v != getattr(settings, k)}
    return dataclasses.replace(settings, **changes) if changes else settings


def build_backend(settings: Settings, model: ResolvedModel) -> Backend:
    """The server every instance of ``model`` runs, with the plan's offload."""
    settings = planned_settings(settings, model)
    if model.backend == "mlx":
        return MlxBackend(model=model.mlx_repo or str(model.path), model_id=model.model_id)
    return LlamaServerBackend(
        binary=find_llama_server(settings.llama_server, allow_download=True),
        model_path=model.path,
        model_id=model.model_id,
        ctx_size=slot_context(settings, model)[0],
        parallel=settings.parallel,
        gpu_layers=model.gpu_layers,
        extra_args=tuple(settings.extra_args),
        embeddings=settings.embeddings,
        pooling=settings.pooling,
    )


def device_args(devices: list[str]) -> list[list[str]]:
    """Per-instance llama-server flags that pin an instance to one GPU (``gpuN``)."""
    out = []
    for dev in devices:
        if dev.startswith("gpu") and dev[3:].isdigit():
            out.append(["--split-mode", "none", "--main-gpu", dev[3:]])
        else:
            out.append([])
    return out


def instance_count(settings: Settings, model: ResolvedModel) -> int:
    return settings.instances or model.instances


def instance_argvs(settings: Settings, model: ResolvedModel, backend: Backend | None = None, *,
                   port: int = 0, api_key: str = "") -> list[list[str]]:
    """The argv each instance is started with (``port``/``api_key`` stand for the real ones).

    The supervisor builds the same thing: ``backend.launch_spec(...)`` plus the instance's
    pinning flags (:func:`device_args`), with ``threads_per_instance`` threads and seed 1000+i.
    """
    from localswarm.supervisor.supervisor import threads_per_instance

    backend = backend or build_backend(settings, model)
    n = instance_count(settings, model)
    per = threads_per_instance(n, settings.threads)
    pins = device_args(model.devices) if model.devices else []
    out = []
    for i in range(n):
        argv = backend.launch_spec(port=port, api_key=api_key, threads=per, seed=1000 + i).argv
        out.append([*argv, *(pins[i] if i < len(pins) else [])])
    return out
