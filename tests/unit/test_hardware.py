"""Hardware detection replays recorded tool output (tests/fixtures/hardware/README.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from localswarm.hardware import (
    GPUInfo,
    HardwareProfile,
    MachineKind,
    detect,
    format_table,
    to_json,
)
from localswarm.hardware.amd import detect_amd
from localswarm.hardware.android import detect_android, parse_getprop
from localswarm.hardware.apple import detect_apple
from localswarm.hardware.cpu import cpu_model_from_cpuinfo
from localswarm.hardware.intel import detect_intel
from localswarm.hardware.nvidia import detect_nvidia

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
EMPTY = FIX / "sysfs_cpu_only"
GiB = 1024**3


class Replay:
    """A Runner that answers known command lines from fixture files, None otherwise."""

    def __init__(self, outputs: dict[str, str | None]) -> None:
        self.outputs = outputs
        self.calls: list[str] = []

    def __call__(self, argv: Sequence[str]) -> str | None:
        cmd = " ".join(argv)
        self.calls.append(cmd)
        return self.outputs.get(cmd)


def fixture(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


def sysctl_runner(name: str) -> Replay:
    """``sysctl -n KEY`` answered from a ``key: value`` recording."""
    values = dict(line.split(": ", 1) for line in fixture(name).splitlines() if line)
    return Replay({f"sysctl -n {k}": v + "\n" for k, v in values.items()})


class FakeNVML:
    """Replays values recorded from pynvml calls (see the fixture README)."""

    class NVMLError(Exception):
        pass

    def __init__(self, recording: dict[str, Any], fail: set[str] | None = None) -> None:
        self.rec = recording
        self.fail = fail or set()
        self.shutdown_called = False

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise self.NVMLError(name)

    def nvmlInit(self) -> None:
        self._check("init")

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("driver")
        return self.rec["driver"]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.rec["devices"])

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.rec["devices"][h]["name"].encode()  # old pynvml returned bytes

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        self._check("memory")
        return SimpleNamespace(**self.rec["devices"][h]["memory"])

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        major, minor = self.rec["devices"][h]["cuda_compute_capability"]
        return major, minor


def test_nvidia_single_gpu_from_nvml() -> None:
    """One RTX 4090: name, VRAM, driver and compute capability come through NVML."""
    nvml = FakeNVML(json.loads(fixture("nvml_rtx4090.json")))
    [gpu] = detect_nvidia(nvml)
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.memory_total == 25757220864 and gpu.memory_free == 25248202752
    assert gpu.driver == "550.54.14" and gpu.compute_capability == "8.9"
    assert gpu.backend_hint == "cuda" and not gpu.unified and gpu.discrete
    assert nvml.shutdown_called


def test_nvidia_two_gpus_listed_in_order() -> None:
    """Every NVML device is listed with its own index and memory."""
    gpus = detect_nvidia(FakeNVML(json.loads(fixture("nvml_2gpu_3090_3060.json"))))
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3060"]
    assert [g.index for g in gpus] == [0, 1]
    assert [g.memory_total for g in gpus] == [24 * GiB, 12 * GiB]
    assert {g.compute_capability for g in gpus} == {"8.6"}


def test_nvidia_failures_mean_less_information(caplog: pytest.LogCaptureFixture) -> None:
    """No driver: empty list; a failing memory query: the GPU without memory. Never raises."""
    caplog.set_level(logging.DEBUG, logger="localswarm.hardware")
    rec = json.loads(fixture("nvml_rtx4090.json"))
    assert detect_nvidia(FakeNVML(rec, fail={"init"})) == []
    [gpu] = detect_nvidia(FakeNVML(rec, fail={"memory", "driver"}))
    assert gpu.memory_total is None and gpu.driver is None and gpu.compute_capability == "8.9"
    assert "NVML init failed" in caplog.text and "NVML memory 0" in caplog.text


def test_amd_from_amd_smi_static_json_two_gpus() -> None:
    """amd-smi static --json: market name, VRAM size in MB, driver version."""
    run = Replay({"amd-smi static --json": fixture("amd_smi_static_2gpu.json")})
    gpus = detect_amd(run, sysfs_root=EMPTY)
    assert [g.name for g in gpus] == ["AMD Radeon RX 7900 XTX", "AMD Radeon PRO W7800"]
    assert [g.memory_total for g in gpus] == [24560 * 1024**2, 32752 * 1024**2]
    assert all(g.driver == "6.8.5" and g.backend_hint == "rocm" and g.discrete for g in gpus)
    assert [g.index for g in gpus] == [0, 1]


def test_amd_smi_newer_gpu_data_wrapper() -> None:
    """Newer amd-smi wraps the list in {"gpu_data": [...]}; both shapes parse."""
    data = {"gpu_data": json.loads(fixture("amd_smi_static_2gpu.json"))[:1]}
    [gpu] = detect_amd(Replay({"amd-smi static --json": json.dumps(data)}), sysfs_root=EMPTY)
    assert gpu.name == "AMD Radeon RX 7900 XTX" and gpu.memory_total == 24560 * 1024**2


def test_amd_falls_back_to_rocm_smi_json() -> None:
    """Without amd-smi, rocm-smi's JSON gives series name, total and used VRAM, driver."""
    cmd = "rocm-smi --showproductname --showmeminfo vram --showdriverversion --json"
    run = Replay({cmd: "WARNING: AMD GPU device(s) is/are in a low-power state\n"
                  + fixture("rocm_smi_rx7900xtx.json")})
    [gpu] = detect_amd(run, sysfs_root=EMPTY)
    assert gpu.name == "Navi31 [Radeon RX 7900 XTX]"
    assert gpu.memory_total == 25753026560
    assert gpu.memory_free == 25753026560 - 1073741824
    assert gpu.driver == "6.7.0" and gpu.source == "rocm-smi"


