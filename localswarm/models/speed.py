"""How fast a model answers on a device: the one home of the speed estimate.

- **decode** tokens/s = effective memory bandwidth / bytes read per generated token
  (the weights once, only the active experts of a MoE model, plus the KV cache so far);
- **prefill** tokens/s = effective compute / FLOPs per prompt token (2 x the parameters
  that act on every token, i.e. without the embedding lookup and the output head, which
  llama-server runs for the last prompt token only, plus attention over the context);
- N instances on one device share its cores or bandwidth: each runs at 1/N of the rate,
  unless a calibration measured two instances side by side (``pair_prefill``,
  ``pair_decode``: how many times slower each ran); that slowdown is extended linearly,
  ``1 + (pair - 1) x (N - 1)`` (a 2-core CPU splits into two 1-thread instances that each
  keep most of a 2-thread one's decode rate);
- on an x86-64 CPU, llama.cpp's matmul kernel prefills each weight type at its own rate:
  every tensor's FLOPs are divided by its type's rate relative to Q8_0 (:data:`CPU_KERNELS`,
  measured by ``bench/kernel_rates.py``), and decode counts weights (as Q8_0 bytes), not
  bytes, bounded by the memory's published bandwidth where known; a CPU's figures are then
  "Q8_0-kernel" FLOP/s and B/s. Decode also pays the threads' meeting at every tensor.

A device's effective figures come from a calibration run on this machine
(:mod:`localswarm.models.calibrate`), else, for a GPU, from the peaks its driver reports
(NVML, :mod:`localswarm.hardware.nvidia`) or published specs (reference machines and known
GPUs, see ``docs/planner.md`` for the sources) times an efficiency, else from a
conservative per-core default.

The reference request is opencode's first turn: :data:`REFERENCE_PROMPT_TOKENS` prompt
tokens (measured with SmolLM2's tokenizer on a headless ``opencode run`` turn: the title
request plus the agent request with its 10 tools) and :data:`REFERENCE_OUTPUT_TOKENS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from ..hardware.types import GPUInfo, HardwareProfile, MachineKind
from .gguf_meta import GGUFMeta
from .registry import ModelRef

REFERENCE_PROMPT_TOKENS = 2845
REFERENCE_OUTPUT_TOKENS = 256
#: A later turn of the same conversation: its new prompt tokens (a short message or a small
#: tool result) after the first turn, which the slot's prompt cache holds; the same output.
#: bench/prompt_cache.py measured opencode's second turn processing 39 of 2231 prompt tokens.
REFERENCE_FOLLOW_UP_TOKENS = 256
DEFAULT_LATENCY_TARGET = 30.0

# Fractions of a published peak that llama.cpp reaches: assumed from public llama.cpp
# benchmark threads, NOT measured here (this machine has no GPU); the bandwidth one also
# bounds a CPU's decode where its memory's published bandwidth is known.
GPU_BANDWIDTH_EFFICIENCY = 0.7
GPU_COMPUTE_EFFICIENCY = 0.35
# Without a calibration a CPU gets these per physical core (conservative: this project's
# 2-core VM calibrates to about twice as much).
CPU_DEFAULT_FLOPS_PER_CORE = 15e9
CPU_DEFAULT_BANDWIDTH_PER_CORE = 4e9
CPU_DEFAULT_BANDWIDTH_CAP = 40e9
# Decode attention on a CPU ran ~7x slower than prefill FLOP/s in this project's
# calibrations (SmolLM2, 2 cores: ~4.5 against ~34 GFLOP/s); the default assumes 6x.
CPU_DECODE_ATTENTION_RATIO = 1 / 6


def bytes_per_weight(ggml_type: str) -> float:
    """Bytes per weight of a ggml type (``q4_K``: 144 bytes per 256); 1 when unknown."""
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type.upper()]]
    except KeyError:
        return 1.0
    return size / block


@dataclass(frozen=True)
class KernelRates:
    """How llama.cpp's matmul kernels run each weight type on one kind of device: the
    ``prefill`` FLOP/s over a 512-token batch relative to Q8_0 (= 1; a type not listed runs
    at 1), and whether decode costs per weight (``decode_per_weight``: a CPU's dequantise-
    and-dot kernels, compute-bound here) rather than per byte read (GPUs, Metal)."""

    name: str
    rates: dict[str, float]
    decode_per_weight: bool = False

    def prefill(self, ggml_type: str) -> float:
        return self.rates.get(ggml_type, 1.0)

    def decode(self, ggml_type: str) -> float:
        """The factor a tensor's bytes are divided by: its bytes per weight over Q8_0's
        when decode costs per weight, else 1."""
        if not self.decode_per_weight:
            return 1.0
        return bytes_per_weight(ggml_type) / bytes_per_weight("q8_0")


#: One rate for every type, decode by bytes: GPUs, Apple's Metal and CPUs other than x86-64
#: (not measured here).
UNIFORM = KernelRates("uniform", {})
#: x86-64 CPUs: measured by ``bench/kernel_rates.py`` (llama.cpp's ``test-backend-ops perf``,
#: MUL_MAT 4096 x 14336, best of 3) on this project's 2-core AMD EPYC VM with AVX2,
#: 2026-12-01; the figures are in docs/planner.md. Prefill: Q4_1 (the embedded calibration
#: model's type) runs at half Q8_0's rate, Q4_K at 1.5x: a calibration with Q4_1 that
#: counted FLOPs alone would make every K-quant model look 2-3x slower to prefill than it
#: is. Decode: the quantized types' kernels read 12-17 G weights/s at 2 threads, whatever
#: their bits (Q8_0's 10 G, at 10.8 GB/s, was the one held by memory), and both real GGUFs
#: decoded 8.3-8.7 G weights/s on one thread: a CPU's decode counts weights, not bytes,
#: until memory bounds it (:attr:`DeviceSpeed.memory_bandwidth`).
CPU_KERNELS = KernelRates("x86_64-avx2 2026-12-01", {
    "f16": 1.53,
    "q8_0": 1.00,
    "q6_K": 1.39,
    "q5_K": 1.33,
    "q5_0": 0.73,
    "q4_K": 1.50,
    "q4_1": 0.53,
    "q4_0": 0.96,
}, decode_per_weight=True)
KERNELS = {k.name: k for k in (UNIFORM, CPU_KERNELS)}


def cpu_kernels(arch: str) -> KernelRates:
    """The kernel table for a CPU of this architecture."""
    return CPU_KERNELS if arch.lower() in ("x86_64", "amd64", "x64") else UNIFORM


# Layers with a sliding window, as llama.cpp sets them (mirrors planner.SWA_PATTERN).
_SWA_PATTERN = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gemma3n": 5}


@dataclass(frozen=True)
class DeviceSpeed:
    """Effective rates of one device: ``flops`` (FLOP/s for prefill), ``bandwidth`` (B/s)."""

    flops: float
    bandwidth: float
    source: str
    #: FLOP/s of attention while decoding (one query row against the whole KV cache: far
    #: less efficient than prefill's batched matmuls on a CPU); 0 means ``flops``
    decode_attention_flops: float = 0.0
    #: the :class:`KernelRates` (by name) the figures are relative to
    kernels: str = UNIFORM.name
    #: how many times slower each of two instances sharing the device runs than one alone,
    #: in prefill and in decode (2: an even split, the assumption until a calibration measures it)
    pair_prefill: float = 2.0
    pair_decode: float = 2.0
    #: seconds per decoded token per tensor of the model that the threads spend meeting at
    #: each node of the graph, measured as a 2-thread decode's excess over half a 1-thread
    #: one (7-10 us here: 15-25 % of a 135M model's decode at 2 threads, 1 % of a 7B's)
    decode_node_seconds: float = 0.0
    #: the memory's bandwidth (B/s), a bound on decode where the kernels count weights
    #: (:attr:`KernelRates.decode_per_weight`): a published figure times an efficiency; 0
    #: where none is known
    memory_bandwidth: float = 0.0

    def slowdown(self, instances: int, *, decode: bool) -> float:
        """How many times slower each of ``instances`` sharing this device runs than one alone."""
        pair = self.pair_decode if decode else self.pair_prefill
        return 1.0 + (pair - 1.0) * (max(instances, 1) - 1)

    @property
    def kernel_rates(self) -> KernelRates:
        """The per-type rates of this device's kernels (uniform when the name is unknown)."""
        return KERNELS.get(self.kernels, UNIFORM)

    @property
    def attention_rate(self) -> float:
        """The rate decode attention runs at."""
        return self.decode_attention_flops or self.flops

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class PublishedSpec:
    """Peak figures from a vendor/spec sheet: memory bandwidth (B/s), FP16 FLOP/s."""

    bandwidth: float
    fp16_flops: float
    cite: str


