#!/usr/bin/env python3
"""Benchmark: the mutation fuzzer (tests/mutation_fuzz.py) at 10,000 bodies against a real swarm.

Valid and mutated bodies of every kind (chat plain/streamed/tools/n>1, legacy completions,
embeddings) over several seeds, sent to a gateway over real llama-servers with the
embedded model. Reports the status counts per route and every answer >= 500 (there
should be none), and writes them to docs/benchmarks.md (section "Mutation fuzzing").
Each 5xx it finds belongs in tests/process/test_request_schema.py as a regression test.

Run: .venv/bin/python bench/fuzz_mutations.py [--bodies 10000] [--seeds 3] [--tokens 2] [--instances 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localswarm.backends.llama_server import embedded_model_path, find_llama_server  # noqa: E402
from tests import mutation_fuzz  # noqa: E402

BEGIN, END = "<!-- BEGIN mutation-fuzz -->", "<!-- END mutation-fuzz -->"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=2)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--write", default=str(REPO / "docs" / "benchmarks.md"))
    args = ap.parse_args()
    os.environ.setdefault("LOCALSWARM_STATE_DIR", tempfile.mkdtemp(prefix="fuzz-state-"))
    binary, model = find_llama_server(), embedded_model_path()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    share = [args.bodies // len(seeds) + (1 if i < args.bodies % len(seeds) else 0) for i in range(len(seeds))]
    rows, failures = [], []
    total: Counter = Counter()
    routes: dict[str, Counter] = {}
    started = time.monotonic()
    with mutation_fuzz.real_swarm(binary, model, instances=args.instances, tokens=args.tokens) as gw:
        for seed, count in zip(seeds, share):
            t0 = time.monotonic()
            report = mutation_fuzz.run(gw.url, mutation_fuzz.cases(count, seed, tokens=args.tokens),
                                       concurrency=args.concurrency,
                                       progress=lambda n, s=seed: print(f"seed {s}: {n} bodies", flush=True))
            print(f"seed {seed}: {report.summary()} in {time.monotonic() - t0:.0f}s", flush=True)
            rows.append((seed, report, time.monotonic() - t0))
            failures += report.failures
            total.update(report.statuses)
            for route, counts in report.by_route.items():
                routes.setdefault(route, Counter()).update(counts)
        instance_failures = sum(i.stats.failures for i in gw.supervisor.instances)
        restarts = sum(i.stats.restarts for i in gw.supervisor.instances)
    elapsed = time.monotonic() - started
    statuses = sorted(total)
    lines = [
        BEGIN,
        "## Mutation fuzzing",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/fuzz_mutations.py` on this project's CI machine "
        f"({os.cpu_count()} cores shared with other jobs, {platform.machine()}, Python {platform.python_version()}): "
        f"{sum(share)} bodies from `tests/mutation_fuzz.py` over seeds {', '.join(map(str, seeds))}, sent "
        f"{args.concurrency} at a time to a gateway over {args.instances} real llama-server instances with the "
        f"embedded SmolLM2-135M (context 256 per slot, valid bodies ask for at most {args.tokens} tokens), "
        f"in {elapsed / 60:.1f} min. A body is a valid template (plain, streamed, tools, n > 1, completions, "
        "embeddings) or one with 1-3 mutations (fields dropped/duplicated/renamed, types swapped, odd Unicode, "
        "NaN/Infinity/huge numbers, nested garbage up to 100,000 deep, unknown fields).",
        "",
        "| seed | bodies | " + " | ".join(f"HTTP {s}" for s in statuses) + " | valid templates answered | >= 500 |",
        "|---|---|" + "---|" * len(statuses) + "---|---|",
    ]
    for seed, report, _ in rows:
        lines.append(f"| {seed} | {report.total} | " + " | ".join(str(report.statuses.get(s, 0)) for s in statuses)
                     + f" | {report.valid_ok}/{report.valid_total} | {len(report.failures)} |")
    lines.append(f"| all | {sum(total.values())} | " + " | ".join(str(total[s]) for s in statuses)
                 + f" | {sum(r.valid_ok for _, r, _ in rows)}/{sum(r.valid_total for _, r, _ in rows)} "
                 f"| {len(failures)} |")
    lines += ["", "Per route: " + "; ".join(
        f"`{route}` " + ", ".join(f"{s}: {n}" for s, n in sorted(c.items())) for route, c in sorted(routes.items())),
        "",
        f"Instances counted as failing: {instance_failures}; restarts: {restarts}. "
        "\">= 500\" counts answers with a 5xx status, error events inside a 200 stream, and refusals "
        "not in OpenAI's error shape.",
        END]
    text = "\n".join(lines)
    print(text)
    for failure in failures[:20]:
        print(failure)
    path = Path(args.write)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    path.write_text(new)
    print(json.dumps({"written": str(path), "failures": len(failures)}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
