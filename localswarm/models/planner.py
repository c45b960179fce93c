"""The planner: which model, quantization and how many instances fit this machine.

Per-instance memory = weights + KV cache + compute buffer + overhead (see
:func:`estimate_memory`). N instances on one device (:meth:`MemoryEstimate.for_instances`):
where the backend maps the GGUF into host memory (CPU, Apple's unified memory, phones) the
weights are one set of page-cache pages shared by every instance, counted once, as are the
binary's and libraries' code pages; on a discrete GPU each process uploads its own copy.

Candidates are tried best first: family priority (Qwen3-Coder, Qwen2.5-Coder,
DeepSeek-Coder, CodeLlama), then the larger size, then the higher quantization; the first
that fits at least :data:`MIN_INSTANCES` times (and meets the time target) wins, with as
many instances as fit up to :data:`MAX_INSTANCES`. The embedded SmolLM2 is the fallback.
The fill (:func:`_fill`) then grows the context and slots into the memory left free;
phones follow the seed's rules (:func:`mobile_allows`, :data:`MOBILE_CTX`).

``python -m localswarm.models.planner --table`` prints the decisions for the reference
machines of ``docs/planner.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelNotFound, PlanError
from ..hardware.budget import BudgetRules, DeviceBudget, MemoryBudget, budget
from ..hardware.types import HardwareProfile, MachineKind
from .gguf_meta import GGUFMeta, read_gguf_meta
from .registry import ModelRef, Registry, embedded_model_path, load_registry
from .speed import (
    DEFAULT_LATENCY_TARGET,
    REFERENCE_FOLLOW_UP_TOKENS,
    DeviceSpeed,
    SpeedEstimate,
    cost_from_meta,
    cost_from_ref,
    device_speeds,
    estimate_speed,
)

MiB = 1024**2
GiB = 1024**3

MIN_INSTANCES = 2  # a vote needs two answers
MAX_INSTANCES = 8
MAX_EXPLICIT_INSTANCES = 64
DEFAULT_CTX = 8192
DEFAULT_PARALLEL = 1
N_UBATCH = 512  # llama-server's default physical batch
KV_PAD = 256  # llama.cpp pads the KV cache to a multiple of this many cells

#: Bytes per KV element by cache type (``-ctk/-ctv``).
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

# Calibrated with bench/memory_estimate.py against the RSS and PSS of real llama-servers
# (CPU): process baseline (binary, libraries, HTTP server, threads) and the vocabulary
# tables llama.cpp keeps per token (strings, scores, maps). Of the baseline, the code pages
# of the binary and its libraries (SHARED_CODE) are shared by every instance on a host:
# (summed RSS - summed PSS) / 2 - weights was 18.8 MiB for 3 instances of either GGUF.
CPU_BASE_OVERHEAD = 40 * MiB
SHARED_CODE = 18 * MiB
BYTES_PER_VOCAB_TOKEN = 160
# GPU processes also hold a driver context in device memory; not measured here (no GPU):
# ~300 MiB is what CUDA 12 reports per process on Ada cards in public llama.cpp logs.
GPU_CONTEXT_OVERHEAD = {"cuda": 300 * MiB, "rocm": 300 * MiB, "vulkan": 200 * MiB,
                        "sycl": 300 * MiB}

# Layers that use a sliding window, as llama.cpp sets them per architecture: every layer
# except each n-th one (n = the pattern).
SWA_PATTERN = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gemma3n": 5}

#: Backends whose instances read the weights from the mmapped GGUF in host memory, so the
#: page cache holds them once for every instance (Metal wraps the mapping without a copy).
SHARED_WEIGHT_BACKENDS = frozenset({"cpu", "metal"})

#: The seed's "more than 80% of available memory used": when the chosen model and vote
#: width leave more of the budget free, the context per slot grows (up to the model's
#: trained context), then the slots per instance (up to FILL_MAX_PARALLEL), never past
#: FILL_CEILING of any device (headroom for the estimate's error, within the budget).
FILL_TARGET = 0.80
FILL_CEILING = 0.90
FILL_MAX_PARALLEL = 8
CTX_STEP = 1024

#: The seed's rules for phones (Android/Termux, section 7.3): models of 1-3B parameters,
#: quantized to Q4 or lower, a 2048-token context; the budget (25% of RAM) is in
#: :mod:`localswarm.hardware.budget`.
MOBILE_PARAMS = (1.0e9, 3.5e9)  # "1-3B": Qwen2.5-Coder 3B has 3.09e9
MOBILE_MAX_QUANT_BITS = 4
MOBILE_CTX = 2048

Locator = Callable[[ModelRef], "Path | None"]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one instance needs, by part. ``source`` is ``gguf`` or ``registry``.

    ``shared`` is the part of ``weights + overhead`` that every further instance on the
    same host shares (mmapped weights, code pages): 0 on a discrete GPU.
    """

    weights: int
    kv_cache: int
    compute: int
    overhead: int
    source: str
    shared: int = 0

    @property
    def total(self) -> int:
        """All parts summed: one instance alone."""
        return self.weights + self.kv_cache + self.compute + self.overhead

    @property
    def per_extra_instance(self) -> int:
        """What each instance after the first adds on the same device."""
        return self.total - self.shared

    def for_instances(self, n: int) -> int:
        """Bytes ``n`` instances of this estimate take on one device (shared parts once)."""
        return 0 if n <= 0 else self.shared + n * self.per_extra_instance

    def instances_within(self, usable: int) -> int:
        """How many instances fit in ``usable`` bytes on one device."""
        if self.total <= 0 or usable < self.total:
            return 0
        return 1 + (usable - self.total) // max(self.per_extra_instance, 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping, with the total."""
        return {**asdict(self), "total": self.total,
                "per_extra_instance": self.per_extra_instance}


