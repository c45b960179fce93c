"""Reference machines for the planner table in ``docs/planner.md`` and for tests.

These are synthetic :class:`HardwareProfile` objects with the published memory sizes of
each device (NVML reports slightly less than the marketing size: an "8 GB" RTX 4060 shows
8188 MiB). They describe hardware, they were not detected on it.
"""

from __future__ import annotations

from .types import CPUInfo, GPUInfo, HardwareProfile, Vendor

GiB = 1024**3
MiB = 1024**2


def _nvidia(name: str, mib: int, index: int = 0, cc: str = "8.9") -> GPUInfo:
    total = mib * MiB
    return GPUInfo(vendor=Vendor.NVIDIA.value, name=name, index=index, memory_total=total,
                   memory_free=total - 400 * MiB, driver="550.54.14", compute_capability=cc,
                   backend_hint="cuda", source="synthetic")


def _desktop(gpus: list[GPUInfo], ram_gib: int = 32) -> HardwareProfile:
    return HardwareProfile(
        os="linux", os_release="6.8", hostname="synthetic",
        cpu=CPUInfo(model="AMD Ryzen 7 7700X 8-Core Processor", arch="x86_64",
                    physical_cores=8, logical_cores=16),
        ram_total=ram_gib * GiB, ram_available=ram_gib * GiB * 3 // 4, gpus=tuple(gpus),
    )


def _apple(chip: str, mem_gib: int, cores: int, perf: int) -> HardwareProfile:
    mem = mem_gib * GiB
    return HardwareProfile(
        os="darwin", os_release="24.1.0", hostname="synthetic",
        cpu=CPUInfo(model=chip, arch="arm64", physical_cores=cores, logical_cores=cores,
                    performance_cores=perf),
        ram_total=mem, ram_available=mem // 2,
        gpus=(GPUInfo(vendor=Vendor.APPLE.value, name=f"{chip} GPU", index=0,
                      memory_total=mem, unified=True, backend_hint="metal",
                      source="synthetic"),),
    )


def _phone(ram: int) -> HardwareProfile:
    """A Snapdragon 8 Gen 2 phone (Termux) with ``ram`` bytes in /proc/meminfo."""
    return HardwareProfile(
        os="android", os_release="14", hostname="localhost",
        cpu=CPUInfo(model="SM8550", arch="aarch64", physical_cores=8, logical_cores=8),
        ram_total=ram, ram_available=ram // 3, mobile=True,
        gpus=(GPUInfo(vendor=Vendor.QUALCOMM.value, name="Adreno 740v2", index=0,
                      memory_total=ram, unified=True, backend_hint="opencl",
                      source="synthetic"),),
    )


#: An "8 GB" phone reports ~7.1 GiB in /proc/meminfo (firmware and modem carve-outs); the
#: 6 and 12 GB phones are scaled from it (same SoC, only the memory differs).
PHONE_RAM = {6: 5_740_000_000, 8: 7_650_000_000, 12: 11_480_000_000}


def reference_profiles() -> dict[str, HardwareProfile]:
    """The machines of the issue's planner table, by display name."""
    return {
        "RTX 4060 8 GB": _desktop([_nvidia("NVIDIA GeForce RTX 4060", 8188)]),
        "RTX 4060 Ti 16 GB": _desktop([_nvidia("NVIDIA GeForce RTX 4060 Ti", 16380)]),
        "RTX 4090 24 GB": _desktop([_nvidia("NVIDIA GeForce RTX 4090", 24564)], ram_gib=64),
        "2x RTX 4090 24 GB": _desktop(
            [_nvidia("NVIDIA GeForce RTX 4090", 24564, 0),
             _nvidia("NVIDIA GeForce RTX 4090", 24564, 1)], ram_gib=128),
        "Apple M1 8 GB": _apple("Apple M1", 8, 8, 4),
        "Apple M4 Pro 48 GB": _apple("Apple M4 Pro", 48, 14, 10),
        "CPU-only laptop 16 GB": HardwareProfile(
            os="linux", os_release="6.8", hostname="synthetic",
            cpu=CPUInfo(model="Intel(R) Core(TM) i7-1260P", arch="x86_64",
                        physical_cores=12, logical_cores=16),
            ram_total=16 * GiB, ram_available=11 * GiB,
        ),
        **{f"Android phone {gb} GB": _phone(ram) for gb, ram in PHONE_RAM.items()},
    }
