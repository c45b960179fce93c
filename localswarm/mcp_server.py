"""An MCP server over stdio (official ``mcp`` SDK) that puts a running swarm in an assistant's hands.

Five tools: ``get_hardware_info``, ``get_swarm_status``, ``generate_code``,
``list_available_models`` and ``get_worker_details``. The swarm tools talk HTTP to a
gateway: the one named by ``--url``, or else the running swarm found in the state file
(looked up on every call, so the MCP server may start before the swarm does). A keyed
gateway gets the key every client of ours sends (:func:`localswarm.access.client_headers`:
``$LOCALSWARM_API_KEY`` or the 0600 ``api_key_file``), also resolved on every call.

Entry points: :func:`run_mcp_stdio` (``localswarm mcp``; ``python -m localswarm.mcp_server``)
and :func:`serve_with_mcp`/:func:`serve_mcp_stdio`, which run inside the event loop of
``localswarm up --mcp`` beside uvicorn, on the same supervisor.

stdout carries the protocol: while MCP is served, every log handler writes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from localswarm import __version__, access, statefile
from localswarm.errors import LocalSwarmError

try:  # mcp >= 2
    from mcp.server.mcpserver import MCPServer as _MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # pragma: no cover - mcp 1.x
    from mcp.server.fastmcp import FastMCP as _MCPServer  # type: ignore[no-redef]
    from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]

__all__ = ["GatewayClient", "build_server", "main", "run_mcp_stdio", "serve_mcp_stdio", "serve_with_mcp"]

logger = logging.getLogger(__name__)

SERVER_NAME = "localswarm"
DEFAULT_MAX_TOKENS = 1024
GENERATE_TIMEOUT = 900.0  # a vote waits for the slowest instance (up to instance_timeout)
INSTRUCTIONS = (
    "localswarm runs several small coding LLMs on this machine and votes on their answers. "
    "Use generate_code for code; its result carries the consensus confidence (0-1) and how "
    "many workers agreed. get_swarm_status and get_worker_details show the workers' health."
)


class SwarmNotFound(LocalSwarmError):
    """No gateway URL was given and no running swarm was found in the state file."""


def _normalise(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/v1")


class GatewayClient:
    """How the tools reach a gateway: an explicit URL, or the swarm in the state file."""

    def __init__(self, gateway_url: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._explicit = _normalise(gateway_url) if gateway_url else None
        self._transport = transport

    def url(self) -> str:
        if self._explicit:
            return self._explicit
        url = statefile.gateway_url(statefile.read())
        if url is None:
            raise SwarmNotFound(
                "no localswarm swarm is running: start one with `localswarm up --detach`, "
                "or give the MCP server the gateway with --url http://HOST:PORT"
            )
        return url

    async def request(self, method: str, path: str, *, timeout: float = 10.0, **kwargs: Any) -> Any:
        """One JSON request; errors become RuntimeErrors with the gateway's own message."""
        base = self.url()
        headers = {**access.client_headers(), **(kwargs.pop("headers", None) or {})}
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=httpx.Timeout(timeout, connect=5.0)) as c:
                resp = await c.request(method, base + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"cannot reach the localswarm gateway at {base}: {exc!r}") from None
        if resp.status_code >= 400:
            message = resp.text[:500]
            with contextlib.suppress(Exception):
                message = resp.json()["error"]["message"]
            raise RuntimeError(f"the gateway answered {resp.status_code}: {message}")
        return resp.json()


# -- tool bodies (plain functions, testable without MCP) -----------------------------------


def hardware_info() -> dict[str, Any]:
    """This machine: OS, CPU, RAM, GPUs, and the memory the swarm may use."""
    from localswarm.hardware import budget, detect

    profile = detect()
    out = profile.to_dict()
    with contextlib.suppress(Exception):
        out["budget"] = budget(profile).to_dict()
    return out


def available_models() -> dict[str, Any]:
    """The model registry judged against this machine's memory budget."""
    from localswarm.hardware import detect
    from localswarm.models.planner import list_variants

    profile = detect()
    models = []
    for v in list_variants(profile):
        models.append({
            "model_id": v.model_id,
            "fits": v.fits,
            "reason": v.reason,
            "max_instances": v.max_instances,
            "recommended": v.recommended,
            "embedded": v.embedded,
            "downloaded": v.local,
            "file": v.file,
            "file_size": v.file_size,
            "memory_per_instance": v.memory.total,
        })
    return {
        "machine": {"kind": profile.kind.value, "os": profile.os, "ram_total": profile.ram_total,
                    "gpus": [g.name for g in profile.gpus]},
        "fits": sum(1 for m in models if m["fits"]),
        "models": models,
    }


def code_from(answer: str) -> tuple[str, str | None]:
    """The code in an answer (fenced blocks joined; the whole answer if it is bare code)."""
    from localswarm.consensus.extract import extract

    ex = extract(answer)
    if ex.python.strip():
        return ex.python, "python"
    if ex.other_code.strip():
        return ex.other_code, ex.other_lang or None
    return answer.strip(), None


def _messages(prompt: str, language: str | None) -> list[dict[str, str]]:
    system = "You are an expert programmer. Answer with working code in a fenced code block"
    system += f" written in {language}." if language else "."
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


