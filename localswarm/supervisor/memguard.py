"""The memory guard (seed plan 8.2): the supervisor, not the kernel's OOM killer, decides
which instance goes when memory runs out, and brings it back when memory returns.

- **Admission.** Every start and restart of an instance passes :meth:`MemoryGuard.admit`:
  it waits (the instance stays stopped, the swarm ``degraded``) until the instance's
  memory fits above the reserve: RAM for a CPU instance, the VRAM of its GPU (NVML) for a
  GPU instance. Starts are decided one at a time, and an admitted instance's memory counts
  as taken until it is ready (it is still loading).
- **Pressure.** Every ``interval`` seconds the guard samples available memory. Below the
  reserve it drains the newest running instance (out of the routing at once, in-flight
  requests get ``drain_timeout`` seconds) and stops it. The last running instance is
  kept: a swarm with none serves nobody.
- **Return.** A stopped instance starts again once its need fits above the reserve *plus*
  ``resume_margin``, without a break for ``settle`` seconds (hysteresis: no flapping).
- **Belt and braces.** Each instance spawned gets a higher ``oom_score_adj`` than the one
  before (from 500): should a spike outrun the checks, the kernel takes the newest
  instance, never the gateway.

The instance's memory need is the planner's per-instance estimate when the plan carries
one, else what a running sibling measurably holds privately (RSS − shared), else nothing
(only the reserve then counts).

RAM is what this process's cgroup still allows when the cgroup limits memory (see
:mod:`localswarm.hardware.cgroup`), else the machine's available RAM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localswarm.supervisor import proc
from localswarm.supervisor.states import State

logger = logging.getLogger(__name__)

MiB = 1024**2
#: oom_score_adj of the first instance spawned; each later spawn gets one more (newest first).
OOM_SCORE_BASE = 500


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MiB:.0f} MiB"


@dataclass(frozen=True)
class MemorySnapshot:
    """Free memory now: RAM (cgroup-aware) and, per NVML GPU index, free VRAM."""

    ram_available: int | None
    ram_total: int = 0
    ram_source: str = "physical"
    vram_free: dict[int, int] = field(default_factory=dict)

    def free(self, device: str) -> int | None:
        """Free bytes on ``device`` (``ram`` or ``gpuN``); None when unknown."""
        if device == "ram":
            return self.ram_available
        return self.vram_free.get(int(device[3:])) if device[3:].isdigit() else None

    def to_dict(self) -> dict[str, Any]:
        return {"ram_available": self.ram_available, "ram_total": self.ram_total, "ram_source": self.ram_source,
                "vram_free": {f"gpu{i}": v for i, v in sorted(self.vram_free.items())}}


class MemoryProbe:
    """Samples :class:`MemorySnapshot`: RAM through :func:`~localswarm.hardware.cpu.detect_memory`,
    VRAM through NVML (``nvml`` is the ``pynvml`` module or an object with its functions;
    ``None`` loads ``nvidia-ml-py`` if installed) for the GPU indices in ``gpus``."""

    def __init__(self, *, sysfs_root: Path = Path("/"), gpus: Sequence[int] = (), nvml: Any | None = None) -> None:
        self.sysfs_root = sysfs_root
        self._handles: dict[int, Any] = {}
        self._nvml = None
        if gpus:
            self._nvml = nvml if nvml is not None else _load_nvml()
            if self._nvml is not None:
                try:
                    self._nvml.nvmlInit()
                    self._handles = {i: self._nvml.nvmlDeviceGetHandleByIndex(i) for i in gpus}
                except Exception as exc:  # no driver: the guard watches RAM only
                    logger.warning("memory guard: NVML unavailable (%s): VRAM is not watched", exc)
                    self._nvml = None

    def sample(self) -> MemorySnapshot:
        from localswarm.hardware.cpu import detect_memory

        total, available, source = detect_memory(self.sysfs_root)
        vram: dict[int, int] = {}
        for index, handle in self._handles.items():
            try:
                vram[index] = int(self._nvml.nvmlDeviceGetMemoryInfo(handle).free)  # type: ignore[union-attr]
            except Exception as exc:
                logger.debug("memory guard: NVML memory of gpu%d: %s", index, exc)
        return MemorySnapshot(available, total, source, vram)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down a broken NVML is not worth a crash
                pass
            self._nvml = None


def _load_nvml() -> Any | None:
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        logger.warning("memory guard: instances on NVIDIA GPUs but nvidia-ml-py is not installed: "
                       "VRAM is not watched")
        return None
    return pynvml


@dataclass(frozen=True)
class GuardPolicy:
    """The thresholds (bytes, seconds); see the ``memory_*`` settings."""

    reserve: int = 512 * MiB
    resume_margin: int = 256 * MiB
    interval: float = 1.0
    settle: float = 5.0
    drain_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any) -> GuardPolicy:
        return cls(reserve=settings.memory_reserve_mb * MiB, resume_margin=settings.memory_resume_mb * MiB,
                   interval=settings.memory_interval, settle=settings.memory_settle,
                   drain_timeout=settings.memory_drain_timeout)


def private_bytes(pid: int | None) -> int | None:
    """What an instance holds that no other process shares: RSS − shared pages (Linux; the
    whole RSS elsewhere) of ``pid`` and its children (a macOS orphan guard's server), or None."""
    if not pid:
        return None
    try:
        import psutil

        root = psutil.Process(pid)
        infos = [p.memory_info() for p in [root, *root.children(recursive=True)]]
        return sum(max(0, int(i.rss) - int(getattr(i, "shared", 0))) for i in infos)
    except Exception:  # noqa: BLE001 - gone already
        return None


class MemoryGuard:
    """Watches memory for a supervisor's instances (see the module doc).

    ``instances`` are :class:`~localswarm.supervisor.instance.Instance` objects, whose
    ``device`` is ``ram`` (CPU) or ``gpuN``; ``need`` the planner's bytes per instance
    (None: measured); ``sample`` returns a :class:`MemorySnapshot` (tests script it).
    """

    def __init__(self, instances: Sequence[Any], *, policy: GuardPolicy, sample: Callable[[], MemorySnapshot],
                 need: int | None = None, measure: Callable[[int | None], int | None] = private_bytes) -> None:
        self.instances = list(instances)
        self.policy = policy
        self._sample = sample
        self.need_estimate = need
        self._measure = measure
        self.held: dict[str, str] = {}  # instance name → why it is not running
        self.sheds = 0
        self.resumes = 0
        self.last: MemorySnapshot | None = None
        self._shed: set[str] = set()  # stopped under pressure: they come back with margin and settle
        self._pending: dict[str, int] = {}  # admitted, not ready yet: their need is counted as taken
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._warned_last = False
        self._spawns = 0

    # -- what status, /health and /metrics read -------------------------------------------
    @property
    def degraded(self) -> bool:
        """True while an instance is kept stopped for lack of memory."""
        return bool(self.held)

    def status(self) -> dict[str, Any]:
        return {
            "degraded": self.degraded,
            "held": dict(self.held),
            "memory": self.last.to_dict() if self.last else None,
            "reserve": self.policy.reserve,
            "need_per_instance": self.need(),
            "sheds": self.sheds,
            "resumes": self.resumes,
        }

    # -- the figures ------------------------------------------------------------------------
    def need(self) -> int | None:
        """Bytes one more instance takes: the plan's estimate, else the largest measured."""
        if self.need_estimate:
            return self.need_estimate
        measured = [m for i in self.instances if i.state is State.READY and (m := self._measure(i.pid))]
        return max(measured) if measured else None

    def sample(self) -> MemorySnapshot:
        self.last = self._sample()
        return self.last

    def _headroom(self, snap: MemorySnapshot, device: str) -> int | None:
        """Free bytes on ``device`` above the reserve, less what admitted starts will take."""
        free = snap.free(device)
        if free is None:
            return None
        pending = sum(n for name, n in self._pending.items()
                      if _device(self._by_name(name)) == device)
        return free - self.policy.reserve - pending

    def _by_name(self, name: str) -> Any:
        return next(i for i in self.instances if i.name == name)

    # -- admission ----------------------------------------------------------------------------
    async def admit(self, inst: Any) -> None:
        """Wait until ``inst`` fits; called by the instance before each (re)start.

        Each decision is taken under a lock (two starts never count the same free memory);
        the wait between decisions is not, so one instance waiting never blocks another.
        """
        device = _device(inst)
        fit_since: float | None = None
        told = False
        try:
            while True:
                async with self._lock:
                    snap = self.sample()
                    need = self.need() or 0
                    room = self._headroom(snap, device)
                    returning = inst.name in self._shed
                    wanted = need + (self.policy.resume_margin if returning else 0)
                    if room is None or room >= wanted:
                        now = time.monotonic()
                        fit_since = fit_since if fit_since is not None else now
                        if not returning or now - fit_since >= self.policy.settle:
                            self._admitted(inst, snap, device, need, returning)
                            return
                    else:
                        fit_since = None
                        if not told and not returning:  # a stopped one was logged when stopped
                            told = True
                            why = (f"waiting for memory: needs {_mib(wanted)} above the "
                                   f"{_mib(self.policy.reserve)} reserve, {_mib(snap.free(device))} free on {device}")
                            self.held.setdefault(inst.name, why)
                            logger.warning("memory guard: %s %s (%s)", inst.name, why,
                                           snap.ram_source if device == "ram" else "NVML")
                await asyncio.sleep(self.policy.interval)
        except asyncio.CancelledError:
            if inst.name not in self._shed:  # stopped while waiting: no longer held for memory
                self.held.pop(inst.name, None)
            raise

    def _admitted(self, inst: Any, snap: MemorySnapshot, device: str, need: int, returning: bool) -> None:
        if inst.name in self.held:
            self.resumes += int(returning)
            logger.info("memory guard: starting %s%s: %s free on %s (needs %s, reserve %s)", inst.name,
                        " again" if returning else "", _mib(snap.free(device)), device, _mib(need),
                        _mib(self.policy.reserve))
        self.held.pop(inst.name, None)
        self._shed.discard(inst.name)
        self._pending[inst.name] = need

    def spawned(self, inst: Any) -> None:
        """Should the kernel's OOM killer act anyway (a spike between two checks), it takes
        an instance, the newest first, never the gateway: each spawn scores higher."""
        self._spawns += 1
        if inst.pid:
            proc.set_oom_score_adj(inst.pid, OOM_SCORE_BASE + min(self._spawns, 1000 - OOM_SCORE_BASE))

    def started(self, inst: Any) -> None:
        """``inst`` is ready (or gave up): its memory now shows in the samples."""
        self._pending.pop(inst.name, None)

    # -- pressure ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="memory-guard")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.policy.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the watch (nor the swarm)
                logger.exception("memory guard: check failed")

    async def check(self) -> str | None:
        """One look at memory; under pressure drain and stop the newest instance. Returns its name."""
        snap = self.sample()
        for device in ("ram", *sorted({_device(i) for i in self.instances} - {"ram"})):
            free = snap.free(device)
            if free is None or free >= self.policy.reserve:
                continue
            running = [i for i in self.instances if i.state in (State.READY, State.STARTING)
                       and i.name not in self._shed]
            on_device = [i for i in running if device == "ram" or _device(i) == device]
            if len(running) <= 1 or not on_device:
                if not self._warned_last:  # once per episode of pressure
                    self._warned_last = True
                    logger.warning("memory guard: %s free on %s (%s), below the %s reserve, but no instance to "
                                   "spare (the last one keeps running)", _mib(free), device,
                                   snap.ram_source if device == "ram" else "NVML", _mib(self.policy.reserve))
                return None
            self._warned_last = False
            victim = max(on_device, key=lambda i: (i.started_at, i.name))
            await self._shed_one(victim, device, free, snap)
            return str(victim.name)
        self._warned_last = False  # no pressure anywhere
        return None

    async def _shed_one(self, inst: Any, device: str, free: int, snap: MemorySnapshot) -> None:
        source = snap.ram_source if device == "ram" else "NVML"
        why = (f"stopped by the memory guard: {_mib(free)} free on {device} ({source}), "
               f"below the {_mib(self.policy.reserve)} reserve")
        logger.warning("memory guard: %s free on %s (%s), below the %s reserve: draining and stopping %s "
                       "(the newest instance)", _mib(free), device, source, _mib(self.policy.reserve), inst.name)
        self._shed.add(inst.name)
        self._pending.pop(inst.name, None)
        self.sheds += 1
        await inst.stop(drain_timeout=self.policy.drain_timeout)
        self.held[inst.name] = why  # said once it is true: the process has exited
        inst.last_error = why
        inst.start()  # parks in admit() until the memory returns


def _device(inst: Any) -> str:
    """``ram`` for a CPU instance, ``gpuN`` for one pinned to NVIDIA GPU N."""
    device = str(getattr(inst, "device", "") or "ram")
    return device if device.startswith("gpu") else "ram"
