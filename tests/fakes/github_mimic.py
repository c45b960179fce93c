"""A local HTTP server mimicking llama.cpp's GitHub releases API and asset downloads.

Laid out like the real releases (``/work/shared/reference/real-services.md`` §2, read in
llama.cpp's ``.github/workflows/release.yml`` / ``release-publish.yml`` of b11434 and GitHub's
REST docs):

* Nightly builds are tags ``b<N>``, published as **prereleases** with every binary; a semver
  release ``vX.Y.Z`` is the newest non-prerelease and carries only ``nightly-tag.txt``. So
  ``GET /repos/ggml-org/llama.cpp/releases/latest`` answers the ``vX.Y.Z`` one, with no binaries.
* ``GET /repos/ggml-org/llama.cpp/releases`` lists both, newest first; ``/releases/tags/<tag>``
  answers one.
* Assets: ``name``, ``size``, ``browser_download_url`` (``/ggml-org/llama.cpp/releases/download/<tag>/<name>``,
  which 302-redirects to ``/download/<tag>/<name>`` as GitHub does to its object storage) and
  ``digest`` (``"sha256:<hex>"``, or null for assets older than the 2025-06 digest rollout).
* Linux CUDA builds (``ubuntu-cuda-<v>-<arch>``) come with ``cudart-llama-b<N>-bin-ubuntu-cuda-<v>-<arch>.tar.gz``;
  Windows ones with ``cudart-llama-bin-win-cuda-<v>-<arch>.zip`` (no tag in the name).

Archives are built on the fly by :func:`make_release_archive`: a tiny shell script named
``llama-server`` that prints a version (and, for ``--list-devices``, the device line of its
backend), under a top folder ``llama-b<N>/`` for Linux/macOS tarballs and flat in Windows zips,
plus ``libggml-<backend>.so`` files and a relative symlink. :func:`make_traversal_tar`,
:func:`make_symlink_escape_tar` and :func:`make_traversal_zip` build malicious archives.

Runs in a daemon thread on 127.0.0.1 (``http.server.ThreadingHTTPServer``); every request
is recorded in ``mimic.requests`` as ``(method, path)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

REPO = "ggml-org/llama.cpp"

# The archive variants of b11434 (real-services.md §2.2; llama-b<N>-bin-<variant>).
STANDARD_VARIANTS = (
    "macos-arm64",
    "macos-x64",
    "ubuntu-x64",
    "ubuntu-arm64",
    "ubuntu-vulkan-x64",
    "ubuntu-vulkan-arm64",
    "ubuntu-cuda-12.8-x64",
    "ubuntu-cuda-13.4-x64",
    "ubuntu-cuda-13.4-arm64",
    "ubuntu-rocm-10.0-x64",
    "ubuntu-sycl-fp32-x64",
    "ubuntu-sycl-fp16-x64",
    "win-cpu-x64",
    "win-cuda-12.4-x64",
    "win-cuda-13.4-x64",
    "win-vulkan-x64",
    "win-sycl-x64",
    "win-rocm-10.0-x64",
    "android-arm64",
)

_BACKEND_OF = (("cuda", "cuda", "CUDA0: NVIDIA GeForce RTX 4090 (24080 MiB, 23500 MiB free)"),
               ("rocm", "hip", "ROCm0: AMD Radeon RX 7900 XTX (24560 MiB, 24000 MiB free)"),
               ("sycl", "sycl", "SYCL0: Intel(R) Arc(TM) A770 Graphics (16225 MiB, 16000 MiB free)"),
               ("vulkan", "vulkan", "Vulkan0: GPU (8192 MiB, 8000 MiB free)"),
               ("macos-arm64", "metal", "MTL0: Apple M4 Pro (36864 MiB, 36000 MiB free)"))


def backend_of(variant: str) -> tuple[str | None, str | None]:
    """(ggml library backend, --list-devices line) a build of ``variant`` has."""
    for key, lib, line in _BACKEND_OF:
        if key in variant:
            return lib, line
    return None, None


def script_for(build: int, variant: str) -> bytes:
    """The stand-in ``llama-server``: prints a version, or its backend's device for --list-devices."""
    _, line = backend_of(variant)
    return (f'#!/bin/sh\nif [ "$1" = "--list-devices" ]; then echo "Available devices:"; '
            f'echo "  {line or "(none)"}"; exit 0; fi\n'
            f'echo "version: {build} (mimic)"\necho "built for {variant}"\n').encode()


def archive_name(build: int, variant: str) -> str:
    """``llama-b<N>-bin-<variant>.tar.gz`` (``.zip`` for Windows), as in real releases."""
    ext = "zip" if variant.startswith("win-") else "tar.gz"
    return f"llama-b{build}-bin-{variant}.{ext}"