#: Published peaks by device name (substring match, longest first). FP16 is the non-tensor
#: rate where the vendor gives it (Ada GeForce: 1:1 with FP32), a conservative stand-in
#: for what llama.cpp's kernels use. Sources in docs/planner.md.
PUBLISHED: dict[str, PublishedSpec] = {
    "RTX 4060 Ti": PublishedSpec(288e9, 22.06e12, "NVIDIA RTX 4060 Ti spec page; TechPowerUp GPU database"),
    "RTX 4060": PublishedSpec(272e9, 15.11e12, "NVIDIA RTX 4060 spec page; TechPowerUp GPU database"),
    "RTX 4090": PublishedSpec(1008e9, 82.58e12, "NVIDIA Ada Lovelace architecture whitepaper (RTX 4090)"),
    "RTX 3090": PublishedSpec(936e9, 35.58e12, "NVIDIA Ampere GA102 whitepaper (RTX 3090)"),
    "RTX 3060": PublishedSpec(360e9, 12.74e12, "TechPowerUp GPU database (RTX 3060 12 GB)"),
    "H100": PublishedSpec(3350e9, 267.6e12, "NVIDIA H100 datasheet (SXM: 3.35 TB/s; FP16 non-tensor 4x FP32 67 TFLOPS)"),
    "Apple M1": PublishedSpec(68.25e9, 2.6e12, "Apple M1 press release (8-core GPU 2.6 TFLOPS); LPDDR4X-4266 x 128 bit"),
    "Apple M4 Pro": PublishedSpec(273e9, 7.53e12, "Apple M4 Pro press release (273 GB/s); 20-core GPU: 2560 ALUs x 2 x 1.47 GHz"),
    "SM8550": PublishedSpec(67.2e9, 0.0, "Qualcomm Snapdragon 8 Gen 2 spec (LPDDR5X-4200, 64 bit)"),
    "i7-1260P": PublishedSpec(83.2e9, 0.0, "Intel ARK i7-1260P (max memory bandwidth 83.2 GB/s)"),
}


