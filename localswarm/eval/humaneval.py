"""``python -m localswarm.eval humaneval``: sample, execute in the sandbox, vote, report.

    # 2 llama-servers started here (SmolLM2-135M), 5 samples per problem, first 40 problems
    python -m localswarm.eval humaneval --spawn --n 5 --limit 40
    # a bigger model on a GPU machine
    python -m localswarm.eval humaneval --spawn --model /models/qwen2.5-coder-7b-q4_k_m.gguf --ngl 99
    # any OpenAI-compatible server (e.g. an optillm proxy), one answer per problem
    python -m localswarm.eval humaneval --base-url http://127.0.0.1:8000/v1 --request-model moa-x --n 1
    # recompute the figures from saved samples, no generation
    python -m localswarm.eval humaneval --samples ~/.cache/localswarm/eval-runs/run.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from localswarm import paths
from localswarm.eval import report, runs as multirun
from localswarm.eval.codegen import load_problems
from localswarm.eval.sampling import (GenConfig, Run, base_url_endpoints, check_disjoint_seeds, problem_number,
                                      read_samples, sample_runs, spawned)
from localswarm.sandbox import Limits, isolation_summary, probe

logger = logging.getLogger("localswarm.eval")


def runs_dir() -> Path:
    return paths.cache_dir() / "eval-runs"


def build_parser(sub: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    kw = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = sub.add_parser("humaneval", **kw) if sub is not None else argparse.ArgumentParser(**kw)
    src = p.add_argument_group("where samples come from (one of)")
    src.add_argument("--spawn", action="store_true", help="start llama-server instances here")
    src.add_argument("--base-url", action="append", default=[], metavar="URL",
                     help="OpenAI-compatible server (repeatable; samples spread over them)")
    src.add_argument("--samples", type=Path, nargs="+",
                     help="recompute from saved samples JSONL (no generation); several files: independent "
                          "runs, reported side by side and pooled on the problems all of them cover")
    src.add_argument("--tests", type=Path, default=None, metavar="FILE",
                     help="with --samples: the CodeT round's saved assert-line replies (-tests.jsonl)")
    g = p.add_argument_group("spawned instances")
    g.add_argument("--model", default="embedded", help="embedded (SmolLM2-135M), gemma3-270m or a .gguf path")
    g.add_argument("--instances", type=int, default=2)
    g.add_argument("--threads", type=int, default=None, help="total CPU threads, divided among instances")
    g.add_argument("--parallel", type=int, default=2, help="slots per instance = requests in flight")
    g.add_argument("--ctx", type=int, default=2048, help="context per slot")
    g.add_argument("--ngl", default=None, help="GPU layers (e.g. 99 or auto); CPU only when unset")
    g.add_argument("--llama-server", default=None, help="llama-server binary (default: the project's lookup)")
    b = p.add_argument_group("base URL")
    # The key is read from the environment, never a flag (argv shows in `ps`).
    b.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                   help="environment variable holding the base URL's API key (default OPENAI_API_KEY)")
    b.add_argument("--request-model", default=None, help="model name to send (default: the server's first)")
    b.add_argument("--concurrency", type=int, default=2, help="requests in flight per base URL")
    s = p.add_argument_group("sampling")
    s.add_argument("--n", type=int, default=5, help="samples per problem")
    s.add_argument("--limit", type=int, default=None, help="only the first K problems (file order)")
    s.add_argument("--shortest", type=int, default=None, metavar="K",
                   help="only the K problems with the shortest canonical solutions (fewest lines, then "
                        "characters), shortest first: where a small model passes at all, so where a choice "
                        "can matter; sample i of HumanEval/p still uses seed + 1000 p + i")
    s.add_argument("--max-tokens", type=int, default=384)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--completion", action="store_true",
                   help="base models: /v1/completions on the raw prompt instead of a chat prompt")
    s.add_argument("--seed", type=int, default=1234, help="sample i of problem p uses seed + 1000 p + i")
    s.add_argument("--seeds", type=int, nargs="+", default=None, metavar="BASE",
                   help="several independent runs at once, one per seed base, interleaved problem by "
                        "problem (so runs cut short cover the same problems); each saves to "
                        "--save's name with -seed<BASE> added; bases must never share a seed")
    s.add_argument("--tests-seed", type=int, default=None, metavar="BASE",
                   help="CodeT experiment: also ask --n times per problem for assert lines (seed base "
                        "BASE), saved beside the samples as -tests.jsonl; scored offline")
    s.add_argument("--generate-only", action="store_true", help="save the samples, execute nothing")
    s.add_argument("--save", type=Path, default=None, help="samples JSONL (default under the cache dir)")
    s.add_argument("--resume", action="store_true", help="keep the samples already in --save")
    s.add_argument("--max-minutes", type=float, default=None,
                   help="stop starting requests after this long (whole problems are reported)")
    r = p.add_argument_group("report")
    r.add_argument("--out", type=Path, default=Path("docs/consensus.md"))
    r.add_argument("--no-report", action="store_true", help="print the figures only")
    r.add_argument("--label", default=None, help="section title (default: model and N)")
    r.add_argument("--note", action="append", default=[], help="extra note line in the report (repeatable)")
    r.add_argument("--workers", type=int, default=2, help="sandboxed programs at once")
    r.add_argument("--exec-timeout", type=float, default=10.0, help="wall seconds per program")
    return p


def _progress(what: str) -> Any:
    state = {"t": 0.0}
    start = time.monotonic()

    def cb(done: int, total: int) -> None:
        now = time.monotonic()
        if now - state["t"] >= 15 or done == total:
            state["t"] = now
            el = now - start
            eta = el / done * (total - done) if done else 0
            print(f"[{what}] {done}/{total}  {el / 60:.1f} min elapsed, ~{eta / 60:.1f} min left",
                  file=sys.stderr, flush=True)

    return cb


def _meta_path(samples: Path) -> Path:
    return samples.with_suffix(".meta.json")


def shortest(problems: list[dict], k: int) -> list[dict]:
    """The ``k`` problems with the shortest canonical solutions, shortest first (a choice
    made from the benchmark alone, before any sample is seen)."""
    def size(p: dict) -> tuple[int, int, int]:
        lines = [x for x in p["canonical_solution"].splitlines() if x.strip()]
        return len(lines), len(p["canonical_solution"]), problem_number(p, 0)

    return sorted(problems, key=size)[:k]


def run_paths(save: Path, seeds: list[int] | None) -> list[Path]:
    """Where each run's samples go: ``save`` itself, or one file per seed base beside it."""
    if not seeds:
        return [save]
    return [save.with_name(f"{save.stem}-seed{b}{save.suffix}") for b in seeds]


