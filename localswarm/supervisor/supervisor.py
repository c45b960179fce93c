"""N instances of one backend: start them, share the cores, stop them all cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import httpx

from localswarm.backends.base import Backend
from localswarm.supervisor.instance import Instance, InstanceTiming
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
    ) -> None:
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
            )
            for i in range(instances)
        ]

    def start(self) -> None:
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
        await asyncio.shield(asyncio.gather(*(i.stop() for i in self.instances), return_exceptions=True))
        await self._client.aclose()

    def status(self) -> list[dict[str, object]]:
        return [i.info() for i in self.instances]
