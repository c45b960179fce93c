#!/usr/bin/env python3
"""Soak: many mixed requests against a 2-instance swarm; the gateway must not fail, leak or restart.

Starts the user's path, ``python -m localswarm up --instances 2`` (a real gateway process over
real instance processes), and sends N requests (default 10,000), ``--concurrency`` at a time,
drawn from a fixed mix: non-streamed, streamed, with tools (streamed or not), ``n > 1``
(streamed or not), completions, clients that leave midway (a stream closed after its first
lines, a non-streamed call abandoned before its answer), and bad inputs (malformed JSON, wrong
types, an invalid tools array, a body over ``max_body_bytes``, a prompt over the context).

It asserts, and writes to docs/benchmarks.md (section "Soak"):
- no answer with a 5xx status, and no error event inside a 200 stream;
- every valid request answered 200 and every bad one refused with a 4xx in OpenAI's shape;
- the gateway's RSS grows by at most 20 MiB from the end of the warm-up to the end;
- its open file descriptors are accounted for (psutil ``num_fds`` and ``net_connections``): those
  that are neither client nor upstream sockets are flat (end minus start within a few), no client
  connection is left open once every client has gone, and the connections to the instances stay
  within the two keep-alive pools' bounds (their count varies with the peak fan-out reached, so it
  is bounded, not compared);
- no instance restarted (status: ``restarts`` and pids unchanged).

By default the instances are the FAKE llama-server (tests/fakes/fake_llama_server.py, not
llama.cpp: canned words streamed with a delay), so 10,000 requests fit on 2 cores and what is
measured is the gateway; ``--real`` runs the embedded SmolLM2 instead (use fewer requests).
tests/process/test_soak.py runs this module's ``soak()`` with 500 requests.

Run: .venv/bin/python bench/soak.py [--requests 10000] [--concurrency 8] [--real] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.docs_section import write_section  # noqa: E402
from tests.helpers import fake_binary, free_tcp_port  # noqa: E402

SECTION = "Soak"
MIB = 2**20
RSS_GROWTH_LIMIT = 20 * MIB
FD_TOLERANCE = 2
# Keep-alive connections to each instance the gateway process may hold: 4 in the gateway's pool
# (localswarm/gateway/app.py, max_keepalive_connections=n * 4) and 2 in the supervisor's health
# checks (localswarm/supervisor/supervisor.py, max_connections=instances * 2).
UPSTREAM_POOL_PER_INSTANCE = 6
# Two instances answering slightly different text, word by word (llama-server streams a token
# per event): a real similarity vote, and streams long enough to leave in the middle of.
FAKE_REPLIES = [
    {"content": " ".join(f"word{i}" for i in range(24)), "word_delay": 0.004},
    {"content": " ".join(f"word{i}" for i in range(23)) + " end", "word_delay": 0.004},
]
TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
# kind: weight. Valid kinds must answer 200; "bad_*" must answer 4xx; "leave_*" are cut short.
MIX = {
    "plain": 14, "stream": 14, "tools": 8, "tools_stream": 6, "n2": 6, "n2_stream": 5, "completion": 5,
    "leave_stream": 10, "leave_wait": 6,
    "bad_json": 5, "bad_type": 5, "bad_tools": 4, "bad_n": 3, "bad_oversized": 1, "bad_context": 3,
}
GOOD = {"plain", "stream", "tools", "tools_stream", "n2", "n2_stream", "completion"}


@dataclass(frozen=True)
class Fds:
    """The gateway process's open descriptors by kind; a leak shows where no pool explains it."""

    other: int = 0  # files, pipes, epoll, unix sockets, the listening socket: flat across the soak
    clients: int = 0  # TCP connections accepted on the gateway's port: none once every client has left
    upstream: int = 0  # TCP connections to the instances: keep-alive pools, bounded

    @classmethod
    def of(cls, proc: psutil.Process, port: int) -> Fds:
        conns = [c for c in proc.net_connections(kind="tcp") if c.status != psutil.CONN_LISTEN]
        clients = sum(1 for c in conns if c.laddr and c.laddr.port == port)
        upstream = len(conns) - clients
        return cls(other=proc.num_fds() - clients - upstream, clients=clients, upstream=upstream)

    def __str__(self) -> str:
        return f"{self.other} other, {self.clients} client, {self.upstream} upstream"


