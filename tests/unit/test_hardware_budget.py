"""The memory budget rules: discrete GPU, Apple Silicon, CPU only, mobile."""

from __future__ import annotations

import pytest

from localswarm.hardware import BudgetRules, MachineKind, budget
from localswarm.hardware.synthetic import reference_profiles
from localswarm.hardware.types import CPUInfo, GPUInfo, HardwareProfile

GiB = 1024**3
MiB = 1024**2
PROFILES = reference_profiles()


def test_discrete_gpu_reserves_ten_percent() -> None:
    """24 GiB card: 10% (2.4 GiB) is more than 1 GiB, so 90% is usable."""
    b = budget(PROFILES["RTX 4090 24 GB"])
    [dev] = b.devices
    assert b.kind is MachineKind.DISCRETE_GPU and dev.device == "gpu0"
    assert dev.capacity == 24564 * MiB
    assert dev.usable == 24564 * MiB - int(24564 * MiB * 0.10)


def test_small_gpu_reserves_at_least_one_gib() -> None:
    """A 6 GiB card: 10% is 0.6 GiB, the 1 GiB floor applies."""
    p = HardwareProfile(os="linux", os_release="", cpu=CPUInfo("x", "x86_64", 4, 8),
                        ram_total=16 * GiB, ram_available=None,
                        gpus=(GPUInfo("nvidia", "RTX 2060", 0, memory_total=6 * GiB),))
    assert budget(p).devices[0].usable == 5 * GiB


def test_two_gpus_budget_per_device() -> None:
    """Each GPU gets its own budget; the total is their sum."""
    b = budget(PROFILES["2x RTX 4090 24 GB"])
    assert [d.device for d in b.devices] == ["gpu0", "gpu1"]
    assert b.total == 2 * b.devices[0].usable


@pytest.mark.parametrize(("name", "kind", "fraction"), [
    ("Apple M1 8 GB", MachineKind.APPLE_SILICON, 0.5),
    ("Apple M4 Pro 48 GB", MachineKind.APPLE_SILICON, 0.5),
    ("CPU-only laptop 16 GB", MachineKind.CPU_ONLY, 0.5),
    ("Android phone 8 GB", MachineKind.MOBILE, 0.25),
])
def test_shared_memory_fractions(name: str, kind: MachineKind, fraction: float) -> None:
    """Apple 50% of unified memory, CPU only 50% of RAM, mobile 25%."""
    p = PROFILES[name]
    b = budget(p)
    assert b.kind is kind and len(b.devices) == 1
    assert b.total == int(p.ram_total * fraction)


def test_rules_are_configurable() -> None:
    """Other fractions and reserves change the budget; nonsense is refused."""
    rules = BudgetRules(gpu_reserve_fraction=0.2, gpu_reserve_min=0, cpu_fraction=0.75)
    assert budget(PROFILES["RTX 4060 Ti 16 GB"], rules).total == 16380 * MiB - int(
        16380 * MiB * 0.2)
    assert budget(PROFILES["CPU-only laptop 16 GB"], rules).total == 12 * GiB
    with pytest.raises(ValueError, match="cpu_fraction"):
        BudgetRules(cpu_fraction=1.5)


def test_low_available_ram_is_noted() -> None:
    """A budget above what is free right now comes with a note, not a smaller budget."""
    p = HardwareProfile(os="linux", os_release="", cpu=CPUInfo("x", "x86_64", 4, 8),
                        ram_total=16 * GiB, ram_available=2 * GiB)
    b = budget(p)
    assert b.total == 8 * GiB and "only 2.0 GiB RAM is free" in b.notes[0]


def test_igpu_only_machine_is_cpu_only() -> None:
    """An integrated GPU with no VRAM of its own does not make a discrete-GPU budget."""
    p = HardwareProfile(os="linux", os_release="", cpu=CPUInfo("x", "x86_64", 4, 8),
                        ram_total=16 * GiB, ram_available=None,
                        gpus=(GPUInfo("intel", "Iris Xe", 0, unified=True),))
    assert budget(p).kind is MachineKind.CPU_ONLY
