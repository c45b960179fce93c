"""The models on this disk: list them (``localswarm ls``), remove one (``localswarm rm``).

They live in huggingface_hub's cache layout under :func:`~localswarm.models.download.models_cache_dir`
(``models--Org--Repo/snapshots/<commit>/<file>`` → ``blobs/<sha256>``). "Last used" is
when a swarm last started with the file (recorded in the state dir's ``models-used.json``
by :func:`mark_used`; file access times are not kept on most mounts).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localswarm import paths
from localswarm.errors import LocalSwarmError, ModelNotFound

_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class LocalModel:
    name: str  # the registry id (family:size:quant) when it is a registry file, else Org/Repo:QUANT
    repo: str
    file: str
    size: int  # bytes, all parts of a split file
    path: str
    last_used: float | None  # epoch seconds; None: never started by localswarm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _used_file() -> Path:
    return paths.state_dir() / "models-used.json"


def _used() -> dict[str, float]:
    try:
        data = json.loads(_used_file().read_text())
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def mark_used(path: str | Path) -> None:
    """Record that a swarm starts with ``path`` now (best effort: never fails a start)."""
    try:
        used = _used()
        used[str(Path(path).absolute())] = time.time()
        target = _used_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(used))
        tmp.replace(target)
    except OSError:
        pass


def list_local(root: Path | None = None) -> list[LocalModel]:
    """Every complete GGUF in the cache (a split counted once, by its first part), newest use first."""
    from localswarm.models.download import models_cache_dir
    from localswarm.models.hf_names import _quant_of
    from localswarm.models.registry import load_registry

    root = root or models_cache_dir()
    known = {(r.hf_repo.lower(), r.file.lower()): r.id for r in load_registry().refs()}
    used = _used()
    rows: list[LocalModel] = []
    for repo_dir in sorted(root.glob("models--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/")
        for snapshot in sorted((repo_dir / "snapshots").glob("*")):
            for f in sorted(snapshot.rglob("*.gguf")):
                m = _SPLIT_RE.search(f.name)
                if m and m[1] != "00001":
                    continue
                parts = sorted(f.parent.glob(_SPLIT_RE.sub("", f.name) + "-*-of-*.gguf")) if m else [f]
                if not all(p.exists() for p in parts):
                    continue  # a dangling link: a blob removed by hand
                rel = str(f.relative_to(snapshot))
                rows.append(LocalModel(
                    name=known.get((repo.lower(), rel.lower()), f"{repo}:{_quant_of(rel)}"),
                    repo=repo, file=rel, size=sum(p.stat().st_size for p in parts),
                    path=str(f.absolute()), last_used=used.get(str(f.absolute())),
                ))
    rows.sort(key=lambda r: (-(r.last_used or 0), r.name))
    return rows


def find(spec: str, root: Path | None = None) -> list[LocalModel]:
    """The cached models ``spec`` names: a registry id, ``Org/Repo[:QUANT]`` (``hf.co/`` too) or a file name."""
    from localswarm.models.hf_names import _quant_of, parse_hf_name

    rows = list_local(root)
    want = spec.strip().lower()
    exact = [r for r in rows if want in (r.name.lower(), r.file.lower(), Path(r.file).name.lower())]
    if exact:
        return exact
    hf = parse_hf_name(spec)
    if hf is None:
        return []
    return [r for r in rows if r.repo.lower() == hf.repo.lower()
            and (hf.quant is None or _quant_of(r.file).lower() == hf.quant.lower())]


def remove(spec: str, *, running_path: str | None = None, root: Path | None = None) -> list[LocalModel]:
    """Delete the cached files ``spec`` names (their blobs and links); the repo folder goes with its last file.

    Refused when ``spec`` matches nothing, or the running swarm uses the file (``running_path``).
    """
    from localswarm.models.download import models_cache_dir

    root = root or models_cache_dir()
    rows = find(spec, root)
    if not rows:
        names = ", ".join(r.name for r in list_local(root)) or "none"
        raise ModelNotFound(f"no downloaded model matches {spec!r}; downloaded: {names}")
    for r in rows:
        if running_path and Path(running_path).absolute() == Path(r.path):
            raise LocalSwarmError(f"{r.name} is in use by the running swarm: `localswarm down` first")
    for r in rows:
        first = Path(r.path)
        m = _SPLIT_RE.search(first.name)
        parts = sorted(first.parent.glob(_SPLIT_RE.sub("", first.name) + "-*-of-*.gguf")) if m else [first]
        for link in parts:
            blob = link.resolve()
            link.unlink(missing_ok=True)
            if blob != link and blob.is_file() and root in blob.parents:
                blob.unlink()
        repo_dir = root / ("models--" + r.repo.replace("/", "--"))
        if not any((repo_dir / "snapshots").rglob("*.gguf")):
            shutil.rmtree(repo_dir, ignore_errors=True)
    return rows
