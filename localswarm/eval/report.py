"""From raw samples to figures: run every sample in the sandbox, vote, measure, render.

Everything here can be recomputed from the samples JSONL alone (``--samples FILE``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localswarm.consensus import Candidate, vote
from localswarm.consensus import similarity as _sim
from localswarm.eval.codegen import assemble_program
from localswarm.consensus.examples import answer_code
from localswarm.eval.metrics import auroc, bootstrap_ci, pass_at_k, percentile, selection_efficiency
from localswarm.sandbox import Limits, run_test
from localswarm.eval.codet import dual_scores, generated_tests
from localswarm.sandbox.check import examples_for, run_examples, run_examples_each

__all__ = ["ProblemEval", "evaluate", "render_section", "summarise", "write_section"]


@dataclass
class ProblemEval:
    task_id: str
    passed: list[bool]
    how: list[str]
    finish: list[str | None]
    voted: int | None = None
    voted_quality: int | None = None
    confidence: float | None = None
    cluster_size: int | None = None
    degenerate: bool = False
    vote_ms: float | None = None
    vote_quality_ms: float | None = None
    statuses: list[str] = field(default_factory=list)
    optillm_choice: int | None = None  # None: optillm would answer "No consistent answer found."
    optillm_ms: float | None = None
    #: ``exec``: the winner when every sample ran on the prompt's own examples (what the
    #: gateway sees: never the hidden tests); the similarity winner where there are none.
    voted_exec: int | None = None
    exec_examples: int = 0
    exec_ms: float | None = None
    #: CodeT experiment (only with generated tests, ``tests=``): the winner on generated
    #: tests alone, and on the prompt's examples first then generated tests; how many
    #: tests; the execution time; the slowest test-round request (the round's latency).
    voted_codet: int | None = None
    voted_exec_codet: int | None = None
    codet_tests: int = 0
    codet_ms: float | None = None
    codet_gen_s: float | None = None


def optillm_sc_choice(texts: list[str], finish_reasons: list[str | None], threshold: float = 0.8) -> int | None:
    """optillm 0.4.0 ``self_consistency``'s pick, re-implemented to run on the same samples.

    As in ``optillm/self_consistency.py``: drop empty and length-truncated samples; greedy
    clustering where a sample joins the first cluster whose *first* member has
    ``difflib.SequenceMatcher.ratio() >= 0.8`` with it; clusters sorted by size (stable);
    the answer is the first member of the largest. None when every sample was dropped
    (optillm then answers "No consistent answer found.").
    """
    from difflib import SequenceMatcher

    kept = [i for i, (t, f) in enumerate(zip(texts, finish_reasons)) if t and f != "length"]
    clusters: list[list[int]] = []
    for i in kept:
        for c in clusters:
            if SequenceMatcher(None, texts[i], texts[c[0]]).ratio() >= threshold:
                c.append(i)
                break
        else:
            clusters.append([i])
    if not clusters:
        return None
    clusters.sort(key=len, reverse=True)
    return clusters[0][0]


def group_samples(records: list[dict], n: int) -> tuple[dict[str, list[dict]], list[str]]:
    """task_id -> its n samples in sample order; problems with fewer than n are skipped (listed)."""
    by: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in records:
        by[r["task_id"]][int(r["sample"])] = r  # a resumed run's later record wins
    full, partial = {}, []
    for tid, samples in by.items():
        if all(s in samples for s in range(n)):
            full[tid] = [samples[s] for s in range(n)]
        else:
            partial.append(tid)
    return full, partial


def _clear_vote_caches() -> None:
    for fn in (_sim.analyse, getattr(_sim, "_full_tokens", None), getattr(_sim, "_pair_similarity", None)):
        if fn is not None and hasattr(fn, "cache_clear"):
            fn.cache_clear()


def evaluate(
    problems: list[dict],
    grouped: dict[str, list[dict]],
    *,
    limits: Limits = Limits(),
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    tests: dict[str, list[dict]] | None = None,
) -> list[ProblemEval]:
    """Execute every sample (sandbox, ``workers`` at once) and vote per problem.

    ``tests``: task_id -> the CodeT round's replies (records) for that problem; the
    CodeT selections are computed where present.
    """
    todo = [p for p in problems if p["task_id"] in grouped]
    jobs = []
    for p in todo:
        for rec in grouped[p["task_id"]]:
            program, how = assemble_program(p, rec.get("text") or "", completion=rec.get("mode") == "completion")
            jobs.append((p, program, how))
    results: list[Any] = [None] * len(jobs)
    done = 0

    def run(i: int) -> None:
        nonlocal done
        p, program, _ = jobs[i]
        results[i] = run_test(program, p["test"], p["entry_point"], limits=limits)
        done += 1
        if progress:
            progress(done, len(jobs))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(run, range(len(jobs))))

    out: list[ProblemEval] = []
    k = 0
    for p in todo:
        recs = grouped[p["task_id"]]
        n = len(recs)
        res = results[k : k + n]
        hows = [jobs[k + i][2] for i in range(n)]
        k += n
        pe = ProblemEval(
            task_id=p["task_id"], passed=[r.passed for r in res], how=hows,
            finish=[r.get("finish_reason") for r in recs], statuses=[r.status for r in res],
        )
        if n > 1:
            cands = [
                Candidate(id=f"s{i}", text=r.get("text") or "", finish_reason=r.get("finish_reason"),
                          latency_s=float(r.get("latency_s") or 0.0))
                for i, r in enumerate(recs)
            ]
            _clear_vote_caches()  # time a cold vote: nothing pre-analysed
            t0 = time.perf_counter()
            v = vote(cands, strategy="similarity")
            pe.vote_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            q = vote(cands, strategy="quality")
            pe.vote_quality_ms = (time.perf_counter() - t0) * 1000
            pe.voted, pe.voted_quality = v.winner, q.winner
            t0 = time.perf_counter()
            pe.optillm_choice = optillm_sc_choice([r.get("text") or "" for r in recs],
                                                  [r.get("finish_reason") for r in recs])
            pe.optillm_ms = (time.perf_counter() - t0) * 1000
            pe.confidence, pe.cluster_size, pe.degenerate = v.confidence, len(v.cluster), v.degenerate
            t0 = time.perf_counter()
            codes = [answer_code(c.text) for c in cands]
            examples = examples_for(codes, p["prompt"])
            if examples:
                passes = run_examples(codes, examples)
                pe.voted_exec = vote(cands, strategy="exec", passes=passes, examples=len(examples)).winner
                pe.exec_examples = len(examples)
            else:
                passes = [None] * n
                pe.voted_exec = v.winner
            pe.exec_ms = (time.perf_counter() - t0) * 1000
            if tests is not None and p["task_id"] in tests:
                trecs = tests[p["task_id"]]
                lats = [float(t["latency_s"]) for t in trecs if t.get("latency_s") is not None]
                pe.codet_gen_s = max(lats) if lats else None
                t0 = time.perf_counter()
                gen = generated_tests([t.get("text") or "" for t in trecs], p["entry_point"])
                pe.codet_tests = len(gen)
                scores = dual_scores(run_examples_each(codes, gen)) if gen else [0] * n
                pe.voted_codet = vote(cands, strategy="exec", passes=list(scores), examples=len(gen)).winner
                combined = [(pa or 0) * 1_000_000 + sc for pa, sc in zip(passes, scores)]
                pe.voted_exec_codet = vote(cands, strategy="exec", passes=combined, examples=len(gen)).winner
                pe.codet_ms = (time.perf_counter() - t0) * 1000
        out.append(pe)
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarise(evals: list[ProblemEval], n: int) -> dict[str, Any]:
    """The figures (fractions in [0, 1]; None where undefined)."""
    P = len(evals)
    s: dict[str, Any] = {"problems": P, "n": n, "samples": P * n}
    if not P:
        return s
    per_problem = [sum(e.passed) / n for e in evals]
    single = _mean(per_problem)
    s["single_pass1"] = single
    s["random_pass1"] = single  # expected pass@1 of a uniformly random pick = mean
    s["oracle_passN"] = _mean([float(any(e.passed)) for e in evals])
    s["pass_at_k"] = {k: _mean([pass_at_k(n, sum(e.passed), k) for e in evals]) for k in range(1, n + 1)}
    all_finish = [f for e in evals for f in e.finish]
    s["truncated"] = _mean([float(f == "length") for f in all_finish])
    s["errors"] = sum(1 for f in all_finish if f == "error")
    s["timeouts"] = sum(1 for e in evals for st in e.statuses if st == "timeout")
    s["how"] = {h: sum(1 for e in evals for x in e.how if x == h) for h in ("function", "body", "completion", "empty")}
    s["mixed_problems"] = sum(1 for e in evals if 0 < sum(e.passed) < n)
    if n > 1:
        voted = [float(e.passed[e.voted]) for e in evals]
        quality = [float(e.passed[e.voted_quality]) for e in evals]
        s["voted_pass1"] = _mean(voted)
        s["quality_pass1"] = _mean(quality)
        s["optillm_sc_pass1"] = _mean(
            [float(e.optillm_choice is not None and e.passed[e.optillm_choice]) for e in evals])
        s["optillm_sc_selection_efficiency"] = selection_efficiency(s["optillm_sc_pass1"], single, s["oracle_passN"])
        s["optillm_sc_ms_p50"] = percentile([e.optillm_ms or 0.0 for e in evals], 50)
        s["selection_efficiency"] = selection_efficiency(s["voted_pass1"], single, s["oracle_passN"])
        s["quality_selection_efficiency"] = selection_efficiency(s["quality_pass1"], single, s["oracle_passN"])
        s["auroc"] = auroc([e.confidence for e in evals], [e.passed[e.voted] for e in evals])
        s["auroc_positives"] = sum(1 for e in evals if e.passed[e.voted])
        s["vote_ms_p50"] = percentile([e.vote_ms for e in evals], 50)
        s["vote_ms_p95"] = percentile([e.vote_ms for e in evals], 95)
        s["vote_ms_max"] = max(e.vote_ms for e in evals)
        s["quality_vote_ms_p50"] = percentile([e.vote_quality_ms for e in evals], 50)
        s["mean_cluster"] = _mean([float(e.cluster_size) for e in evals])
        s["degenerate"] = sum(1 for e in evals if e.degenerate)
        mixed = [e for e in evals if 0 < sum(e.passed) < n]
        s["mixed_voted_pass"] = sum(1 for e in mixed if e.passed[e.voted])
        s["mixed_expected_random"] = sum(sum(e.passed) / n for e in mixed)
        s["exec_pass1"] = _mean([float(e.passed[e.voted_exec]) for e in evals])
        s["exec_selection_efficiency"] = selection_efficiency(s["exec_pass1"], single, s["oracle_passN"])
        s["exec_problems_with_examples"] = sum(1 for e in evals if e.exec_examples)
        s["exec_ms_p95"] = percentile([e.exec_ms or 0.0 for e in evals], 95)
        s["intervals"] = intervals(evals, n)
    return s


#: (label, ProblemEval attribute holding the chosen sample) for every selection method.
METHODS = (("similarity", "voted"), ("quality", "voted_quality"), ("exec", "voted_exec"))
#: The CodeT experiment's selections (only where generated tests were given).
CODET_METHODS = (("codet", "voted_codet"), ("exec+codet", "voted_exec_codet"))


def methods_for(evals: list[ProblemEval]) -> tuple[tuple[str, str], ...]:
    """The selection methods every problem in ``evals`` has a winner for."""
    if evals and all(e.voted_codet is not None for e in evals):
        return METHODS + CODET_METHODS
    return METHODS


def intervals(evals: list[ProblemEval], n: int, *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """95% bootstrap intervals (problems resampled) of pass@1 and selection efficiency per
    method, with the number of problems that decide them (some but not all samples pass)."""
    cols: dict[str, list[float]] = {
        "random": [sum(e.passed) / n for e in evals],
        "oracle": [float(any(e.passed)) for e in evals],
    }
    methods = methods_for(evals)
    for name, attr in methods:
        cols[name] = [float(e.passed[getattr(e, attr)]) for e in evals]
    out: dict[str, Any] = {"deciding": sum(1 for e in evals if 0 < sum(e.passed) < n)}
    for name, _ in methods:
        out[name] = {
            "pass1": bootstrap_ci(cols, lambda c, k=name: float(c[k].mean()), resamples=resamples, seed=seed),
            "se": bootstrap_ci(cols, lambda c, k=name: selection_efficiency(
                float(c[k].mean()), float(c["random"].mean()), float(c["oracle"].mean())),
                resamples=resamples, seed=seed),
        }
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _interval(ci: tuple[float, float] | None, percent: bool) -> str:
    if ci is None:
        return "n/a"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if percent else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, nproc {os.cpu_count()}, {cpu}"


def render_section(label: str, s: dict[str, Any], meta: dict[str, Any], notes: list[str]) -> str:
    """Markdown for one run: the settings, the figures table, notes."""
    n = s["n"]
    gen = meta.get("generation", {})
    lines = [f"### {label}", ""]
    lines += [
        "| setting | value |",
        "| --- | --- |",
        f"| model | `{meta.get('model')}` |",
        f"| samples per problem (N) | {n} |",
        f"| problems | {s['problems']} (HumanEval, {meta.get('subset', 'first problems in file order')}) |",
        f"| temperature / max tokens | {meta.get('temperature')} / {meta.get('max_tokens')} |",
        f"| prompting | {meta.get('prompting', 'chat')} |",
        f"| source | {meta.get('source')} |",
        f"| date | {meta.get('date')} |",
        f"| machine | {meta.get('machine')} |",
        f"| sandbox | {meta.get('sandbox')} |",
    ]
    if gen:
        lines.append(
            f"| generation | {gen.get('samples')} samples in {gen.get('wall_s', 0) / 60:.1f} min wall, "
            f"{gen.get('completion_tokens')} tokens ({gen.get('tokens_per_s', 0):.0f} tokens/s overall) |"
        )
    lines += ["", "| figure | value |", "| --- | --- |"]
    lines.append(f"| single-sample pass@1 (mean over all samples) | {_pct(s.get('single_pass1'))} |")
    if n > 1:
        lines += [
            f"| random choice pass@1 (expected) | {_pct(s.get('random_pass1'))} |",
            f"| **voted pass@1 (`similarity`, the default)** | **{_pct(s.get('voted_pass1'))}** |",
            f"| voted pass@1 (`quality`) | {_pct(s.get('quality_pass1'))} |",
            f"| same samples, optillm 0.4.0 `self_consistency` rule (re-implemented, difflib ≥ 0.8) | "
            f"{_pct(s.get('optillm_sc_pass1'))} |",
            f"| oracle pass@{n} (any sample passes) | {_pct(s.get('oracle_passN'))} |",
            f"| selection efficiency (voted − random) / (oracle − random), `similarity` | "
            f"{_num(s.get('selection_efficiency'), '{:.2f}')} |",
            f"| selection efficiency, `quality` | {_num(s.get('quality_selection_efficiency'), '{:.2f}')} |",
            f"| selection efficiency, optillm rule | {_num(s.get('optillm_sc_selection_efficiency'), '{:.2f}')} |",
            f"| confidence AUROC (voted answer's confidence vs passed) | {_num(s.get('auroc'), '{:.2f}')} "
            f"({s.get('auroc_positives')} passing winners of {s['problems']}) |",
            f"| vote latency p50 / p95 / max (cold, `similarity`) | {_num(s.get('vote_ms_p50'), '{:.1f}')} / "
            f"{_num(s.get('vote_ms_p95'), '{:.1f}')} / {_num(s.get('vote_ms_max'), '{:.1f}')} ms |",
            f"| unbiased pass@k, k = 1..{n} | "
            + ", ".join(_pct(s["pass_at_k"][k]) for k in range(1, n + 1)) + " |",
            f"| problems where the choice matters (some but not all samples pass) | {s.get('mixed_problems')} "
            f"(vote picked a passing one in {s.get('mixed_voted_pass')}; random: "
            f"{_num(s.get('mixed_expected_random'), '{:.1f}')} expected) |",
            f"| mean winning-cluster size / degenerate votes | {_num(s.get('mean_cluster'), '{:.2f}')} of {n} / "
            f"{s.get('degenerate')} |",
            f"| voted pass@1 (`exec`: samples run on the prompt's own examples) | {_pct(s.get('exec_pass1'))} "
            f"({s.get('exec_problems_with_examples')} problems have examples; the others fall back to "
            f"`similarity`; check p95 {_num(s.get('exec_ms_p95'), '{:.0f}')} ms) |",
            f"| selection efficiency, `exec` | {_num(s.get('exec_selection_efficiency'), '{:.2f}')} |",
        ]
        iv = s.get("intervals") or {}
        lines += ["", f"95% bootstrap intervals ({iv.get('deciding')} problems decide every figure: "
                  "some but not all of their samples pass):", "",
                  "| method | pass@1 | 95% interval | selection efficiency | 95% interval |",
                  "| --- | --- | --- | --- | --- |"]
        for name, _ in METHODS:
            key = {"similarity": "voted_pass1", "quality": "quality_pass1", "exec": "exec_pass1"}[name]
            se_key = {"similarity": "selection_efficiency", "quality": "quality_selection_efficiency",
                      "exec": "exec_selection_efficiency"}[name]
            lines.append(f"| `{name}` | {_pct(s.get(key))} | {_interval(iv.get(name, {}).get('pass1'), True)} | "
                         f"{_num(s.get(se_key), '{:.2f}')} | {_interval(iv.get(name, {}).get('se'), False)} |")
    lines += [
        f"| samples cut at max tokens | {_pct(s.get('truncated'))} |",
        f"| replies used as whole function / body / raw completion / empty | {s['how']['function']} / "
        f"{s['how']['body']} / {s['how']['completion']} / {s['how']['empty']} |",
        f"| sandbox timeouts / request errors | {s.get('timeouts')} / {s.get('errors')} |",
    ]
    if notes:
        lines += [""] + [f"- {x}" for x in notes]
    return "\n".join(lines) + "\n"


_HEADER = """# Consensus on HumanEval: does the vote choose better than chance?

Generated by `python -m localswarm.eval humaneval` (package `localswarm/eval/`). Each
section below is one run; the tool rewrites only the section with its own label
(between the `eval:` markers) and keeps everything else in this file.

"""


def write_section(path: Path, label: str, body: str) -> None:
    """Insert or replace the section for ``label`` in ``path`` (created when missing)."""
    key = re.sub(r"[^A-Za-z0-9_.=-]+", "-", label).strip("-")
    begin, end = f"<!-- eval:{key} begin -->", f"<!-- eval:{key} end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + block.rstrip("\n") + post
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def today() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
