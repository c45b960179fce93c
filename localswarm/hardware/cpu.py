"""The host CPU and RAM, through psutil and ``/proc/cpuinfo``."""

from __future__ import annotations

import platform
from pathlib import Path

import psutil

from ._run import logger, read_text

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


def detect_memory() -> tuple[int, int | None]:
    """``(total, available)`` RAM in bytes."""
    try:
        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception as exc:
        logger.debug("hardware: psutil virtual_memory: %s", exc)
        return 0, None