def cudart_name(variant: str, build: int = 0) -> str:
    """Windows: ``cudart-llama-bin-win-cuda-<v>-x64.zip`` (no tag); Linux: ``cudart-llama-b<N>-bin-ubuntu-cuda-<v>-<arch>.tar.gz``."""
    if variant.startswith("win-"):
        return f"cudart-llama-bin-{variant}.zip"
    return f"cudart-llama-b{build}-bin-{variant}.tar.gz"


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tf.addfile(info, io.BytesIO(data))


def _tar_link(tf: tarfile.TarFile, name: str, target: str, *, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tf.addfile(info)


def _zip_add(zf: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def make_release_archive(build: int, variant: str) -> bytes:
    """A small archive laid out like the real one for ``variant``."""
    script = script_for(build, variant)
    if variant.startswith("win-"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            _zip_add(zf, "llama-server.exe", script, 0o755)
            _zip_add(zf, "ggml.dll", b"not really a dll")
            lib, _ = backend_of(variant)
            if lib:
                _zip_add(zf, f"ggml-{lib}.dll", b"not really a dll")
            _zip_add(zf, "llama.dll", b"not really a dll")
        return buf.getvalue()
    buf = io.BytesIO()
    top = f"llama-b{build}"
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        d = tarfile.TarInfo(top)
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tf.addfile(d)
        _tar_add(tf, f"{top}/llama-server", script, 0o755)
        _tar_add(tf, f"{top}/libggml.so.0", b"\x7fELF not really")
        lib, _ = backend_of(variant)
        if lib and lib != "metal":
            _tar_add(tf, f"{top}/libggml-{lib}.so", b"\x7fELF not really")
        _tar_link(tf, f"{top}/libggml.so", "libggml.so.0")
        _tar_add(tf, f"{top}/LICENSE", b"MIT\n")
    return buf.getvalue()


def make_cudart_zip(variant: str, build: int = 0) -> bytes:
    """The CUDA runtime archive that goes next to a CUDA build (a zip on Windows, a tarball on Linux)."""
    if not variant.startswith("win-"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            _tar_add(tf, f"llama-b{build}/libcudart.so.13", b"runtime " + variant.encode())
            _tar_add(tf, f"llama-b{build}/libcublas.so.13", b"blas")
        return buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _zip_add(zf, "cudart64_12.dll", b"runtime " + variant.encode())
        _zip_add(zf, "cublas64_12.dll", b"blas")
    return buf.getvalue()


def make_traversal_tar(build: int) -> bytes:
    """A tarball with a valid ``llama-server`` and a member escaping via ``../``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        _tar_add(tf, f"llama-b{build}/llama-server", script_for(build, "evil"), 0o755)
        _tar_add(tf, "../../evil.sh", b"#!/bin/sh\necho pwned\n", 0o755)
    return buf.getvalue()


def make_absolute_tar(build: int) -> bytes:
    """A tarball with an absolute member path."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        _tar_add(tf, f"llama-b{build}/llama-server", script_for(build, "evil"), 0o755)
        _tar_add(tf, "/tmp/localswarm-evil.sh", b"#!/bin/sh\necho pwned\n", 0o755)
    return buf.getvalue()


def make_symlink_escape_tar(build: int) -> bytes:
    """A tarball whose symlink points outside, then writes through it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        _tar_add(tf, f"llama-b{build}/llama-server", script_for(build, "evil"), 0o755)
        _tar_link(tf, f"llama-b{build}/escape", "../../..")
        _tar_add(tf, f"llama-b{build}/escape/evil.sh", b"pwned", 0o755)
    return buf.getvalue()


def make_device_tar(build: int) -> bytes:
    """A tarball containing a character device node."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        _tar_add(tf, f"llama-b{build}/llama-server", script_for(build, "evil"), 0o755)
        dev = tarfile.TarInfo(f"llama-b{build}/null")
        dev.type = tarfile.CHRTYPE
        dev.devmajor, dev.devminor = 1, 3
        tf.addfile(dev)
    return buf.getvalue()


def make_traversal_zip() -> bytes:
    """A Windows-style zip with a ``..\\`` member."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _zip_add(zf, "llama-server.exe", b"MZ", 0o755)
        _zip_add(zf, "..\\..\\evil.dll", b"pwned")
    return buf.getvalue()


@dataclass
class MimicAsset:
    """One release asset: its bytes and the digest the API advertises."""

    name: str
    data: bytes
    digest: str | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class GitHubMimic:
    """The releases-API mimic. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self, build: int = 11434, *, variants: tuple[str, ...] = STANDARD_VARIANTS, with_digest: bool = True,
        semver: str = "v0.6.0",
    ) -> None:
        self.build = build
        self.semver = semver  # the newest non-prerelease: what /releases/latest answers, without binaries
        self.assets: dict[str, MimicAsset] = {}
        self.requests: list[tuple[str, str]] = []
        self.api_status = 200
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._address: tuple[str, int] | None = None
        for variant in variants:
            self.add_asset(
                archive_name(build, variant), make_release_archive(build, variant), digest=with_digest
            )
            if "-cuda-" in variant:
                self.add_asset(cudart_name(variant, build), make_cudart_zip(variant, build), digest=with_digest)

    @property
    def tag(self) -> str:
        return f"b{self.build}"

    def add_asset(self, name: str, data: bytes, *, digest: bool | str | None = True) -> MimicAsset:
        """Publish an asset; ``digest`` True: the real sha256, a string: that value, None/False: null."""
        if digest is True:
            adv: str | None = "sha256:" + hashlib.sha256(data).hexdigest()
        elif isinstance(digest, str):
            adv = digest
        else:
            adv = None
        asset = MimicAsset(name, data, adv)
        self.assets[name] = asset
        return asset

    def tamper(self, name: str) -> None:
        """Serve bytes that differ from what the advertised digest says (same size)."""
        old = self.assets[name]
        data = bytearray(old.data)
        data[len(data) // 2] ^= 0xFF
        self.assets[name] = MimicAsset(name, bytes(data), old.digest)

    # -- inspection --------------------------------------------------------------------

    def count(self, prefix: str = "/") -> int:
        """Requests whose path starts with ``prefix``."""
        with self._lock:
            return sum(1 for _, p in self.requests if p.startswith(prefix))

    @property
    def api_calls(self) -> int:
        return self.count(f"/repos/{REPO}/releases")

    @property
    def downloads(self) -> int:
        return self.count("/download/")

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._address is not None, "mimic not started"
        host, port = self._address  # kept after stop(): the URL then refuses connections
        return f"http://{host}:{port}"

    @property
    def api_base(self) -> str:
        """Value for ``api_base=`` / ``LOCALSWARM_GITHUB_API``."""
        return self.base_url

    def release_json(self) -> dict[str, object]:
        """The nightly ``b<N>`` release (a prerelease, with every binary)."""
        return {
            "tag_name": self.tag,
            "name": self.tag,
            "draft": False,
            "prerelease": True,
            "assets": [
                {
                    "name": a.name,
                    "size": len(a.data),
                    "content_type": "application/zip" if a.name.endswith(".zip") else "application/gzip",
                    "state": "uploaded",
                    "digest": a.digest,
                    "browser_download_url": f"{self.base_url}/{REPO}/releases/download/{self.tag}/{a.name}",
                }
                for a in self.assets.values()
            ],
        }

    def semver_json(self) -> dict[str, object]:
        """The ``vX.Y.Z`` release: not a prerelease, only ``nightly-tag.txt`` naming the build."""
        return {"tag_name": self.semver, "name": self.semver, "draft": False, "prerelease": False,
                "assets": [{"name": "nightly-tag.txt", "size": len(self.tag) + 1, "digest": None, "state": "uploaded",
                            "browser_download_url": f"{self.base_url}/{REPO}/releases/download/{self.semver}/nightly-tag.txt"}]}

    def start(self) -> GitHubMimic:
        handler = type("Handler", (_Handler,), {"mimic": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self._address = (str(host), int(port))
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="github-mimic", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GitHubMimic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    mimic: GitHubMimic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(
        self, status: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        path = unquote(urlsplit(self.path).path)
        with self.mimic._lock:
            self.mimic.requests.append(("GET", path))
        if path.startswith(f"/repos/{REPO}/releases"):
            if self.mimic.api_status != 200:
                self._send(self.mimic.api_status, b'{"message": "API rate limit exceeded"}')
                return
            rest = path[len(f"/repos/{REPO}/releases"):]
            by_tag = {self.mimic.tag: self.mimic.release_json(), self.mimic.semver: self.mimic.semver_json()}
            if rest == "/latest":
                self._send(200, json.dumps(self.mimic.semver_json()).encode())
                return
            if rest in ("", "/"):
                self._send(200, json.dumps([self.mimic.semver_json(), self.mimic.release_json()]).encode())
                return
            m = re.fullmatch(r"/tags/(.+)", rest)
            if m and m[1] in by_tag:
                self._send(200, json.dumps(by_tag[m[1]]).encode())
                return
        if path == f"/download/{self.mimic.semver}/nightly-tag.txt":
            self._send(200, (self.mimic.tag + "\n").encode(), "text/plain")
            return
        prefix = f"/{REPO}/releases/download/"
        if path.startswith(prefix):
            # GitHub redirects to its object storage; so do we.
            rest = path[len(prefix) :]
            self._send(302, b"", "text/plain", {"Location": f"/download/{rest}"})
            return
        if path.startswith("/download/"):
            name = path.rsplit("/", 1)[-1]
            asset = self.mimic.assets.get(name)
            if asset is not None:
                self._send(200, asset.data, "application/octet-stream")
                return
        self._send(404, b'{"message": "Not Found"}')
