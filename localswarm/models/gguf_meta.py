"""What a memory estimate needs from a GGUF file: weight bytes and attention shape.

The header is parsed directly with the type tables of the ``gguf`` package
(``gguf.constants``): ``gguf.GGUFReader`` decodes every token of the vocabulary into numpy
objects, which takes seconds for a 262k-token vocabulary, while the planner only needs a
handful of numbers. Arrays are skipped, not decoded. ``read_gguf_meta(path,
use_reader=True)`` goes through ``GGUFReader`` instead (the tests compare both).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from ..errors import ModelNotFound

GGUF_MAGIC = b"GGUF"

_SCALAR = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


class GGUFFormatError(ModelNotFound):
    """The file is not a GGUF model this code can read."""


@dataclass(frozen=True)
class GGUFMeta:
    """Numbers read from a GGUF header.

    ``head_count_kv`` is per layer (GGUF allows one value per layer); ``key_length`` and
    ``value_length`` default to ``embedding_length / head_count`` like llama.cpp does.
    """

    path: str
    architecture: str
    file_size: int
    weights_bytes: int
    tensor_count: int
    block_count: int
    context_length: int
    embedding_length: int
    head_count: int
    head_count_kv: tuple[int, ...]
    key_length: int
    value_length: int
    vocab_size: int
    sliding_window: int | None
    file_type: int | None
    name: str | None
    #: per tensor name: elements and bytes (the speed estimate counts parameters with them)
    tensor_elements: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    tensor_bytes: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    #: per tensor name: its ggml type as llama.cpp names it (``q4_K``, ``q8_0``, ``f32``)
    tensor_types: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def kv_bytes_per_token_f16(self) -> int:
        """KV-cache bytes per token of context at f16, summed over layers."""
        return sum(h * (self.key_length + self.value_length) * 2 for h in self.head_count_kv)

    @property
    def params(self) -> int:
        """Parameter count (all tensor elements); 0 when the tensors were not read."""
        return sum(self.tensor_elements.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (without the per-tensor tables)."""
        d = asdict(self)
        d.pop("tensor_elements")
        d.pop("tensor_bytes")
        d.pop("tensor_types")
        return d


_TENSORS = "\0tensors"


class _Cursor:
    def __init__(self, buf: Any) -> None:
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            etype, count = self.unpack("I"), self.unpack("Q")
            if etype == GGUFValueType.STRING:
                for _ in range(count):  # skip without decoding
                    n = self.unpack("Q")
                    self.pos += n
                return _Array(etype, count, None)
            if etype == GGUFValueType.ARRAY:
                raise GGUFFormatError("nested GGUF arrays are not supported")
            fmt = _SCALAR[GGUFValueType(etype)]
            size = struct.calcsize(fmt)
            # Keep small numeric arrays (per-layer head counts); skip big ones.
            items = (list(struct.unpack_from(f"<{count}{fmt}", self.buf, self.pos))
                     if count <= 4096 else None)
            self.pos += size * count
            return _Array(etype, count, items)
        return self.unpack(_SCALAR[GGUFValueType(vtype)])


@dataclass(frozen=True)
class _Array:
    etype: int
    count: int
    items: list[Any] | None


