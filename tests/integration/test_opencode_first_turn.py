"""opencode's real first request, at the default settings, against real llama-servers.

The body is what opencode 1.18.33 sent for `opencode run "Say hello in one word."`
(tests/fixtures/opencode/first-turn-1.18.33.json, recorded by a logging server; only the
project path was replaced): a 9.5k-char system prompt, 10 tools, streamed. With the old
default of 4,096 tokens per slot it fitted with tools dropped by SmolLM2's template, but not
with a tool-aware template (7,600 tokens); this test sends it at `Settings()` as it is,
with a short `max_tokens` (the answer's length is not the subject).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from localswarm.opencode import limits
from tests.helpers import REPO, RunningGateway, free_tcp_port

pytestmark = pytest.mark.integration

FIRST_TURN = REPO / "tests" / "fixtures" / "opencode" / "first-turn-1.18.33.json"


def test_opencodes_first_turn_at_the_default_settings(real_llama: tuple[str, str]) -> None:
    binary, model = real_llama
    settings = Settings(port=free_tcp_port())  # the defaults, except a free port
    backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2-135m-instruct",
                                 ctx_size=settings.ctx_size, parallel=settings.parallel)
    body = json.loads(FIRST_TURN.read_text())
    assert body["stream"] is True and len(body["tools"]) == 10 and body["max_tokens"] == 32000  # as recorded
    context, output = limits(settings.ctx_size)
    # opencode sends limit.output (4,096) as max_tokens; the 135M model may ramble that long
    # (minutes on a loaded CPU), and the answer's length is not what this test is about.
    body["max_tokens"] = 64
    with RunningGateway(settings, backend, instances=2) as gw, gw.client(timeout=600) as c:
        resp = c.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        chunks = [json.loads(line[5:]) for line in resp.text.splitlines()
                  if line.startswith("data:") and line.strip() != "data: [DONE]"]
        assert not any("error" in chunk for chunk in chunks), chunks[-1]
        usage = next(chunk["usage"] for chunk in reversed(chunks) if chunk.get("usage"))
        text = "".join(ch["delta"].get("content") or "" for chunk in chunks for ch in chunk.get("choices", []))
    print(f"opencode first turn: {usage['prompt_tokens']} prompt tokens (SmolLM2), context {context}, "
          f"output {output}, answer {text[:80]!r}")
    assert 2000 <= usage["prompt_tokens"] <= 2600  # 2,205 measured with SmolLM2's template and tokenizer
    assert text.strip()
    # Room left for the conversation before opencode compacts (context - output), even once a
    # tool-aware template adds the 5,390 tokens of tool schemas.
    assert context - output - (usage["prompt_tokens"] + 5390) >= 4000
