"""opencode itself, headless, against a swarm of real llama-servers with the embedded model.

opencode (npm ``opencode-ai``, pinned) is installed once into ~/.cache/localswarm-test by
``install_opencode.sh``; its provider package (``@ai-sdk/openai-compatible``) is fetched by
opencode on first use into a cache kept beside it, so a second run needs no network.
The test skips only where npm or its registry is unreachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from localswarm.opencode import provider_config
from tests.helpers import REPO, RunningGateway, free_tcp_port

pytestmark = pytest.mark.integration

INSTALL = REPO / "tests" / "integration" / "install_opencode.sh"
CACHE = Path(os.environ.get("LOCALSWARM_TEST_CACHE") or Path.home() / ".cache" / "localswarm-test")
RUN_TIMEOUT = 420


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    proc = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(f"npm is unreachable, cannot install opencode: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"installing opencode failed:\n{proc.stderr[-3000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


def _isolated_env(home: Path, project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        # provider packages opencode fetches from npm: kept between runs (no user state)
        XDG_CACHE_HOME=str(CACHE / "opencode-cache"),
        # opencode takes the project from $PWD, not the process's working directory
        PWD=str(project),
        OPENCODE_DISABLE_AUTOUPDATE="1",
        NO_COLOR="1",
    )
    return env


def test_opencode_run_is_answered_by_a_voted_streamed_tool_bearing_request(real_llama, opencode_bin, tmp_path):
    binary, model = real_llama
    settings = Settings(port=free_tcp_port(), ctx_size=8192, parallel=2, keepalive_interval=1.0, instance_timeout=400)
    backend = LlamaServerBackend(binary=Path(binary), model_path=Path(model), model_id="smollm2-135m-instruct",
                                 ctx_size=8192, parallel=2)
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.txt").write_text("hello\n")
    home = tmp_path / "home"
    home.mkdir()
    with RunningGateway(settings, backend, instances=2) as gw:
        config = provider_config(gw.url + "/v1", context=8192, output=64)
        (project / "opencode.json").write_text(json.dumps(config, indent=2))
        started = time.monotonic()
        proc = subprocess.run(
            [str(opencode_bin), "run", "--print-logs", "--log-level", "INFO", "Say hello in one word."],
            cwd=project, env=_isolated_env(home, project), capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )
        elapsed = time.monotonic() - started
        with gw.client() as c:
            status = c.get("/localswarm/status").json()
    logs = proc.stderr[-4000:]
    assert "providerID=localswarm" in proc.stderr, f"opencode did not use the swarm's provider:\n{logs}"
    assert proc.returncode == 0, f"opencode exited {proc.returncode} after {elapsed:.0f}s:\n{logs}"
    requests = status["requests"]
    assert requests["voted_streamed_with_tools"] >= 1, requests
    assert requests["streamed"] == requests["chat"] >= 2, requests  # title + agent turn, all streamed
    # The agent turn was voted. The title request may be abandoned by opencode when the turn
    # finishes first (seen on a loaded machine): its vote is then cancelled, not counted.
    assert status["votes"]["count"] >= requests["voted_streamed_with_tools"] >= 1
    print(f"opencode run: {elapsed:.1f}s, requests {requests}")
