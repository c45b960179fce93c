"""The MCP server, driven by the official SDK's own stdio client.

The swarm behind it is the real gateway over FAKE llama-servers
(tests/fakes/fake_llama_server.py processes); tests/integration/test_mcp_real.py does the
same against real llama-server instances.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from localswarm import statefile
from localswarm.config import Settings
from localswarm.mcp_server import GatewayClient, SwarmNotFound, code_from, generate, worker_details
from tests.helpers import REPO, RunningGateway, fake_backend, free_tcp_port, set_fake_replies

TOOLS = {"get_hardware_info", "get_swarm_status", "generate_code", "list_available_models", "get_worker_details"}
CODE = "Here:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"


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


def server_params(*args: str) -> StdioServerParameters:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return StdioServerParameters(command=sys.executable, args=["-m", "localswarm.mcp_server", *args], env=env,
                                 cwd=str(REPO))


async def test_every_tool_over_stdio_against_a_fake_swarm(tmp_path, monkeypatch):
    """list_tools shows the five tools; each answers with real content from the gateway."""
    set_fake_replies(monkeypatch, [CODE, CODE.replace("a, b", "x, y").replace("a + b", "x + y")])
    gw = RunningGateway(Settings(port=free_tcp_port()), fake_backend(tmp_path), instances=2)
    with gw:
        # The state file, as `localswarm up` writes it, is how the server finds the swarm.
        statefile.write({"pid": os.getpid(), "host": "127.0.0.1", "port": gw.settings.port, "state": "ready"})
        async with stdio_client(server_params()) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS

            status = payload(await session.call_tool("get_swarm_status", {}))
            assert status["ready"] == 2 and status["model"] == "fake-model"

            gen = payload(await session.call_tool("generate_code", {"prompt": "add two numbers",
                                                                     "language": "python", "max_tokens": 64}))
            assert "return" in gen["code"] and "```" not in gen["code"]
            consensus = gen["consensus"]
            assert consensus["strategy"] == "similarity" and 0 <= consensus["confidence"] <= 1
            assert consensus["n"] == 2 and consensus["votes"] >= 1
            assert consensus["winner"] in ("inst-0", "inst-1") and consensus["latency_s"] >= 0

            workers = payload(await session.call_tool("get_worker_details", {}))
            assert [w["name"] for w in workers["workers"]] == ["inst-0", "inst-1"]
            assert all(w["requests"] >= 1 for w in workers["workers"])
            one = payload(await session.call_tool("get_worker_details", {"worker": "inst-1"}))
            assert one["count"] == 1 and one["workers"][0]["state"] == "ready"
            missing = await session.call_tool("get_worker_details", {"worker": "inst-9"})
            assert is_error(missing) and "inst-0, inst-1" in missing.content[0].text

            hw = payload(await session.call_tool("get_hardware_info", {}))
            assert hw["cpu"]["logical_cores"] and hw["ram_total"] > 0

            models = payload(await session.call_tool("list_available_models", {}))
            assert models["models"] and all(isinstance(m["fits"], bool) and m["reason"] for m in models["models"])


async def test_no_swarm_gives_an_actionable_error():
    async with stdio_client(server_params()) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("get_swarm_status", {})
    assert is_error(result) and "localswarm up" in result.content[0].text


def test_gateway_url_explicit_or_from_the_state_file():
    assert GatewayClient("localhost:9000/v1/").url() == "http://localhost:9000"
    with pytest.raises(SwarmNotFound):
        GatewayClient().url()
    statefile.write({"pid": 1, "host": "0.0.0.0", "port": 8123})
    assert GatewayClient().url() == "http://127.0.0.1:8123"


async def test_generate_sends_language_and_strategy_and_maps_metadata():
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = json.loads(request.content)
        seen["strategy"] = request.headers.get("x-localswarm-strategy")
        return httpx.Response(200, json={
            "model": "m", "choices": [{"message": {"content": "```rust\nfn main() {}\n```"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            "localswarm": {"strategy": "quality", "confidence": 0.75, "latency_s": 1.5, "votes": 3, "n": 4,
                           "answered": 4, "winner": "inst-2"},
        })

    client = GatewayClient("http://gw", transport=httpx.MockTransport(handler))
    out = await generate(client, "hello world", "rust", 32, strategy="quality")
    assert seen["strategy"] == "quality" and seen["body"]["max_tokens"] == 32
    assert "rust" in seen["body"]["messages"][0]["content"]
    assert out["code"] == "fn main() {}" and out["language"] == "rust"
    assert out["consensus"] == {"strategy": "quality", "confidence": 0.75, "latency_s": 1.5, "votes": 3, "n": 4,
                                "answered": 4, "winner": "inst-2", "early_stop": None, "degenerate": None}


async def test_gateway_errors_carry_its_message():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "No instance is ready yet; retry shortly."}})

    client = GatewayClient("http://gw", transport=httpx.MockTransport(handler))
    with pytest.raises(RuntimeError, match="503: No instance is ready"):
        await generate(client, "x")


def test_code_from_and_worker_details():
    assert code_from("just prose") == ("just prose", None)
    assert code_from("def f():\n    return 1") == ("def f():\n    return 1", "python")
    status = {"model": "m", "instances": [{"name": "inst-0"}, {"name": "inst-1"}]}
    assert worker_details(status)["count"] == 2
    with pytest.raises(ValueError, match="inst-0, inst-1"):
        worker_details(status, "inst-7")


UP_WITH_MCP = """
import logging, sys
from pathlib import Path
import uvicorn
from localswarm.config import Settings
from localswarm.gateway.app import create_app, timing_from
from localswarm.mcp_server import serve_with_mcp
from localswarm.supervisor.supervisor import Supervisor
from tests.helpers import fake_backend
import asyncio

