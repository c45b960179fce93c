"""Every MCP tool, called with the official SDK's stdio client, against a real swarm.

Real parts only: `localswarm up --detach` in a subprocess (real llama-server processes,
the embedded SmolLM2 model), and `python -m localswarm.mcp_server` spawned by
``mcp.client.stdio.stdio_client``, finding the swarm through the state file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.helpers import REPO, free_tcp_port

pytestmark = pytest.mark.integration

TOOLS = {"get_hardware_info", "get_swarm_status", "generate_code", "list_available_models", "get_worker_details"}


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localswarm", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def is_error(result: Any) -> bool:
    # mcp 2 spells the fields in snake_case; mcp 1 in camelCase.
    return bool(getattr(result, "is_error", getattr(result, "isError", False)))


def payload(result: Any) -> Any:
    """A tool result's JSON: the structured content, else the first text block."""
    assert not is_error(result), result.content
    data = getattr(result, "structured_content", getattr(result, "structuredContent", None))
    if data is not None:
        return data["result"] if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


@pytest.fixture(scope="module")
def swarm(real_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcp-swarm")
    env = {**os.environ, "LOCALSWARM_STATE_DIR": str(tmp / "state"), "LOCALSWARM_CONFIG_DIR": str(tmp / "cfg"),
           "LOCALSWARM_CACHE_DIR": str(tmp / "cache")}
    port = free_tcp_port()
    up = _cli(env, "up", "--detach", "--port", str(port), "--instances", "2", "--ctx-size", "2048")
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield {"env": env, "port": port}
    finally:
        down = _cli(env, "down")
        assert "stopped" in down.stdout, down.stdout + down.stderr


async def test_every_tool_against_a_real_swarm(swarm):
    params = StdioServerParameters(command=sys.executable, args=["-m", "localswarm.mcp_server"],
                                   env={**swarm["env"], "PYTHONPATH": str(REPO)}, cwd=str(REPO))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        info = getattr(init, "server_info", None) or getattr(init, "serverInfo", None)
        assert info.name == "localswarm"
        tools = (await session.list_tools()).tools
        assert {t.name for t in tools} == TOOLS
        assert all(t.description for t in tools)

        hw = payload(await session.call_tool("get_hardware_info", {}))
        assert hw["cpu"]["logical_cores"] >= 1 and hw["ram_total"] > 2**28 and isinstance(hw["gpus"], list)

        models = payload(await session.call_tool("list_available_models", {}))
        assert models["models"] and models["fits"] >= 1
        embedded = [m for m in models["models"] if m["embedded"]]
        assert embedded and embedded[0]["fits"] and embedded[0]["reason"]
        assert all(isinstance(m["fits"], bool) and m["reason"] for m in models["models"])

        status = payload(await session.call_tool("get_swarm_status", {}))
        assert status["ready"] == 2 and [i["state"] for i in status["instances"]] == ["ready", "ready"]

        gen = payload(await session.call_tool(
            "generate_code", {"prompt": "Write a Python function that adds two numbers.", "language": "python",
                              "max_tokens": 64}))
        assert gen["answer"].strip() and gen["code"].strip()
        consensus = gen["consensus"]
        assert consensus["strategy"] == "similarity"
        assert 0.0 <= consensus["confidence"] <= 1.0
        assert consensus["n"] == 2 and 1 <= consensus["votes"] <= 2
        assert consensus["winner"] in ("inst-0", "inst-1")
        assert consensus["latency_s"] > 0
        assert gen["usage"]["completion_tokens"] > 0

        workers = payload(await session.call_tool("get_worker_details", {}))
        assert workers["count"] == 2
        for w in workers["workers"]:
            assert w["state"] == "ready" and w["pid"] and w["port"] and w["memory_rss"] > 10 * 2**20
            assert w["requests"] >= 1 and w["log"].endswith(f"{w['name']}.log")
        one = payload(await session.call_tool("get_worker_details", {"worker": "inst-1"}))
        assert one["count"] == 1 and one["workers"][0]["name"] == "inst-1"
        missing = await session.call_tool("get_worker_details", {"worker": "inst-5"})
        assert is_error(missing) and "inst-0, inst-1" in missing.content[0].text

        # The swarm counted the vote the MCP call caused.
        after = payload(await session.call_tool("get_swarm_status", {}))
        assert after["votes"]["count"] >= 1
