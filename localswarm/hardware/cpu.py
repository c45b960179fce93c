"""The host CPU and RAM, through psutil and ``/proc/cpuinfo`` (RAM capped by a cgroup limit)."""

from __future__ import annotations

import platform
from pathlib import Path

import psutil

from ._run import logger, read_text
from .cgroup import cgroup_memory

_MODEL_KEYS = ("model name", "Hardware", "Processor", "cpu model")


def cpu_model_from_cpuinfo(text: str | None) -> str | None:
    """The CPU's marketing name from ``/proc/cpuinfo`` (x86 ``model name``, ARM ``Hardware``)."""
    for key in _MODEL_KEYS:
        for line in (text or "").splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def detect_cpu(sysfs_root: Path = Path("/")) -> tuple[str | None, int | None, int | None, str]:
    """``(model, physical_cores, logical_cores, arch)``; ``model`` is ``None`` if unknown."""
    model = cpu_model_from_cpuinfo(read_text(sysfs_root / "proc" / "cpuinfo"))
    try:
        physical = psutil.cpu_count(logical=False)
        logical = psutil.cpu_count(logical=True)
    except Exception as exc:  # psutil can fail inside odd containers
        logger.debug("hardware: psutil cpu_count: %s", exc)
        physical = logical = None
    return model, physical, logical, platform.machine().lower() or "unknown"


def detect_memory(sysfs_root: Path = Path("/"),
                  physical: tuple[int, int | None] | None = None) -> tuple[int, int | None, str]:
    """``(total, available, source)`` RAM in bytes, honouring a cgroup memory limit.

    ``physical`` is the machine's ``(total, available)`` (default: psutil). A cgroup limit
    below the physical total becomes the total, and what the cgroup still allows caps
    ``available``; ``source`` says which figure won: ``physical`` or ``cgroup v1 limit``
    / ``cgroup v2 limit``.
    """
    if physical is None:
        try:
            vm = psutil.virtual_memory()
            physical = int(vm.total), int(vm.available)
        except Exception as exc:
            logger.debug("hardware: psutil virtual_memory: %s", exc)
            physical = 0, None
    total, available = physical
    cg = cgroup_memory(sysfs_root)
    if cg is None or (total and cg.limit >= total):
        return total, available, "physical"
    cg_available = cg.available
    if cg_available is not None:
        available = cg_available if available is None else min(available, cg_available)
    return cg.limit, available, cg.source
