"""Programmatic entry points behind the CLI: run a swarm in the foreground, detach, stop."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any, Callable

import httpx
import uvicorn

from localswarm import access, paths, statefile
from localswarm.backends.base import Backend
from localswarm.backends.llama_server import LlamaServerBackend, find_llama_server
from localswarm.backends.mlx import MlxBackend
from localswarm.config import Settings
from localswarm.errors import ConfigError, LocalSwarmError
from localswarm.gateway.app import create_app, timing_from
from localswarm.gateway.slowclients import server_options
from localswarm.logs import QueryRedactor, rotate_if_needed
from localswarm.provision import ResolvedModel, resolve_model
from localswarm.supervisor import proc
from localswarm.supervisor.supervisor import Supervisor

logger = logging.getLogger("localswarm")


def build_backend(settings: Settings, model: ResolvedModel) -> Backend:
    if model.backend == "mlx":
        return MlxBackend(model=model.mlx_repo or str(model.path), model_id=model.model_id)
    return LlamaServerBackend(
        binary=find_llama_server(settings.llama_server, allow_download=True),
        model_path=model.path,
        model_id=model.model_id,
        ctx_size=settings.ctx_size,
        parallel=settings.parallel,
        gpu_layers=model.gpu_layers,
        extra_args=tuple(settings.extra_args),
        embeddings=settings.embeddings,
        pooling=settings.pooling,
    )


def device_args(devices: list[str]) -> list[list[str]]:
    """Per-instance llama-server flags that pin an instance to one GPU (``gpuN``)."""
    out = []
    for dev in devices:
        if dev.startswith("gpu") and dev[3:].isdigit():
            out.append(["--split-mode", "none", "--main-gpu", dev[3:]])
        else:
            out.append([])
    return out


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use (choose another with --port)") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def summary(settings: Settings, model_id: str, instances: int, pid: int) -> str:
    base = f"http://{settings.host}:{settings.port}/v1"
    return "\n".join(
        [
            f"localswarm is up (pid {pid})",
            f"  model:      {model_id}",
            f"  instances:  {instances} × llama-server, {settings.stream_mode} streaming, {settings.strategy} vote",
            f"  OpenAI API: {base}",
            f"  try:        curl {base}/chat/completions -H 'content-type: application/json' "
            "-d '{\"model\":\"swarm\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'",
        ]
    )


def resolve(settings: Settings, *, interactive: bool = False) -> ResolvedModel:
    """Plan and fetch the model named by ``settings.model`` (see :mod:`localswarm.provision`)."""
    return resolve_model(settings.model, instances=settings.instances, ctx=settings.ctx_size,
                         parallel=settings.parallel, interactive=interactive, devices=settings.device)


def run(settings: Settings, *, model: ResolvedModel | None = None,
        on_ready: Callable[[str], None] | None = None, mcp: bool = False) -> int:
    """Run the swarm in the foreground until SIGINT/SIGTERM. Returns an exit code."""
    access.check_binding(settings)  # a LAN address needs a key, or --insecure-no-auth
    access.announce_binding(settings)  # ...which is logged loudly at every start
    running = _live_swarm(statefile.read())
    if running:  # one state file per state dir: a second swarm would hide the first from `down`
        raise ConfigError(f"a swarm is already running here (pid {running}); stop it with `localswarm down`, "
                          "or give this one its own LOCALSWARM_STATE_DIR")
    _check_port(settings.host, settings.port)
    model = model or resolve(settings)
    for note in model.notes:
        logger.info("%s", note)
    backend = build_backend(settings, model)
    instances = settings.instances or model.instances
    supervisor = Supervisor(
        backend,
        instances=instances,
        log_dir=paths.state_dir() / "logs",
        timing=timing_from(settings),
        threads=settings.threads,
        instance_args=device_args(model.devices) if model.devices else None,
    )
    app = create_app(settings, supervisor, model_id=model.model_id)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.stop_grace),
        lifespan="on",
        **server_options(settings),  # slow or oversized request heads: 408/431, connection closed
    )
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.access").addFilter(QueryRedactor())  # a key put in a URL never reaches a log
    pid = os.getpid()
    state = {
        "pid": pid,
        "host": settings.host,
        "port": settings.port,
        "base_url": f"http://{settings.host}:{settings.port}/v1",
        "model": model.model_id,
        "instances": instances,
        "started_at": time.time(),
        "state": "starting",
        "auth": bool(settings.api_key or settings.api_key_file),  # clients need the key (`localswarm opencode`)
    }
    statefile.write(state)

    failed = False

    async def announce() -> None:
        nonlocal failed
        while not server.started:
            await asyncio.sleep(0.05)
        if await supervisor.wait_ready(settings.start_timeout + 5):
            statefile.write({**state, "state": "ready"})
            text = summary(settings, model.model_id, instances, pid)
            (on_ready or print)(text)
        else:
            logger.error("no instance became ready; see logs in %s", paths.state_dir() / "logs")
            failed = True  # a non-zero exit, so a service manager restarts us
            server.should_exit = True

    async def main() -> None:
        watcher = asyncio.ensure_future(announce())
        try:
            if mcp:  # `up --mcp`: MCP on stdio beside HTTP, one loop, one supervisor (issue 7)
                from localswarm.mcp_server import serve_with_mcp

                host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
                await serve_with_mcp(server, f"http://{host}:{settings.port}")
            else:
                await server.serve()
        finally:
            watcher.cancel()

    try:
        asyncio.run(main())
    finally:
        statefile.remove(pid)
    return 0 if server.started and not failed else 1


def _live_swarm(data: dict[str, Any] | None) -> int | None:
    """The pid in the state file if it is still that swarm (not a reused pid), else None."""
    if not data:
        return None
    pid = int(data.get("pid") or 0)
    if pid <= 0 or pid == os.getpid() or not proc.is_alive(pid):
        return None
    try:
        import psutil

        p = psutil.Process(pid)
        if "localswarm" not in " ".join(p.cmdline()) or p.create_time() > float(data.get("started_at", 0)) + 5:
            return None
    except Exception:  # noqa: BLE001 - gone or not ours: either way not our swarm
        return None
    return pid


def detach(argv: list[str], settings: Settings, *, timeout: float | None = None,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ``localswarm up`` (argv without --detach) in the background; wait until ready."""
    log_path = paths.state_dir() / "gateway.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rotate_if_needed(log_path, settings.log_max_bytes, settings.log_backups)
    # The child rotates the file itself while it writes (logs.RotatingOutput, `--log-file`);
    # until it has set that up (imports), its output goes to the same file, created 0600.
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "localswarm", *argv, "--log-file", str(log_path)],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + (timeout or settings.start_timeout + 30)
    url = f"http://{gateway_host(settings.host)}:{settings.port}/health"
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise LocalSwarmError(f"the swarm exited with code {child.returncode}:\n" + "\n".join(tail))
        data = statefile.read()
        if data and data.get("pid") == child.pid and data.get("state") == "ready":
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return {**data, "log": str(log_path)}
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    proc.terminate(child.pid)
    raise LocalSwarmError(f"the swarm did not become ready in time; see {log_path}")


