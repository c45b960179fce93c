"""Download GGUF models from the Hugging Face Hub into localswarm's cache, and fall back offline.

The Hub is the truth for files; ``models.yaml`` only plans. One metadata call
(``HfApi.model_info(revision=…, files_metadata=True)``, i.e. ``/api/models/{repo}/revision/{rev}?blobs=true``)
gives the commit and each file's LFS size and sha256. A file the repo only publishes split
(``x-00001-of-0000N.gguf``) is downloaded in all its parts. Each file then goes through
``huggingface_hub.hf_hub_download`` at that exact commit into ``cache_dir()/"models"`` (the hub's own
``models--org--name/{blobs,refs,snapshots}`` layout), with its tqdm progress bar
(``HF_HUB_DISABLE_PROGRESS_BARS=1`` or ``progress=False`` turn it off).

Verification: huggingface_hub checks only the byte count, so every fresh file is checked
here against the Hub's size *and* its LFS sha256; on mismatch the blob, its snapshot link and
any partial file are deleted and :class:`DownloadError` is raised. What the Hub said is kept
beside the cache (``localswarm/<commit>/<file>.json``), and the resolved commit is written to
``refs/<revision>``: a cached file is reused without the network and size-checked against it.

Retries: 408/429/5xx and dropped connections are retried (:func:`with_retries`), waiting what
``Retry-After`` says, else 1, 2, 4 … s. huggingface_hub 2.x also resumes a broken transfer
*within the call* with a ``Range`` request; a partial file left by a killed process is not
reused (the library writes to a process-unique temporary file and deletes it on failure).

Endpoint: ``huggingface_hub`` reads ``HF_ENDPOINT`` once at import time; this module reads it
at call time and passes it as ``endpoint=``, so a mirror (or a test mimic) set later works.

Offline (``offline=True``, ``HF_HUB_OFFLINE=1``, or the endpoint unreachable): the cached
copy is used; if there is none, :class:`NetworkUnavailable` explains what to do. Which model to
fall back to is :mod:`localswarm.provision`'s decision (planned cached → best cached → embedded).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

from localswarm import paths
from localswarm.errors import DownloadError, ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_HASH_CHUNK = 8 * 1024 * 1024


class NetworkUnavailable(DownloadError):
    """The file is not cached and the hub cannot be reached (or offline mode is on)."""


# ---------------------------------------------------------------------------------------
# Paths and settings


def models_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where models are cached: ``cache_dir`` if given, else the ``models_dir`` setting
    (``LOCALSWARM_MODELS_DIR``; the CLI exports it from the config file), else
    ``paths.cache_dir()/"models"``."""
    if cache_dir is not None:
        return Path(cache_dir)
    configured = os.environ.get("LOCALSWARM_MODELS_DIR")
    return Path(configured).expanduser() if configured else paths.cache_dir() / "models"


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
# What the Hub says about a file


@dataclass(frozen=True)
class RemoteFile:
    """One file as the Hub describes it at an exact commit (the truth for size and sha256)."""

    repo_id: str
    filename: str
    commit: str
    size: int
    sha256: str | None  # the LFS sha256; None for small (non-LFS) files


def _split_pattern(filename: str) -> re.Pattern[str]:
    """``<stem>-00001-of-00003.gguf`` names of ``<stem>.gguf`` (llama.cpp's SPLIT_PATH_FORMAT)."""
    stem = re.escape(filename[: -len(".gguf")] if filename.endswith(".gguf") else filename)
    return re.compile(rf"^{stem}-(\d{{5}})-of-(\d{{5}})\.gguf$", re.IGNORECASE)


def _complete_split(names: Iterable[str], filename: str) -> list[str]:
    """The parts of ``filename`` among ``names``, in order, if one complete set is there."""
    pattern = _split_pattern(filename)
    by_count: dict[int, dict[int, str]] = {}
    for name in names:
        m = pattern.match(PurePosixPath(name).name)
        if m:
            by_count.setdefault(int(m[2]), {})[int(m[1])] = name
    for count, parts in sorted(by_count.items()):
        if sorted(parts) == list(range(1, count + 1)):
            return [parts[k] for k in range(1, count + 1)]
    return []


