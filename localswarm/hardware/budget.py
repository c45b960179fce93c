"""How much memory the swarm may use: the seed's rules, configurable.

- discrete GPU: each device's VRAM minus a reserve (10 %, at least 1 GiB);
- Apple Silicon: 50 % of unified memory;
- CPU only: 50 % of RAM;
- mobile: 25 % of RAM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .types import HardwareProfile, MachineKind

GiB = 1024**3


@dataclass(frozen=True)
class BudgetRules:
    """The fractions and reserves :func:`budget` applies. Keyword-only, all optional."""

    gpu_reserve_fraction: float = 0.10
    gpu_reserve_min: int = 1 * GiB
    apple_fraction: float = 0.50
    cpu_fraction: float = 0.50
    mobile_fraction: float = 0.25

    def __post_init__(self) -> None:
        for name in ("gpu_reserve_fraction", "apple_fraction", "cpu_fraction",
                     "mobile_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"BudgetRules.{name} must be between 0 and 1, got {value}")
        if self.gpu_reserve_min < 0:
            raise ValueError("BudgetRules.gpu_reserve_min must be >= 0")


@dataclass(frozen=True)
class DeviceBudget:
    """Memory one device offers the swarm.

    ``device`` is ``"gpu<N>"`` for a discrete GPU (``gpu_index`` = N in its vendor's
    numbering) or ``"cpu"``/``"unified"`` for system memory.
    """

    device: str
    name: str
    capacity: int
    usable: int
    gpu_index: int | None = None
    vendor: str | None = None
    backend_hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class MemoryBudget:
    """The memory available to the swarm, per device, and the rule that produced it."""

    kind: MachineKind
    devices: tuple[DeviceBudget, ...]
    rule: str
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        """Usable bytes summed over devices."""
        return sum(d.usable for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"kind": self.kind.value, "total": self.total, "rule": self.rule,
                "devices": [d.to_dict() for d in self.devices], "notes": list(self.notes)}


def gpu_reserve(capacity: int, rules: BudgetRules) -> int:
    """The part of a discrete GPU's VRAM kept back for the desktop, driver and spikes."""
    return max(int(capacity * rules.gpu_reserve_fraction), rules.gpu_reserve_min)


def budget(profile: HardwareProfile, rules: BudgetRules | None = None) -> MemoryBudget:
    """The memory budget for ``profile`` under ``rules`` (the seed's defaults if omitted)."""
    rules = rules or BudgetRules()
    kind = profile.kind
    notes: list[str] = []
    if kind is MachineKind.DISCRETE_GPU:
        devices = []
        for g in profile.discrete_gpus:
            cap = int(g.memory_total or 0)
            devices.append(DeviceBudget(
                device=f"gpu{g.index}" if g.vendor == profile.discrete_gpus[0].vendor
                else f"{g.vendor}{g.index}",
                name=g.name, capacity=cap, usable=max(0, cap - gpu_reserve(cap, rules)),
                gpu_index=g.index, vendor=g.vendor, backend_hint=g.backend_hint,
            ))
        pct = round(rules.gpu_reserve_fraction * 100)
        rule = f"VRAM minus {pct}% (at least {rules.gpu_reserve_min / GiB:g} GiB) per GPU"
        return MemoryBudget(kind=kind, devices=tuple(devices), rule=rule, notes=tuple(notes))

    if kind is MachineKind.APPLE_SILICON:
        gpu = next(g for g in profile.gpus if g.unified)
        cap = int(gpu.memory_total or profile.ram_total)
        fraction, device, name = rules.apple_fraction, "unified", gpu.name
        rule = f"{round(fraction * 100)}% of unified memory"
    elif kind is MachineKind.MOBILE:
        cap = profile.ram_total
        fraction, device, name = rules.mobile_fraction, "unified", (
            profile.gpus[0].name if profile.gpus else profile.cpu.model)
        rule = f"{round(fraction * 100)}% of RAM (mobile)"
    else:
        cap = profile.ram_total
        fraction, device, name = rules.cpu_fraction, "cpu", profile.cpu.model
        rule = f"{round(fraction * 100)}% of RAM (CPU only)"
    usable = int(cap * fraction)
    if profile.ram_available is not None and profile.ram_available < usable:
        notes.append(
            f"only {profile.ram_available / GiB:.1f} GiB RAM is free now, below the "
            f"{usable / GiB:.1f} GiB budget: other programs may be swapped out"
        )
    backend = next((g.backend_hint for g in profile.gpus if g.unified), None)
    dev = DeviceBudget(device=device, name=name, capacity=cap, usable=usable,
                       backend_hint=backend or "cpu")
    return MemoryBudget(kind=kind, devices=(dev,), rule=rule, notes=tuple(notes))