@dataclass
class Result:
    requests: int
    concurrency: int
    real: bool
    seconds: float = 0.0
    kinds: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)  # kind/what -> count; empty when all is well
    examples: list[str] = field(default_factory=list)
    rss_start: int = 0
    rss_end: int = 0
    rss_peak: int = 0
    fds_start: Fds = field(default_factory=Fds)
    fds_end: Fds = field(default_factory=Fds)
    instances: int = 2
    restarts: int = 0
    pids_changed: int = 0
    log_errors: list[str] = field(default_factory=list)  # the gateway log's ERROR lines and tracebacks
    dead_socket_writes: int = 0  # asyncio's "socket.send() raised exception." warnings

    @property
    def rss_growth(self) -> int:
        return self.rss_end - self.rss_start

    def failures(self) -> list[str]:
        """What breaks the soak's promises, in words; empty when it passed."""
        out = []
        fivexx = sum(c for s, c in self.statuses.items() if isinstance(s, int) and s >= 500)
        if fivexx:
            out.append(f"{fivexx} answers with a 5xx status")
        if self.problems:
            out.append(f"problems: {dict(self.problems)}; e.g. {self.examples[:3]}")
        if self.rss_growth > RSS_GROWTH_LIMIT:
            out.append(f"gateway RSS grew {self.rss_growth / MIB:.1f} MiB (limit {RSS_GROWTH_LIMIT / MIB:.0f})")
        if abs(self.fds_end.other - self.fds_start.other) > FD_TOLERANCE:
            out.append(f"gateway open fds (not sockets to clients or instances) {self.fds_start} -> {self.fds_end}")
        if self.fds_end.clients:
            out.append(f"{self.fds_end.clients} client connections still open after every client left")
        if self.fds_end.upstream > UPSTREAM_POOL_PER_INSTANCE * self.instances:
            out.append(f"{self.fds_end.upstream} connections to {self.instances} instances "
                       f"(the keep-alive pools hold at most {UPSTREAM_POOL_PER_INSTANCE * self.instances})")
        if self.log_errors:
            out.append(f"{len(self.log_errors)} errors in the gateway log, e.g. {self.log_errors[:2]}")
        if self.dead_socket_writes:
            out.append(f"{self.dead_socket_writes} writes to clients already gone (asyncio warnings)")
        if self.restarts or self.pids_changed:
            out.append(f"instances restarted: {self.restarts} restarts, {self.pids_changed} new pids")
        return out


def body(kind: str, rng: random.Random) -> tuple[str, dict[str, Any] | bytes]:
    """(path, JSON body or raw bytes) for one request of ``kind``."""
    words = " ".join(rng.choice(("fib", "sort", "parse", "list", "file", "test")) for _ in range(rng.randint(1, 12)))
    msgs = [{"role": "user", "content": f"Write {words}."}]
    chat = "/v1/chat/completions"
    base: dict[str, Any] = {"model": "swarm", "messages": msgs, "max_tokens": 32}
    if kind in ("plain", "leave_wait"):
        return chat, base
    if kind in ("stream", "leave_stream"):
        return chat, {**base, "stream": True, "stream_options": {"include_usage": rng.random() < 0.5}}
    if kind == "tools":
        return chat, {**base, "tools": TOOLS, "tool_choice": "auto"}
    if kind == "tools_stream":
        return chat, {**base, "tools": TOOLS, "stream": True}
    if kind == "n2":
        return chat, {**base, "n": 2}
    if kind == "n2_stream":
        return chat, {**base, "n": 2, "stream": True}
    if kind == "completion":
        return "/v1/completions", {"model": "swarm", "prompt": f"def {words.split()[0]}(", "max_tokens": 32}
    if kind == "bad_json":
        return chat, json.dumps(base).encode()[: rng.randint(1, 40)]
    if kind == "bad_type":
        field_, value = rng.choice([("messages", "hi"), ("max_tokens", "x"), ("temperature", [1]),
                                    ("stream", "yes"), ("messages", [{"role": 3, "content": "hi"}])])
        return chat, {**base, field_: value}
    if kind == "bad_tools":
        return chat, {**base, "tools": rng.choice([[{"type": "nope"}], "read_file", [{"type": "function"}]])}
    if kind == "bad_n":
        return chat, {**base, "n": rng.choice([0, -1, 1000, "2"])}
    if kind == "bad_oversized":  # over the gateway's 8 MiB max_body_bytes
        return chat, {**base, "messages": [{"role": "user", "content": "x" * (8 * MIB + 10)}]}
    if kind == "bad_context":  # fits the body limit, not the context of one slot
        return chat, {**base, "messages": [{"role": "user", "content": "word " * 40_000}]}
    raise ValueError(kind)