@dataclass(frozen=True)
class _Shape:
    architecture: str
    layers: int
    kv_heads: tuple[int, ...]
    key_length: int
    value_length: int
    embedding: int
    heads: int
    vocab: int
    sliding_window: int | None


def _shape_from_meta(meta: GGUFMeta) -> _Shape:
    return _Shape(meta.architecture, meta.block_count, meta.head_count_kv, meta.key_length,
                  meta.value_length, meta.embedding_length, meta.head_count, meta.vocab_size,
                  meta.sliding_window)


def _shape_from_ref(ref: ModelRef) -> _Shape:
    a = ref.variant.arch
    return _Shape(a.architecture, a.layers, (a.kv_heads,) * a.layers, a.key_length,
                  a.value_length, a.embedding, a.heads, a.vocab, a.sliding_window)


def _pad(n: int, to: int = KV_PAD) -> int:
    return -(-n // to) * to


def kv_cache_bytes(shape: _Shape, ctx_total: int, n_seq: int, kv_type: str = "f16") -> int:
    """KV-cache bytes for ``ctx_total`` cells, sliding-window layers capped like llama.cpp."""
    per_elem = KV_TYPE_BYTES[kv_type]
    cells_full = _pad(ctx_total)
    pattern = SWA_PATTERN.get(shape.architecture)
    total = 0.0
    for il, n_kv in enumerate(shape.kv_heads):
        cells = cells_full
        if shape.sliding_window and pattern and (il + 1) % pattern != 0:
            cells = min(cells_full, _pad(shape.sliding_window * n_seq + N_UBATCH))
        total += cells * n_kv * (shape.key_length + shape.value_length) * per_elem
    return int(total)


def compute_buffer_bytes(shape: _Shape, ctx_total: int, backend: str) -> int:
    """Scratch memory for one forward pass of ``N_UBATCH`` tokens.

    Both backends hold a batch of activations and the f16 attention mask
    (``ctx_total x N_UBATCH``). On a GPU the whole reserved graph buffer is committed and
    we count full-batch logits; on the CPU only written pages count (RSS) and llama-server
    asks for one row of logits per sequence.
    """
    mask = 2 * N_UBATCH * ctx_total
    if backend == "cpu":
        return int(4 * N_UBATCH * (shape.embedding * 6 + shape.heads * 64)
                   + 8 * shape.vocab + mask)
    return int(4 * N_UBATCH * (shape.vocab + shape.embedding * 4) + mask)


def overhead_bytes(shape: _Shape, backend: str) -> int:
    """Process baseline, vocabulary tables and (GPU) driver context."""
    return CPU_BASE_OVERHEAD + shape.vocab * BYTES_PER_VOCAB_TOKEN + GPU_CONTEXT_OVERHEAD.get(
        backend, 0)


def estimate_memory(
    ref: ModelRef | None = None,
    *,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    backend: str = "cpu",
    kv_type: str = "f16",
    meta: GGUFMeta | None = None,
) -> MemoryEstimate:
    """Per-instance memory for ``ctx`` tokens per slot and ``parallel`` slots.

    Uses the GGUF header when ``meta`` is given (a local file), else the registry entry.
    ``backend`` is ``cpu``, ``metal`` (unified memory, counted like a GPU buffer) or a GPU
    backend (``cuda``, ``rocm``, ``vulkan``, ``sycl``). ``shared`` says what further
    instances on the same host share (:func:`shares_weights`).
    """
    if meta is None and ref is None:
        raise TypeError("estimate_memory needs a ModelRef or GGUF metadata")
    if ctx <= 0 or parallel <= 0:
        raise PlanError(f"ctx and parallel must be positive (got ctx={ctx}, parallel={parallel})")
    if kv_type not in KV_TYPE_BYTES:
        raise PlanError(f"unknown KV cache type {kv_type!r} (known: {', '.join(KV_TYPE_BYTES)})")
    if meta is not None:
        shape, weights, source = _shape_from_meta(meta), meta.weights_bytes, "gguf"
    else:
        assert ref is not None
        shape, weights, source = _shape_from_ref(ref), ref.quant.size, "registry"
    ctx_total = ctx * parallel
    return MemoryEstimate(
        weights=weights,
        kv_cache=kv_cache_bytes(shape, ctx_total, parallel, kv_type),
        compute=compute_buffer_bytes(shape, ctx_total, backend),
        overhead=overhead_bytes(shape, backend),
        source=source,
        shared=weights + SHARED_CODE if shares_weights(backend) else 0,
    )


def shares_weights(backend: str) -> bool:
    """True where the instances on one host share one copy of the weights (mmap)."""
    return backend in SHARED_WEIGHT_BACKENDS


# --- plans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """How many instances run on one device and the memory they take there."""

    device: str
    instances: int
    memory: int
    usable: int
    gpu_index: int | None = None
    vendor: str | None = None
    backend: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """The planner's decision: what to run, how many times, where, and why.

    ``ctx`` is per slot; start llama-server with ``-c ctx_size -np parallel``.
    """

    model_id: str
    family: str
    size: str
    quant: str
    gguf_file: str
    hf_repo: str
    file_size: int
    license: str
    instances: int
    ctx: int
    parallel: int
    memory: MemoryEstimate
    placements: tuple[Placement, ...]
    budget: MemoryBudget
    reasons: tuple[str, ...]
    embedded: bool = False
    local_path: str | None = None
    speed: SpeedEstimate | None = None  # one instance on the slowest device, reference turn
    latency_target: float | None = None

    @property
    def ctx_size(self) -> int:
        """The ``-c`` value: context per slot times slots."""
        return self.ctx * self.parallel

    @property
    def per_instance_memory(self) -> int:
        """Estimated bytes per instance."""
        return self.memory.total

    @property
    def total_memory(self) -> int:
        """Estimated bytes for the whole swarm (weights once per host where shared)."""
        return sum(p.memory for p in self.placements)

    @property
    def used_fraction(self) -> float:
        """The part of the budget the swarm is planned to use."""
        return self.total_memory / self.budget.total if self.budget.total else 0.0

    def devices(self) -> list[str]:
        """The device of each instance, in start order (round-robin over placements)."""
        slots = [[p.device] * p.instances for p in self.placements]
        order: list[str] = []
        while any(slots):
            for s in slots:
                if s:
                    order.append(s.pop())
        return order

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "model_id": self.model_id, "family": self.family, "size": self.size,
            "quant": self.quant, "gguf_file": self.gguf_file, "hf_repo": self.hf_repo,
            "file_size": self.file_size, "license": self.license,
            "instances": self.instances, "ctx": self.ctx, "parallel": self.parallel,
            "ctx_size": self.ctx_size, "memory": self.memory.to_dict(),
            "per_instance_memory": self.per_instance_memory,
            "total_memory": self.total_memory,
            "placements": [p.to_dict() for p in self.placements],
            "budget": self.budget.to_dict(), "reasons": list(self.reasons),
            "embedded": self.embedded, "local_path": self.local_path,
            "speed": self.speed.to_dict() if self.speed else None,
            "latency_target": self.latency_target,
        }

    def summary(self) -> str:
        """One line: ``qwen2.5-coder:7b:q4_k_m x 3 (5.2 GiB each, 15.6 GiB of 21.6 GiB)``."""
        return (f"{self.model_id} x {self.instances} ({self.per_instance_memory / GiB:.1f} GiB "
                f"each, {self.total_memory / GiB:.1f} GiB of {self.budget.total / GiB:.1f} GiB)")