def _parse(path: Path) -> tuple[dict[str, Any], int, int]:
    """``(fields, tensor_count, weights_bytes)`` of the GGUF file at ``path``."""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        cur = _Cursor(mm)
        if bytes(mm[:4]) != GGUF_MAGIC:
            raise GGUFFormatError(f"{path}: not a GGUF file (bad magic)")
        cur.pos = 4
        version = cur.unpack("I")
        if version not in (2, 3):
            raise GGUFFormatError(f"{path}: GGUF version {version} is not supported")
        n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            fields[key] = cur.value(cur.unpack("I"))
        weights = 0
        tensors: dict[str, tuple[int, int, str]] = {}
        for _ in range(n_tensors):
            tname = cur.string()
            n_dims = cur.unpack("I")
            elements = 1
            for _ in range(n_dims):
                elements *= cur.unpack("Q")
            ttype = GGMLQuantizationType(cur.unpack("I"))
            cur.unpack("Q")  # offset
            block, type_size = GGML_QUANT_SIZES[ttype]
            weights += elements // block * type_size
            tensors[tname] = (elements, elements // block * type_size, ggml_type_name(ttype))
        fields[_TENSORS] = tensors
        return fields, n_tensors, weights


def ggml_type_name(ttype: GGMLQuantizationType) -> str:
    """llama.cpp's name of a tensor type: ``Q4_K`` -> ``q4_K``, ``Q8_0`` -> ``q8_0``."""
    name = ttype.name.lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


def _int(fields: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = fields.get(key)
    if isinstance(value, _Array):
        return None
    return int(value) if value is not None else default


def read_gguf_meta(path: str | Path, *, use_reader: bool = False) -> GGUFMeta:
    """Read the memory-relevant metadata of a local GGUF file.

    Raises :class:`GGUFFormatError` (a :class:`~localswarm.errors.ModelNotFound`) when the
    file is missing, truncated or not GGUF.
    """
    p = Path(path)
    try:
        if use_reader:
            fields, n_tensors, weights = _parse_with_reader(p)
        else:
            fields, n_tensors, weights = _parse(p)
        file_size = p.stat().st_size
    except (OSError, ValueError, struct.error, KeyError) as exc:
        raise GGUFFormatError(f"{p}: cannot read GGUF metadata: {exc}") from exc
    arch = str(fields.get("general.architecture", "llama"))
    a = f"{arch}."
    blocks = _int(fields, a + "block_count", 0) or 0
    n_embd = _int(fields, a + "embedding_length", 0) or 0
    heads = _int(fields, a + "attention.head_count", 0) or 0
    kv_field = fields.get(a + "attention.head_count_kv")
    if isinstance(kv_field, _Array) and kv_field.items is not None:
        kv = tuple(int(x) for x in kv_field.items)
    else:
        kv = (int(kv_field) if kv_field is not None else heads,) * blocks
    head_dim = n_embd // heads if heads else 0
    vocab = _int(fields, a + "vocab_size")
    tokens = fields.get("tokenizer.ggml.tokens")
    if vocab is None and isinstance(tokens, _Array):
        vocab = tokens.count
    return GGUFMeta(
        path=str(p),
        architecture=arch,
        file_size=file_size,
        weights_bytes=weights,
        tensor_count=n_tensors,
        block_count=blocks,
        context_length=_int(fields, a + "context_length", 0) or 0,
        embedding_length=n_embd,
        head_count=heads,
        head_count_kv=kv,
        key_length=_int(fields, a + "attention.key_length", head_dim) or head_dim,
        value_length=_int(fields, a + "attention.value_length", head_dim) or head_dim,
        vocab_size=vocab or 0,
        sliding_window=_int(fields, a + "attention.sliding_window"),
        file_type=_int(fields, "general.file_type"),
        name=fields.get("general.name") if isinstance(fields.get("general.name"), str) else None,
        tensor_elements={k: v[0] for k, v in fields.get(_TENSORS, {}).items()},
        tensor_bytes={k: v[1] for k, v in fields.get(_TENSORS, {}).items()},
        tensor_types={k: v[2] for k, v in fields.get(_TENSORS, {}).items()},
    )


def _parse_with_reader(path: Path) -> tuple[dict[str, Any], int, int]:
    """The same triple through ``gguf.GGUFReader`` (slow on big vocabularies)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            etype = field.types[1] if len(field.types) > 1 else GGUFValueType.UINT8
            items = None
            if etype != GGUFValueType.STRING and len(field.data) <= 4096:
                items = [field.parts[i].tolist()[0] for i in field.data]
            fields[key] = _Array(int(etype), len(field.data), items)
        else:
            fields[key] = field.contents()
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    fields[_TENSORS] = {str(t.name): (int(t.n_elements), int(t.n_bytes), ggml_type_name(t.tensor_type))
                        for t in reader.tensors}
    return fields, len(reader.tensors), weights