async def generate(client: GatewayClient, prompt: str, language: str | None = None,
                   max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float | None = None,
                   strategy: str | None = None) -> dict[str, Any]:
    """Ask the swarm (one non-streamed, voted completion) and return the answer with its consensus."""
    if not prompt.strip():
        raise ValueError("prompt is empty")
    body: dict[str, Any] = {"model": "swarm", "messages": _messages(prompt, language), "max_tokens": max_tokens}
    if temperature is not None:
        body["temperature"] = temperature
    headers = {"x-localswarm-strategy": strategy} if strategy else {}
    started = time.monotonic()
    data = await client.request("POST", "/v1/chat/completions", json=body, headers=headers, timeout=GENERATE_TIMEOUT)
    elapsed = time.monotonic() - started
    choice = (data.get("choices") or [{}])[0]
    answer = (choice.get("message") or {}).get("content") or ""
    code, lang = code_from(answer)
    meta = data.get("localswarm") or {}
    return {
        "code": code,
        "language": language or lang,
        "answer": answer,
        "finish_reason": choice.get("finish_reason"),
        "model": data.get("model"),
        "consensus": {
            "strategy": meta.get("strategy"),
            "confidence": meta.get("confidence"),
            "latency_s": meta.get("latency_s", round(elapsed, 3)),
            "votes": meta.get("votes"),
            "n": meta.get("n"),
            "answered": meta.get("answered"),
            "winner": meta.get("winner"),
            "early_stop": meta.get("early_stop"),
            "degenerate": meta.get("degenerate"),
        },
        "usage": data.get("usage") or {},
    }


def worker_details(status: dict[str, Any], worker: str | None = None) -> dict[str, Any]:
    """Per-instance details from a gateway status; one worker when named."""
    workers = list(status.get("instances") or [])
    if worker is not None:
        chosen = [w for w in workers if w.get("name") == worker]
        if not chosen:
            known = ", ".join(str(w.get("name")) for w in workers) or "none"
            raise ValueError(f"no worker named {worker!r} (workers: {known})")
        workers = chosen
    return {"model": status.get("model"), "count": len(workers), "workers": workers}


# -- the MCP server -------------------------------------------------------------------------


@contextlib.contextmanager
def _as_tool_error() -> Iterator[None]:
    # The SDK hides the text of unexpected exceptions from the client; ours are meant
    # for the user (what is wrong, what to do), so they travel as ToolError.
    try:
        yield
    except (RuntimeError, ValueError, LocalSwarmError) as exc:
        raise ToolError(str(exc)) from exc


def build_server(gateway_url: str | None = None, *, client: GatewayClient | None = None) -> Any:
    """The MCP server with the five tools (not yet running)."""
    gateway = client or GatewayClient(gateway_url)
    server = _MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)

    @server.tool()
    async def get_hardware_info() -> dict[str, Any]:
        """Detect this machine's hardware: OS, CPU, RAM, GPUs and the memory budget for models."""
        with _as_tool_error():
            return await asyncio.to_thread(hardware_info)

    @server.tool()
    async def get_swarm_status() -> dict[str, Any]:
        """Status of the running swarm: model, ready workers, per-worker state and vote counters."""
        with _as_tool_error():
            status: dict[str, Any] = await gateway.request("GET", "/localswarm/status")
        return status

    @server.tool()
    async def generate_code(prompt: str, language: str | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                            temperature: float | None = None, strategy: str | None = None) -> dict[str, Any]:
        """Generate code with the swarm: every worker answers, the answers are voted on.

        Returns the code, the full answer, and the consensus: strategy, confidence (0-1),
        latency, votes for the winner out of n workers, and the winning worker.
        ``strategy`` is similarity (default), quality or fastest.
        """
        with _as_tool_error():
            return await generate(gateway, prompt, language, max_tokens, temperature, strategy)

    @server.tool()
    async def list_available_models() -> dict[str, Any]:
        """Models localswarm knows, each marked fits / does not fit this machine, with the reason."""
        with _as_tool_error():
            return await asyncio.to_thread(available_models)

    @server.tool()
    async def get_worker_details(worker: str | None = None) -> dict[str, Any]:
        """Details of each worker (or of one, e.g. "inst-0"): state, port, pid, requests,
        latency, tokens/s, memory, restarts, last error and log file."""
        with _as_tool_error():
            return worker_details(await gateway.request("GET", "/localswarm/status"), worker)

    return server


def _logs_to_stderr() -> None:
    """stdout is the protocol: move every stdout log handler to stderr, add one if none."""
    from localswarm.logs import redirect_stdout_handlers

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    redirect_stdout_handlers()


async def serve_mcp_stdio(gateway_url: str | None = None) -> None:
    """Serve MCP on stdin/stdout in the running event loop; returns when stdin closes."""
    _logs_to_stderr()
    server = build_server(gateway_url)
    await server.run_stdio_async()


async def serve_with_mcp(server: Any, gateway_url: str, *, grace: float = 2.0) -> None:
    """Run a ``uvicorn.Server`` and the MCP stdio server together (``up --mcp``).

    When the MCP client goes away (stdin closes) the HTTP server is told to exit; when the
    HTTP server exits (signal), MCP is cancelled. A read blocked on stdin cannot be
    interrupted, so it is abandoned after ``grace`` seconds rather than holding up shutdown.
    """
    mcp_task = asyncio.ensure_future(serve_mcp_stdio(gateway_url))

    def mcp_done(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the MCP server failed: %r", task.exception())
        server.should_exit = True

    mcp_task.add_done_callback(mcp_done)
    try:
        await server.serve()
    finally:
        if not mcp_task.done():
            mcp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(mcp_task), grace)


def run_mcp_stdio(gateway_url: str | None = None) -> int:
    """Serve MCP over stdio until the client disconnects (``localswarm mcp``). Returns an exit code."""
    _logs_to_stderr()
    try:
        asyncio.run(serve_mcp_stdio(gateway_url))
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localswarm.mcp_server", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="gateway URL (default: the running swarm from the state file)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"localswarm {__version__}")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return run_mcp_stdio(args.url)


if __name__ == "__main__":
    sys.exit(main())
