"""The plan's context per slot and slots reach the launch, the gateway and a detached child."""

from __future__ import annotations

from pathlib import Path

from localswarm.config import load_settings
from localswarm.launch import planned_settings
from localswarm.provision import ResolvedModel


def _model(**kw: object) -> ResolvedModel:
    return ResolvedModel(path=Path("/m.gguf"), model_id="m", embedded=False, instances=2,
                         **kw)  # type: ignore[arg-type]


def test_the_plan_s_context_and_slots_replace_the_settings() -> None:
    settings = load_settings({"ctx_size": 4096, "parallel": 2})
    got = planned_settings(settings, _model(ctx_size=32768, parallel=8))
    assert (got.ctx_size, got.parallel) == (32768, 8)
    assert (settings.ctx_size, settings.parallel) == (4096, 2)  # the caller's are not mutated


def test_no_plan_figures_keep_the_settings() -> None:
    """The embedded model and explicit files without a plan keep what the user set."""
    settings = load_settings({"ctx_size": 4096, "parallel": 2})
    assert planned_settings(settings, _model()) is settings
    assert planned_settings(settings, _model(ctx_size=4096, parallel=2)) is settings


def test_a_detached_child_gets_the_plan_s_figures() -> None:
    """``up --detach`` hands the resolved model to its child as JSON; older JSON still loads."""
    back = ResolvedModel.from_json(_model(ctx_size=2048, parallel=4).to_json())
    assert (back.ctx_size, back.parallel) == (2048, 4)
    old = '{"path": "/m.gguf", "model_id": "m", "embedded": false, "instances": 2, ' \
          '"gpu_layers": "0", "devices": [], "backend": "llama-server", "mlx_repo": null}'
    legacy = ResolvedModel.from_json(old)
    assert legacy.ctx_size is None and legacy.parallel is None