def hub_files(
    repo_id: str, filename: str, *, revision: str = "main", endpoint: str | None = None,
    token: str | bool | None = None,
) -> list[RemoteFile]:
    """The file(s) that make up ``filename`` at ``revision``: itself, or all parts of its split.

    One ``GET /api/models/{repo}/revision/{rev}?blobs=true`` (``HfApi.model_info`` with
    ``files_metadata``) gives the commit and each file's LFS size and sha256.

    Raises:
        ModelNotFound: neither the file nor a complete split of it is in the repository.
    """
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub_endpoint(endpoint), token=token).model_info(
        repo_id, revision=revision, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings or []}
    names = [filename] if filename in siblings else _complete_split(siblings, filename)
    if not names:
        near = sorted(n for n in siblings if n.lower().endswith(".gguf"))[:12]
        raise ModelNotFound(
            f"{filename} not found in {repo_id}@{revision} (neither whole nor split); "
            f"GGUF files there: {', '.join(near) or 'none'}")
    out = []
    for name in names:
        s = siblings[name]
        size = s.lfs.size if s.lfs is not None else s.size
        if size is None:
            raise DownloadError(f"the Hub gave no size for {repo_id}/{name}")
        out.append(RemoteFile(repo_id, name, str(info.sha), int(size), s.lfs.sha256 if s.lfs else None))
    return out


# ---------------------------------------------------------------------------------------
# Retries


RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_ATTEMPTS = 6
BACKOFF_BASE = 1.0  # seconds, doubled on each retry
BACKOFF_MAX = 60.0
RETRY_AFTER_MAX = 300.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (integer seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - (time.time() if now is None else now)), RETRY_AFTER_MAX)


def _retry_reason(exc: BaseException) -> tuple[str, float | None] | None:
    """(why, Retry-After seconds) if ``exc`` is worth another try: 408/429/5xx, a dropped network."""
    import httpx

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # the HEAD's own error hides under LocalEntryNotFound
        seen.add(id(e))
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            if status in RETRY_STATUSES:
                return f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After"))
            return None
        if isinstance(e, (httpx.TransportError, ConnectionError, TimeoutError)):
            return type(e).__name__, None
        e = e.__cause__ or e.__context__
    return None