port, tmp = int(sys.argv[1]), Path(sys.argv[2])
settings = Settings(port=port)
backend = fake_backend(tmp)
supervisor = Supervisor(backend, instances=2, log_dir=tmp / "logs", timing=timing_from(settings))
app = create_app(settings, supervisor, model_id=backend.model_id)
# uvicorn's access log writes to stdout by default: serve_with_mcp must move it to stderr.
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", lifespan="on"))
asyncio.run(serve_with_mcp(server, f"http://127.0.0.1:{port}"))
print("exited cleanly", file=sys.stderr)
"""


async def test_http_and_mcp_in_one_process_like_up_mcp(tmp_path):
    """serve_with_mcp: one event loop serves HTTP and MCP on one supervisor; closing the
    MCP client stops the gateway, its instances with it."""
    import anyio
    import psutil

    script = tmp_path / "up_mcp.py"
    script.write_text(UP_WITH_MCP)
    port = free_tcp_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    params = StdioServerParameters(command=sys.executable, args=[str(script), str(port), str(tmp_path)], env=env,
                                   cwd=str(REPO))
    with open(tmp_path / "stderr.txt", "w") as errlog:  # noqa: ASYNC230 - opened once, before the loop matters
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            status: dict[str, Any] = {}
            with anyio.fail_after(20):
                while status.get("ready") != 2:
                    result = await session.call_tool("get_swarm_status", {})
                    status = {} if is_error(result) else payload(result)
                    await anyio.sleep(0.1)
            pids = [w["pid"] for w in status["instances"]]
            gen = payload(await session.call_tool("generate_code", {"prompt": "add", "max_tokens": 16}))
            assert gen["consensus"]["n"] == 2
            async with httpx.AsyncClient() as c:  # HTTP served beside MCP, access log on stderr
                assert (await c.get(f"http://127.0.0.1:{port}/health")).status_code == 200

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    with anyio.fail_after(15):
        while any(alive(p) for p in pids):
            await anyio.sleep(0.1)
    log = (tmp_path / "stderr.txt").read_text()
    assert "GET /health" in log and "exited cleanly" in log


@pytest.mark.parametrize("where", ["env", "file"])
async def test_mcp_tools_reach_a_keyed_gateway_with_the_clients_key(tmp_path, monkeypatch, where):
    """The MCP server sends the key every client of ours sends ($LOCALSWARM_API_KEY or the 0600
    key file): its tools work against a keyed gateway; without the key they get the gateway's 401."""
    key = "mcp-key-" + os.urandom(6).hex()
    set_fake_replies(monkeypatch, [CODE])
    gw = RunningGateway(Settings(port=free_tcp_port(), api_key=key), fake_backend(tmp_path), instances=1)
    with gw:
        statefile.write({"pid": os.getpid(), "host": "127.0.0.1", "port": gw.settings.port, "state": "ready"})
        async with stdio_client(server_params()) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            refused = await session.call_tool("get_swarm_status", {})
        assert is_error(refused) and "401" in refused.content[0].text

        if where == "env":
            monkeypatch.setenv("LOCALSWARM_API_KEY", key)
        else:
            key_file = tmp_path / "key"
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
            monkeypatch.setenv("LOCALSWARM_API_KEY_FILE", str(key_file))
        async with stdio_client(server_params()) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            assert payload(await session.call_tool("get_swarm_status", {}))["auth"] is True
            gen = payload(await session.call_tool("generate_code", {"prompt": "add", "max_tokens": 16}))
            assert "return a + b" in gen["code"]
        with gw.client() as c:  # every MCP request went through the key check
            assert c.get("/localswarm/status", headers={"Authorization": f"Bearer {key}"}).json()[
                "requests"]["rejected_auth"] == 1