def published(name: str) -> PublishedSpec | None:
    """The published spec whose key occurs in ``name`` (longest key wins)."""
    for key in sorted(PUBLISHED, key=len, reverse=True):
        if key.lower() in name.lower():
            return PUBLISHED[key]
    return None


def driver_spec(gpu: GPUInfo) -> PublishedSpec | None:
    """The peaks the driver reported (NVML: bus width x memory clock, cores x SM clock),
    filled in from the published table where the driver gave only one of them."""
    if not gpu.memory_bandwidth and not gpu.fp16_flops:
        return None
    table = published(gpu.name)
    bandwidth = gpu.memory_bandwidth or (table.bandwidth if table else 0.0)
    flops = gpu.fp16_flops or (table.fp16_flops if table else 0.0)
    return PublishedSpec(bandwidth, flops, f"{gpu.source or 'driver'}: {bandwidth / 1e9:.0f} GB/s, "
                                           f"{flops / 1e12:.1f} TFLOPS FP16 peak")


def cpu_default(profile: HardwareProfile) -> DeviceSpeed:
    """A conservative CPU figure from the core count (and published bandwidth if known)."""
    cores = profile.cpu.performance_cores or profile.cpu.physical_cores or 1
    spec = published(profile.cpu.model)
    bw = min(cores * CPU_DEFAULT_BANDWIDTH_PER_CORE, CPU_DEFAULT_BANDWIDTH_CAP)
    if spec is not None and spec.bandwidth:
        bw = min(bw, spec.bandwidth * 0.5)
    flops = cores * CPU_DEFAULT_FLOPS_PER_CORE
    return DeviceSpeed(flops=flops, bandwidth=bw,
                       source=f"default for {cores} CPU core(s), not calibrated",
                       decode_attention_flops=flops * CPU_DECODE_ATTENTION_RATIO,
                       kernels=cpu_kernels(profile.cpu.arch).name)


