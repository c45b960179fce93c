"""End-to-end tests of model downloads against the local Hugging Face mimic (tests/fakes/hf_mimic.py)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localswarm import paths
from localswarm.errors import DownloadError, ModelNotFound
from localswarm.models import download as dl
from tests.fakes.hf_mimic import HFMimic

REPO = "acme/tiny-coder-GGUF"
GGUF = "tiny-coder-q4_k_m.gguf"
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _hermetic_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """No traffic to huggingface.co: drop env that could leak in, pre-seed the agent registry.

    huggingface_hub 2.x fetches ``{constants.ENDPOINT}/api/agent-harnesses`` (an import-time
    endpoint) when building its user agent; an empty in-process registry skips that.
    """
    for var in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from huggingface_hub.utils import _detect_agent

        monkeypatch.setattr(
            _detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}}, raising=False
        )
    except ImportError:  # older huggingface_hub: nothing to silence
        pass


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HFMimic]:
    """A running mimic; ``HF_ENDPOINT`` points at it (read by download_model at call time)."""
    with HFMimic() as mimic:
        monkeypatch.setenv("HF_ENDPOINT", mimic.endpoint)
        yield mimic


def _blobs(root: Path, repo: str = REPO) -> list[Path]:
    d = root / ("models--" + repo.replace("/", "--")) / "blobs"
    return sorted(d.iterdir()) if d.is_dir() else []


def test_download_lands_in_xdg_cache_and_is_verified(hub: HFMimic) -> None:
    data = os.urandom(200_000)
    hub.add_file(REPO, GGUF, data)

    path = dl.download_model(REPO, GGUF, progress=False, expected_size=len(data))

    assert path.read_bytes() == data
    assert path.is_relative_to(paths.cache_dir() / "models")
    assert dl.cached_model_path(REPO, GGUF) == path
    # The blob is named after the LFS sha256 that the mimic advertised in its ETag.
    assert path.resolve().name == hashlib.sha256(data).hexdigest()
    # The real sequence: metadata for the revision, HEAD at the Hub (302), GET at the CDN host.
    seen = [(r.host, r.method, r.path.split("/")[1]) for r in hub.requests if r.path != "/api/agent-harnesses"]
    assert seen == [("hub", "GET", "api"), ("hub", "HEAD", "acme"), ("cdn", "GET", "cdn")]
    # The metadata call asked for the LFS sizes and sha256 of the exact revision.
    assert hub.requests[0].path == f"/api/models/{REPO}/revision/main"


def test_interrupted_transfer_resumes_with_range(hub: HFMimic) -> None:
    # huggingface_hub keeps only whole 10 MiB read chunks, so cut after the first one.
    data = os.urandom(12 * MiB)
    hub.add_file(REPO, GGUF, data)
    hub.drop_after(REPO, GGUF, 11 * MiB)

    path = dl.download_model(REPO, GGUF, progress=False, sha256=hashlib.sha256(data).hexdigest())

    gets = hub.gets(GGUF)
    assert len(gets) == 2
    assert gets[0].range is None
    assert gets[1].range is not None and gets[1].range.startswith("bytes=")
    resumed_from = int(gets[1].range.split("=")[1].rstrip("-"))
    assert 0 < resumed_from <= 11 * MiB
    assert path.read_bytes() == data


def test_checksum_mismatch_is_refused_and_partial_removed(hub: HFMimic) -> None:
    data = os.urandom(50_000)
    hub.add_file(REPO, GGUF, data)
    hub.corrupt(REPO, GGUF)  # same length, wrong bytes; ETag still carries the real sha256
    root = paths.cache_dir() / "models"

    with pytest.raises(DownloadError, match="checksum mismatch") as exc:
        dl.download_model(REPO, GGUF, progress=False)

    assert "removed" in str(exc.value)
    assert dl.cached_model_path(REPO, GGUF) is None
    assert _blobs(root) == []  # neither the blob nor any *.incomplete remains
    assert not list(root.rglob(GGUF))  # the snapshot link is gone too

    # Once the mirror serves the right bytes the same call succeeds.
    hub.corrupt(REPO, GGUF, enabled=False)
    assert dl.download_model(REPO, GGUF, progress=False).read_bytes() == data


def test_explicit_sha256_is_checked_for_non_lfs_files(hub: HFMimic) -> None:
    hub.add_file(REPO, "config.json", b'{"a": 1}', lfs=False)

    with pytest.raises(DownloadError, match="requested sha256"):
        dl.download_model(REPO, "config.json", progress=False, sha256="0" * 64)

    assert dl.cached_model_path(REPO, "config.json") is None
    assert _blobs(paths.cache_dir() / "models") == []


def test_expected_size_mismatch_is_refused(hub: HFMimic) -> None:
    hub.add_file(REPO, GGUF, b"x" * 1000)

    with pytest.raises(DownloadError, match="size mismatch"):
        dl.download_model(REPO, GGUF, progress=False, expected_size=999)

    assert dl.cached_model_path(REPO, GGUF) is None


def test_missing_file_or_repo_is_model_not_found(hub: HFMimic) -> None:
    hub.add_file(REPO, GGUF, b"gguf")

    with pytest.raises(ModelNotFound, match="not found"):
        dl.download_model(REPO, "nope.gguf", progress=False)
    with pytest.raises(ModelNotFound, match="repository acme/missing not found"):
        dl.download_model("acme/missing", GGUF, progress=False)
    with pytest.raises(ModelNotFound, match="revision 'v9' not found"):
        dl.download_model(REPO, GGUF, revision="v9", progress=False)


def test_offline_uses_cache_without_network(hub: HFMimic, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(10_000)
    hub.add_file(REPO, GGUF, data)
    first = dl.download_model(REPO, GGUF, progress=False)
    before = hub.count()

    assert dl.download_model(REPO, GGUF, offline=True, progress=False) == first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert dl.download_model(REPO, GGUF, progress=False) == first
    assert hub.count() == before


def test_network_gone_falls_back_to_cache(hub: HFMimic) -> None:
    data = os.urandom(10_000)
    hub.add_file(REPO, GGUF, data)
    first = dl.download_model(REPO, GGUF, progress=False)
    hub.stop()  # the endpoint now refuses connections

    assert dl.download_model(REPO, GGUF, progress=False).read_bytes() == data
    assert dl.download_model(REPO, GGUF, progress=False) == first


def test_uncached_offline_gives_clear_error(hub: HFMimic) -> None:
    hub.add_file(REPO, GGUF, b"gguf")

    with pytest.raises(dl.NetworkUnavailable) as exc:
        dl.download_model(REPO, GGUF, offline=True, progress=False)
    assert "offline" in str(exc.value) and "localswarm pull" in str(exc.value)
    assert exc.value.__cause__ is None  # no library traceback chained for the user

    hub.stop()
    started = time.monotonic()
    with pytest.raises(DownloadError, match="unreachable") as exc2:
        dl.download_model(REPO, GGUF, progress=False)
    assert isinstance(exc2.value, dl.NetworkUnavailable)
    assert "--model PATH" in str(exc2.value)
    assert time.monotonic() - started < 5  # no slow retry loop when nothing is cached


# --- the Hub as the truth, split files, retries (real-services.md §1) -------------------------------


def test_split_gguf_downloads_every_part_fake_hub(hub: HFMimic) -> None:
    data = os.urandom(300_000)
    names = hub.publish_split(REPO, GGUF[:-5], data, parts=3)
    lines: list[str] = []

    first = dl.download_model(REPO, GGUF, progress=False, announce=lines.append)

    assert first.name == names[0]  # llama-server is given part 1 and finds the rest beside it
    assert b"".join((first.parent / n).read_bytes() for n in names) == data
    assert sorted(r.file for r in hub.gets()) == sorted(names)
    assert "in 3 parts" in lines[0] and str(first.parent) in lines[0]
    # Cached as a whole: found again without any request.
    before = hub.count()
    assert dl.cached_model_path(REPO, GGUF) == first
    assert dl.download_model(REPO, GGUF, progress=False) == first
    assert hub.count() == before


def test_incomplete_split_in_cache_is_not_a_model_fake_hub(hub: HFMimic) -> None:
    names = hub.publish_split(REPO, GGUF[:-5], os.urandom(90_000), parts=2)
    first = dl.download_model(REPO, GGUF, progress=False)
    (first.parent / names[1]).unlink()
    assert dl.cached_model_path(REPO, GGUF) is None


def test_hub_size_not_registry_size_is_checked_fake_hub(hub: HFMimic) -> None:
    """The size that counts is the Hub's: a truncated body is refused against it."""
    data = os.urandom(120_000)
    hub.add_file(REPO, GGUF, data)
    hub.truncate(REPO, GGUF, 60_000)
    with pytest.raises(DownloadError):
        dl.download_model(REPO, GGUF, progress=False)
    assert dl.cached_model_path(REPO, GGUF) is None