@dataclass(frozen=True)
class VariantFit:
    """One registry entry judged against the budget (``localswarm models``)."""

    model_id: str
    file: str
    file_size: int
    size_estimated: bool
    memory: MemoryEstimate
    max_instances: int
    fits: bool
    reason: str
    embedded: bool = False
    local: bool = False
    recommended: bool = False
    speed: SpeedEstimate | None = None  # reference turn with the wanted instances

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        d = asdict(self)
        d["memory"] = self.memory.to_dict()
        d["speed"] = self.speed.to_dict() if self.speed else None
        return d


def quant_bits(quant: str) -> int | None:
    """Nominal bits per weight of a llama.cpp quant name (``q4_k_m`` 4, ``iq3_xs`` 3,
    ``f16`` 16), ``None`` when unknown."""
    m = re.match(r"(?:i?q|bf|f)(\d+)", quant.lower())
    return int(m.group(1)) if m else None


def mobile_allows(ref: ModelRef) -> bool:
    """The seed's phone rule: 1-3B parameters at Q4 or lower."""
    bits = quant_bits(ref.quant.quant)
    low, high = MOBILE_PARAMS
    return low <= ref.variant.params <= high and bits is not None \
        and bits <= MOBILE_MAX_QUANT_BITS


def _device_backend(dev: DeviceBudget, kind: MachineKind) -> str:
    if kind is MachineKind.DISCRETE_GPU:
        return dev.backend_hint or "vulkan"
    if kind is MachineKind.APPLE_SILICON:
        return "metal"
    return "cpu"


