"""Download GGUF models from the Hugging Face Hub into localswarm's cache, and fall back offline.

Downloads go through ``huggingface_hub.hf_hub_download`` into ``cache_dir()/"models"``
(the hub's own ``models--org--name/{blobs,refs,snapshots}`` layout), with its tqdm progress
bar (``HF_HUB_DISABLE_PROGRESS_BARS=1`` or ``progress=False`` turn it off).

Resume: in huggingface_hub 2.x a transfer that breaks off (connection reset, timeout,
incomplete body) is resumed *within the call* with a ``Range`` request, up to five times in
a row without progress. A partial file left by a killed process is not reused (the library
writes to a process-unique temporary file and deletes it on failure).

Verification: after a fresh download the file's size is checked against ``expected_size``
(and the size the hub announced), and its sha256 against ``sha256`` or, for LFS files whose
ETag is a sha256, against that ETag. On mismatch the blob, its snapshot link and any
partial file are deleted and :class:`DownloadError` is raised. A file that was already in the
cache is only size-checked (hashing gigabytes on every start would be slow).

Endpoint: ``huggingface_hub`` reads ``HF_ENDPOINT`` once at import time; this module reads it
at call time and passes it as ``endpoint=``, so a mirror (or a test mimic) set later works.

Offline (``offline=True``, ``HF_HUB_OFFLINE=1``, or the endpoint unreachable): the cached
copy is used; if there is none, :class:`DownloadError` explains what to do.
:func:`resolve_with_fallback` then picks the first cached candidate or the embedded model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from localswarm import paths
from localswarm.errors import DownloadError, ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "true", "yes", "on"}
_HASH_CHUNK = 8 * 1024 * 1024


class NetworkUnavailable(DownloadError):
    """The file is not cached and the hub cannot be reached (or offline mode is on)."""


# ---------------------------------------------------------------------------------------
# Paths and settings


def models_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where models are cached: ``cache_dir`` if given, else ``paths.cache_dir()/"models"``."""
    return Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "models"


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub base URL: ``endpoint``, else ``$HF_ENDPOINT`` read now, else huggingface.co."""
    value = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return value.rstrip("/")


def is_offline(offline: bool | None = None) -> bool:
    """True when downloads must not touch the network (argument, ``HF_HUB_OFFLINE``)."""
    if offline is not None:
        return offline
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.is_offline_mode())
    except Exception:  # pragma: no cover - very old huggingface_hub
        return False


def endpoint_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Cheap connectivity probe: can a TCP connection to the endpoint's host be opened?

    Always True behind a proxy (the proxy decides), so only a clearly absent network
    (DNS failure, refused, unroutable) short-circuits the hub client's slow retries.
    """
    if any(
        os.environ.get(v)
        for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return True
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Cache look-up


def cached_model_path(
    repo_id: str,
    filename: str,
    *,
    revision: str = "main",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """Path of ``repo_id/filename`` at ``revision`` in the cache, or None. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=str(models_cache_dir(cache_dir)), revision=revision
        )
    except Exception:  # invalid repo id etc.: simply not cached
        return None
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


# ---------------------------------------------------------------------------------------
# Download


def download_model(
    repo_id: str,
    filename: str,
    *,
    revision: str = "main",
    expected_size: int | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    offline: bool | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Download (or find in the cache) ``filename`` from ``repo_id`` and return its local path.

    Args:
        repo_id: e.g. ``"Qwen/Qwen2.5-Coder-7B-Instruct-GGUF"``.
        filename: e.g. ``"qwen2.5-coder-7b-instruct-q4_k_m.gguf"``.
        revision: branch, tag or commit hash.
        expected_size: size in bytes the file must have.
        sha256: hex digest the file must have (else the hub's LFS sha256 is used when known).
        cache_dir: overrides ``paths.cache_dir()/"models"``.
        progress: show the tqdm progress bar (``HF_HUB_DISABLE_PROGRESS_BARS`` also applies).
        offline: force (True) or forbid (False) offline mode; None: ``HF_HUB_OFFLINE``.
        endpoint: Hub base URL; None: ``$HF_ENDPOINT`` at call time, else huggingface.co.
        token: Hugging Face token (None: the library's default look-up).

    Raises:
        DownloadError: network absent and not cached, transfer failed, or verification failed.
        ModelNotFound: the repository, revision or file does not exist on the hub.
    """
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    root = models_cache_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = hub_endpoint(endpoint)
    want_sha = sha256.lower() if sha256 else None
    before = cached_model_path(repo_id, filename, revision=revision, cache_dir=root)
    label = f"{repo_id}/{filename}@{revision}"

    if is_offline(offline):
        if before is None:
            raise NetworkUnavailable(_offline_message(label, root, reason="offline mode is on"))
        log.info("offline: using cached %s", label)
        _verify_cached(before, expected_size, label)
        return before

    if before is None and not endpoint_reachable(base):
        raise NetworkUnavailable(_offline_message(label, root, reason=f"{base} is unreachable"))

    try:
        result = huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=str(root),
            endpoint=base,
            token=token,
            tqdm_class=None if progress else _silent_tqdm_class(),
        )
    except hf_errors.LocalEntryNotFoundError as e:
        raise NetworkUnavailable(_offline_message(label, root, reason=_first_line(e))) from None
    except hf_errors.GatedRepoError:
        raise DownloadError(
            f"{repo_id} is gated: accept its terms on the Hub and set HF_TOKEN (or `hf auth login`)"
        ) from None
    except _not_found_errors(hf_errors) as e:
        raise ModelNotFound(_not_found_message(e, repo_id, filename, revision, base)) from None
    except hf_errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise DownloadError(
            f"downloading {label} from {base} failed (HTTP {status}): {_first_line(e)}"
        ) from None
    except (OSError, ValueError) as e:
        # OSError covers the size consistency check and disk space, ValueError the library's
        # own refusals. huggingface_hub deletes its (process-unique) temporary file itself.
        raise DownloadError(f"downloading {label} from {base} failed: {_first_line(e)}") from None
    except Exception as e:  # httpx2 transport errors after the library's retries, etc.
        raise DownloadError(
            f"downloading {label} from {base} failed: {type(e).__name__}: {_first_line(e)}"
        ) from None

    path = Path(result)
    fresh = before is None or before.resolve() != path.resolve()
    if fresh:
        _verify_fresh(path, expected_size, want_sha, label)
        log.info("downloaded %s -> %s", label, path)
    else:
        _verify_cached(path, expected_size, label)
    return path


def _verify_cached(path: Path, expected_size: int | None, label: str) -> None:
    """Size check of a cached file; a wrong size means a damaged cache entry: drop it."""
    actual = path.stat().st_size
    if expected_size is not None and actual != expected_size:
        _discard(path)
        raise DownloadError(
            f"cached {label} has {actual} bytes, expected {expected_size}: removed it; download it again"
        )


def _verify_fresh(path: Path, expected_size: int | None, sha256: str | None, label: str) -> None:
    """Size and sha256 check of a freshly downloaded file; on mismatch delete it and raise."""
    blob = path.resolve()
    actual_size = blob.stat().st_size
    if expected_size is not None and actual_size != expected_size:
        _discard(path)
        raise DownloadError(
            f"size mismatch for {label}: got {actual_size} bytes, expected {expected_size}. "
            "The file was removed; retry the download."
        )
    want = sha256
    source = "the requested sha256"
    if want is None and _SHA256_RE.match(blob.name):
        want, source = blob.name, "the hub's LFS sha256"
    if want is not None:
        got = file_sha256(blob)
        if got != want:
            _discard(path)
            raise DownloadError(
                f"checksum mismatch for {label}: sha256 {got} does not match {source} {want}. "
                "The file was removed; retry the download (a proxy or mirror may be serving bad data)."
            )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _discard(pointer: Path) -> None:
    """Delete a snapshot link, the blob it points to and any partial download of that blob."""
    blob = pointer.resolve()
    for p in (pointer, blob):
        try:
            p.unlink(missing_ok=True)
        except OSError as e:  # pragma: no cover - permissions
            log.warning("could not remove %s: %s", p, e)
    # huggingface_hub < 1.0 kept a resumable "<blob>.incomplete"; 2.x removes its own temp file.
    blob.with_name(blob.name + ".incomplete").unlink(missing_ok=True)


def _not_found_message(e: BaseException, repo_id: str, filename: str, revision: str, base: str) -> str:
    kind = type(e).__name__
    if kind == "RepositoryNotFoundError":
        return f"repository {repo_id} not found on {base} (if it is private, set HF_TOKEN)"
    if kind == "RevisionNotFoundError":
        return f"revision {revision!r} not found in {repo_id} on {base}"
    return f"{filename} not found in {repo_id}@{revision} on {base} (check the file name and quantization)"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _offline_message(label: str, root: Path, *, reason: str) -> str:
    return (
        f"cannot download {label}: {reason}, and it is not in the cache ({root}). "
        "Connect to the internet and run `localswarm pull` again, set HF_ENDPOINT to a reachable mirror, "
        "or pass a local GGUF file with --model PATH."
    )


def _not_found_errors(hf_errors: object) -> tuple[type[BaseException], ...]:
    """The hub's "does not exist" errors (names differ across huggingface_hub versions)."""
    names = (
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "RemoteEntryNotFoundError",
        "EntryNotFoundError",
    )
    found = [getattr(hf_errors, n) for n in names if hasattr(hf_errors, n)]
    # EntryNotFoundError is also the base of LocalEntryNotFoundError, handled before this.
    return tuple(found)


def _silent_tqdm_class() -> type:
    """A huggingface_hub tqdm subclass that never draws (for ``progress=False``)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class SilentTqdm(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


# ---------------------------------------------------------------------------------------
# Fallback


@dataclass(frozen=True)
class ModelCandidate:
    """A model the swarm would like to run, in order of preference."""

    repo_id: str
    filename: str
    revision: str = "main"
    label: str | None = None

    @property
    def name(self) -> str:
        """Display name (``label`` or the file name)."""
        return self.label or self.filename


@dataclass(frozen=True)
class ResolvedModel:
    """Which model file to run and why; ``message`` is ready for the CLI to print."""

    path: Path
    source: Literal["downloaded", "cached", "embedded"]
    name: str
    candidate: ModelCandidate | None
    message: str


def resolve_with_fallback(
    candidates: Iterable[ModelCandidate],
    embedded_path: str | os.PathLike[str] | None,
    *,
    embedded_name: str = "SmolLM2",
    reason: str = "offline",
    cache_dir: str | os.PathLike[str] | None = None,
) -> ResolvedModel:
    """Return the first cached candidate, else the embedded model; never touches the network.

    ``message`` reads e.g. ``"offline: falling back to cached qwen2.5-coder-1.5b"`` or
    ``"offline: falling back to embedded SmolLM2"`` and is also logged at WARNING.

    Raises:
        ModelNotFound: nothing cached and no embedded model file.
    """
    for cand in candidates:
        path = cached_model_path(cand.repo_id, cand.filename, revision=cand.revision, cache_dir=cache_dir)
        if path is not None:
            msg = f"{reason}: falling back to cached {cand.name}"
            log.warning("%s (%s)", msg, path)
            return ResolvedModel(path=path, source="cached", name=cand.name, candidate=cand, message=msg)
    if embedded_path is not None and Path(embedded_path).is_file():
        msg = f"{reason}: falling back to embedded {embedded_name}"
        log.warning("%s (%s)", msg, embedded_path)
        return ResolvedModel(
            path=Path(embedded_path), source="embedded", name=embedded_name, candidate=None, message=msg
        )
    raise ModelNotFound(
        f"{reason}: no candidate model is cached in {models_cache_dir(cache_dir)} and the embedded "
        f"{embedded_name} model is missing. Connect to the internet and run `localswarm pull`, "
        "or pass a local GGUF file with --model PATH."
    )


def fetch_or_fallback(
    candidates: Sequence[ModelCandidate],
    embedded_path: str | os.PathLike[str] | None,
    *,
    embedded_name: str = "SmolLM2",
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> ResolvedModel:
    """Download the first candidate; if that fails for lack of network, fall back.

    Other failures (model not found, checksum mismatch) fall back too, with the reason in
    ``message``; the preferred candidate is always ``candidates[0]``.
    """
    if not candidates:
        return resolve_with_fallback([], embedded_path, embedded_name=embedded_name, cache_dir=cache_dir)
    first = candidates[0]
    before = cached_model_path(first.repo_id, first.filename, revision=first.revision, cache_dir=cache_dir)
    try:
        path = download_model(
            first.repo_id,
            first.filename,
            revision=first.revision,
            cache_dir=cache_dir,
            offline=offline,
            progress=progress,
        )
    except (DownloadError, ModelNotFound) as e:
        reason = "offline" if isinstance(e, NetworkUnavailable) else "download failed"
        log.warning("%s: %s", reason, e)
        return resolve_with_fallback(
            candidates, embedded_path, embedded_name=embedded_name, reason=reason, cache_dir=cache_dir
        )
    source: Literal["downloaded", "cached"] = "cached" if before is not None else "downloaded"
    return ResolvedModel(
        path=path,
        source=source,
        name=first.name,
        candidate=first,
        message=f"using {source} {first.name} ({path})",
    )
