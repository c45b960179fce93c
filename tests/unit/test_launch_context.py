"""The context per slot is capped at the model's trained context (GGUF header), said once.

SmolLM2-135M (the embedded model, a real GGUF) was trained for 8,192 tokens; the default
ctx_size (16,384, sized for opencode) is more, which llama-server would only warn about and
clamp. The cap is read from the header at launch and reaches the argv and the settings.
"""

from __future__ import annotations

from pathlib import Path

from localswarm.backends.llama_server import embedded_model_path
from localswarm.config import Settings
from localswarm.launch import fit_context, instance_argvs, slot_context
from localswarm.models.gguf_meta import read_gguf_meta
from localswarm.provision import ResolvedModel


def _model(path: Path) -> ResolvedModel:
    return ResolvedModel(path=path, model_id="smollm2:135m:q4_1", embedded=True, instances=1, gpu_layers="0")


def test_default_ctx_is_capped_at_the_trained_context_with_one_notice() -> None:
    model = _model(embedded_model_path())
    trained = read_gguf_meta(model.path).context_length
    assert trained == 8192 < Settings().ctx_size  # the case that made llama-server warn
    ctx, notice = slot_context(Settings(), model)
    assert ctx == 8192 and notice is not None and "16384" in notice and "8192" in notice and "\n" not in notice
    said: list[str] = []
    fitted = fit_context(Settings(), model, say=said.append)
    assert fitted.ctx_size == 8192 and said == [notice]
    argv = instance_argvs(Settings(parallel=2, llama_server="/bin/true"), model)[0]
    assert argv[argv.index("-c") + 1] == str(8192 * 2)  # per slot 8192, two slots


def test_a_ctx_within_the_trained_context_or_an_unreadable_header_is_left_alone(tmp_path: Path) -> None:
    model = _model(embedded_model_path())
    said: list[str] = []
    assert fit_context(Settings(ctx_size=4096), model, say=said.append).ctx_size == 4096 and said == []
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF fake")  # what the fake llama-server tests use
    assert slot_context(Settings(), _model(fake)) == (Settings().ctx_size, None)
