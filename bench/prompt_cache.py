"""A second opencode turn reuses the instance's cached prompt prefix: tokens processed and time.

One real llama-server started as ``localswarm up`` starts an instance (the embedded SmolLM2,
``--jinja``, ``-np 2`` slots, ``cache_prompt`` on: llama-server's default, sent explicitly
here) gets, in order:

1. opencode's recorded first turn (tests/fixtures/opencode/first-turn-1.18.33.json: system
   prompt, 10 tools, the user's request);
2. another session's first turn (same system prompt and tools, another request): it shows
   that the shared system prompt and tools are reused across sessions too;
3. the first session's second turn (turn 1 + the model's answer + a new user message): slot
   similarity (``--slot-prompt-similarity``) sends it to the slot holding its prefix;
4. the same second turn with ``cache_prompt: false``, the cost without the cache.

llama-server's own ``timings`` are the figures: ``prompt_n`` (prompt tokens processed),
``cache_n`` (taken from the slot's cache) and ``prompt_ms``. Non-streamed requests (the
timings come in the body); opencode streams, which changes nothing for the prompt.

    python bench/prompt_cache.py [--threads 2] [--write]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_section import write_section  # noqa: E402

from localswarm.backends.llama_server import LlamaServerBackend, embedded_model_path, find_llama_server  # noqa: E402
from localswarm.models.calibrate import wait_ready  # noqa: E402
from localswarm.supervisor.instance import free_port  # noqa: E402

FIRST_TURN = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "opencode" / "first-turn-1.18.33.json"
SECTION = "Prompt cache: opencode's second turn"


def _post(base: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=900)
    r.raise_for_status()
    data = r.json()
    t = data["timings"]
    return {"prompt_tokens": data["usage"]["prompt_tokens"], "processed": t["prompt_n"],
            "cached": t.get("cache_n", 0), "prompt_ms": t["prompt_ms"],
            "answer": data["choices"][0]["message"].get("content") or ""}


def turns() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Session A's first turn, session B's first turn, session A's second turn."""
    a1 = json.loads(FIRST_TURN.read_text())
    a1.update(stream=False, max_tokens=24, temperature=0, seed=1, cache_prompt=True)
    a1.pop("stream_options", None)
    b1 = copy.deepcopy(a1)
    b1["messages"][-1] = {"role": "user", "content": "List the files in this folder."}
    return a1, b1, a1  # the second turn is built from A's answer


def run(binary: Path, model: Path, threads: int) -> list[tuple[str, dict[str, Any]]]:
    import subprocess

    backend = LlamaServerBackend(binary=binary, model_path=model, model_id="swarm", ctx_size=8192, parallel=2)
    port = free_port()
    spec = backend.launch_spec(port=port, api_key="", threads=threads, seed=1000)
    proc = subprocess.Popen(spec.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, 120)
        a1, b1, _ = turns()
        first = _post(base, a1)
        other = _post(base, b1)
        a2 = copy.deepcopy(a1)
        a2["messages"] += [{"role": "assistant", "content": first["answer"]},
                           {"role": "user", "content": "Now say goodbye in one word."}]
        second = _post(base, a2)
        cold = _post(base, {**a2, "cache_prompt": False})
        return [("session A, turn 1", first), ("session B, turn 1 (same system prompt and tools)", other),
                ("session A, turn 2", second), ("session A, turn 2, `cache_prompt: false`", cold)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def table(rows: list[tuple[str, dict[str, Any]]], threads: int) -> str:
    lines = [f"## {SECTION}", "",
             "Measured by `bench/prompt_cache.py` **under load** (a shared 2-core VM, other "
             f"engineers' jobs running; one real llama-server, embedded SmolLM2-135M, {threads} threads, "
             "`-np 2` as `up` starts it). llama-server's own `timings`: `prompt_n` processed, "
             "`cache_n` taken from the slot's cache.", "",
             "| Request | Prompt tokens | Processed | From cache | Prompt time (ms) |",
             "|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['prompt_tokens']} | {r['processed']} | {r['cached']} | {r['prompt_ms']:.0f} |")
    second, cold = rows[2][1], rows[3][1]
    lines += ["", f"The second turn processed {second['processed']} of {second['prompt_tokens']} prompt tokens "
              f"({second['prompt_ms']:.0f} ms against {cold['prompt_ms']:.0f} ms without the cache). "
              "The gateway keeps a conversation on the instances that served its previous turn when it asks "
              "fewer instances than it has (`localswarm/gateway/affinity.py`); when every instance votes, "
              "each already holds the prefix.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    rows = run(find_llama_server(), embedded_model_path(), args.threads)
    text = table(rows, args.threads)
    print(text)
    if args.write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
