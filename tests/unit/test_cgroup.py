"""Cgroup memory limits (v1 and v2) in detection, on fake /proc + /sys trees.

The trees copy the kernel's file names and formats (Documentation/admin-guide/cgroup-v1/
memory.rst, cgroup-v2.rst): v1's "no limit" is LONG_MAX rounded down to a page
(9223372036854771712, read on this project's machine), v2's is the word ``max``.
"""

from __future__ import annotations

from pathlib import Path

from localswarm.hardware.cgroup import cgroup_memory
from localswarm.hardware.cpu import detect_memory
from localswarm.hardware.detect import detect
from localswarm.hardware.report import format_table
from localswarm.hardware.types import HardwareProfile

GiB = 1024**3
MiB = 1024**2
V1_UNLIMITED = "9223372036854771712"

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(root: Path, *, limit: str, usage: int, inactive_file: int = 0, hierarchical: str | None = None,
            cgroup: str = "/docker/abc") -> Path:
    _write(root, "proc/self/cgroup", f"5:devices:{cgroup}\n4:memory:{cgroup}\n0::/\n")
    _write(root, "proc/self/mountinfo", V1_MOUNTINFO)
    d = f"sys/fs/cgroup/memory{cgroup}"
    _write(root, f"{d}/memory.limit_in_bytes", limit + "\n")
    _write(root, f"{d}/memory.usage_in_bytes", f"{usage}\n")
    _write(root, f"{d}/memory.stat", f"cache 1\nrss 2\ninactive_file {inactive_file}\n"
           f"hierarchical_memory_limit {hierarchical or limit}\ntotal_inactive_file {inactive_file}\n")
    (root / "sys/fs/cgroup/unified").mkdir(parents=True, exist_ok=True)
    return root / d


def v2_tree(root: Path, *, limits: dict[str, str], current: int, inactive_file: int = 0,
            cgroup: str = "/user.slice/app.service") -> Path:
    _write(root, "proc/self/cgroup", f"0::{cgroup}\n")
    _write(root, "proc/self/mountinfo", V2_MOUNTINFO)
    for rel, value in limits.items():
        _write(root, f"sys/fs/cgroup{rel}/memory.max", value + "\n")
    d = f"sys/fs/cgroup{cgroup}"
    _write(root, f"{d}/memory.current", f"{current}\n")
    _write(root, f"{d}/memory.stat", f"anon 5\nfile 7\ninactive_file {inactive_file}\nactive_file 3\n")
    return root / d


def test_v1_limit_and_usage(tmp_path: Path) -> None:
    d = v1_tree(tmp_path, limit=str(2 * GiB), usage=600 * MiB, inactive_file=100 * MiB)
    cg = cgroup_memory(tmp_path)
    assert cg is not None and cg.version == "v1" and cg.path == d
    assert cg.limit == 2 * GiB and cg.usage == 600 * MiB
    assert cg.available == 2 * GiB - 500 * MiB  # inactive page cache is reclaimable
    assert cg.source == "cgroup v1 limit"


def test_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    v1_tree(tmp_path, limit=V1_UNLIMITED, usage=600 * MiB)
    assert cgroup_memory(tmp_path) is None


def test_v1_parent_limit_counts(tmp_path: Path) -> None:
    """Unlimited itself, but a parent is limited: memory.stat's hierarchical_memory_limit."""
    v1_tree(tmp_path, limit=V1_UNLIMITED, usage=10 * MiB, hierarchical=str(3 * GiB))
    cg = cgroup_memory(tmp_path)
    assert cg is not None and cg.limit == 3 * GiB


def test_v1_inside_a_container_uses_the_mount_root(tmp_path: Path) -> None:
    """Docker without a cgroup namespace: /proc/self/cgroup names /docker/<id>, but the
    container sees its own cgroup mounted at /sys/fs/cgroup/memory."""
    _write(tmp_path, "proc/self/cgroup", "4:memory:/docker/0123abcd\n")
    _write(tmp_path, "proc/self/mountinfo", V1_MOUNTINFO.replace(" / /sys/fs/cgroup/memory",
                                                                 " /docker/0123abcd /sys/fs/cgroup/memory"))
    _write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", str(GiB))
    _write(tmp_path, "sys/fs/cgroup/memory/memory.usage_in_bytes", str(100 * MiB))
    cg = cgroup_memory(tmp_path)
    assert cg is not None and cg.limit == GiB and cg.available == GiB - 100 * MiB
    assert cg.path == tmp_path / "sys/fs/cgroup/memory"


def test_v2_smallest_limit_of_the_ancestors(tmp_path: Path) -> None:
    d = v2_tree(tmp_path, limits={"/user.slice": str(4 * GiB), "/user.slice/app.service": "max"},
                current=GiB, inactive_file=256 * MiB)
    cg = cgroup_memory(tmp_path)
    assert cg is not None and cg.version == "v2" and cg.path == d
    assert cg.limit == 4 * GiB and cg.available == 4 * GiB - GiB + 256 * MiB
    assert cg.source == "cgroup v2 limit"


def test_v2_max_everywhere_is_no_limit(tmp_path: Path) -> None:
    v2_tree(tmp_path, limits={"/user.slice/app.service": "max"}, current=GiB)
    assert cgroup_memory(tmp_path) is None


def test_v2_without_the_memory_controller(tmp_path: Path) -> None:
    """Hybrid hosts (this project's machine): a v2 hierarchy without memory.* files."""
    _write(tmp_path, "proc/self/cgroup", "0::/x\n")
    _write(tmp_path, "proc/self/mountinfo", V1_MOUNTINFO)
    (tmp_path / "sys/fs/cgroup/unified/x").mkdir(parents=True)
    assert cgroup_memory(tmp_path) is None


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    assert cgroup_memory(tmp_path) is None  # macOS, Windows, an empty /proc


def test_detect_memory_takes_the_smaller_figure(tmp_path: Path) -> None:
    v1_tree(tmp_path, limit=str(2 * GiB), usage=GiB)
    assert detect_memory(tmp_path, (24 * GiB, 18 * GiB)) == (2 * GiB, GiB, "cgroup v1 limit")
    # the machine has less free than the cgroup allows: the machine's figure caps available
    assert detect_memory(tmp_path, (24 * GiB, 512 * MiB)) == (2 * GiB, 512 * MiB, "cgroup v1 limit")
    # a limit above the machine's RAM changes nothing
    assert detect_memory(tmp_path, (GiB, GiB // 2)) == (GiB, GiB // 2, "physical")


def test_detect_and_its_table_say_where_ram_comes_from(tmp_path: Path) -> None:
    v2_tree(tmp_path, limits={"/user.slice/app.service": str(2 * GiB)}, current=GiB)

    class NoNVML:
        def nvmlInit(self) -> None:
            raise RuntimeError("no driver")

    p = detect(run=lambda argv: None, sysfs_root=tmp_path, nvml=NoNVML(), system="Linux", machine="x86_64",
               env={}, memory=(24 * GiB, 20 * GiB))
    assert p.ram_total == 2 * GiB and p.ram_available == GiB and p.ram_source == "cgroup v2 limit"
    assert "2.0 GiB total (cgroup v2 limit)" in format_table(p)
    assert HardwareProfile.from_dict(p.to_dict()).ram_source == "cgroup v2 limit"