def device_speeds(profile: HardwareProfile, calibration: DeviceSpeed | None = None,
                  measured: dict[str, DeviceSpeed] | None = None) -> dict[str, DeviceSpeed]:
    """Effective rates per budget device name (``cpu``, ``unified``, ``gpu0``...).

    ``calibration`` (measured on this machine's CPU) replaces the CPU default; GPUs use
    the driver's or published peaks times an efficiency, falling back to the CPU figure
    when unknown; a device's own calibration in ``measured`` replaces that prior.
    """
    cpu = calibration or cpu_default(profile)
    memory = published(profile.cpu.model)
    if memory is not None and memory.bandwidth and cpu.kernel_rates.decode_per_weight:
        cpu = replace(cpu, memory_bandwidth=memory.bandwidth * GPU_BANDWIDTH_EFFICIENCY)
    out: dict[str, DeviceSpeed] = {"cpu": cpu}
    for gpu in profile.gpus:
        driver = driver_spec(gpu)
        spec = driver or published(gpu.name) or published(profile.cpu.model)
        name = "unified" if gpu.unified else f"gpu{gpu.index}"
        if profile.kind is MachineKind.MOBILE or spec is None or not spec.fp16_flops:
            # Phones run on the CPU cores (llama.cpp's OpenCL path is not assumed).
            bw = cpu.bandwidth
            if spec is not None and calibration is None:
                bw = min(max(bw, spec.bandwidth * 0.3), spec.bandwidth)
            out[name] = replace(cpu, bandwidth=bw, source=cpu.source + (
                f"; bandwidth from {spec.cite}" if spec is not None and calibration is None else ""))
            continue
        out[name] = DeviceSpeed(
            flops=spec.fp16_flops * GPU_COMPUTE_EFFICIENCY,
            bandwidth=spec.bandwidth * GPU_BANDWIDTH_EFFICIENCY,
            source=f"{'' if driver else 'published: '}{spec.cite} (x{GPU_COMPUTE_EFFICIENCY} compute, "
                   f"x{GPU_BANDWIDTH_EFFICIENCY} bandwidth)")
    for name, speed in (measured or {}).items():
        if name != "cpu" and name in out:
            out[name] = speed
    return out