def _default_locator(ref: ModelRef) -> Path | None:
    return embedded_model_path() if ref.embedded else None


@dataclass
class _Ctx:
    budget: MemoryBudget
    kind: MachineKind
    ctx: int
    parallel: int
    kv_type: str
    locate: Locator
    speeds: dict[str, DeviceSpeed] = field(default_factory=dict)
    _meta: dict[str, GGUFMeta | None] = field(default_factory=dict)

    def meta(self, ref: ModelRef) -> tuple[GGUFMeta | None, Path | None]:
        path = self.locate(ref)
        if path is None:
            return None, None
        key = str(path)
        if key not in self._meta:
            try:
                self._meta[key] = read_gguf_meta(path)
            except ModelNotFound:
                self._meta[key] = None
        return self._meta[key], path

    def estimates(self, ref: ModelRef) -> dict[str, MemoryEstimate]:
        meta, _ = self.meta(ref)
        out: dict[str, MemoryEstimate] = {}
        for dev in self.budget.devices:
            backend = _device_backend(dev, self.kind)
            out[dev.device] = estimate_memory(ref, ctx=self.ctx, parallel=self.parallel,
                                              backend=backend, kv_type=self.kv_type, meta=meta)
        return out

    def speed(self, ref: ModelRef, placements: Sequence[Placement]) -> SpeedEstimate | None:
        """The reference turn on the slowest placement (its instances share the device)."""
        if not self.speeds:
            return None
        meta, _ = self.meta(ref)
        active = (ref.variant.active_params or ref.variant.params) / ref.variant.params
        cost = cost_from_meta(meta, active_fraction=active) if meta and meta.params \
            else cost_from_ref(ref)
        worst: SpeedEstimate | None = None
        for pl in placements:
            dev = self.speeds.get(pl.device) or self.speeds["cpu"]
            e = estimate_speed(cost, dev, sharing=pl.instances)
            if worst is None or e.seconds > worst.seconds:
                worst = e
        return worst

    def capacity(self, est: dict[str, MemoryEstimate]) -> dict[str, int]:
        return {d.device: est[d.device].instances_within(d.usable) for d in self.budget.devices}


def _place(ctx: _Ctx, est: dict[str, MemoryEstimate], caps: dict[str, int],
           n: int) -> tuple[Placement, ...]:
    """Spread ``n`` instances over devices, one at a time to the emptiest device."""
    counts = {d.device: 0 for d in ctx.budget.devices}
    for _ in range(n):
        free = [d for d in ctx.budget.devices if counts[d.device] < caps[d.device]]
        best = min(free, key=lambda d: (est[d.device].for_instances(counts[d.device])
                                        / max(d.usable, 1), -d.usable))
        counts[best.device] += 1
    return tuple(
        Placement(device=d.device, instances=counts[d.device],
                  memory=est[d.device].for_instances(counts[d.device]), usable=d.usable,
                  gpu_index=d.gpu_index, vendor=d.vendor, backend=_device_backend(d, ctx.kind))
        for d in ctx.budget.devices if counts[d.device]
    )


def _restrict(b: MemoryBudget, devices: Sequence[str | int] | None) -> MemoryBudget:
    if not devices:
        return b
    wanted = {str(d) if not str(d).isdigit() else f"gpu{d}" for d in devices}
    kept = tuple(d for d in b.devices if d.device in wanted or (d.gpu_index is not None and
                                                                str(d.gpu_index) in wanted))
    if not kept:
        have = ", ".join(d.device for d in b.devices)
        raise PlanError(f"no such device {sorted(wanted)} (devices: {have})")
    return MemoryBudget(kind=b.kind, devices=kept, rule=b.rule, notes=b.notes)


