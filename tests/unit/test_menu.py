"""The interactive menu, driven by injected input."""

from __future__ import annotations

import io
from collections.abc import Iterable

import pytest
from rich.console import Console

from localswarm.hardware.synthetic import reference_profiles
from localswarm.models.registry import load_registry
from localswarm.ui.menu import choose_plan

REG = load_registry()
GPU = reference_profiles()["RTX 4060 8 GB"]
NOWHERE = lambda _ref: None  # noqa: E731


class Keys:
    """Answers prompts in order; records them; EOF when exhausted."""

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


def _run(answers: Iterable[str], *, tty: bool = True) -> tuple[object, Keys, str]:
    keys = Keys(answers)
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None)
    p = choose_plan(GPU, REG, console=console, input_fn=keys, is_tty=tty, locate=NOWHERE)
    return p, keys, out.getvalue()


def test_no_tty_returns_recommended_without_prompting() -> None:
    """stdin is not a TTY: no prompt at all, the recommended plan."""
    p, keys, out = _run(["3", "1"], tty=False)
    assert keys.prompts == [] and out == ""
    assert p.model_id == "qwen2.5-coder:3b:q6_k"  # type: ignore[attr-defined]


def test_default_is_recommended_and_hardware_is_shown() -> None:
    """Enter on the first prompt keeps the recommendation; the hardware table is shown."""
    p, keys, out = _run([""])
    assert p.model_id == "qwen2.5-coder:3b:q6_k"  # type: ignore[attr-defined]
    assert "NVIDIA GeForce RTX 4060" in out and "Recommended" in out
    assert len(keys.prompts) == 1


def test_browse_feasible_lists_only_fitting_models() -> None:
    """Browse shows only feasible models; picking one plans it."""
    keys_first = Keys(["2", "999", "x"])
    out = io.StringIO()
    choose_plan(GPU, REG, console=Console(file=out, width=160), input_fn=keys_first,
                is_tty=True, locate=NOWHERE)
    text = out.getvalue()
    assert "qwen2.5-coder:3b:q6_k" in text and "qwen2.5-coder:32b" not in text
    assert "Please type a number" in text
    # pick the last feasible entry (the embedded model is always feasible)
    listed = [ln for ln in text.splitlines() if ln.strip().startswith(tuple("123456789"))
              and ") " in ln]
    last = listed[-1].strip().split(")")[0]
    p, _, _ = _run(["2", last])
    assert p.model_id == "smollm2:135m:q4_1" and p.embedded  # type: ignore[attr-defined]


def test_custom_walk_checks_every_step() -> None:
    """Custom: family, size, a too-big quant is refused, then instances within memory."""
    # family 2 = Qwen2.5-Coder, size 4 = 7b (32b, 14b, 7b...), quant 1 = q8_0 (too big),
    # then quant 4 = q4_k_m, instances: 5 is refused (only 1 fits), then 1.
    p, keys, out = _run(["3", "2", "3", "1", "4", "5", "1"])
    assert p.model_id == "qwen2.5-coder:7b:q4_k_m" and p.instances == 1  # type: ignore[attr-defined]
    assert "does not fit" in out and "Between 1 and 1" in out
    assert [k.split(" [")[0].split(" (")[0] for k in keys.prompts] == [
        "Your choice", "Family", "Size", "Quantization", "Quantization", "Instances",
        "Instances"]


def test_custom_full_choice_with_several_instances() -> None:
    """Qwen2.5-Coder 1.5B Q6_K with 3 instances on the 8 GB card (Q8_0 fits only twice)."""
    p, _, out = _run(["3", "2", "5", "2", "3"])
    assert "q8_0 - fits 2 x" in out and "q6_k - fits 3 x" in out
    assert p.model_id == "qwen2.5-coder:1.5b:q6_k" and p.instances == 3  # type: ignore[attr-defined]
    assert p.total_memory <= p.budget.total  # type: ignore[attr-defined]


@pytest.mark.parametrize("answers", [[], ["3"], ["3", "2"], ["2"]])
def test_eof_anywhere_falls_back_to_recommended(answers: list[str]) -> None:
    """Ctrl-D at any prompt gives the recommended plan rather than an exception."""
    p, _, _ = _run(answers)
    assert p.model_id == "qwen2.5-coder:3b:q6_k"  # type: ignore[attr-defined]
