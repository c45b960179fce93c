"""The ``exec`` vote on a real swarm: real llama-servers with the embedded model, the
answers run on the prompt's doctest in the real sandbox, the metadata says so."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from tests.helpers import RunningGateway, free_tcp_port

pytestmark = pytest.mark.integration

PROMPT = (
    "Complete the following Python function. Reply with the complete function in a "
    "```python code block.\n\n```python\ndef add(a, b):\n    \"\"\"Return the sum of a and b.\n"
    "    >>> add(2, 3)\n    5\n    >>> add(-1, 1)\n    0\n    \"\"\"\n```"
)


def test_real_swarm_checks_answers_on_the_prompt_doctest(real_llama, tmp_path, monkeypatch):
    binary, model = real_llama
    monkeypatch.setenv("LOCALSWARM_STATE_DIR", str(tmp_path))
    settings = Settings(port=free_tcp_port(), ctx_size=1024, parallel=1, exec_check="on", quorum=1.0)
    backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2",
                                 ctx_size=1024, parallel=1)
    with RunningGateway(settings, backend, instances=2) as gw, gw.client(timeout=300) as c:
        gw.wait_ready(all_=True)
        resp = c.post("/v1/chat/completions", json={
            "model": "swarm", "max_tokens": 96, "temperature": 0.2,
            "messages": [{"role": "user", "content": PROMPT}]})
    assert resp.status_code == 200, resp.text
    meta = resp.json()["localswarm"]
    assert meta["n"] == 2 and meta["answered"] == 2
    # SmolLM2 restates `def add` in every answer seen here; should one not, the vote says
    # which examples were left and still runs the others: both doctest lines are about add.
    assert meta["strategy"] == "exec", meta
    assert meta["exec"]["examples"] == 2
    assert set(meta["exec"]["passed"]) == {"inst-0", "inst-1"}
    assert re.fullmatch(r"[0-2]/2 examples", resp.headers["x-localswarm-exec"])
    assert resp.headers["x-localswarm-exec"] == meta["exec"]["winner"]
    assert meta["exec"]["passed"][meta["winner"]] == max(v or 0 for v in meta["exec"]["passed"].values())