def tests_path(save: Path) -> Path:
    return save.with_name(f"{save.stem}-tests{save.suffix}")


async def _generate(args: argparse.Namespace, problems: list[dict], save: Path) -> dict[str, Any]:
    seeds = args.seeds or [args.seed]
    cfgs = [GenConfig(n=args.n, max_tokens=args.max_tokens, temperature=args.temperature,
                      top_p=args.top_p, seed=b, completion=args.completion) for b in seeds]
    paths_ = run_paths(save, args.seeds)
    if args.tests_seed is not None:
        cfgs.append(GenConfig(n=args.n, max_tokens=min(args.max_tokens, 192), temperature=args.temperature,
                              top_p=args.top_p, seed=args.tests_seed, task="tests"))
        paths_.append(tests_path(save))
    check_disjoint_seeds(cfgs, [problem_number(p, i) for i, p in enumerate(problems)])
    runs: list[Run] = []
    prev_wall = 0.0
    for cfg, path in zip(cfgs, paths_):
        done: set[tuple[str, int]] = set()
        if args.resume and _meta_path(path).exists():
            prev_wall = float((json.loads(_meta_path(path).read_text()).get("generation") or {}).get("wall_s") or 0)
        if args.resume and path.exists():
            done = {(r["task_id"], int(r["sample"])) for r in read_samples(path) if r.get("finish_reason") != "error"}
        elif path.exists():
            path.unlink()
        runs.append(Run(cfg, path, done))
    meta: dict[str, Any] = {"n": args.n, "temperature": args.temperature, "max_tokens": args.max_tokens,
                            "top_p": args.top_p, "seed": args.seed, "limit": args.limit,
                            "prompting": "raw completion" if args.completion else "chat",
                            "date": report.today(), "machine": report.machine_line()}
    if len(runs) > 1:
        meta["interleaved"] = {"seeds": seeds, "tests_seed": args.tests_seed}
    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
    if args.spawn:
        async with spawned(args.model, instances=args.instances, threads=args.threads, parallel=args.parallel,
                           ctx_size=args.ctx, gpu_layers=args.ngl, llama_server=args.llama_server,
                           log_dir=runs_dir() / "logs") as (eps, info):
            meta.update(model=info["model"], spawn=info,
                        source=f"--spawn: {info['instances']} llama-server × {info['threads_per_instance']} "
                               f"thread(s) × {info['parallel']} slots"
                               + (f", -ngl {info['gpu_layers']}" if info["gpu_layers"] else ", CPU"))
            print(f"instances ready: {[e.url() for e in eps]}", file=sys.stderr)
            wall = await sample_runs(problems, eps, runs, progress=_progress("generate"), deadline=deadline)
    else:
        eps = await base_url_endpoints(args.base_url, os.environ.get(args.api_key_env), args.request_model,
                                       args.concurrency)
        meta.update(model=eps[0].model, source=f"--base-url {', '.join(args.base_url)} "
                                               f"({args.concurrency} in flight each)")
        wall = await sample_runs(problems, eps, runs, progress=_progress("generate"), deadline=deadline)
    wall += prev_wall
    for run in runs:
        recs = read_samples(run.out_path) if run.out_path.exists() else []
        toks = sum(int(r.get("completion_tokens") or 0) for r in recs)
        m = dict(meta, seed=run.cfg.seed, task=run.cfg.task)
        # Interleaved runs share the wall time: each one's tokens/s is its share of it.
        m["generation"] = {"wall_s": round(wall, 1), "samples": len(recs), "completion_tokens": toks,
                           "tokens_per_s": toks / wall if wall else 0.0, "resumed": bool(run.done),
                           "shared_with_runs": len(runs)}
        _meta_path(run.out_path).write_text(json.dumps(m, indent=2))
    return json.loads(_meta_path(runs[0].out_path).read_text())


