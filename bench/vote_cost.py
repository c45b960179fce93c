"""What does one consensus vote cost? 8 answers of ~2k tokens each, voted N times.

Usage::

    .venv/bin/python bench/vote_cost.py [--runs 200] [--answers 8] [--write docs/vote_cost.md]

The answers are realistic: markdown prose around ~7.5k characters of real Python
(functions from the standard library's ``heapq``), as a model would write them:

* 5 answers agree: the same code with identifiers renamed, comments and docstrings
  dropped or kept, reformatted through ``ast.unparse``, small edits (a changed constant,
  a swapped comparison);
* 3 answers differ: other code (``statistics``, ``posixpath``, ``glob`` + ``colorsys``).

"Cold" clears the per-text feature cache before every vote, so each vote pays for
extraction, ``ast`` normalisation and tokenisation of all 8 answers: the cost the
gateway pays once per request. "Warm" is a repeated vote over cached features, the cost
of each further ``quorum_reached``/``vote`` call while answers stream in.
"""

from __future__ import annotations

import argparse
import ast
import colorsys
import glob
import heapq
import inspect
import os
import platform
import posixpath
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localswarm.consensus import Candidate, quorum_reached, vote  # noqa: E402
from localswarm.consensus import similarity as _sim  # noqa: E402
from localswarm.consensus.normalize import tokenize  # noqa: E402

TARGET_CHARS = 7_500  # ~2k LLM tokens of Python (≈3.7 characters per token)

PROSE_HEAD = [
    "Here is a complete implementation. I kept the public functions compatible with the "
    "standard interface and moved the sift helpers to module level so they can be tested "
    "on their own.",
    "Below is the full module. The invariant is that `heap[k] <= heap[2*k+1]` and "
    "`heap[k] <= heap[2*k+2]` for every k, which the helpers restore after each change.",
    "Sure! The code below implements the requested functions. Each public function keeps "
    "the heap invariant and runs in logarithmic time, except `heapify`, which is linear.",
]
PROSE_TAIL = [
    "\n### How it works\n\n1. `_siftdown` moves a new item up towards the root.\n2. `_siftup` "
    "moves the smaller child up until a leaf is reached, then sifts the item back down.\n"
    "3. `merge` keeps one iterator per input in a small heap.\n\nAll operations are "
    "O(log n) except `heapify`, which is O(n). Let me know if you want type hints added.",
    "\n**Complexity:** push and pop are O(log n); building the heap is O(n); `nsmallest` "
    "uses a bounded heap, so it is O(n log k) for k results. The tests in the prompt pass.",
]


def _top_level(module: object, limit: int) -> str:
    """Top-level functions of ``module`` in source order, about ``limit`` characters in all."""
    src = inspect.getsource(module)  # type: ignore[arg-type]
    tree = ast.parse(src)
    parts: list[str] = []
    total = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            seg = ast.get_source_segment(src, node) or ""
            if parts and total + len(seg) > limit * 1.1:
                continue
            parts.append(seg)
            total += len(seg)
            if total >= limit * 0.95:
                break
    return "\n\n\n".join(parts)


