"""Throwaway memory cgroups for tests (Linux, root): a real limit around real processes.

The cgroup is made *inside* this process's own memory cgroup (so whatever limits or
accounts for the test runner still holds), named with the caller's prefix. v1
(``/sys/fs/cgroup/memory``) and v2 (unified, with the memory controller) are both handled.

    with memory_cgroup("ls-guard") as cg:
        proc = subprocess.Popen(cg.wrap([sys.executable, "-c", "..."]))   # starts inside it
        cg.set_limit(512 << 20)
        cg.oom_kills()      # how many processes the kernel's OOM killer took in it

:func:`unavailable_reason` says why not, for skips.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


def _own(controller_line: str) -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if controller_line == "v1" and "memory" in controllers.split(","):
            return path
        if controller_line == "v2" and hierarchy == "0" and controllers == "":
            return path
    return None


def _parent() -> tuple[str, Path] | None:
    """(version, the directory our cgroup is made in)."""
    own = _own("v1")
    if own is not None and (V1_ROOT / "memory.limit_in_bytes").exists():
        here = V1_ROOT / own.lstrip("/")
        return "v1", here if here.is_dir() else V1_ROOT
    own = _own("v2")
    if own is not None and "memory" in (V2_ROOT / "cgroup.controllers").read_text(errors="replace").split():
        here = V2_ROOT / own.lstrip("/")
        if "memory" in (here / "cgroup.subtree_control").read_text(errors="replace").split():
            return "v2", here
    return None


def unavailable_reason() -> str | None:
    """Why a memory cgroup cannot be made here, or None if it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "memory cgroups need root"
    try:
        if _parent() is None:
            return "no cgroup memory controller (v1 /sys/fs/cgroup/memory, or v2 with memory delegated to us)"
    except OSError as exc:
        return f"cannot read cgroups: {exc}"
    return None


class MemoryCgroup:
    def __init__(self, version: str, path: Path) -> None:
        self.version = version
        self.path = path

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv that joins this cgroup, then execs ``argv`` (children stay in it)."""
        return ["sh", "-c", f'echo $$ > {shlex.quote(str(self.path / "cgroup.procs"))} && exec "$@"', "sh",
                *argv]

    def set_limit(self, limit: int) -> None:
        (self.path / ("memory.limit_in_bytes" if self.version == "v1" else "memory.max")).write_text(str(limit))

    def usage(self) -> int:
        return int(self._read("memory.usage_in_bytes" if self.version == "v1" else "memory.current"))

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this cgroup (v1 ``oom_control``, v2 ``memory.events``)."""
        text = self._read("memory.oom_control" if self.version == "v1" else "memory.events")
        fields = dict(line.split() for line in text.splitlines() if line.strip())
        return int(fields.get("oom_kill", 0))

    def limit_hits(self) -> int:
        """Times usage hit the limit (v1 ``memory.failcnt``; v2 ``max`` events)."""
        if self.version == "v1":
            return int(self._read("memory.failcnt"))
        return int(dict(line.split() for line in self._read("memory.events").splitlines())["max"])

    def under_oom(self) -> bool:
        if self.version != "v1":
            return False
        return "under_oom 1" in self._read("memory.oom_control")

    def pids(self) -> list[int]:
        return [int(p) for p in self._read("cgroup.procs").split()]

    def remove(self) -> None:
        """Kill what is left inside, then remove the cgroup."""
        deadline = time.monotonic() + 10
        while self.path.exists() and time.monotonic() < deadline:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            try:
                self.path.rmdir()
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def memory_cgroup(prefix: str) -> Iterator[MemoryCgroup]:
    found = _parent()
    if found is None:
        raise RuntimeError(unavailable_reason() or "no memory cgroup")
    version, parent = found
    path = parent / f"{prefix}-{os.getpid()}"
    path.mkdir()
    cg = MemoryCgroup(version, path)
    try:
        yield cg
    finally:
        cg.remove()
