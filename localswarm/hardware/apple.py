"""Apple Silicon through ``sysctl``: chip name, unified memory, performance cores."""

from __future__ import annotations

from ._run import Runner, logger, run_tool, to_int
from .types import CPUInfo, GPUInfo, Vendor

SYSCTL_KEYS = (
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.perflevel0.physicalcpu",
)


def read_sysctl(run: Runner = run_tool) -> dict[str, str]:
    """The :data:`SYSCTL_KEYS` that ``sysctl -n`` answers, as strings."""
    values: dict[str, str] = {}
    for key in SYSCTL_KEYS:
        out = run(["sysctl", "-n", key])
        if out is not None and out.strip():
            values[key] = out.strip()
        else:
            logger.debug("hardware: sysctl %s gave nothing", key)
    return values


def detect_apple(run: Runner = run_tool) -> tuple[CPUInfo | None, GPUInfo | None, int | None]:
    """``(cpu, gpu, memsize)`` for an Apple Silicon Mac; ``None`` parts when unknown.

    The GPU shares the whole ``hw.memsize`` with the CPU, so it is reported as unified
    memory of that size.
    """
    values = read_sysctl(run)
    chip = values.get("machdep.cpu.brand_string")
    memsize = to_int(values.get("hw.memsize"))
    if not chip and memsize is None:
        return None, None, None
    cpu = CPUInfo(
        model=chip or "Apple Silicon",
        arch="arm64",
        physical_cores=to_int(values.get("hw.physicalcpu")),
        logical_cores=to_int(values.get("hw.logicalcpu")),
        performance_cores=to_int(values.get("hw.perflevel0.physicalcpu")),
    )
    gpu = GPUInfo(
        vendor=Vendor.APPLE.value,
        name=f"{chip} GPU" if chip else "Apple GPU",
        index=0,
        memory_total=memsize,
        memory_free=None,
        unified=True,
        backend_hint="metal",
        source="sysctl",
    )
    return cpu, gpu, memsize