class _Rename(ast.NodeTransformer):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.map: dict[str, str] = {}

    def _n(self, name: str) -> str:
        if name in dir(__builtins__) or name.startswith("__"):
            return name
        if name not in self.map:
            self.map[name] = f"{name}_{self.rng.choice(['v', 'tmp', 'x', 'item', 'node'])}"
        return self.map[name]

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._n(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._n(node.arg)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self._n(node.name)
        self.generic_visit(node)
        return node


def _mutate(code: str, rng: random.Random) -> str:
    """Small semantic edits a sampled model makes: a constant, a comparison."""
    edits = [("< ", "<= "), ("2*", "2 * "), ("+ 1", "+1"), ("return result", "return list(result)")]
    for old, new in rng.sample(edits, 2):
        code = code.replace(old, new, 1)
    return code


def make_answers(n: int = 8, seed: int = 0) -> list[str]:
    """``n`` replies: 5/8 of them variants of one solution, the rest other code."""
    rng = random.Random(seed)
    base = _top_level(heapq, TARGET_CHARS)
    others = [
        _top_level(statistics, TARGET_CHARS),
        _top_level(posixpath, TARGET_CHARS),
        _top_level(glob, TARGET_CHARS - 2_500) + "\n\n\n" + _top_level(colorsys, 2_500),
    ]
    n_agree = max(1, round(n * 5 / 8))
    answers = []
    for i in range(n):
        if i < n_agree:
            code = base
            if i % 2 == 1:  # renamed, docstrings/comments lost through ast.unparse
                tree = ast.parse(code)
                code = ast.unparse(_Rename(rng).visit(tree))
            if i >= 2:
                code = _mutate(code, rng)
        else:
            code = others[(i - n_agree) % len(others)]
            if i >= n_agree + len(others):
                code = _mutate(code, rng)
        head = PROSE_HEAD[i % len(PROSE_HEAD)]
        tail = PROSE_TAIL[i % len(PROSE_TAIL)]
        answers.append(f"{head}\n\n```python\n{code}\n```\n{tail}\n")
    return answers


def _clear_caches() -> None:
    _sim.analyse.cache_clear()
    _sim._full_tokens.cache_clear()
    _sim._pair_similarity.cache_clear()


def _pct(samples: list[float], q: float) -> float:
    xs = sorted(samples)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


def measure(answers: list[str], runs: int) -> dict[str, list[float]]:
    """Wall-clock and CPU milliseconds of each scenario, ``runs`` samples each."""
    cands = [Candidate(f"inst-{i}", t, latency_s=0.1 * i) for i, t in enumerate(answers)]
    out: dict[str, list[float]] = {k: [] for k in ("cold", "cold_cpu", "analyse", "warm", "stream", "last")}
    for _ in range(runs):
        _clear_caches()
        t0, c0 = time.perf_counter(), time.process_time()
        for c in cands:
            _sim.analyse(c.text)
        out["analyse"].append((time.perf_counter() - t0) * 1e3)
        _clear_caches()
        t0, c0 = time.perf_counter(), time.process_time()
        vote(cands)
        out["cold"].append((time.perf_counter() - t0) * 1e3)
        out["cold_cpu"].append((time.process_time() - c0) * 1e3)
        _sim._pair_similarity.cache_clear()
        t0 = time.perf_counter()
        vote(cands)
        out["warm"].append((time.perf_counter() - t0) * 1e3)
    for _ in range(max(1, runs // 4)):
        _clear_caches()
        t0 = time.perf_counter()
        for k in range(1, len(cands)):  # one quorum check per arriving answer
            quorum_reached(cands[:k], len(cands), quorum=len(cands))
        t1 = time.perf_counter()
        vote(cands)  # the last answer arrives: only it is new
        t2 = time.perf_counter()
        out["stream"].append((t2 - t0) * 1e3)
        out["last"].append((t2 - t1) * 1e3)
    return out


def _machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import rapidfuzz

    return {
        "nproc": str(os.cpu_count()),
        "affinity": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "?",
        "cpu": cpu,
        "python": platform.python_version(),
        "rapidfuzz": rapidfuzz.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--answers", type=int, default=8)
    ap.add_argument("--write", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args(argv)

    answers = make_answers(args.answers)
    chars = [len(a) for a in answers]
    toks = [len(tokenize(a)) for a in answers]
    load_before = os.getloadavg()
    m = measure(answers, args.runs)
    load_after = os.getloadavg()
    _clear_caches()
    res = vote([Candidate(f"inst-{i}", t) for i, t in enumerate(answers)])
    mach = _machine()
    rows = []
    for label, key in (
        ("vote, cold: wall (extract + normalise + similarity + cluster)", "cold"),
        ("vote, cold: CPU time of this process", "cold_cpu"),
        ("  of which: extract + normalise + tokenise the 8 answers", "analyse"),
        ("vote, warm (features cached, similarities recomputed)", "warm"),
        ("streamed: final vote after the last answer (7 analysed)", "last"),
        ("streamed: 7 quorum checks + final vote, total", "stream"),
    ):
        xs = m[key]
        rows.append((label, min(xs), statistics.median(xs), _pct(xs, 95), max(xs)))
    load = f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1-min load average)"

    print(f"answers: {len(answers)}, chars {min(chars)}-{max(chars)} (mean {statistics.mean(chars):.0f}), "
          f"code tokens (our tokenizer) {min(toks)}-{max(toks)}, ~{statistics.mean(chars) / 3.7:.0f} LLM tokens each")
    print(f"machine: nproc={mach['nproc']} affinity={mach['affinity']} cpu={mach['cpu']} "
          f"python={mach['python']} rapidfuzz={mach['rapidfuzz']}; load {load}")
    print(f"winner cluster: {res.cluster} confidence={res.confidence:.3f} cohesion={res.cohesion:.3f}")
    for label, mn, p50, p95, mx in rows:
        print(f"{label:64s} min {mn:6.2f}  p50 {p50:7.2f}  p95 {p95:7.2f}  max {mx:7.2f} ms")

    if args.write:
        lines = [
            "# Vote cost",
            "",
            "Measured by `bench/vote_cost.py` "
            f"(`{Path(sys.executable).name} bench/vote_cost.py --runs {args.runs} --write {args.write}`).",
            "",
            f"Input: {len(answers)} answers, each markdown prose around a fenced Python block of real "
            f"code (standard-library functions: `heapq` for the agreeing five, `statistics`, `posixpath`, `glob` + `colorsys` for the others); {min(chars)}–{max(chars)} "
            f"characters each (≈{statistics.mean(chars) / 3.7:.0f} LLM tokens at ~3.7 chars/token; "
            f"{min(toks)}–{max(toks)} tokens by the vote's own tokenizer). Five answers are variants of "
            "one solution (renamed identifiers, comments/docstrings lost, small edits), three are other code.",
            "",
            f"Result: winning cluster {res.cluster}, confidence {res.confidence:.3f}, "
            f"cohesion {res.cohesion:.3f}.",
            "",
            f"| Measure ({args.runs} runs; streamed: {max(1, args.runs // 4)}) | min ms | p50 ms | p95 ms | max ms |",
            "|---|---|---|---|---|",
        ]
        for label, mn, p50, p95, mx in rows:
            lines.append(f"| {label.strip()} | {mn:.2f} | {p50:.2f} | {p95:.2f} | {mx:.2f} |")
        lines += [
            "",
            "Target: under 50 ms for 8 × ~2k-token answers on this machine.",
            "",
            "Reading the figures:",
            "",
            "- *cold* is the whole cost of a vote when no answer has been seen before; "
            "*CPU time* is the same vote measured with `time.process_time`, which other "
            "processes on the 2 shared cores do not inflate (the wall p95/max do include "
            "other engineers' jobs running at the same time).",
            "- Almost all of it is per-answer analysis (fence extraction, `ast.parse`, one "
            "walk that strips docstrings/type hints and collects names, renaming, "
            "`ast.unparse`, two regex tokenisations): ~3.5–4 ms per 2k-token answer. "
            "The 28 pairwise Indel similarities on raw and normalised token lists cost ~5 ms.",
            "- Features are cached per distinct text and pair similarities per pair, so a gateway "
            "that calls `quorum_reached` as each answer arrives has analysed the first seven "
            "by the time the last one lands: the final vote then costs the *streamed* figure.",
            "",
            "Optimisations applied (each measured with min-of-N timings on this machine): the "
            "Python tree parsed during extraction is reused for normalisation (one parse per "
            "answer, not two); stripping and name collection share a single breadth-first walk "
            "that skips context/operator nodes (normalisation 9 → 2.4 ms per answer); "
            "`ast.fix_missing_locations` is not needed by `ast.unparse` and was dropped; answers "
            "with equal normal forms skip the normalised comparison. Measured and not adopted: "
            "`rapidfuzz.process.cdist` accepts token lists but is no faster than the pair loop for "
            "8 answers (6.2 vs 6.1 ms); mapping tokens to ints saves ~0.9 ms per form on the pairs "
            "but costs ~0.6 ms to encode; a string encoding of tokens is slower (8.4 ms).",
            "",
            "Machine:",
            "",
            f"- nproc: {mach['nproc']} (usable by this process: {mach['affinity']})",
            f"- CPU: {mach['cpu']}",
            f"- Python {mach['python']}, rapidfuzz {mach['rapidfuzz']}",
            f"- load while measuring: {load}",
            f"- {mach['platform']}",
            "",
        ]
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text("\n".join(lines))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