def test_amd_sysfs_only() -> None:
    """No AMD tools: sysfs mem_info_vram_* of the 0x1002 card; Intel card and connector skipped."""
    [gpu] = detect_amd(Replay({}), sysfs_root=FIX / "sysfs_amd")
    assert gpu.memory_total == 17163091968 and gpu.memory_free == 17163091968 - 612368384
    assert gpu.name == "AMD GPU [0x73bf]" and gpu.source == "sysfs"
    assert gpu.backend_hint == "vulkan" and gpu.discrete


def test_amd_garbage_output_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """Non-JSON tool output falls through to the next source with a debug line."""
    caplog.set_level(logging.DEBUG, logger="localswarm.hardware")
    run = Replay({"amd-smi static --json": "Segmentation fault", "rocm-smi --showproductname "
                  "--showmeminfo vram --showdriverversion --json": "[]"})
    assert detect_amd(run, sysfs_root=EMPTY) == []
    assert "amd-smi output is not JSON" in caplog.text


def test_intel_from_xpu_smi() -> None:
    """xpu-smi discovery lists devices; discovery -d N adds physical memory and driver."""
    run = Replay({
        "xpu-smi discovery -j": fixture("xpu_smi_discovery.json"),
        "xpu-smi discovery -d 0 -j": fixture("xpu_smi_discovery_d0.json"),
    })
    [gpu] = detect_intel(run, sysfs_root=EMPTY)
    assert gpu.name == "Intel(R) Arc(TM) A770 Graphics"
    assert gpu.memory_total == 17079205888 and gpu.discrete
    assert gpu.driver == "I915_24.1.13_PSB_240315.5" and gpu.backend_hint == "sycl"


def test_intel_from_sycl_ls_and_sysfs() -> None:
    """No xpu-smi: the level-zero GPU line of sycl-ls names it, sysfs lmem gives its VRAM."""
    run = Replay({"sycl-ls": fixture("sycl_ls.txt")})
    [gpu] = detect_intel(run, sysfs_root=FIX / "sysfs_intel_arc")
    assert gpu.name == "Intel(R) Arc(TM) A770 Graphics"
    assert gpu.driver == "1.3.29138" and gpu.memory_total == 17079205888


def test_intel_integrated_gpu_is_unified() -> None:
    """An Intel iGPU (vendor 0x8086, no local memory) is not a discrete GPU."""
    [gpu] = detect_intel(Replay({}), sysfs_root=FIX / "sysfs_amd")
    assert gpu.unified and gpu.memory_total is None and not gpu.discrete


@pytest.mark.parametrize(
    ("recording", "chip", "mem", "perf", "cores"),
    [("sysctl_m1_8gb.txt", "Apple M1", 8 * GiB, 4, 8),
     ("sysctl_m4pro_48gb.txt", "Apple M4 Pro", 48 * GiB, 10, 14)],
)
def test_apple_silicon_from_sysctl(recording: str, chip: str, mem: int, perf: int,
                                   cores: int) -> None:
    """sysctl gives the chip, unified memory and performance cores."""
    cpu, gpu, memsize = detect_apple(sysctl_runner(recording))
    assert cpu is not None and gpu is not None
    assert cpu.model == chip and cpu.performance_cores == perf and cpu.physical_cores == cores
    assert memsize == mem and gpu.memory_total == mem and gpu.unified
    assert gpu.backend_hint == "metal"


def test_detect_apple_m4_profile_and_kind() -> None:
    """On darwin/arm64 the whole profile comes from sysctl; the kind is apple-silicon."""
    p = detect(run=sysctl_runner("sysctl_m4pro_48gb.txt"), sysfs_root=EMPTY, system="Darwin",
               machine="arm64", env={}, memory=(1, 1), nvml=FakeNVML({}, fail={"init"}))
    assert p.kind is MachineKind.APPLE_SILICON and p.os == "darwin"
    assert p.ram_total == 48 * GiB and p.cpu.model == "Apple M4 Pro"
    assert [g.vendor for g in p.gpus] == ["apple"]