def with_retries(call: Callable[[], T], what: str, *, attempts: int = RETRY_ATTEMPTS,
                 sleep: Callable[[float], None] | None = None) -> T:
    """Run ``call``; on 408/429/5xx or a network drop wait (``Retry-After``, else backoff) and retry."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            reason = _retry_reason(exc)
            if reason is None or attempt == attempts:
                raise
            why, retry_after = reason
            wait = retry_after if retry_after is not None else min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
            log.warning("%s: %s, retrying in %.0f s (attempt %d of %d)", what, why, wait, attempt + 1, attempts)
            (sleep or time.sleep)(wait)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------
# Cache look-up


def _repo_dir(root: Path, repo_id: str) -> Path:
    return root / ("models--" + repo_id.replace("/", "--"))


def _commit_for(root: Path, repo_id: str, revision: str) -> str | None:
    """The commit ``revision`` names in the cache (itself if a commit hash; else refs/<revision>)."""
    if _COMMIT_RE.match(revision):
        return revision
    try:
        return (_repo_dir(root, repo_id) / "refs" / revision).read_text().strip() or None
    except OSError:
        return None


def cached_model_path(
    repo_id: str,
    filename: str,
    *,
    revision: str = "main",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """``repo_id/filename`` at ``revision`` in the cache (the first part of a complete split), or None.

    Never touches the network.
    """
    from huggingface_hub import try_to_load_from_cache

    root = models_cache_dir(cache_dir)
    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(root), revision=revision)
    except Exception:  # invalid repo id etc.: simply not cached
        found = None
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    commit = _commit_for(root, repo_id, revision)
    if commit is None:
        return None
    snapshot = _repo_dir(root, repo_id) / "snapshots" / commit
    try:
        names = [p.name for p in snapshot.iterdir() if p.is_file()]
    except OSError:
        return None
    parts = _complete_split(names, filename)
    return snapshot / parts[0] if parts else None


def _record(root: Path, f: RemoteFile) -> Path:
    return _repo_dir(root, f.repo_id) / "localswarm" / f.commit / (f.filename + ".json")


def _write_record(root: Path, f: RemoteFile) -> None:
    """What the Hub said about a verified file, kept beside the cache (for checks while offline)."""
    path = _record(root, f)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"size": f.size, "sha256": f.sha256, "commit": f.commit}))


def _pin_revision(root: Path, repo_id: str, revision: str, commit: str) -> None:
    """Record which commit ``revision`` resolved to (huggingface_hub's ``refs/<rev>`` file)."""
    if revision == commit:
        return
    ref = _repo_dir(root, repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)


# ---------------------------------------------------------------------------------------
# Download


def _human(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


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
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Download (or find in the cache) ``filename`` from ``repo_id`` and return its local path.

    The Hub is the truth: one metadata call gives the commit ``revision`` points to and each
    file's size and LFS sha256; a file named ``x.gguf`` that the repo only has as
    ``x-00001-of-0000N.gguf`` … is downloaded in all its parts, and the first part is
    returned (llama-server finds the others beside it). The commit is recorded in the cache
    (``refs/<revision>``), so later runs reuse it without the network.

    Args:
        repo_id: e.g. ``"Qwen/Qwen2.5-Coder-7B-Instruct-GGUF"``.
        filename: e.g. ``"qwen2.5-coder-7b-instruct-q4_k_m.gguf"``.
        revision: branch, tag or commit hash (a pinned commit needs no metadata call once cached).
        expected_size: a size the (single) file must have, on top of the Hub's; never a registry estimate.
        sha256: hex digest the (single) file must have (else the Hub's LFS sha256 is used).
        cache_dir: overrides ``paths.cache_dir()/"models"``.
        progress: show the tqdm progress bar (``HF_HUB_DISABLE_PROGRESS_BARS`` also applies).
        offline: force (True) or forbid (False) offline mode; None: ``HF_HUB_OFFLINE``.
        endpoint: Hub base URL; None: ``$HF_ENDPOINT`` at call time, else huggingface.co.
        token: Hugging Face token (None: the library's default look-up).
        announce: receives one line per file before it is fetched (file, size, destination);
            default: the log at INFO.

    Raises:
        DownloadError: network absent and not cached, transfer failed, or verification failed.
        ModelNotFound: the repository, revision or file does not exist on the hub.
    """
    root = models_cache_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = hub_endpoint(endpoint)
    label = f"{repo_id}/{filename}@{revision}"
    say = announce or (lambda line: log.info("%s", line))
    before = cached_model_path(repo_id, filename, revision=revision, cache_dir=root)

    if before is not None:  # the recorded commit is reused: no metadata call, works offline
        _verify_cached(root, repo_id, before, expected_size, label)
        return before
    if is_offline(offline):
        raise NetworkUnavailable(_offline_message(label, root, reason="offline mode is on"))
    if not endpoint_reachable(base):
        raise NetworkUnavailable(_offline_message(label, root, reason=f"{base} is unreachable"))

    files = _hub_call(lambda: with_retries(
        lambda: hub_files(repo_id, filename, revision=revision, endpoint=base, token=token),
        f"listing {repo_id}@{revision}"), repo_id, filename, revision, base)
    if len(files) > 1 and (expected_size is not None or sha256):
        raise DownloadError(f"{label} is split in {len(files)} parts: expected_size/sha256 name one file")
    total = sum(f.size for f in files)
    dest = _repo_dir(root, repo_id) / "snapshots" / files[0].commit
    say(f"downloading {filename} from {repo_id} ({_human(total)}"
        + (f" in {len(files)} parts" if len(files) > 1 else "") + f", commit {files[0].commit[:8]}) into {dest}")
    paths_out = []
    for k, f in enumerate(files, 1):
        if len(files) > 1:
            say(f"  part {k} of {len(files)}: {f.filename} ({_human(f.size)})")
        paths_out.append(_fetch_one(root, f, base=base, token=token, progress=progress,
                                    expected_size=expected_size, sha256=sha256))
    _pin_revision(root, repo_id, revision, files[0].commit)
    return paths_out[0]


def _fetch_one(root: Path, f: RemoteFile, *, base: str, token: str | bool | None, progress: bool,
               expected_size: int | None, sha256: str | None) -> Path:
    """One file at its exact commit through ``hf_hub_download`` (resume, progress), then verified."""
    import huggingface_hub

    label = f"{f.repo_id}/{f.filename}@{f.commit[:8]}"
    result = _hub_call(lambda: with_retries(lambda: huggingface_hub.hf_hub_download(
        f.repo_id, f.filename, revision=f.commit, cache_dir=str(root), endpoint=base, token=token,
        tqdm_class=_progress_tqdm_class() if progress else _silent_tqdm_class(),
    ), f"downloading {label}"), f.repo_id, f.filename, f.commit, base)
    path = Path(result)
    _verify_fresh(path, f.size, "the Hub's size", label)
    if expected_size is not None:
        _verify_fresh(path, expected_size, "the requested size", label)
    want = (sha256 or f.sha256 or "").lower() or None
    if want is not None:
        got = file_sha256(path.resolve())
        if got != want:
            _discard(path)
            source = "the requested sha256" if sha256 else "the Hub's LFS sha256"
            raise DownloadError(
                f"checksum mismatch for {label}: sha256 {got} does not match {source} {want}. "
                "The file was removed; retry the download (a proxy or mirror may be serving bad data).")
    _write_record(root, f)
    log.debug("downloaded %s -> %s", label, path)
    return path


def _hub_call(call: Callable[[], T], repo_id: str, filename: str, revision: str, base: str) -> T:
    """``call`` with huggingface_hub's errors turned into ours, each naming what failed and why."""
    from huggingface_hub import errors as hf_errors

    label = f"{repo_id}/{filename}@{revision}"
    root = models_cache_dir()
    try:
        return call()
    except (DownloadError, ModelNotFound):
        raise
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
    except Exception as e:  # httpx transport errors after the retries, etc.
        raise DownloadError(
            f"downloading {label} from {base} failed: {type(e).__name__}: {_first_line(e)}"
        ) from None


def _verify_cached(root: Path, repo_id: str, path: Path, expected_size: int | None, label: str) -> None:
    """Size check of a cached file against what the Hub said when it was fetched; drop it if damaged."""
    actual = path.stat().st_size
    want = expected_size
    snapshot = path.parent
    record = _repo_dir(root, repo_id) / "localswarm" / snapshot.name / (path.name + ".json")
    if want is None and record.is_file():
        try:
            want = int(json.loads(record.read_text())["size"])
        except (OSError, ValueError, KeyError, TypeError):
            want = None
    if want is not None and actual != want:
        _discard(path)
        raise DownloadError(
            f"cached {label} has {actual} bytes, expected {want}: removed it; download it again"
        )


def _verify_fresh(path: Path, size: int, source: str, label: str) -> None:
    """Size check of a freshly downloaded file; on mismatch delete it and raise."""
    actual = path.resolve().stat().st_size
    if actual != size:
        _discard(path)
        raise DownloadError(
            f"size mismatch for {label}: got {actual} bytes, {source} is {size}. "
            "The file was removed; retry the download."
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


def _progress_tqdm_class() -> type:
    """huggingface_hub's bar, also drawn when stderr is not a terminal (a log, a pipe, ``--detach``
    under a supervisor): then in ASCII, at most every 2 s. ``HF_HUB_DISABLE_PROGRESS_BARS`` still wins."""
    import sys

    from huggingface_hub.utils import tqdm as hf_tqdm

    class ProgressTqdm(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            if not sys.stderr.isatty() and kwargs.get("disable") is None:
                kwargs.update(disable=False, ascii=True, mininterval=2.0, ncols=100)
            super().__init__(*args, **kwargs)

    return ProgressTqdm


def _silent_tqdm_class() -> type:
    """A huggingface_hub tqdm subclass that never draws (for ``progress=False``)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class SilentTqdm(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm
