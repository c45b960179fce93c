"""``detect()``: put every probe together into one :class:`HardwareProfile`."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._run import Runner, logger, run_tool
from .amd import detect_amd
from .android import detect_android, is_android
from .apple import detect_apple
from .cpu import detect_cpu, detect_memory
from .intel import detect_intel
from .nvidia import detect_nvidia
from .types import CPUInfo, GPUInfo, HardwareProfile


SIMULATED_HOST_ENV = "LOCALSWARM_HARDWARE"


def simulated_host(path: str) -> HardwareProfile:
    """A machine described by a JSON file (``localswarm detect --json`` output) instead of probed.

    ``LOCALSWARM_HARDWARE=/path/profile.json`` makes every command plan for that machine: to
    see what localswarm would do on another box, and for tests of a first run on a GPU host.
    """
    import json

    from localswarm.errors import ConfigError

    try:
        data = json.loads(Path(path).expanduser().read_text())
        profile = HardwareProfile.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{SIMULATED_HOST_ENV}={path}: not a hardware profile ({exc})") from None
    note = f"simulated host from {path} ({SIMULATED_HOST_ENV})"
    return HardwareProfile(**{**profile.__dict__, "notes": (*profile.notes, note)})


def detect(
    *,
    run: Runner = run_tool,
    sysfs_root: Path = Path("/"),
    nvml: Any | None = None,
    system: str | None = None,
    machine: str | None = None,
    env: Mapping[str, str] | None = None,
    memory: tuple[int, int | None] | None = None,
) -> HardwareProfile:
    """Describe this machine: OS, CPU, RAM and every GPU.

    Every argument exists so tests can replay recorded tool output: ``run`` runs a tool,
    ``sysfs_root`` prefixes ``/sys`` and ``/proc`` paths, ``nvml`` stands for ``pynvml``,
    ``system``/``machine`` override :mod:`platform`, ``memory`` is the machine's
    ``(total, available)``. A cgroup memory limit (``{sysfs_root}/proc/self/cgroup``) below
    the machine's RAM becomes ``ram_total``; ``ram_source`` says which figure it is.
    Never raises: a missing tool or odd output means less information and a debug line.
    """
    env = os.environ if env is None else env
    if env.get(SIMULATED_HOST_ENV):
        return simulated_host(env[SIMULATED_HOST_ENV])
    system_name = (system or platform.system()).lower()
    arch = (machine or platform.machine()).lower()
    total, available, ram_source = detect_memory(sysfs_root, memory)
    model, physical, logical, _ = detect_cpu(sysfs_root)
    fallback_model = platform.processor() or arch or "unknown"
    cpu = CPUInfo(model=model or fallback_model, arch=arch, physical_cores=physical,
                  logical_cores=logical)
    gpus: list[GPUInfo] = []
    notes: list[str] = []
    mobile = False
    os_release = platform.release()

    if system_name == "darwin":
        if arch in {"arm64", "aarch64"}:
            apple_cpu, apple_gpu, memsize = detect_apple(run)
            if apple_cpu is not None:
                cpu = apple_cpu
            if apple_gpu is not None:
                gpus.append(apple_gpu)
            if memsize:
                total, ram_source = memsize, "physical"
        else:
            notes.append("Intel Mac: no Metal offload planned, CPU only")
    elif system_name == "linux" and is_android(env, sysfs_root):
        mobile = True
        system_name = "android"
        info, adreno = detect_android(run, sysfs_root, ram_total=total)
        gpus.extend(adreno)
        if info.get("android"):
            os_release = info["android"]
        if info.get("soc") and not model:
            cpu = CPUInfo(model=info["soc"], arch=arch, physical_cores=physical,
                          logical_cores=logical)
        if info.get("device"):
            notes.append(f"device: {info['device']}")
    else:
        for probe in (lambda: detect_nvidia(nvml), lambda: detect_amd(run, sysfs_root),
                      lambda: detect_intel(run, sysfs_root)):
            try:
                gpus.extend(probe())
            except Exception as exc:  # a probe bug must not take detection down
                logger.debug("hardware: probe failed: %r", exc)

    if not gpus:
        logger.debug("hardware: no GPU found, CPU only")
    return HardwareProfile(
        os=system_name,
        os_release=os_release,
        hostname=socket.gethostname(),
        cpu=cpu,
        ram_total=total,
        ram_available=available,
        ram_source=ram_source,
        gpus=tuple(gpus),
        mobile=mobile,
        notes=tuple(notes),
    )
