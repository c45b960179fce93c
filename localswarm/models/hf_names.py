"""Hugging Face model names, as Ollama and LM Studio users type them.

``Org/Repo-GGUF``, ``Org/Repo-GGUF:Q4_K_M``, ``hf.co/Org/Repo:Q4_K_M`` (also
``huggingface.co/…`` and ``https://…``): the repository's GGUF files are listed (one Hub
API call), the quantization picks the file (Ollama's rule: case-insensitive, ``Q4_K_M`` when
none is given, else the only or first file), and the file's GGUF header is read with HTTP
``Range`` requests before anything is downloaded, so the planner can say whether it fits
from the model's real numbers (layers, KV heads, weights) rather than a guess.

The header is read through ``/{repo}/resolve/{commit}/{file}`` like a download (the Hub
answers 302 to its CDN, which honours ``Range: bytes=0-N`` with 206; huggingface_hub's own
resume uses the same request). A GGUF header holds the vocabulary, so it is read in growing
slices (8 MiB, doubled up to 128 MiB) until the tensor table parses.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from localswarm.errors import DownloadError, ModelNotFound

DEFAULT_QUANT = "q4_k_m"
FIRST_SLICE = 8 * 1024 * 1024
LAST_SLICE = 128 * 1024 * 1024
_HOSTS = ("hf.co/", "huggingface.co/")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class HFName:
    repo: str
    quant: str | None  # as typed (None: the default)

    def __str__(self) -> str:
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


def parse_hf_name(spec: str) -> HFName | None:
    """``HFName`` when ``spec`` is a Hugging Face name, else None (a path, a registry id...)."""
    text = spec.strip()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    hosted = text.startswith(_HOSTS)
    for host in _HOSTS:
        text = text.removeprefix(host)
    repo, _, quant = text.partition(":")
    if not _REPO_RE.match(repo) or repo.lower().endswith(".gguf") or (quant and "/" in quant):
        return None
    if not hosted and Path(spec).expanduser().exists():
        return None  # a local folder named like Org/Repo wins
    return HFName(repo=repo, quant=quant or None)


def choose_file(name: HFName, files: list[str]) -> str:
    """The GGUF file of ``files`` that ``name``'s quantization names (the first part of a split)."""
    ggufs = [f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower()]
    ggufs = [f for f in ggufs if not (m := _SPLIT_RE.search(f)) or m[1] == "00001"]
    if not ggufs:
        raise ModelNotFound(f"{name.repo} has no GGUF file: llama-server runs GGUF models "
                            "(look for a repository whose name ends in -GGUF)")
    wanted = (name.quant or DEFAULT_QUANT).lower()
    pattern = re.compile(rf"(^|[-_.]){re.escape(wanted)}([-_.]|$)")
    hits = [f for f in ggufs if pattern.search(PurePosixPath(f).name.lower())]
    if hits:
        return sorted(hits, key=len)[0]
    if name.quant is None:
        return sorted(ggufs)[0] if len(ggufs) == 1 else _refuse(name, ggufs, DEFAULT_QUANT)
    return _refuse(name, ggufs, name.quant)


def _refuse(name: HFName, ggufs: list[str], quant: str) -> str:
    raise ModelNotFound(f"{name.repo} has no {quant.upper()} file; choose one of: "
                        + ", ".join(f"{name.repo}:{_quant_of(f)}" for f in sorted(ggufs)))


def _quant_of(filename: str) -> str:
    stem = _SPLIT_RE.sub("", PurePosixPath(filename).name).removesuffix(".gguf")
    m = re.search(r"(I?Q\d[A-Z0-9_]*|F16|BF16|F32)$", stem, re.IGNORECASE)
    return m[1] if m else stem


def repo_files(repo: str, *, revision: str = "main") -> tuple[str, list[str]]:
    """``(commit, file names)`` of ``repo`` at ``revision`` (one Hub API call)."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from localswarm.models.download import hub_endpoint, with_retries

    try:
        info = with_retries(lambda: HfApi(endpoint=hub_endpoint()).model_info(repo, revision=revision),
                            f"listing {repo}")
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelNotFound(f"{repo}@{revision} not found on the Hugging Face Hub "
                            "(or it is private: set HF_TOKEN)") from None
    except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:
        raise DownloadError(f"cannot list {repo} on the Hugging Face Hub: {exc}") from None
    return str(info.sha), [s.rfilename for s in info.siblings or []]


def remote_header(repo: str, filename: str, commit: str, *, into: Path) -> Path:
    """The start of ``repo/filename`` holding its whole GGUF header, written to ``into``
    (read with ``Range`` requests; the planner reads it like a GGUF)."""
    import httpx
    from huggingface_hub.utils import build_hf_headers

    from localswarm.models.gguf_meta import GGUFFormatError, read_gguf_meta

    from localswarm.models.download import hub_endpoint

    url = f"{hub_endpoint().rstrip('/')}/{repo}/resolve/{commit}/{filename}"
    size = FIRST_SLICE
    with httpx.Client(follow_redirects=True, timeout=60, headers=build_hf_headers()) as client:
        while True:
            try:
                resp = client.get(url, headers={"Range": f"bytes=0-{size - 1}"})
            except httpx.HTTPError as exc:
                raise DownloadError(f"reading the header of {repo}/{filename}: {exc}") from None
            if resp.status_code not in (200, 206):
                raise DownloadError(f"reading the header of {repo}/{filename}: HTTP {resp.status_code}")
            into.write_bytes(resp.content[:size])
            whole = resp.status_code == 200 or len(resp.content) < size
            try:
                read_gguf_meta(into)
                return into
            except GGUFFormatError as exc:
                if whole or size >= LAST_SLICE or "bad magic" in str(exc) or "version" in str(exc):
                    raise GGUFFormatError(f"{repo}/{filename}: not a GGUF header this code can read ({exc})") from None
            size *= 2


@dataclass(frozen=True)
class RemoteGGUF:
    repo: str
    filename: str
    commit: str
    header: Path  # a local file holding the header (the planner reads it)

    @property
    def model_id(self) -> str:
        return f"{self.repo}:{_quant_of(self.filename)}".lower()


def inspect_remote(name: HFName, *, workdir: Path | None = None) -> RemoteGGUF:
    """Which file ``name`` means and its header, before any download."""
    commit, files = repo_files(name.repo)
    filename = choose_file(name, files)
    folder = workdir or Path(tempfile.mkdtemp(prefix="localswarm-header-"))
    header = remote_header(name.repo, filename, commit, into=folder / PurePosixPath(filename).name)
    return RemoteGGUF(repo=name.repo, filename=filename, commit=commit, header=header)
