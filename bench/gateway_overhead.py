#!/usr/bin/env python3
"""Benchmark: what the gateway and the vote cost, measured side by side in one run.

Prints, non-streamed and streamed:
  1. gateway overhead: the gateway over one llama-server vs the same llama-server called
     directly (same prompt, seed and token count; ratio of medians);
  2. N-instance consensus latency vs one instance (cores divided among instances).
and writes the figures to docs/benchmarks.md (section "Gateway overhead").

Run: .venv/bin/python bench/gateway_overhead.py [--runs 7] [--tokens 64] [--instances 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localswarm.backends.llama_server import LlamaServerBackend, embedded_model_path, find_llama_server  # noqa: E402
from localswarm.config import Settings  # noqa: E402
from tests.helpers import RunningGateway, free_tcp_port  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}]
BEGIN, END = "<!-- BEGIN gateway-overhead -->", "<!-- END gateway-overhead -->"


def body(tokens: int, stream: bool) -> dict:
    # ignore_eos fixes the work: every call decodes exactly `tokens` tokens.
    return {"messages": PROMPT, "max_tokens": tokens, "ignore_eos": True, "seed": 42, "temperature": 0.8,
            "stream": stream}


def timed(client: httpx.Client, url: str, payload: dict, headers: dict) -> tuple[float, float]:
    """(total seconds, seconds to the first content byte)."""
    started = time.perf_counter()
    first = None
    if not payload["stream"]:
        r = client.post(url, json=payload, headers=headers)
        r.raise_for_status()
        total = time.perf_counter() - started
        return total, total
    with client.stream("POST", url, json=payload, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data:") and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return total, first or total


def paired(fa, fb, runs: int) -> tuple[tuple[float, float], tuple[float, float], float, float]:
    """Medians of A and B (total, TTFT), alternating A, B, A, B... so load drifts hit both alike;
    then the median of the per-pair ratios B/A and of the per-pair TTFT differences B-A."""
    fa(), fb()  # warm-up (prompt cache, connections)
    ra, rb = [], []
    for i in range(runs):
        if i % 2:  # who goes first alternates too
            rb.append(fb())
            ra.append(fa())
        else:
            ra.append(fa())
            rb.append(fb())

    def med(rs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)

    ratio = statistics.median(b[0] / a[0] for a, b in zip(ra, rb))
    ttft_diff = statistics.median(b[1] - a[1] for a, b in zip(ra, rb))
    return med(ra), med(rb), ratio, ttft_diff


def gateway(instances: int, threads: int, binary: Path, model: Path) -> RunningGateway:
    settings = Settings(port=free_tcp_port(), threads=threads, ctx_size=1024, parallel=1, keepalive_interval=5)
    backend = LlamaServerBackend(binary=binary, model_path=model, model_id="smollm2", ctx_size=1024, parallel=1)
    return RunningGateway(settings, backend, instances=instances)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="threads per swarm (default: all cores)")
    ap.add_argument("--skip-consensus", action="store_true", help="only the gateway-overhead rows")
    ap.add_argument("--note", default="", help="a sentence on the conditions (load), added to the section")
    ap.add_argument("--write", default=str(REPO / "docs" / "benchmarks.md"))
    args = ap.parse_args()
    binary, model = find_llama_server(), embedded_model_path()
    machine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = args.threads or machine
    rows = []
    with httpx.Client(timeout=300) as client:
        with gateway(1, cores, binary, model) as gw1, \
                (contextlib.nullcontext() if args.skip_consensus else gateway(args.instances, cores, binary, model)) as gwn:
            inst = gw1.supervisor.instances[0]
            # Only one swarm decodes at a time (calls alternate), so each has the cores to itself.
            for stream in (False, True):
                direct, via, ratio, ttft = paired(
                    lambda: timed(client, inst.base_url + "/v1/chat/completions", body(args.tokens, stream),
                                  {**inst.auth_headers(), "Connection": "close"}),
                    lambda: timed(client, gw1.url + "/v1/chat/completions", body(args.tokens, stream), {}),
                    args.runs)
                rows.append(("gateway (1 instance) vs llama-server direct", stream, direct, via, ratio, ttft))
            # The gateway always asks its instances to stream (a cancelled request then frees the
            # slot at once): what streaming costs llama-server itself is part of the non-streamed
            # overhead above.
            direct_url, direct_headers = inst.base_url + "/v1/chat/completions", {**inst.auth_headers(),
                                                                                   "Connection": "close"}
            plain, streamed, ratio, ttft = paired(
                lambda: timed(client, direct_url, body(args.tokens, False), direct_headers),
                lambda: timed(client, direct_url, body(args.tokens, True), direct_headers),
                args.runs)
            rows.append(("llama-server direct: streamed vs non-streamed", True, plain, streamed, ratio, ttft))
            for stream in (() if args.skip_consensus else (False, True)):
                one, many, ratio, ttft = paired(
                    lambda: timed(client, gw1.url + "/v1/chat/completions", body(args.tokens, stream), {}),
                    lambda: timed(client, gwn.url + "/v1/chat/completions", body(args.tokens, stream), {}),
                    args.runs)
                rows.append((f"{args.instances}-instance consensus vs 1 instance", stream, one, many, ratio, ttft))
    lines = [
        BEGIN,
        "## Gateway overhead and consensus latency",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/gateway_overhead.py` on this project's CI machine "
        f"({machine} cores, {platform.machine()}, Python {platform.python_version()}), real llama-server "
        f"with the embedded SmolLM2-135M Q4_1, {args.tokens} tokens per answer (`ignore_eos`), same prompt "
        f"and seed, median of {args.runs} runs after one warm-up, the two sides alternating call by call. Threads: the single instance gets "
        f"{cores} thread(s); {args.instances} instances share them ({max(1, cores // args.instances)} each).",
        "",
        "| comparison | mode | baseline median s | compared median s | ratio of medians | median of paired ratios "
        "| baseline TTFT s | compared TTFT s | median paired TTFT difference ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, stream, base, comp, ratio, ttft in rows:
        mode = "streamed" if stream else "non-streamed"
        if name.startswith("llama-server direct"):
            mode = "both"
        line = (f"| {name} | {mode} | {base[0]:.3f} | {comp[0]:.3f} | {comp[0] / base[0]:.3f}x | {ratio:.3f}x | "
                f"{base[1]:.3f} | {comp[1]:.3f} | {ttft * 1000:+.1f} |")
        lines.append(line)
    lines += [
        "",
        "TTFT (time to first content token) equals the total for non-streamed calls. In `consensus` "
        "stream mode the gateway votes before it streams, so its first token arrives after the slowest "
        "counted instance; `stream_mode: fastest` trades the vote for the first instance's TTFT. "
        "With one ready instance there is one voter: the stream is relayed as it comes.",
        *([args.note] if args.note else []),
        END,
    ]
    text = "\n".join(lines)
    print(text)
    path = Path(args.write)
    old = path.read_text() if path.exists() else "# Benchmarks\n\nFigures measured on this project's machines; each section names the script that wrote it.\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    path.write_text(new)
    print(json.dumps({"written": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
