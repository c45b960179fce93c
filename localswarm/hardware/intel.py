"""Intel GPUs through ``xpu-smi``, ``sycl-ls`` and sysfs (PCI vendor 0x8086).

``xpu-smi discovery -j`` lists devices; ``xpu-smi discovery -d N -j`` adds
``memory_physical_size_byte`` and ``driver_version``. ``sycl-ls`` only gives names. sysfs
tells discrete cards (``lmem_total_bytes``) from integrated ones, which share system RAM.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ._run import Runner, logger, run_tool, to_int
from ._sysfs import drm_cards
from .types import GPUInfo, Vendor

INTEL_PCI_VENDOR = 0x8086

# [level_zero:gpu][level_zero:0] Intel(R) Level-Zero, Intel(R) Arc(TM) A770 Graphics 12.55.8 [1.3.29735]
_SYCL_LINE = re.compile(
    r"^\[(?P<backend>level_zero|ext_oneapi_level_zero):gpu\]\[[^\]]*?(?P<idx>\d+)\]\s+"
    r"(?P<platform>[^,]+),\s+(?P<name>.+?)\s+(?P<version>[\d.]+)\s+\[(?P<driver>[^\]]+)\]\s*$"
)


def detect_intel(run: Runner = run_tool, sysfs_root: Path = Path("/")) -> list[GPUInfo]:
    """Every Intel GPU. Integrated GPUs come back with ``unified=True``. Never raises."""
    gpus = _from_xpu_smi(run)
    if gpus:
        return gpus
    sycl = _from_sycl_ls(run(["sycl-ls"]))
    cards = drm_cards(sysfs_root, INTEL_PCI_VENDOR)
    out: list[GPUInfo] = []
    count = max(len(sycl), len(cards))
    for i in range(count):
        s = sycl[i] if i < len(sycl) else {}
        card = cards[i] if i < len(cards) else None
        total = card.vram_total if card else None
        name = s.get("name") or (card.product_name if card else None) or (
            f"Intel GPU [{card.device_id}]" if card else "Intel GPU")
        out.append(GPUInfo(
            vendor=Vendor.INTEL.value, name=name, index=i, memory_total=total,
            driver=s.get("driver"), unified=total is None,
            backend_hint="sycl" if s else "vulkan",
            source="sycl-ls" if s else "sysfs",
        ))
    return out


def _from_xpu_smi(run: Runner) -> list[GPUInfo]:
    text = run(["xpu-smi", "discovery", "-j"])
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        logger.debug("hardware: xpu-smi discovery output is not JSON")
        return []
    devices = data.get("device_list", []) if isinstance(data, dict) else []
    out: list[GPUInfo] = []
    for dev in devices:
        if not isinstance(dev, dict) or dev.get("device_type", "GPU") != "GPU":
            continue
        if str(dev.get("device_function_type", "physical")).lower() == "virtual":
            continue
        device_id = to_int(dev.get("device_id"))
        detail: dict[str, Any] = {}
        if device_id is not None:
            more = run(["xpu-smi", "discovery", "-d", str(device_id), "-j"])
            try:
                parsed = json.loads(more) if more else {}
                detail = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                logger.debug("hardware: xpu-smi discovery -d %s output is not JSON", device_id)
        merged = {**dev, **detail}
        total = to_int(merged.get("memory_physical_size_byte"))
        out.append(GPUInfo(
            vendor=Vendor.INTEL.value,
            name=str(merged.get("device_name") or "Intel GPU"),
            index=len(out),
            memory_total=total,
            driver=merged.get("driver_version"),
            unified=total is None,
            backend_hint="sycl",
            source="xpu-smi",
        ))
    return out


def _from_sycl_ls(text: str | None) -> list[dict[str, str]]:
    if not text:
        return []
    out = []
    for line in text.splitlines():
        m = _SYCL_LINE.match(line.strip())
        if m:
            out.append({"name": m.group("name").strip(), "driver": m.group("driver")})
    return out