def down(timeout: float = 30.0) -> str:
    """Stop the swarm named in the state file: SIGTERM, then SIGKILL after ``timeout``."""
    data = statefile.read()
    if not data:
        return "no swarm is running"
    pid = int(data.get("pid") or 0)
    if _live_swarm(data) is None:
        statefile.remove()
        return f"swarm (pid {pid}) was not running; removed its stale state"
    proc.terminate(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.is_alive(pid):
        time.sleep(0.1)
    if proc.is_alive(pid):
        proc.kill(pid)
        time.sleep(0.5)
    statefile.remove()
    return f"stopped swarm (pid {pid})"


def gateway_host(host: str) -> str:
    """Where a local client reaches a gateway bound to ``host`` (wildcards → loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def fetch_status(timeout: float = 5.0) -> dict[str, Any] | None:
    data = statefile.read()
    if not data:
        return None
    url = f"http://{gateway_host(data['host'])}:{data['port']}/localswarm/status"
    try:
        resp = httpx.get(url, timeout=timeout, headers=access.client_headers())
        if resp.status_code == 401:
            return {**data, "unreachable": True, "state": "refusing us (set LOCALSWARM_API_KEY)"}
        return resp.json()
    except (httpx.HTTPError, ValueError):
        return {"state": data.get("state", "unknown"), "pid": data.get("pid"), "unreachable": True, **data}