# --- the model side --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCost:
    """What one token costs: bytes read in decode and FLOPs in prefill (per token), by
    weight type (``(("q4_K", x), ...)``; ``"q8_0"`` once weighed by a kernel table)."""

    decode_weights: tuple[tuple[str, float], ...]  # weight bytes read per generated token
    prefill_weights: tuple[tuple[str, float], ...]  # FLOPs (2 x parameters) per prompt token
    kv_bytes_per_cell: float  # KV cache bytes per context token (f16), all layers
    attn_dim: tuple[tuple[int, int | None], ...]  # per layer: (heads x head_dim, window)
    #: tensors in the model: a proxy for the graph's nodes, each a barrier for the threads
    tensors: int = 0

    @property
    def decode_weight_bytes(self) -> float:
        """Weight bytes read per generated token."""
        return sum(b for _, b in self.decode_weights)

    @property
    def dense_flops(self) -> float:
        """2 x the parameters applied to every prompt token."""
        return sum(f for _, f in self.prefill_weights)

    def on(self, kernels: KernelRates) -> ModelCost:
        """This cost in units of the kernels' reference type (Q8_0): each type's FLOPs and
        bytes over its rate (idempotent: the result is all reference type)."""
        if kernels is UNIFORM:
            return self
        return replace(
            self,
            decode_weights=(("q8_0", sum(b / kernels.decode(t) for t, b in self.decode_weights)),),
            prefill_weights=(("q8_0", sum(f / kernels.prefill(t) for t, f in self.prefill_weights)),))

    def attention_flops(self, pos: float) -> float:
        """Attention FLOPs (QK^T and AV) for one token at context position ``pos``."""
        return sum(4.0 * d * (min(pos, w) if w else pos) for d, w in self.attn_dim)

    def prefill_flops_per_token(self, prompt: int, start: int = 0) -> float:
        """Mean FLOPs per prompt token over positions ``start`` to ``prompt`` (from empty
        unless the cache held the first ``start``)."""
        samples = 16
        span = prompt - start
        attn = sum(self.attention_flops(start + (i + 0.5) * span / samples)
                   for i in range(samples)) / samples
        return self.dense_flops + attn

    def decode_bytes_per_token(self, pos: float) -> float:
        """Bytes read to generate one token at context position ``pos``."""
        return self.decode_weight_bytes + self.kv_bytes_per_cell * pos

    def decode_seconds_per_token(self, device: DeviceSpeed, pos: float) -> float:
        """Reading the weights and KV cache, plus attention over ``pos`` cells, plus the
        threads' synchronisation at every node of the graph."""
        weights = self.on(device.kernel_rates).decode_weight_bytes / device.bandwidth
        if device.memory_bandwidth:  # the kernels' rate, or the memory's, whichever is slower
            weights = max(weights, self.decode_weight_bytes / device.memory_bandwidth)
        return (weights + self.kv_bytes_per_cell * pos / device.bandwidth
                + self.attention_flops(pos) / device.attention_rate
                + self.tensors * device.decode_node_seconds)

    def prefill_seconds_per_token(self, device: DeviceSpeed, prompt: int, start: int = 0) -> float:
        """Mean seconds per prompt token over positions ``start`` to ``prompt``."""
        return self.on(device.kernel_rates).prefill_flops_per_token(prompt, start) / device.flops


def _attn(arch: str, layers: int, heads: int, head_dim: int, window: int | None,
          ) -> tuple[tuple[int, int | None], ...]:
    pattern = _SWA_PATTERN.get(arch)
    return tuple((heads * head_dim,
                  window if window and pattern and (il + 1) % pattern != 0 else None)
                 for il in range(layers))


#: The weight types of a registry quant, by share of the weights (llama.cpp's
#: ``llama_tensor_get_type``: ``*_K_M`` stores ``attn_v`` and ``ffn_down`` of about half the
#: layers in Q6_K, about 15 % of a 7B's weights).
QUANT_TYPES: dict[str, tuple[tuple[str, float], ...]] = {
    "q4_k_m": (("q4_K", 0.85), ("q6_K", 0.15)),
    "q4_k_s": (("q4_K", 1.0),),
    "q5_k_m": (("q5_K", 0.85), ("q6_K", 0.15)),
    "q5_k_s": (("q5_K", 1.0),),
    "q6_k": (("q6_K", 1.0),),
    "q8_0": (("q8_0", 1.0),),
    "q4_0": (("q4_0", 1.0),),
    "q4_1": (("q4_1", 1.0),),
    "q5_0": (("q5_0", 1.0),),
    "f16": (("f16", 1.0),),
    "fp16": (("f16", 1.0),),
    "bf16": (("f16", 1.0),),
}