def test_termux_android_adreno() -> None:
    """Termux: getprop names device and SoC, kgsl names the Adreno GPU; mobile kind."""
    env = {"TERMUX_VERSION": "0.118.1", "PREFIX": "/data/data/com.termux/files/usr"}
    run = Replay({"getprop": fixture("termux_getprop.txt")})
    p = detect(run=run, sysfs_root=FIX / "sysfs_termux", system="Linux", machine="aarch64",
               env=env, memory=(7_650_000_000, 2_000_000_000),
               nvml=FakeNVML({}, fail={"init"}))
    assert p.mobile and p.kind is MachineKind.MOBILE and p.os == "android"
    assert p.os_release == "14" and p.cpu.model == "SM8550"
    [gpu] = p.gpus
    assert gpu.name == "Adreno 740v2" and gpu.vendor == "qualcomm" and gpu.unified
    assert gpu.memory_total == 7_650_000_000
    assert "device: samsung SM-S911B" in p.notes
    assert "nvidia" not in " ".join(run.calls)  # no desktop probes on a phone


def test_android_without_kgsl_uses_soc_props() -> None:
    """SELinux often hides kgsl; a Qualcomm SoC from getprop still yields an Adreno entry."""
    info, [gpu] = detect_android(Replay({"getprop": fixture("termux_getprop.txt")}),
                                 sysfs_root=EMPTY, ram_total=8 * GiB)
    assert gpu.name == "Adreno (SM8550)" and info["soc"] == "SM8550"
    assert parse_getprop("garbage\n[a]: [b]") == {"a": "b"}


def test_cpu_only_machine() -> None:
    """No GPU tools, no NVML, no DRM cards: a CPU-only profile with the cpuinfo model."""
    run = Replay({})
    p = detect(run=run, sysfs_root=EMPTY, system="Linux", machine="x86_64", env={},
               memory=(16 * GiB, 12 * GiB), nvml=FakeNVML({}, fail={"init"}))
    assert p.gpus == () and p.kind is MachineKind.CPU_ONLY
    assert p.cpu.model == "12th Gen Intel(R) Core(TM) i7-1260P"
    assert p.ram_total == 16 * GiB and p.ram_available == 12 * GiB
    assert "amd-smi static --json" in run.calls and "sycl-ls" in run.calls


def test_multi_vendor_desktop_lists_every_gpu() -> None:
    """NVML GPUs and an AMD card found in the same pass are all listed."""
    p = detect(run=Replay({}), sysfs_root=FIX / "sysfs_amd", system="Linux", machine="x86_64",
               env={}, memory=(64 * GiB, 60 * GiB),
               nvml=FakeNVML(json.loads(fixture("nvml_2gpu_3090_3060.json"))))
    assert [(g.vendor, g.index) for g in p.gpus] == [
        ("nvidia", 0), ("nvidia", 1), ("amd", 0), ("intel", 0)]
    assert p.kind is MachineKind.DISCRETE_GPU and len(p.discrete_gpus) == 3


def test_cpuinfo_parsing_variants() -> None:
    """x86 'model name', ARM 'Hardware'; nothing usable gives None."""
    assert cpu_model_from_cpuinfo("model name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert cpu_model_from_cpuinfo("Hardware\t: Qualcomm SM8550\n") == "Qualcomm SM8550"
    assert cpu_model_from_cpuinfo("CPU part\t: 0xd46\n") is None
    assert cpu_model_from_cpuinfo(None) is None


def test_detect_on_this_machine_never_raises() -> None:
    """The real probes run here (no GPU tools) and give a sane, JSON-able profile."""
    p = detect()
    assert p.ram_total > 0 and p.cpu.logical_cores
    data = json.loads(to_json(p))
    assert data["kind"] == p.kind.value and data["budget"]["total"] > 0
    assert HardwareProfile.from_dict(p.to_dict()) == p


def test_table_and_json_render() -> None:
    """The table shows every GPU and the budget; the JSON round-trips."""
    p = HardwareProfile(
        os="linux", os_release="6.8", hostname="box",
        cpu=__import__("localswarm.hardware", fromlist=["CPUInfo"]).CPUInfo(
            model="Ryzen", arch="x86_64", physical_cores=8, logical_cores=16),
        ram_total=32 * GiB, ram_available=20 * GiB,
        gpus=(GPUInfo(vendor="nvidia", name="RTX 4090", index=0, memory_total=24 * GiB,
                      memory_free=23 * GiB, driver="550", compute_capability="8.9",
                      backend_hint="cuda"),),
    )
    text = format_table(p, width=140)
    assert "RTX 4090" in text and "24.0 GiB VRAM" in text and "compute 8.9" in text
    assert "Budget gpu0" in text and "21.6 GiB" in text
    assert HardwareProfile.from_dict(json.loads(to_json(p))) == p


def test_simulated_host_replaces_probing(tmp_path, monkeypatch) -> None:
    import json

    from localswarm.errors import ConfigError
    from localswarm.hardware import detect
    from localswarm.hardware.synthetic import reference_profiles

    ref = reference_profiles()["2x RTX 4090 24 GB"]
    path = tmp_path / "host.json"
    path.write_text(json.dumps(ref.to_dict()))
    monkeypatch.setenv("LOCALSWARM_HARDWARE", str(path))
    got = detect()
    assert got.kind == ref.kind and got.gpus == ref.gpus and got.ram_total == ref.ram_total
    assert any("simulated host" in n for n in got.notes)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a hardware profile"):
        detect()
