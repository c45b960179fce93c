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
from typing import TYPE_CHECKING, Any, Callable

import httpx

from localswarm import access, paths, statefile
from localswarm.config import Settings
from localswarm.errors import ConfigError, LocalSwarmError
from localswarm.hosts import client_host
from localswarm.logs import QueryRedactor, rotate_if_needed
from localswarm.supervisor import proc

# What only `up` needs (the gateway, uvicorn, numpy, zeroconf...) is imported where it is
# used, so `localswarm down` and `status` start fast (issue 11).
if TYPE_CHECKING:
    from localswarm.backends.base import Backend
    from localswarm.provision import ResolvedModel

logger = logging.getLogger("localswarm")


def _timing(settings: Settings, model: ResolvedModel) -> Any:
    """The supervisor's timing; an MLX instance may take a whole weights load to get ready."""
    import dataclasses

    from localswarm.backends.mlx import LOAD_TIMEOUT
    from localswarm.gateway.app import timing_from

    timing = timing_from(settings)
    if model.backend == "mlx":
        timing = dataclasses.replace(timing, start_timeout=max(timing.start_timeout, LOAD_TIMEOUT))
    return timing


def preflight(settings: Settings) -> None:
    """Refuse early (before any download) what would stop the swarm from starting."""
    running = _live_swarm(statefile.read())
    if running:  # one state file per state dir: a second swarm would hide the first from `down`
        raise ConfigError(f"a swarm is already running here (pid {running}); stop it with `localswarm down`, "
                          "or give this one its own LOCALSWARM_STATE_DIR")
    _check_port(settings.host, settings.port)


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


def resolve(settings: Settings, *, interactive: bool = False,
            say: Callable[[str], None] | None = None) -> ResolvedModel:
    """Plan and fetch the model named by ``settings.model`` (see :mod:`localswarm.provision`).

    A detached child gets its parent's result (:data:`RESOLVED_ENV`) instead: the parent
    downloaded in the foreground, with progress, and the child only serves.
    """
    from localswarm.provision import RESOLVED_ENV, PlanPolicy, ResolvedModel, resolve_model

    handed = os.environ.pop(RESOLVED_ENV, None)
    if handed:
        return ResolvedModel.from_json(handed)
    from localswarm.models.local import mark_used

    resolved = resolve_model(settings.model, instances=settings.instances, ctx=settings.ctx_size,
                             parallel=settings.parallel, interactive=interactive, devices=settings.device,
                             backend=settings.backend, say=say, policy=PlanPolicy.from_settings(settings))
    mark_used(resolved.path)
    return resolved


def run(settings: Settings, *, model: ResolvedModel | None = None,
        on_ready: Callable[[str], None] | None = None, mcp: bool = False) -> int:
    """Run the swarm in the foreground until SIGINT/SIGTERM. Returns an exit code."""
    import uvicorn

    from localswarm.gateway.app import create_app
    from localswarm.gateway.slowclients import server_options
    from localswarm.launch import build_backend, device_args, fit_context, planned_settings
    from localswarm.supervisor.memguard import GuardPolicy
    from localswarm.supervisor.supervisor import Supervisor

    access.check_binding(settings)  # a LAN address needs a key, or --insecure-no-auth
    access.announce_binding(settings)  # ...which is logged loudly at every start
    preflight(settings)
    keeper = None
    if settings.mode == "distributed":  # Mode 2: one llama-server over the rpc workers' memory
        from localswarm.federation.rpcpool import start_pool

        keeper, model = start_pool(settings, model, say=lambda note: logger.info("%s", note))
    if model is None:  # the plan is logged as it is made, before any download
        model = resolve(settings, say=lambda note: logger.info("%s", note))
    settings = planned_settings(settings, model)  # the plan's context and slots, everywhere
    settings = fit_context(settings, model, say=lambda note: logger.warning("%s", note))
    backend = build_backend(settings, model)
    instances = 1 if keeper else settings.instances or model.instances
    instance_args = [keeper.args()] if keeper else device_args(model.devices) if model.devices else None
    supervisor = Supervisor(
        backend,
        instances=instances,
        log_dir=paths.state_dir() / "logs",
        timing=_timing(settings, model),
        threads=settings.threads,
        instance_args=instance_args,
        devices=model.devices or None,
        # The memory guard (issue 13): the planner's per-instance figure when there is a plan.
        memory_guard=GuardPolicy.from_settings(settings) if settings.memory_guard else None,
        memory_need=getattr(model.plan, "per_instance_memory", None) if model.plan is not None else None,
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
        "model_path": str(model.path),  # `localswarm rm` will not delete it while it runs
        "instances": instances,
        "ctx_size": settings.ctx_size,  # per slot: what one request may use (`localswarm opencode`)
        "started_at": time.time(),
        "state": "starting",
        "auth": bool(settings.api_key or settings.api_key_file),  # clients need the key (`localswarm opencode`)
    }
    if keeper is not None:
        state["pool"] = keeper.status()["workers"]
    speed = getattr(model.plan, "speed", None)
    if speed is not None:  # the planner's expectation, shown by `status` beside what is measured
        state["estimate"] = speed.to_dict()
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
        # Mode 2: renew the workers' handshakes; restart llama-server without one that disappears.
        keeping = asyncio.ensure_future(keeper.run(supervisor.instances[0])) if keeper else None
        try:
            if mcp:  # `up --mcp`: MCP on stdio beside HTTP, one loop, one supervisor (issue 7)
                from localswarm.mcp_server import serve_with_mcp

                await serve_with_mcp(server, f"http://{client_host(settings.host)}:{settings.port}")
            else:
                await server.serve()
        finally:
            watcher.cancel()
            if keeping is not None:
                keeping.cancel()

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
           env: dict[str, str] | None = None, model: ResolvedModel | None = None) -> dict[str, Any]:
    """Start ``localswarm up`` (argv without --detach) in the background; wait until ready.

    ``model``, resolved (and downloaded) by the caller in the foreground, is handed to the
    child, so the wait below only covers starting the instances (``start_timeout``).
    """
    if model is not None:
        from localswarm.provision import RESOLVED_ENV

        env = {**(env or {}), RESOLVED_ENV: model.to_json()}
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
    start = _timing(settings, model).start_timeout if model is not None else settings.start_timeout
    deadline = time.monotonic() + (timeout or start + 30)
    url = f"http://{client_host(settings.host)}:{settings.port}/health"
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
    return client_host(host)


def fetch_status(timeout: float = 5.0) -> dict[str, Any] | None:
    data = statefile.read()
    if not data:
        return None
    url = f"{statefile.gateway_url(data)}/localswarm/status"
    try:
        resp = httpx.get(url, timeout=timeout, headers=access.client_headers())
        if resp.status_code == 401:
            return {**data, "unreachable": True, "state": "refusing us (set LOCALSWARM_API_KEY)"}
        live = resp.json()
        if isinstance(live, dict) and data.get("estimate"):
            live.setdefault("estimate", data["estimate"])
        return live
    except (httpx.HTTPError, ValueError):
        return {"state": data.get("state", "unknown"), "pid": data.get("pid"), "unreachable": True, **data}