#: Tensors per layer of a Llama-style block (two norms, q/k/v/o, gate/up/down), for a
#: registry model whose header is not at hand.
TENSORS_PER_LAYER = 9


def _split(quant: str, amount: float) -> tuple[tuple[str, float], ...]:
    mix = QUANT_TYPES.get(quant.lower(), (("", 1.0),))  # an unknown quant: one rate
    return tuple((t, amount * share) for t, share in mix)


def cost_from_ref(ref: ModelRef) -> ModelCost:
    """Per-token cost from the registry entry (parameters, file size, shape, quant)."""
    v, a = ref.variant, ref.variant.arch
    active = v.active_params or v.params
    embed = a.vocab * a.embedding
    # the token embedding is a row lookup; tied heads (small models) share it: count once
    non_embed = max(active - 2 * embed, active * 0.5) if v.params > 3e9 else max(
        active - embed, active * 0.5)
    byte_per_param = ref.quant.size / v.params
    decode_params = active - (embed if v.params > 3e9 else 0)
    return ModelCost(
        decode_weights=_split(ref.quant.quant, decode_params * byte_per_param),
        prefill_weights=_split(ref.quant.quant, 2.0 * non_embed),
        kv_bytes_per_cell=a.layers * a.kv_heads * (a.key_length + a.value_length) * 2.0,
        attn_dim=_attn(a.architecture, a.layers, a.heads, a.key_length, a.sliding_window),
        tensors=a.layers * TENSORS_PER_LAYER + 3,
    )


def _by_type(amounts: dict[str, float], types: dict[str, str]) -> tuple[tuple[str, float], ...]:
    out: dict[str, float] = {}
    for name, amount in amounts.items():
        t = types.get(name, "")
        out[t] = out.get(t, 0.0) + amount
    return tuple(sorted(out.items()))


def cost_from_meta(meta: GGUFMeta, *, active_fraction: float = 1.0) -> ModelCost:
    """Per-token cost from a local GGUF header (exact tensor sizes and types)."""
    t = meta.tensor_elements
    untied = "output.weight" in t
    # prefill: every weight but the embedding lookup and the output head (last token only)
    prefill = {n: 2.0 * el * active_fraction for n, el in t.items()
               if n not in ("token_embd.weight", "output.weight")}
    # decode reads every weight once, except an untied embedding (a row lookup)
    decode = {n: b * active_fraction for n, b in meta.tensor_bytes.items()
              if not (untied and n == "token_embd.weight")}
    return ModelCost(
        decode_weights=_by_type(decode, meta.tensor_types),
        prefill_weights=_by_type(prefill, meta.tensor_types),
        kv_bytes_per_cell=meta.kv_bytes_per_token_f16,
        attn_dim=_attn(meta.architecture, meta.block_count, meta.head_count, meta.key_length,
                       meta.sliding_window),
        tensors=meta.tensor_count,
    )


# --- the estimate ----------------------------------------------------------------------