def test_announce_names_file_size_and_destination_fake_hub(hub: HFMimic) -> None:
    hub.add_file(REPO, GGUF, os.urandom(2_500_000))
    lines: list[str] = []
    path = dl.download_model(REPO, GGUF, progress=False, announce=lines.append)
    assert len(lines) == 1
    assert GGUF in lines[0] and REPO in lines[0] and "2.50 MB" in lines[0]
    assert str(path.parent) in lines[0]
    assert hub.commit(REPO)[:8] in lines[0]


@pytest.mark.parametrize(("status", "where"), [(429, "api"), (503, "resolve"), (429, "cdn")])
def test_retry_after_is_honoured_fake_hub(hub: HFMimic, where: str, status: int) -> None:
    data = os.urandom(50_000)
    hub.add_file(REPO, GGUF, data)
    hub.fail(status, times=2, retry_after=1, where=where)

    began = time.monotonic()
    path = dl.download_model(REPO, GGUF, progress=False)

    assert path.read_bytes() == data
    assert time.monotonic() - began >= 2.0  # two waits of Retry-After: 1 (a lower bound only)
    assert not hub._failures[where] or all(f.times == 0 for f in hub._failures[where])


def test_retries_give_up_with_a_clear_error_fake_hub(hub: HFMimic, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_file(REPO, GGUF, b"x" * 100)
    hub.fail(503, times=100, where="api")
    waits: list[float] = []
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    with pytest.raises(DownloadError, match="HTTP 503"):
        dl.download_model(REPO, GGUF, progress=False)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]  # backoff doubles without Retry-After


