"""Plain data describing a machine: CPU, RAM and every GPU found.

Everything here is a frozen dataclass with a ``to_dict()`` that is safe for ``json.dumps``
(``localswarm detect --json``). Memory sizes are always bytes (``int``) or ``None`` when
the value could not be read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Vendor(str, Enum):
    """GPU vendors localswarm knows how to detect."""

    NVIDIA = "nvidia"
    AMD = "amd"
    INTEL = "intel"
    APPLE = "apple"
    QUALCOMM = "qualcomm"


class MachineKind(str, Enum):
    """The memory model the budget rules are chosen by."""

    DISCRETE_GPU = "discrete-gpu"
    APPLE_SILICON = "apple-silicon"
    MOBILE = "mobile"
    CPU_ONLY = "cpu-only"


@dataclass(frozen=True)
class GPUInfo:
    """One GPU as detected.

    ``memory_total``/``memory_free`` are bytes of dedicated VRAM, or of the shared system
    memory when ``unified`` is true (Apple Silicon, Adreno). ``backend_hint`` names the
    llama.cpp backend most likely to drive it: ``cuda``, ``rocm``, ``vulkan``, ``sycl``,
    ``metal`` or ``opencl``.
    """

    vendor: str
    name: str
    index: int
    memory_total: int | None = None
    memory_free: int | None = None
    driver: str | None = None
    compute_capability: str | None = None
    unified: bool = False
    backend_hint: str | None = None
    source: str = ""
    #: peak memory bandwidth (B/s) and FP16 FLOP/s as the driver reports them (NVML), the
    #: speed estimate's prior for this GPU; None where unknown
    memory_bandwidth: float | None = None
    fp16_flops: float | None = None

    @property
    def discrete(self) -> bool:
        """True when the GPU has its own memory of a known size."""
        return not self.unified and bool(self.memory_total)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


_GPU_FIELDS = frozenset(GPUInfo.__dataclass_fields__)


@dataclass(frozen=True)
class CPUInfo:
    """The host CPU. ``performance_cores`` is only known on Apple Silicon."""

    model: str
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    performance_cores: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class HardwareProfile:
    """Everything the planner needs to know about one machine."""

    os: str
    os_release: str
    cpu: CPUInfo
    ram_total: int
    ram_available: int | None
    gpus: tuple[GPUInfo, ...] = ()
    mobile: bool = False
    hostname: str = ""
    notes: tuple[str, ...] = field(default=())
    #: Where ``ram_total`` comes from: ``physical``, or ``cgroup v1 limit`` / ``cgroup v2 limit``
    #: when a container's (or slice's) memory limit is below the machine's RAM.
    ram_source: str = "physical"

    @property
    def kind(self) -> MachineKind:
        """Which budget rule applies: mobile, Apple Silicon, discrete GPU or CPU only."""
        if self.mobile:
            return MachineKind.MOBILE
        if any(g.vendor == Vendor.APPLE.value and g.unified for g in self.gpus):
            return MachineKind.APPLE_SILICON
        if self.discrete_gpus:
            return MachineKind.DISCRETE_GPU
        return MachineKind.CPU_ONLY

    @property
    def discrete_gpus(self) -> tuple[GPUInfo, ...]:
        """GPUs with their own memory of known size, in index order."""
        return tuple(g for g in self.gpus if g.discrete)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``localswarm detect --json``)."""
        return {
            "os": self.os,
            "os_release": self.os_release,
            "hostname": self.hostname,
            "kind": self.kind.value,
            "mobile": self.mobile,
            "cpu": self.cpu.to_dict(),
            "ram_total": self.ram_total,
            "ram_available": self.ram_available,
            "ram_source": self.ram_source,
            "gpus": [g.to_dict() for g in self.gpus],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        """Rebuild a profile from :meth:`to_dict` output (peers, tests, saved state)."""
        return cls(
            os=data["os"],
            os_release=data.get("os_release", ""),
            hostname=data.get("hostname", ""),
            cpu=CPUInfo(**data["cpu"]),
            ram_total=int(data["ram_total"]),
            ram_available=data.get("ram_available"),
            ram_source=str(data.get("ram_source") or "physical"),
            gpus=tuple(GPUInfo(**{k: v for k, v in g.items() if k in _GPU_FIELDS}) for g in data.get("gpus", [])),
            mobile=bool(data.get("mobile", False)),
            notes=tuple(data.get("notes", ())),
        )