@dataclass(frozen=True)
class SpeedEstimate:
    """Rates per instance with ``sharing`` instances on its device, and the reference turn."""

    prefill_tps: float
    decode_tps: float
    prompt_tokens: int
    output_tokens: int
    sharing: int
    source: str
    #: a later turn that finds the conversation in the prompt cache: only its
    #: :data:`REFERENCE_FOLLOW_UP_TOKENS` new prompt tokens are processed, deep in the context
    later_turn_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        """Time for the request: prefill then decode."""
        return self.prompt_tokens / self.prefill_tps + self.output_tokens / self.decode_tps

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping, with the total seconds."""
        return {**asdict(self), "seconds": round(self.seconds, 2)}


def estimate_speed(cost: ModelCost, device: DeviceSpeed, *, sharing: int = 1,
                   prompt_tokens: int = REFERENCE_PROMPT_TOKENS,
                   output_tokens: int = REFERENCE_OUTPUT_TOKENS) -> SpeedEstimate:
    """Prefill and decode tokens/s of one of ``sharing`` instances on ``device``."""
    share = max(sharing, 1)
    prefill = 1.0 / device.slowdown(share, decode=False) / cost.prefill_seconds_per_token(device, prompt_tokens)
    decode = 1.0 / device.slowdown(share, decode=True) / cost.decode_seconds_per_token(
        device, prompt_tokens + output_tokens / 2)
    held = prompt_tokens + output_tokens  # in the slot's cache when the next turn comes
    new = REFERENCE_FOLLOW_UP_TOKENS
    later = (new * device.slowdown(share, decode=False) * cost.prefill_seconds_per_token(device, held + new, held)
             + output_tokens * device.slowdown(share, decode=True)
             * cost.decode_seconds_per_token(device, held + new + output_tokens / 2))
    return SpeedEstimate(prefill_tps=prefill, decode_tps=decode, prompt_tokens=prompt_tokens,
                         output_tokens=output_tokens, sharing=share, source=device.source,
                         later_turn_seconds=later)


def device_from_measurement(cost: ModelCost, *, prompt_tokens: int, prefill_tps: float,
                            decode_pos: float, decode_tps: float, source: str, prefill_start: int = 0,
                            decode_pos2: float | None = None, decode_tps2: float | None = None,
                            kernels: KernelRates = UNIFORM, node_seconds: float = 0.0) -> DeviceSpeed:
    """Invert the estimate: the effective device rates a measured run implies, in units of
    the device's ``kernels`` (the measured model's tensors weighed by their types' rates).

    With decode measured at two context positions, bandwidth and decode-attention rate are
    both solved for (two equations ``t = bytes(pos)/bw + attention(pos)/rate``); with one,
    or when noise gives a non-physical solution, attention is assumed at the prefill rate.
    ``node_seconds`` (the threads' synchronisation per tensor, measured apart) is taken off
    each decode time first. The prefill ran over positions ``prefill_start`` to ``prompt_tokens``.
    """
    cost = cost.on(kernels)
    sync = cost.tensors * node_seconds
    flops = prefill_tps * cost.prefill_flops_per_token(prompt_tokens, prefill_start)
    t1 = 1.0 / decode_tps
    sync = min(sync, t1 / 2)  # never more than half of what was measured
    node = sync / cost.tensors if cost.tensors else 0.0
    t1 -= sync
    if decode_pos2 is not None and decode_tps2:
        b1, b2 = cost.decode_bytes_per_token(decode_pos), cost.decode_bytes_per_token(decode_pos2)
        a1, a2 = cost.attention_flops(decode_pos), cost.attention_flops(decode_pos2)
        t2 = 1.0 / decode_tps2 - sync
        det = b1 * a2 - b2 * a1
        if det:
            inv_bw = (t1 * a2 - t2 * a1) / det
            inv_rate = (b1 * t2 - b2 * t1) / det
            if inv_bw > 0 and inv_rate > 0:
                return DeviceSpeed(flops=flops, bandwidth=1 / inv_bw, source=source,
                                   decode_attention_flops=1 / inv_rate, kernels=kernels.name,
                                   decode_node_seconds=node)
    rest = t1 - cost.attention_flops(decode_pos) / flops
    bandwidth = cost.decode_bytes_per_token(decode_pos) / rest if rest > 0 else \
        cost.decode_bytes_per_token(decode_pos) / t1
    return DeviceSpeed(flops=flops, bandwidth=bandwidth, source=source, kernels=kernels.name,
                       decode_node_seconds=node)
