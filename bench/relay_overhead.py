#!/usr/bin/env python3
"""Benchmark: the one-voter gateway against its own llama-server, each in its own process.

`localswarm up --model embedded --instances 1` runs as a separate process (as a user runs it);
this client calls the gateway and, with the instance's key read from its environment (root or
the same user), the very same llama-server directly, alternating which side goes first, pair by
pair. Streamed and non-streamed, fixed work (`ignore_eos`, same seed and token count).

bench/gateway_overhead.py serves the gateway from a thread of the client's own process, so
there the client and the gateway share one GIL; this script keeps them apart, like opencode and
`localswarm up` are. Writes the section "Gateway overhead, separate processes" of
docs/benchmarks.md.

Run: .venv/bin/python bench/relay_overhead.py [--pairs 9] [--tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.docs_section import write_section  # noqa: E402
from tests.helpers import free_tcp_port  # noqa: E402

SECTION = "Gateway overhead, separate processes"
PROMPT = [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}]


def _has_content(line: str) -> bool:
    return line.startswith("data:") and '"content"' in line and '"content":""' not in line \
        and '"content": ""' not in line


def timed(client: httpx.Client, url: str, body: dict, headers: dict) -> tuple[float, float]:
    """(total seconds, seconds to the first content event; the total when not streamed)."""
    t0 = time.perf_counter()
    if not body["stream"]:
        client.post(url, json=body, headers=headers).raise_for_status()
        total = time.perf_counter() - t0
        return total, total
    first = None
    with client.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and _has_content(line):
                first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return total, first if first is not None else total


def instance_key(port: int) -> str:
    """The instance's API key, from its environment (never on argv)."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "llama-server" in (proc.info["name"] or "") and str(port) in cmd:
            return proc.environ()["LLAMA_API_KEY"]
    raise SystemExit(f"no llama-server on port {port}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", default="", help="a line about the machine's load, written with the figures")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    port = free_tcp_port()
    state = tempfile.mkdtemp(prefix="ls-relay-")
    env = dict(os.environ, LOCALSWARM_STATE_DIR=state)
    up = subprocess.Popen(
        [sys.executable, "-m", "localswarm", "up", "--model", "embedded", "--instances", "1",
         "--threads", str(args.threads), "--ctx-size", "1024", "--parallel", "1", "--port", str(port),
         "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL)
    rows: list[str] = []
    try:
        gw = f"http://127.0.0.1:{port}"
        client = httpx.Client(timeout=300)
        for _ in range(480):
            try:
                if client.get(gw + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        inst = client.get(gw + "/localswarm/status").json()["instances"][0]
        direct = f"http://127.0.0.1:{inst['port']}"
        key = {"authorization": f"Bearer {instance_key(inst['port'])}"}
        for stream in (False, True):
            body = {"messages": PROMPT, "max_tokens": args.tokens, "ignore_eos": True, "seed": 42,
                    "temperature": 0.8, "stream": stream}
            timed(client, direct + "/v1/chat/completions", body, key)  # warm-up, both sides
            timed(client, gw + "/v1/chat/completions", body, {})
            pairs = []
            for i in range(args.pairs):
                order = [("d", direct, key), ("g", gw, {})]
                got = {name: timed(client, url + "/v1/chat/completions", body, h)
                       for name, url, h in (order if i % 2 == 0 else order[::-1])}
                pairs.append((got["d"], got["g"]))
            ratio = statistics.median(g[0] / d[0] for d, g in pairs)
            d_med = statistics.median(d[0] for d, _ in pairs)
            g_med = statistics.median(g[0] for _, g in pairs)
            line = (f"| {'streamed' if stream else 'non-streamed'} | {d_med * 1000:.0f} ms | {g_med * 1000:.0f} ms | "
                    f"{ratio:.3f}x |")
            if stream:
                dttft = statistics.median((g[1] - d[1]) * 1000 for d, g in pairs)
                line += f" {dttft:+.1f} ms |"
            else:
                line += " — |"
            rows.append(line)
            print(line, flush=True)
    finally:
        up.terminate()
        up.wait(60)
    load = os.getloadavg()
    text = "\n".join([
        f"## {SECTION}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/relay_overhead.py` ({os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}; load average at the end "
        f"{load[0]:.2f}). {args.note}".rstrip(),
        "",
        f"`localswarm up --model embedded --instances 1 --threads {args.threads}` in its own process (one "
        f"voter: the upstream stream is relayed as it comes) against the same llama-server called directly, "
        f"{args.pairs} pairs of {args.tokens} tokens each way after a warm-up, the side that goes first "
        "alternating; median of the per-pair ratios. Targets (issue 13): ≤ 1.02x, TTFT within 5 ms.",
        "",
        "| request | llama-server direct (median) | through the gateway (median) | ratio (median of pairs) | "
        "TTFT difference (median of pairs) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "`bench/gateway_overhead.py` serves the gateway from a thread of the client's own process: client "
        "and gateway then share one GIL and one core's worth of Python, which adds to every streamed event "
        "on the gateway's side only; its streamed ratio is an upper bound, this one is what a client in "
        "another process (opencode) sees.",
    ])
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