async def one(client: httpx.AsyncClient, kind: str, rng: random.Random, result: Result) -> None:
    path, payload = body(kind, rng)
    kw: dict[str, Any] = ({"content": payload, "headers": {"content-type": "application/json"}}
                          if isinstance(payload, bytes) else {"json": payload})
    result.kinds[kind] += 1

    def problem(what: str, detail: str) -> None:
        result.problems[f"{kind}/{what}"] += 1
        if len(result.examples) < 10:
            result.examples.append(f"{kind}: {detail[:300]}")

    if kind == "leave_wait":  # a client that gives up before the answer: the call is cancelled
        try:
            r = await asyncio.wait_for(client.post(path, **kw), timeout=rng.uniform(0.005, 0.05))
        except asyncio.TimeoutError:
            return
        result.statuses[r.status_code] += 1  # answered before the client gave up
        if r.status_code != 200:
            problem(f"status {r.status_code}", r.text)
        return
    try:
        await _answer(client, kind, rng, result, path, kw, problem)
    except httpx.TransportError as e:  # the gateway dropped the connection: a failure too
        problem(type(e).__name__, repr(e))


async def _answer(client: httpx.AsyncClient, kind: str, rng: random.Random, result: Result, path: str,
                  kw: dict[str, Any], problem: Callable[[str, str], None]) -> None:
    streamed = kw.get("json", {}).get("stream") is True
    async with client.stream("POST", path, **kw) as r:
        result.statuses[r.status_code] += 1
        if not streamed or r.status_code != 200:
            text = (await r.aread()).decode(errors="replace")
            if r.status_code >= 500:
                problem(str(r.status_code), text)
            elif kind in GOOD and r.status_code != 200:
                problem(f"status {r.status_code}", text)
            elif kind.startswith("bad_"):
                if not 400 <= r.status_code < 500:
                    problem(f"status {r.status_code}", text)
                elif "error" not in _json(text):
                    problem("not OpenAI's error shape", text)
            elif r.status_code == 200 and "choices" not in _json(text):
                problem("no choices", text)
            return
        keep = rng.randint(0, 3) if kind == "leave_stream" else None
        lines, done = 0, False
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            lines += 1
            if line.strip() == "data: [DONE]":
                done = True
            elif '"error"' in line and "error" in _json(line[5:]):
                problem("error event in a 200 stream", line)
            if keep is not None and lines > keep:
                return  # leaving midway: the connection closes with the stream unread
        if not done:
            problem("stream without [DONE]", f"{lines} events")


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def drive(url: str, kinds: list[str], concurrency: int, seed: int, result: Result) -> None:
    rng = random.Random(seed)
    todo = iter(kinds)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            for kind in todo:
                await one(client, kind, rng, result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def draw(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return rng.choices(list(MIX), weights=list(MIX.values()), k=n)


class Swarm:
    """``python -m localswarm up --instances 2`` in its own process, over fake or real instances."""

    started: float  # time.monotonic() just before the process was started

    def __init__(self, tmp: Path, *, real: bool, instances: int = 2, model_args: list[str] | None = None) -> None:
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "up.log"
        env = {**os.environ, "FAKE_REPLIES": json.dumps(FAKE_REPLIES),
               "LOCALSWARM_STATE_DIR": str(tmp / "state"), "LOCALSWARM_CONFIG_DIR": str(tmp / "config"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, "-m", "localswarm", "up", "--instances", str(instances), "--port", str(self.port),
                "--log-level", "warning"]
        if model_args is not None:  # the caller's choice (bench/success_metrics.py: the user's defaults)
            argv += model_args
        elif real:
            argv += ["--model", "embedded", "--threads", "2", "--ctx-size", "1024"]
        else:
            model = tmp / "fake.gguf"
            model.write_bytes(b"GGUF fake")
            argv += ["--model", str(model), "--llama-server", str(fake_binary(tmp))]
        self.started = time.monotonic()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.process = psutil.Process(self.proc.pid)

    def wait_ready(self, want: int, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                status = self.status()
                if status.get("ready", 0) >= want:
                    return status
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"swarm not ready: {self.log.read_text()[-3000:]}")

    def status(self) -> dict:
        return httpx.get(self.url + "/localswarm/status", timeout=10).json()

    def settle(self, timeout: float = 30) -> None:
        """Wait until no request is in flight anywhere (left clients' work included), then a moment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if not any(i["in_flight"] for i in s["instances"]) and not (s.get("queue") or {}).get("active"):
                break
            time.sleep(0.2)
        time.sleep(1.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def soak(requests: int = 10_000, concurrency: int = 8, *, real: bool = False, seed: int = 13,
         warmup: int | None = None, progress: bool = False) -> Result:
    """Run the soak; the figures and any problems are in the returned Result."""
    warmup = warmup if warmup is not None else max(100, requests // 10)
    result = Result(requests=requests, concurrency=concurrency, real=real)
    with tempfile.TemporaryDirectory(prefix="ls-soak-") as tmp:
        swarm = Swarm(Path(tmp), real=real)
        try:
            before = swarm.wait_ready(2)
            url = swarm.url
            asyncio.run(drive(url, draw(warmup, seed + 1), concurrency, seed + 1, Result(warmup, concurrency, real)))
            swarm.settle()
            result.rss_start = result.rss_peak = swarm.process.memory_info().rss
            result.fds_start = Fds.of(swarm.process, swarm.port)
            kinds = draw(requests, seed)
            started = time.monotonic()

            async def sampled() -> None:
                async def sample() -> None:
                    while True:
                        result.rss_peak = max(result.rss_peak, swarm.process.memory_info().rss)
                        if progress:
                            done = sum(result.kinds.values())
                            print(f"  {done}/{requests} rss {result.rss_peak / MIB:.1f} MiB", file=sys.stderr)
                        await asyncio.sleep(5 if progress else 1)

                sampler = asyncio.create_task(sample())
                try:
                    await drive(url, kinds, concurrency, seed, result)
                finally:
                    sampler.cancel()

            asyncio.run(sampled())
            result.seconds = time.monotonic() - started
            swarm.settle()
            result.rss_end = swarm.process.memory_info().rss
            result.rss_peak = max(result.rss_peak, result.rss_end)
            result.fds_end = Fds.of(swarm.process, swarm.port)
            after = swarm.status()
            result.restarts = sum(i["restarts"] for i in after["instances"])
            result.pids_changed = sum(a["pid"] != b["pid"] for a, b in zip(before["instances"], after["instances"]))
        finally:
            swarm.stop()
            log = swarm.log.read_text(errors="replace").splitlines()
            result.log_errors = [line for line in log
                                 if "Traceback" in line or re.search(r"\b(ERROR|CRITICAL)\b", line)]
            result.dead_socket_writes = sum("socket.send() raised exception" in line for line in log)
            first = next((i for i, line in enumerate(log) if line in result.log_errors[:1]), None)
            if first is not None:
                result.examples.append("gateway log:\n" + "\n".join(log[first:first + 40]))
    return result


def report(r: Result) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    instances = ("2 real llama-server instances with the embedded SmolLM2-135M" if r.real else
                 "2 instances of the FAKE llama-server (`tests/fakes/fake_llama_server.py`, not llama.cpp: "
                 "24 canned words per answer, streamed one per event 4 ms apart, llama-server's errors for "
                 "bad tools and prompts over the context), so that 10,000 requests fit on this machine and "
                 "what is measured is the gateway")
    fivexx = sum(c for s, c in r.statuses.items() if s >= 500)
    verdict = "passed" if not r.failures() else "FAILED: " + "; ".join(r.failures())
    status = ", ".join(f"{s}: {c}" for s, c in sorted(r.statuses.items()))
    kinds = ", ".join(f"{k} {r.kinds[k]}" for k in MIX)
    return "\n".join([
        f"## {SECTION}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/soak.py` ({cores} cores, {platform.machine()}, "
        f"Python {platform.python_version()}; measured under load, the machine shared with other jobs). "
        f"`python -m localswarm up --instances 2` as a user starts it, over {instances}. "
        f"{r.requests} requests after a warm-up, {r.concurrency} at a time, in {r.seconds:.0f} s "
        f"({r.requests / max(r.seconds, 1e-9):.1f} requests/s).",
        "",
        f"Mix: {kinds}. `leave_stream` reads 0-3 events of a stream and closes the connection; `leave_wait` "
        "abandons a non-streamed call after 5-50 ms; `bad_*` are malformed JSON, wrong types, invalid tools, "
        "invalid `n`, a body over the 8 MiB limit and a prompt over the context of a slot.",
        "",
        "| check | target | measured |",
        "|---|---|---|",
        f"| 5xx answers and error events in 200 streams | 0 | "
        f"{fivexx + sum(c for k, c in r.problems.items() if 'error event' in k)} |",
        f"| valid requests not answered 200, bad ones not refused with a 4xx in OpenAI's shape | 0 | "
        f"{sum(r.problems.values())} |",
        f"| gateway RSS growth after warm-up | <= 20 MiB | {r.rss_growth / MIB:+.1f} MiB "
        f"({r.rss_start / MIB:.1f} -> {r.rss_end / MIB:.1f}, peak {r.rss_peak / MIB:.1f}) |",
        f"| gateway open fds, start -> end | others flat (± {FD_TOLERANCE}), 0 client sockets, upstream "
        f"<= {UPSTREAM_POOL_PER_INSTANCE * r.instances} | {r.fds_start} -> {r.fds_end} |",
        f"| instance restarts | 0 | {r.restarts} (pids changed: {r.pids_changed}) |",
        f"| gateway log: ERROR lines and tracebacks; writes to clients already gone | 0; 0 | "
        f"{len(r.log_errors)}; {r.dead_socket_writes} |",
        "",
        f"HTTP statuses: {status}. Result: {verdict}.",
        "",
        "Found by this soak and fixed in the gateway (each with a test): (1) a body over `max_body_bytes` was "
        "answered 413 and the connection closed with the body unread, so the kernel reset it and async clients "
        "(httpx, the openai SDK's `AsyncOpenAI`) saw a connection error, not the 413: the rest of the body is now "
        "read and dropped, up to 32 MiB over (`tests/unit/test_slowclients.py`); (2) a client that hung up while "
        "sending its body was logged as an unhandled error with a traceback and counted as a 500 in `/metrics`: "
        "now a 499 logged at info (`tests/unit/test_gateway_errors.py`); (3) a client that left a voted stream "
        "was written every remaining event before the disconnect was seen (asyncio's \"socket.send() raised "
        "exception.\" warnings in the log): the response now lets the loop run between events "
        "(`tests/process/test_soak.py` checks the log).",
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--real", action="store_true", help="the embedded SmolLM2 instead of the fake llama-server")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--write", nargs="?", const=str(REPO / "docs" / "benchmarks.md"),
                    help="write the section to docs/benchmarks.md (or the given file)")
    args = ap.parse_args()
    r = soak(args.requests, args.concurrency, real=args.real, seed=args.seed, progress=True)
    text = report(r)
    print(text)
    if args.write:
        write_section(SECTION + (" (real llama-server)" if args.real else ""),
                      text.replace(f"## {SECTION}", f"## {SECTION} (real llama-server)") if args.real else text,
                      Path(args.write))
    return 1 if r.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