def test_parse_retry_after() -> None:
    assert dl.parse_retry_after("7") == 7.0
    assert dl.parse_retry_after("100000") == dl.RETRY_AFTER_MAX
    assert dl.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert dl.parse_retry_after("soon") is None
    assert dl.parse_retry_after(None) is None


def test_resolved_commit_is_recorded_and_reused_offline_fake_hub(hub: HFMimic) -> None:
    data = os.urandom(20_000)
    hub.add_file(REPO, GGUF, data)
    path = dl.download_model(REPO, GGUF, progress=False)
    root = paths.cache_dir() / "models"
    ref = root / ("models--" + REPO.replace("/", "--")) / "refs" / "main"
    assert ref.read_text() == hub.commit(REPO)
    assert path.parent.name == hub.commit(REPO)
    hub.stop()
    assert dl.download_model(REPO, GGUF, progress=False) == path  # no network needed


def test_damaged_cached_file_is_caught_by_the_recorded_size_fake_hub(hub: HFMimic) -> None:
    hub.add_file(REPO, GGUF, os.urandom(20_000))
    path = dl.download_model(REPO, GGUF, progress=False)
    blob = path.resolve()
    os.chmod(blob, 0o644)
    with open(blob, "ab") as f:
        f.write(b"junk")
    with pytest.raises(DownloadError, match="expected 20000"):
        dl.download_model(REPO, GGUF, progress=False)
    assert dl.cached_model_path(REPO, GGUF) is None