def _read_tests(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in read_samples(path):
        if r.get("finish_reason") != "error":
            out.setdefault(r["task_id"], []).append(r)
    return out


def _report_runs(args: argparse.Namespace, iso_line: str) -> int:
    """Several saved runs (and/or the CodeT round): side by side and pooled, with intervals."""
    from localswarm.eval.metrics import percentile

    metas = [json.loads(_meta_path(p).read_text()) if _meta_path(p).exists() else {} for p in args.samples]
    n = int(metas[0].get("n") or args.n)
    groupeds = [report.group_samples(read_samples(p), n)[0] for p in args.samples]
    common = multirun.common_task_ids(groupeds)
    problems = [p for p in load_problems(args.limit) if p["task_id"] in common]
    tests = _read_tests(args.tests) if args.tests else None
    if tests is not None:
        problems = [p for p in problems if p["task_id"] in tests]
    if not problems:
        print("no problem is covered by every run", file=sys.stderr)
        return 2
    ids = {p["task_id"] for p in problems}
    evals = [report.evaluate(problems, {k: v for k, v in g.items() if k in ids},
                             limits=Limits(wall_s=args.exec_timeout), workers=args.workers,
                             progress=_progress(f"execute run {i + 1}"), tests=tests)
             for i, g in enumerate(groupeds)]
    fig = multirun.multi_run_figures(evals, n)
    labels = [f"seed {m.get('seed', '?')}" for m in metas]
    print(json.dumps(fig, indent=2, default=str))
    m0 = metas[0]
    gen = m0.get("generation") or {}
    idx = sorted(int(t.split("/")[1]) for t in ids)
    lines = [
        f"### {args.label or 'independent runs'}", "",
        f"{len(args.samples)} independent runs of `{m0.get('model')}`, N={n}, temperature "
        f"{m0.get('temperature')}, max tokens {m0.get('max_tokens')}, {m0.get('prompting', 'chat')} prompting; "
        f"seed bases {', '.join(str(m.get('seed')) for m in metas)} (sample i of problem p: base + 1000 p + i, "
        f"so no two runs share a seed); source {m0.get('source')}; {m0.get('date')}; {m0.get('machine')}. "
        f"Sandbox: {iso_line}.",
        f"Figures on the **{len(problems)} problems every run covers** (HumanEval/{idx[0]}–{idx[-1]}"
        + (", file order" if idx == list(range(idx[0], idx[-1] + 1)) else "") + "). "
        f"Generation: {gen.get('wall_s', 0) / 60:.1f} min wall for all runs together (interleaved "
        "problem by problem on one swarm).", "",
        multirun.render_multi(fig, labels),
    ]
    all_e = [e for r in evals for e in r]
    ex_ms = [e.exec_ms for e in all_e if e.exec_examples and e.exec_ms is not None]
    lines.append(f"- `exec`: {sum(1 for e in evals[0] if e.exec_examples)} of {len(problems)} problems have runnable "
                 f"examples in the prompt (the others fall back to `similarity`); the check took p50 "
                 f"{report._num(percentile(ex_ms, 50), '{:.0f}')} / p95 {report._num(percentile(ex_ms, 95), '{:.0f}')} ms "
                 "per problem here (measured under load).")
    if tests is not None:
        gen_s = [e.codet_gen_s for e in evals[0] if e.codet_gen_s is not None]
        cms = [e.codet_ms for e in all_e if e.codet_ms is not None]
        lines.append(
            f"- CodeT round ({args.tests.name}): {sum(1 for e in evals[0] if e.codet_tests)} of {len(problems)} "
            f"problems got at least one usable generated test (median "
            f"{report._num(percentile([e.codet_tests for e in evals[0]], 50), '{:.0f}')} per problem); the round's "
            f"slowest request per problem p50 {report._num(percentile(gen_s, 50), '{:.1f}')} s / p95 "
            f"{report._num(percentile(gen_s, 95), '{:.1f}')} s, running the tests p50 "
            f"{report._num(percentile(cms, 50), '{:.0f}')} / p95 {report._num(percentile(cms, 95), '{:.0f}')} ms "
            "(measured under load). The same generated tests score the candidates of every run.")
    lines += [f"- {x}" for x in args.note]
    lines.append("- raw samples: " + ", ".join(f"`{p.name}`" for p in args.samples)
                 + (f", tests `{args.tests.name}`" if args.tests else "") + f" (in {args.samples[0].parent}); "
                 "recompute with `--samples FILE...` (and `--tests FILE`).")
    body = "\n".join(lines) + "\n"
    if not args.no_report:
        label = args.label or "independent runs"
        report.write_section(args.out, label, body)
        print(f"wrote {args.out} (section {label!r})", file=sys.stderr)
    else:
        print(body)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if sum(bool(x) for x in (args.spawn, args.base_url, args.samples)) != 1:
        print("give exactly one of --spawn, --base-url URL, --samples FILE", file=sys.stderr)
        return 2
    iso = probe()
    iso_line = isolation_summary(iso)
    if not (iso.get("net_ns") and iso.get("readonly_fs")):
        logger.warning("sandbox is weaker on this machine: %s", iso_line)
    else:
        logger.info("sandbox: %s", iso_line)

    if args.samples and (len(args.samples) > 1 or args.tests):
        return _report_runs(args, iso_line)
    if args.samples:
        save = args.samples[0]
        meta = json.loads(_meta_path(save).read_text()) if _meta_path(save).exists() else {}
        n = int(meta.get("n") or args.n)
        limit = args.limit if args.limit is not None else meta.get("limit")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        tag = Path(args.model).stem if args.spawn else (args.request_model or "url")
        tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in tag)
        save = args.save or runs_dir() / f"humaneval-{tag}-n{args.n}-{stamp}.jsonl"
        n, limit = args.n, args.limit
    problems = load_problems(limit)
    if args.shortest:
        problems = shortest(problems, args.shortest)
    if not args.samples:
        print(f"sampling {n} x {len(problems)} problems -> {save}", file=sys.stderr)
        meta = asyncio.run(_generate(args, problems, save))
        if args.generate_only or args.seeds:
            print("generated: " + ", ".join(str(p) for p in run_paths(save, args.seeds)), file=sys.stderr)
            return 0

    grouped, partial = report.group_samples(read_samples(save), n)
    evals = report.evaluate(problems, grouped, limits=Limits(wall_s=args.exec_timeout),
                            workers=args.workers, progress=_progress("execute"))
    s = report.summarise(evals, n)
    meta.setdefault("n", n)
    meta["sandbox"] = iso_line
    meta["subset"] = ("all 164" if s["problems"] == 164 else f"the first {s['problems']} in file order")
    print(json.dumps({k: v for k, v in s.items()}, indent=2, default=str))
    notes = list(args.note)
    if partial:
        notes.append(f"{len(partial)} problem(s) without all {n} samples were left out: {', '.join(partial[:5])}")
    notes.append(f"raw samples: `{save.name}` ({save}); recompute with `--samples`.")
    if not args.no_report:
        label = args.label or f"{meta.get('model')}, N={n}"
        report.write_section(args.out, label, report.render_section(label, s, meta, notes))
        print(f"wrote {args.out} (section {label!r})", file=sys.stderr)
    return 0