def _fmt(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def _model_context(c: _Ctx, ref: ModelRef) -> int:
    meta, _ = c.meta(ref)
    return (meta.context_length if meta is not None else 0) or ref.variant.arch.context


def _fill(c: _Ctx, ref: ModelRef, n: int, est: dict[str, MemoryEstimate],
          caps: dict[str, int], reasons: list[str]
          ) -> tuple[_Ctx, dict[str, MemoryEstimate], dict[str, int]]:
    """Grow the context per slot, then the slots, while the budget is under
    :data:`FILL_TARGET` used and every device stays within :data:`FILL_CEILING`.

    Neither changes the reference turn's time (same prompt, same instances per device),
    so the time budget that chose the model and the vote width still holds.
    """
    def total(e: dict[str, MemoryEstimate], k: dict[str, int]) -> int:
        return sum(p.memory for p in _place(c, e, k, n))

    budget_total = c.budget.total
    if not budget_total or total(est, caps) >= FILL_TARGET * budget_total:
        return c, est, caps

    def attempt(ctx: int, parallel: int) -> tuple[_Ctx, dict[str, MemoryEstimate],
                                                  dict[str, int]] | None:
        c2 = dataclasses.replace(c, ctx=ctx, parallel=parallel)
        e2 = c2.estimates(ref)
        ceiling = {d.device: e2[d.device].instances_within(int(d.usable * FILL_CEILING))
                   for d in c.budget.devices}
        return (c2, e2, ceiling) if sum(ceiling.values()) >= n else None  # placed within it

    best = (c, est, caps)
    limit = _model_context(c, ref)
    if c.kind is MachineKind.MOBILE:
        limit = min(limit, c.ctx)  # a phone's context stays at the seed's 2048: slots only
    steps = [k * CTX_STEP for k in range(c.ctx // CTX_STEP + 1, limit // CTX_STEP + 1)]
    lo, hi = 0, len(steps)  # the largest step that fits (memory grows with the context)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = attempt(steps[mid - 1], c.parallel)
        if got is None:
            hi = mid - 1
        else:
            lo, best = mid, got
    grown_ctx = best[0].ctx
    slots = c.parallel
    while (best[0].ctx >= limit and slots < FILL_MAX_PARALLEL
           and total(best[1], best[2]) < FILL_TARGET * budget_total):
        got = attempt(best[0].ctx, slots + 1)
        if got is None:
            break
        best, slots = got, slots + 1
    if best[0] is not c:
        used = total(best[1], best[2]) / budget_total
        reasons.append(
            f"fill: context per slot {c.ctx} -> {grown_ctx}"
            + (" (the most allowed)" if grown_ctx >= limit else "")
            + (f", slots per instance {c.parallel} -> {slots}" if slots != c.parallel else "")
            + f": {used:.0%} of the budget used (the seed's target: over {FILL_TARGET:.0%}, "
              f"at most {FILL_CEILING:.0%} per device for the estimate's error)")
    return best


def _build(ctx: _Ctx, ref: ModelRef, n: int, est: dict[str, MemoryEstimate],
           caps: dict[str, int], reasons: list[str], target: float | None = None,
           fill: bool = False) -> Plan:
    if fill:
        ctx, est, caps = _fill(ctx, ref, n, est, caps, reasons)
    placements = _place(ctx, est, caps, n)
    speed = ctx.speed(ref, placements)
    first = est[placements[0].device]
    _, path = ctx.meta(ref)
    reasons.append(
        f"{ref.id}: {_fmt(first.total)} per instance (weights {_fmt(first.weights)}, "
        f"KV cache {_fmt(first.kv_cache)} for {ctx.ctx} tokens x {ctx.parallel} slot(s), "
        f"compute {_fmt(first.compute)}, overhead {_fmt(first.overhead)}; from {first.source})"
    )
    if first.shared and n > 1:
        reasons.append(f"weights mmapped: {_fmt(first.shared)} shared by the instances on "
                       f"{'/'.join(p.device for p in placements)}, each further instance "
                       f"adds {_fmt(first.per_extra_instance)}")
    reasons.append("placement: " + ", ".join(
        f"{p.instances} on {p.device} ({_fmt(p.memory)} of {_fmt(p.usable)})" for p in placements))
    if speed is not None:
        reasons.append(f"expected reference turn ({speed.prompt_tokens} prompt + "
                       f"{speed.output_tokens} output tokens): {speed.seconds:.0f} s per instance "
                       f"(prefill {speed.prefill_tps:.0f} tok/s, decode {speed.decode_tps:.1f} "
                       f"tok/s with {speed.sharing} sharing a device; {speed.source})")
        reasons.append(f"a later turn of the conversation, its first turn in the prompt cache "
                       f"({REFERENCE_FOLLOW_UP_TOKENS} new prompt + {speed.output_tokens} output "
                       f"tokens): {speed.later_turn_seconds:.0f} s")
    return Plan(
        model_id=ref.id, family=ref.family.id, size=ref.variant.size, quant=ref.quant.quant,
        gguf_file=ref.file, hf_repo=ref.hf_repo, file_size=ref.quant.size,
        license=ref.variant.license, instances=n, ctx=ctx.ctx, parallel=ctx.parallel,
        memory=first, placements=placements, budget=ctx.budget, reasons=tuple(reasons),
        embedded=ref.embedded, local_path=str(path) if path else None,
        speed=speed, latency_target=target,
    )


def plan(
    profile: HardwareProfile,
    registry: Registry | None = None,
    *,
    model: str | None = None,
    instances: int | None = None,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    kv_type: str = "f16",
    rules: BudgetRules | None = None,
    devices: Sequence[str | int] | None = None,
    offline: bool = False,
    locate: Locator | None = None,
    speeds: dict[str, DeviceSpeed] | None = None,
    latency_target: float | None = DEFAULT_LATENCY_TARGET,
    fill: bool = True,
) -> Plan:
    """Choose the swarm for ``profile``.

    Time is part of "best": the first candidate (priority order) whose estimated reference
    turn (:mod:`localswarm.models.speed`) stays within ``latency_target`` seconds wins,
    with the most instances that still meet it; when none does, the fastest registry model
    that fits twice, said so with its expected time. ``speeds`` are the device rates
    (a calibration); by default published specs or a conservative CPU default.
    ``latency_target=None`` restores the memory-only choice.

    ``model`` (``family:size:quant``) and ``instances`` override the choice and are checked
    against memory (:class:`PlanError` when they do not fit). ``devices`` restricts GPUs
    (``[0, 1]`` or ``["gpu1"]``). ``offline`` only considers models ``locate`` finds on
    disk (the embedded model is always found). ``locate(ref)`` returns a local GGUF path or
    ``None``; with a path the estimate uses its GGUF header.

    ``fill`` then grows the context per slot and the slots into the memory the choice left
    free (:func:`_fill`, the seed's "more than 80% used"). On a phone the seed's rules apply
    instead: 1-3B models at Q4 or lower (:func:`mobile_allows`), ``ctx`` at most
    :data:`MOBILE_CTX` (the fill adds slots only).
    """
    registry = registry or load_registry()
    mobile = profile.kind is MachineKind.MOBILE
    mobile_notes: list[str] = []
    if mobile:
        if ctx > MOBILE_CTX:
            mobile_notes.append(f"phone: context {MOBILE_CTX} per slot (the seed's mobile rule; "
                                f"{ctx} asked)")
            ctx = MOBILE_CTX
    if instances is not None and not 1 <= instances <= MAX_EXPLICIT_INSTANCES:
        raise PlanError(f"--instances must be between 1 and {MAX_EXPLICIT_INSTANCES}, got {instances}")
    b = _restrict(budget(profile, rules), devices)
    c = _Ctx(budget=b, kind=profile.kind, ctx=ctx, parallel=parallel, kv_type=kv_type,
             locate=locate or _default_locator,
             speeds=speeds if speeds is not None else device_speeds(profile))
    target = latency_target
    reasons = [f"machine: {profile.kind.value}; budget {_fmt(b.total)} ({b.rule})", *b.notes]
    reasons.extend(mobile_notes)

    if model is not None:
        ref = registry.resolve(model)
        est = c.estimates(ref)
        caps = c.capacity(est)
        fit = sum(caps.values())
        want = instances if instances is not None else min(max(fit, 0), MAX_INSTANCES)
        if offline and not ref.embedded and c.meta(ref)[1] is None:
            raise PlanError(f"{ref.id} is not downloaded and we are offline")
        if fit < max(want, 1):
            worst = max(e.total for e in est.values())
            raise PlanError(
                f"{ref.id} does not fit {max(want, 1)} time(s): needs {_fmt(worst)} per instance, "
                f"budget allows {fit} ({_fmt(b.total)} {b.rule})"
            )
        reasons.append(f"model {ref.id} requested explicitly")
        if instances is not None:
            reasons.append(f"{instances} instance(s) requested explicitly")
        elif target is not None and want > MIN_INSTANCES:
            # the same vote width `auto` would give this model: as many as meet the target
            for w in range(want, MIN_INSTANCES - 1, -1):
                sp = c.speed(ref, _place(c, est, caps, w))
                if sp is None or sp.seconds <= target or w == MIN_INSTANCES:
                    break
            if w < want:
                reasons.append(f"{w} instance(s) instead of the {want} that fit: more would "
                               f"exceed the {target:.0f} s target")
            want = w
        if want < MIN_INSTANCES:
            reasons.append("warning: a single instance means no vote")
        return _build(c, ref, want, est, caps, reasons, target, fill)

    need = instances if instances is not None else MIN_INSTANCES
    skipped: list[str] = []
    too_slow: list[str] = []
    fastest: tuple[float, ModelRef, int, dict[str, MemoryEstimate], dict[str, int]] | None = None
    not_mobile = 0
    for ref in registry.refs(include_embedded=False):
        if offline and c.meta(ref)[1] is None:
            continue
        if mobile and not mobile_allows(ref):
            not_mobile += 1
            continue
        est = c.estimates(ref)
        caps = c.capacity(est)
        fit = sum(caps.values())
        if fit < need:
            if len(skipped) < 3:
                skipped.append(f"{ref.id} ({fit} fit)")
            continue
        n = instances if instances is not None else min(fit, MAX_INSTANCES)
        if target is not None:
            # the vote width is the third dial: fewer instances when time is short
            widths = [n] if instances is not None else list(range(n, need - 1, -1))
            ok = None
            for w in widths:
                sp = c.speed(ref, _place(c, est, caps, w))
                if sp is None or sp.seconds <= target:
                    ok = w
                    break
            if ok is None:
                slow = c.speed(ref, _place(c, est, caps, widths[-1]))
                assert slow is not None
                if len(too_slow) < 3:
                    too_slow.append(f"{ref.id} ~{slow.seconds:.0f} s")
                if fastest is None or slow.seconds < fastest[0]:
                    fastest = (slow.seconds, ref, widths[-1], est, caps)
                continue
            if ok < n:
                reasons.append(f"{ok} instance(s) instead of the {n} that fit: more would "
                               f"exceed the {target:.0f} s target")
            n = ok
        if too_slow:
            reasons.append(f"better candidates slower than the {target:.0f} s target: "
                           + ", ".join(too_slow) + (", ..." if len(too_slow) == 3 else ""))
        if skipped:
            reasons.append("better candidates that do not fit " + str(need) + " times: "
                           + ", ".join(skipped) + (", ..." if len(skipped) == 3 else ""))
        reasons.append(
            f"chosen: highest-priority family ({ref.family.name}), then the largest size, then "
            f"the highest quantization that fits {need}+ instances"
            + (f" (phone: only 1-3B models at Q4 or lower; {not_mobile} others not tried)"
               if mobile else "")
        )
        reasons.append(f"{n} instances: as many as fit" + (f", capped at {MAX_INSTANCES}"
                                                          if fit > MAX_INSTANCES else "")
                       if instances is None else f"{n} instance(s) requested explicitly")
        return _build(c, ref, n, est, caps, reasons, target, fill)

    if fastest is not None:
        seconds, ref, n, est, caps = fastest
        reasons.append(
            f"no model meets the {target:.0f} s target for the reference turn on this machine "
            f"(tried: {', '.join(too_slow)}{', ...' if len(too_slow) == 3 else ''}); choosing the "
            f"fastest registry model, {ref.id} x {n}: expect about {seconds:.0f} s")
        return _build(c, ref, n, est, caps, reasons, target, fill)

    ref = registry.embedded()
    est = c.estimates(ref)
    caps = c.capacity(est)
    fit = sum(caps.values())
    if mobile and not offline:
        smallest = min((r for r in registry.refs(include_embedded=False) if mobile_allows(r)),
                       key=lambda r: r.quant.size, default=None)
        why = "" if smallest is None else (
            f": the smallest, {smallest.id}, needs "
            f"{_fmt(next(iter(c.estimates(smallest).values())).for_instances(need))} for {need}")
        reasons.append(f"phone: no 1-3B model at Q4 or lower fits {need} instance(s) in "
                       f"{_fmt(b.total)} ({b.rule}){why}")
    reasons.append(
        "no registry model is available offline" if offline
        else f"no registry model fits {need} instance(s) in the budget"
    )
    reasons.append(f"falling back to the embedded {ref.family.name} ({ref.id})")
    n = instances if instances is not None else min(max(fit, 1), MAX_INSTANCES)
    if fit < n:
        if instances is not None:
            raise PlanError(f"even the embedded {ref.id} does not fit {instances} time(s) "
                            f"({fit} fit in {_fmt(b.total)})")
        reasons.append("warning: even one embedded instance exceeds the budget")
        caps = {d.device: max(caps[d.device], 1) for d in b.devices}
    return _build(c, ref, n, est, caps, reasons, target, fill)


def list_variants(
    profile: HardwareProfile,
    registry: Registry | None = None,
    *,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    instances: int = MIN_INSTANCES,
    kv_type: str = "f16",
    rules: BudgetRules | None = None,
    devices: Sequence[str | int] | None = None,
    locate: Locator | None = None,
    speeds: dict[str, DeviceSpeed] | None = None,
    latency_target: float | None = DEFAULT_LATENCY_TARGET,
) -> list[VariantFit]:
    """Every registry entry, best first, marked fits / does not fit with the reason,
    with the estimated reference turn for ``instances`` instances."""
    registry = registry or load_registry()
    b = _restrict(budget(profile, rules), devices)
    speeds = speeds if speeds is not None else device_speeds(profile)
    c = _Ctx(budget=b, kind=profile.kind, ctx=ctx, parallel=parallel, kv_type=kv_type,
             locate=locate or _default_locator, speeds=speeds)
    try:
        chosen = plan(profile, registry, ctx=ctx, parallel=parallel, kv_type=kv_type,
                      rules=rules, devices=devices, locate=locate, speeds=speeds,
                      latency_target=latency_target).model_id
    except PlanError:
        chosen = None
    out: list[VariantFit] = []
    for ref in registry.refs():
        est = c.estimates(ref)
        caps = c.capacity(est)
        fit = sum(caps.values())
        worst = max(e.total for e in est.values())
        if fit >= instances:
            reason = f"fits {min(fit, MAX_INSTANCES)}{'+' if fit > MAX_INSTANCES else ''} x {_fmt(worst)}"
        elif fit > 0:
            reason = f"only {fit} instance(s) of {_fmt(worst)} fit, {instances} wanted"
        else:
            reason = f"needs {_fmt(worst)} per instance, largest device offers " \
                     f"{_fmt(max(d.usable for d in b.devices))}"
        n = max(1, min(instances, fit)) if fit else instances
        spread = _place(c, est, {k: max(v, n) for k, v in caps.items()}, n)
        out.append(VariantFit(
            model_id=ref.id, file=ref.file, file_size=ref.quant.size,
            size_estimated=ref.quant.size_estimated, memory=next(iter(est.values())),
            max_instances=fit, fits=fit >= instances, reason=reason, embedded=ref.embedded,
            local=c.meta(ref)[1] is not None, recommended=ref.id == chosen,
            speed=c.speed(ref, spread),
        ))
    return out


# --- the docs table --------------------------------------------------------------------


def reference_table(registry: Registry | None = None, *, ctx: int = DEFAULT_CTX,
                    parallel: int = DEFAULT_PARALLEL) -> str:
    """Markdown table of the plan for each reference machine (``docs/planner.md``)."""
    from ..hardware.synthetic import reference_profiles

    registry = registry or load_registry()
    rows = [
        "| Machine | Budget | Model | Quant | Instances | Context x slots | Per instance "
        "| Total | Used | Placement | Bandwidth / compute (effective) | Decode tok/s "
        "| Reference turn |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, profile in reference_profiles().items():
        p = plan(profile, registry, ctx=ctx, parallel=parallel, locate=lambda _ref: None)
        model = f"{p.family}:{p.size}" + (" (embedded)" if p.embedded else "")
        where = ", ".join(f"{pl.instances}x {pl.device}" for pl in p.placements)
        dev = device_speeds(profile)[p.placements[0].device]
        sp = p.speed
        assert sp is not None
        slow = "" if sp.seconds <= (p.latency_target or float("inf")) else " (over target)"
        rows.append(
            f"| {name} | {p.budget.total / GiB:.1f} GiB ({p.budget.rule}) | {model} | {p.quant} "
            f"| {p.instances} | {p.ctx} x {p.parallel} | {p.per_instance_memory / GiB:.2f} GiB | "
            f"{p.total_memory / GiB:.2f} GiB | {p.used_fraction:.0%} | {where} | "
            f"{dev.bandwidth / 1e9:.0f} GB/s / "
            f"{dev.flops / 1e12:.2f} TFLOP/s | {sp.decode_tps:.0f} | {sp.seconds:.0f} s{slow} |"
        )
    return "\n".join(rows) + "\n"


TABLE_BEGIN = "<!-- planner-table:begin -->"
TABLE_END = "<!-- planner-table:end -->"


def replace_section(text: str, begin: str, end: str, body: str) -> str:
    """Replace what lies between two marker lines (append the section if absent)."""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return f"{head}{begin}\n{body}{end}{tail}"
    return f"{text.rstrip()}\n\n{begin}\n{body}{end}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m localswarm.models.planner --table [--write docs/planner.md]``."""
    ap = argparse.ArgumentParser(prog="python -m localswarm.models.planner")
    ap.add_argument("--table", action="store_true", help="print the reference-machine table")
    ap.add_argument("--write", type=Path, help="update the table section of this markdown file")
    ap.add_argument("--ctx", type=int, default=DEFAULT_CTX, help="context tokens per slot")
    args = ap.parse_args(argv)
    if not args.table:
        ap.print_help()
        return 2
    table = reference_table(ctx=args.ctx)
    if args.write:
        old = args.write.read_text(encoding="utf-8") if args.write.exists() else ""
        args.write.write_text(replace_section(old, TABLE_BEGIN, TABLE_END, table),
                              encoding="utf-8")
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
