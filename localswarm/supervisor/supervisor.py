"""N instances of one backend: start them, share the cores, stop them all cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from localswarm.backends.base import Backend
from localswarm.supervisor.instance import Instance, InstanceTiming
from localswarm.supervisor.memguard import GuardPolicy, MemoryGuard, MemoryProbe, MemorySnapshot
from localswarm.supervisor.states import State

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_instance(instances: int, total_threads: int | None = None) -> int:
    """Divide the cores among instances: ggml worker threads spin, so never oversubscribe."""
    total = total_threads or available_cores()
    per = max(1, total // instances)
    if per * instances > total:
        logger.warning(
            "%d instances on %d threads: each gets 1 thread and the CPU is oversubscribed; "
            "use fewer instances for speed", instances, total,
        )
    return per


class Supervisor:
    """Owns the instance processes. Lives in the gateway's lifespan."""

    def __init__(
        self,
        backend: Backend,
        *,
        instances: int,
        log_dir: Path,
        timing: InstanceTiming | None = None,
        threads: int | None = None,
        instance_args: list[list[str]] | None = None,
        devices: list[str] | None = None,
        memory_guard: GuardPolicy | None = None,
        memory_need: int | None = None,
        memory_sample: Callable[[], MemorySnapshot] | None = None,
    ) -> None:
        """``devices`` names each instance's device (``cpu``, ``gpuN``); ``memory_guard``
        turns the memory guard on (:mod:`~localswarm.supervisor.memguard`) with the planner's
        ``memory_need`` per instance (None: measured) and ``memory_sample`` in place of the
        real probe (tests)."""
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self.backend = backend
        self.timing = timing or InstanceTiming()
        # Health checks get their own small pool, separate from request traffic.
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=instances * 2))
        per = threads_per_instance(instances, threads)
        self.instances = [
            Instance(
                name=f"inst-{i}",
                backend=backend,
                threads=per,
                seed=1000 + i,
                log_dir=log_dir,
                client=self._client,
                timing=self.timing,
                extra_args=tuple((instance_args or [])[i] if instance_args and i < len(instance_args) else ()),
                device=(devices[i] if devices and i < len(devices) else "ram"),
            )
            for i in range(instances)
        ]
        self._probe: MemoryProbe | None = None
        self.guard: MemoryGuard | None = None
        if memory_guard is not None:
            if memory_sample is None:
                gpus = sorted({int(i.device[3:]) for i in self.instances
                               if i.device.startswith("gpu") and i.device[3:].isdigit()})
                self._probe = MemoryProbe(gpus=gpus)
                memory_sample = self._probe.sample
            self.guard = MemoryGuard(self.instances, policy=memory_guard, sample=memory_sample, need=memory_need)
            for inst in self.instances:
                inst.guard = self.guard

    def start(self) -> None:
        if self.guard is not None:
            self.guard.start()
        for inst in self.instances:
            inst.start()

    async def wait_ready(self, timeout: float, *, all_: bool = False) -> bool:
        """Wait until one (or every) instance is READY; False on timeout or all FATAL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self.ready_instances()
            if (all_ and len(ready) == len(self.instances)) or (not all_ and ready):
                return True
            if all(i.state is State.FATAL for i in self.instances):
                return False
            await asyncio.sleep(0.1)
        return False

    def ready_instances(self) -> list[Instance]:
        return [i for i in self.instances if i.ready]

    async def stop(self) -> None:
        """Stop every instance in parallel; shielded so a second Ctrl-C cannot orphan one."""
        if self.guard is not None:
            await asyncio.shield(self.guard.stop())
        await asyncio.shield(asyncio.gather(*(i.stop() for i in self.instances), return_exceptions=True))
        if self._probe is not None:
            self._probe.close()
        await self._client.aclose()

    def status(self) -> list[dict[str, object]]:
        return [i.info() for i in self.instances]

    @property
    def degraded(self) -> bool:
        """True while the memory guard keeps an instance stopped."""
        return self.guard is not None and self.guard.degraded

    def memory_status(self) -> dict[str, Any] | None:
        """The memory guard's view (None without a guard): degraded, held instances, free memory."""
        return self.guard.status() if self.guard is not None else None
