"""Walks ``/sys/class/drm/card*/device`` for GPUs of one PCI vendor (Linux only)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ._run import logger, read_int, read_text

_CARD = re.compile(r"^card(\d+)$")  # skips connector entries such as card0-DP-1


@dataclass(frozen=True)
class DrmCard:
    """One DRM card of the wanted vendor, with what sysfs tells about it."""

    card: int
    device_dir: Path
    device_id: str | None
    vram_total: int | None
    vram_used: int | None
    product_name: str | None


def drm_cards(sysfs_root: Path, vendor_id: int) -> list[DrmCard]:
    """Cards under ``{sysfs_root}/sys/class/drm`` whose PCI vendor is ``vendor_id``."""
    drm = sysfs_root / "sys" / "class" / "drm"
    try:
        entries = sorted(
            (int(m.group(1)), p) for p in drm.iterdir() if (m := _CARD.match(p.name))
        )
    except OSError:
        logger.debug("hardware: no %s", drm)
        return []
    cards: list[DrmCard] = []
    for number, path in entries:
        dev = path / "device"
        if read_int(dev / "vendor") != vendor_id:
            continue
        total = read_int(dev / "mem_info_vram_total")
        if total is None:  # Intel i915/xe discrete cards expose local memory this way
            total = read_int(dev / "lmem_total_bytes") or read_int(path / "lmem_total_bytes")
        cards.append(
            DrmCard(
                card=number,
                device_dir=dev,
                device_id=read_text(dev / "device"),
                vram_total=total,
                vram_used=read_int(dev / "mem_info_vram_used"),
                product_name=read_text(dev / "product_name") or None,
            )
        )
    return cards
