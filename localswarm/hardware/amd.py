"""AMD GPUs through ``amd-smi``, ``rocm-smi`` and sysfs (``mem_info_vram_total``).

The richest source wins: ``amd-smi static --json`` (ROCm 6.1+), then
``rocm-smi --showproductname --showmeminfo vram --showdriverversion --json``, then sysfs.
Free memory is filled in from ``rocm-smi``'s used figure or sysfs ``mem_info_vram_used``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ._run import Runner, logger, run_tool, to_int
from ._sysfs import DrmCard, drm_cards
from .types import GPUInfo, Vendor

AMD_PCI_VENDOR = 0x1002
#: Below this much VRAM an AMD device is taken as an APU with a carve-out from system RAM.
APU_VRAM_LIMIT = 2 * 1024**3

_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "KIB": 1024, "MIB": 1024**2,
          "GIB": 1024**3}


def detect_amd(run: Runner = run_tool, sysfs_root: Path = Path("/")) -> list[GPUInfo]:
    """Every AMD GPU, from the best source available. Never raises."""
    cards = drm_cards(sysfs_root, AMD_PCI_VENDOR)
    gpus = _from_amd_smi(run("amd-smi static --json".split()))
    source = "amd-smi"
    if not gpus:
        gpus = _from_rocm_smi(
            run("rocm-smi --showproductname --showmeminfo vram --showdriverversion --json".split())
        )
        source = "rocm-smi"
    if not gpus:
        return [_from_card(i, c) for i, c in enumerate(cards)]
    out: list[GPUInfo] = []
    for i, g in enumerate(gpus):
        card = cards[i] if len(cards) == len(gpus) else None
        total = g.get("total") or (card.vram_total if card else None)
        used = g.get("used")
        if used is None and card is not None:
            used = card.vram_used
        out.append(_gpu(i, g.get("name") or "AMD GPU", total, used, g.get("driver"), source))
    return out


def _gpu(index: int, name: str, total: int | None, used: int | None, driver: str | None,
         source: str) -> GPUInfo:
    apu = total is not None and total < APU_VRAM_LIMIT
    return GPUInfo(
        vendor=Vendor.AMD.value,
        name=name,
        index=index,
        memory_total=total,
        memory_free=(total - used) if total is not None and used is not None else None,
        driver=driver,
        unified=apu,
        backend_hint="rocm" if source != "sysfs" else "vulkan",
        source=source,
    )


def _from_card(index: int, card: DrmCard) -> GPUInfo:
    name = card.product_name or f"AMD GPU [{card.device_id or '?'}]"
    return _gpu(index, name, card.vram_total, card.vram_used, None, "sysfs")


def _size(value: Any) -> int | None:
    """``{"value": 24560, "unit": "MB"}``, ``"24560 MB"`` or a bare number of MB."""
    if isinstance(value, dict):
        number, unit = to_int(value.get("value")), str(value.get("unit", "MB")).upper()
    elif isinstance(value, str):
        m = re.match(r"^\s*([\d.]+)\s*([A-Za-z]*)\s*$", value)
        if not m:
            return None
        number, unit = to_int(m.group(1)), (m.group(2) or "MB").upper()
    else:
        number, unit = to_int(value), "MB"
    if number is None or unit not in _UNITS:
        return None
    return number * _UNITS[unit]


def _from_amd_smi(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        logger.debug("hardware: amd-smi output is not JSON")
        return []
    # amd-smi up to ROCm 6.4 prints a list; newer releases wrap it in {"gpu_data": [...]}.
    items = data.get("gpu_data", []) if isinstance(data, dict) else data
    out: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        asic = item.get("asic") if isinstance(item.get("asic"), dict) else {}
        vram = item.get("vram") if isinstance(item.get("vram"), dict) else {}
        driver = item.get("driver") if isinstance(item.get("driver"), dict) else {}
        total = _size(vram.get("size")) if "size" in vram else _size(vram.get("vram_size_mb"))
        out.append({
            "name": str(asic.get("market_name") or "AMD GPU").strip(),
            "total": total,
            "used": None,
            "driver": driver.get("version") or driver.get("driver_version"),
        })
    return out


def _from_rocm_smi(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    # rocm-smi may print warnings before the JSON document.
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        logger.debug("hardware: rocm-smi output is not JSON")
        return []
    driver = None
    system = data.get("system")
    if isinstance(system, dict):
        driver = system.get("Driver version")
    cards = sorted(
        ((int(k[4:]), v) for k, v in data.items()
         if k.startswith("card") and k[4:].isdigit() and isinstance(v, dict)),
    )
    out: list[dict[str, Any]] = []
    for _, fields in cards:
        name = fields.get("Card Series") or fields.get("Card series") or fields.get("Card SKU")
        out.append({
            "name": str(name or "AMD GPU").strip(),
            "total": to_int(fields.get("VRAM Total Memory (B)")),
            "used": to_int(fields.get("VRAM Total Used Memory (B)")),
            "driver": fields.get("Driver version") or driver,
        })
    return out
