"""The memory limit of this process's cgroup (containers, systemd slices), v1 and v2 (Linux).

A container sees the host's RAM in ``/proc/meminfo`` (and so in ``psutil``) but may use
only its cgroup's limit: past it the kernel's OOM killer picks a process. Both hierarchies:

- **v2** (unified): ``memory.max`` (``max`` = no limit) and ``memory.current`` in the
  process's cgroup and its ancestors up to the mount root;
- **v1**: ``memory.limit_in_bytes`` (a huge page-rounded ``LONG_MAX``, ~9.2e18, = no
  limit), ``memory.usage_in_bytes``, and ``hierarchical_memory_limit`` in ``memory.stat``
  (the smallest limit of the cgroup and its ancestors).

Usage counts the page cache; its inactive file pages (``inactive_file``) are reclaimed
before anything is killed, so they count as available (as ``docker stats`` does).

Where the cgroup lives: ``/proc/self/cgroup`` names it inside its hierarchy and
``/proc/self/mountinfo`` says where that hierarchy is mounted. Inside a container the
mount is often the container's own cgroup already (its path is not found under it): then
the mount point itself is the cgroup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._run import logger, read_text

#: v1 writes "no limit" as LONG_MAX rounded down to a page; anything this large is no limit.
UNLIMITED = 1 << 60


@dataclass(frozen=True)
class CgroupMemory:
    """The memory limit of one cgroup, its usage and the reclaimable part of that usage."""

    version: str  # "v1" or "v2"
    path: Path  # the cgroup's directory (under sysfs_root)
    limit: int  # bytes; never "unlimited" (no limit → no CgroupMemory at all)
    usage: int | None  # bytes charged now, page cache included
    reclaimable: int  # inactive file pages, given back under pressure without killing

    @property
    def available(self) -> int | None:
        """Bytes that may still be allocated before the limit: limit − (usage − reclaimable)."""
        if self.usage is None:
            return None
        return max(0, self.limit - max(0, self.usage - self.reclaimable))

    @property
    def source(self) -> str:
        """Where the figure came from, for people: ``cgroup v1 limit``."""
        return f"cgroup {self.version} limit"


def _number(text: str | None) -> int | None:
    """A cgroup value: bytes, or None for ``max``, an unlimited v1 value or garbage."""
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        logger.debug("hardware: not a cgroup number: %r", text[:40])
        return None
    return value if 0 < value < UNLIMITED else None


def _stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (read_text(path / "memory.stat") or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _memberships(sysfs_root: Path) -> tuple[str | None, str | None]:
    """(v1 memory cgroup path, v2 cgroup path) from ``/proc/self/cgroup``."""
    v1 = v2 = None
    for line in (read_text(sysfs_root / "proc" / "self" / "cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v1, v2


def _mounts(sysfs_root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """((root, mount point) of each v1 memory mount, (root, mount point) of each cgroup2 mount)."""
    v1: list[tuple[str, Path]] = []
    v2: list[tuple[str, Path]] = []
    for line in (read_text(sysfs_root / "proc" / "self" / "mountinfo") or "").splitlines():
        head, sep, tail = line.partition(" - ")
        fields, super_ = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(super_) < 3:
            continue
        where = (fields[3], sysfs_root / fields[4].lstrip("/"))
        if super_[0] == "cgroup2":
            v2.append(where)
        elif super_[0] == "cgroup" and "memory" in super_[2].split(","):
            v1.append(where)
    if not v1 and not v2:  # no mountinfo (odd /proc): the usual places
        base = sysfs_root / "sys" / "fs" / "cgroup"
        v1 = [("/", base / "memory")]
        v2 = [("/", base), ("/", base / "unified")]
    return v1, v2


def _locate(cgroup: str, mounts: list[tuple[str, Path]]) -> tuple[Path, Path] | None:
    """(the cgroup's directory, its mount point) under one of ``mounts``, if it exists."""
    for root, mount in mounts:
        rel = cgroup
        if root != "/" and (cgroup == root or cgroup.startswith(root.rstrip("/") + "/")):
            rel = cgroup[len(root.rstrip("/")):]
        candidate = mount / rel.lstrip("/")
        if candidate.is_dir():
            return candidate, mount
    for _, mount in mounts:  # a container's own cgroup mounted as the root of the hierarchy
        if mount.is_dir():
            return mount, mount
    return None


def _v2(directory: Path, mount: Path) -> CgroupMemory | None:
    if not (directory / "memory.max").exists():
        return None  # the memory controller is not enabled for this cgroup
    limit: int | None = None
    where = directory
    while True:  # v2 has no hierarchical figure: the smallest memory.max up to the mount
        value = _number(read_text(where / "memory.max"))
        if value is not None and (limit is None or value < limit):
            limit = value
        if where == mount or where.parent == where or mount not in where.parents:
            break
        where = where.parent
    if limit is None:
        return None
    usage = _number(read_text(directory / "memory.current"))
    return CgroupMemory("v2", directory, limit, usage, _stat(directory).get("inactive_file", 0))


def _v1(directory: Path) -> CgroupMemory | None:
    stat = _stat(directory)
    limits = [v for v in (_number(read_text(directory / "memory.limit_in_bytes")),
                          _number(str(stat["hierarchical_memory_limit"]))
                          if "hierarchical_memory_limit" in stat else None) if v is not None]
    if not limits:
        return None
    usage = _number(read_text(directory / "memory.usage_in_bytes"))
    reclaimable = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return CgroupMemory("v1", directory, min(limits), usage, reclaimable)


def cgroup_memory(sysfs_root: Path = Path("/")) -> CgroupMemory | None:
    """This process's cgroup memory limit, or ``None`` when there is none (or no cgroups).

    ``sysfs_root`` prefixes every ``/proc`` and ``/sys`` path (tests pass a fake tree).
    When both hierarchies limit memory, the smaller limit wins. Never raises.
    """
    try:
        v1_path, v2_path = _memberships(sysfs_root)
        v1_mounts, v2_mounts = _mounts(sysfs_root)
        found: list[CgroupMemory] = []
        if v2_path is not None and (at := _locate(v2_path, v2_mounts)):
            if (mem := _v2(*at)) is not None:
                found.append(mem)
        if v1_path is not None and (at := _locate(v1_path, v1_mounts)):
            if (mem := _v1(at[0])) is not None:
                found.append(mem)
    except OSError as exc:
        logger.debug("hardware: cgroup memory: %s", exc)
        return None
    return min(found, key=lambda m: m.limit) if found else None
