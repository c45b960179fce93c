"""A Mode 2 worker: lends its memory to a coordinator through llama.cpp's ``rpc-server``.

``rpc-server`` has no authentication and no encryption (real-services.md §4), so a worker:

- runs it under the supervisor (:class:`~localswarm.supervisor.instance.Instance`: restart
  with backoff, clean stop, dies with us) on **127.0.0.1 only**, on a free port;
- puts a :class:`~localswarm.federation.relay.Relay` on the one LAN address it offers
  (``--host``, never a wildcard), which pipes only addresses on its allow list;
- adds an address to that list only through the signed handshake: ``POST /v1/federation/rpc``
  signed with the federation secret (:mod:`localswarm.federation.auth`), from that address.
  The signed reply is the offer (:class:`RpcOffer`): relay port, memory and backend. A
  coordinator renews it every few seconds; an address not renewed for ``ttl`` falls off;
- announces itself over mDNS (``rpc``, ``rpcmem``, ``rpcbe`` TXT fields, advert.py).

The coordinator's side is :mod:`localswarm.federation.rpcpool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localswarm.backends.base import LaunchSpec
from localswarm.federation.auth import ReplayCache, check_hops, sign_reply, verify
from localswarm.errors import BackendNotFound, ConfigError
from localswarm.federation.errors import AuthError, ProtocolError, SecretError
from localswarm.federation.protocol import PROTOCOL_VERSION
from localswarm.federation.relay import AllowList, Relay

__all__ = ["RPC_PATH", "RpcOffer", "RpcServerBackend", "RpcWorker", "offered_memory", "run_worker",
           "worker_from_settings"]

logger = logging.getLogger(__name__)

RPC_PATH = "/v1/federation/rpc"
#: How long a handshake lets an address through the relay (the coordinator renews far sooner).
ALLOW_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class RpcOffer:
    """A worker's signed answer to the handshake: where its relay is and what it lends."""

    node_id: str
    name: str
    port: int  # the relay's port, on the address the handshake reached
    memory: int  # bytes offered (its budget under the swarm's rules, capped by free RAM)
    backend: str  # cpu, cuda, metal, ...

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "node_id": self.node_id, "name": self.name, "port": self.port,
                "memory": self.memory, "backend": self.backend}

    @classmethod
    def from_dict(cls, data: Any) -> RpcOffer:
        if not isinstance(data, dict) or data.get("v") != PROTOCOL_VERSION:
            raise ProtocolError(f"RpcOffer: expected a v{PROTOCOL_VERSION} JSON object")
        port, memory = data.get("port"), data.get("memory")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ProtocolError(f"RpcOffer.port: expected a port number, got {port!r}")
        if not isinstance(memory, int) or memory < 0:
            raise ProtocolError(f"RpcOffer.memory: expected bytes >= 0, got {memory!r}")
        return cls(node_id=str(data.get("node_id", "")), name=str(data.get("name", "")), port=port,
                   memory=memory, backend=str(data.get("backend", "cpu")))


class RpcServerBackend:
    """``rpc-server`` as a supervised process: loopback only; ready when its port accepts."""

    name = "rpc-server"
    model_id = ""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def launch_spec(self, *, port: int, api_key: str, threads: int, seed: int) -> LaunchSpec:
        # -H 127.0.0.1 explicitly: the relay is the only way in from the LAN.
        return LaunchSpec(argv=[str(self.binary), "-H", "127.0.0.1", "-p", str(port), "-t", str(threads)])

    async def probe_ready(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                          timeout: float) -> bool:
        return await _accepts(base_url, timeout)

    async def probe_health(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                           timeout: float) -> bool:
        return await _accepts(base_url, timeout)


async def _accepts(base_url: str, timeout: float) -> bool:
    """True if a TCP connection to the URL's port opens (rpc-server speaks no HTTP)."""
    url = httpx.URL(base_url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


def offered_memory(profile: Any, rules: Any = None) -> tuple[int, str]:
    """What this machine lends (bytes) and with which backend: its memory budget under the
    swarm's rules (budget.py), capped by the RAM free now on a CPU-only or unified machine."""
    from localswarm.hardware.budget import budget

    b = budget(profile, rules)
    memory = b.total
    backend = next((d.backend_hint for d in b.devices if d.backend_hint), None) or "cpu"
    if all(d.device in ("cpu", "unified") for d in b.devices) and profile.ram_available:
        memory = min(memory, int(profile.ram_available))
    return memory, backend


class RpcWorker:
    """rpc-server under supervision, the relay in front of it, and the signed handshake route."""

    def __init__(self, *, binary: Path, host: str, relay_port: int, secret: bytes, threads: int, memory: int,
                 backend: str, log_dir: Path, node_id: str, name: str, timing: Any = None) -> None:
        from localswarm.supervisor.instance import Instance, InstanceTiming

        if secret is None:
            raise SecretError("a Mode 2 worker needs the federation secret (LOCALSWARM_FEDERATION_SECRET)")
        _refuse_wildcard(host)
        self.secret = secret
        self.node_id, self.name = node_id, name
        self.memory, self.backend_name = memory, backend
        self._client = httpx.AsyncClient()
        self.instance = Instance(name="rpc-server", backend=RpcServerBackend(binary), threads=threads, seed=0,
                                 log_dir=log_dir, client=self._client, timing=timing or InstanceTiming())
        self.allow = AllowList(ttl_s=ALLOW_TTL_S)
        self.relay = Relay(host, relay_port, self.allow, self._target)
        self._replays = ReplayCache()

    def _target(self) -> tuple[str, int] | None:
        return ("127.0.0.1", self.instance.port) if self.instance.ready else None

    async def start(self) -> None:
        await self.relay.start()
        self.instance.start()

    async def aclose(self) -> None:
        try:
            await self.relay.aclose()
        finally:
            await self.instance.stop()
            await self._client.aclose()

    def offer(self) -> RpcOffer:
        return RpcOffer(node_id=self.node_id, name=self.name, port=self.relay.port, memory=self.memory,
                        backend=self.backend_name)

    def status(self) -> dict[str, Any]:
        return {**self.offer().to_dict(), "rpc_server": self.instance.info(), "allowed": self.allow.addresses(),
                "relayed": self.relay.relayed, "refused": self.relay.refused}

    def routes(self) -> list[Route]:
        """``POST /v1/federation/rpc``: the signed handshake that opens the relay to the caller."""
        return [Route(RPC_PATH, self._handshake, methods=["POST"], name="federation_rpc")]

    async def _handshake(self, request: Request) -> Response:
        from localswarm.gateway.validation import read_capped

        body = await read_capped(request, 64 * 1024)
        address = request.client.host if request.client else ""
        if body is None:
            return JSONResponse({"error": {"type": "too_large", "message": "body over 64 KiB"}}, status_code=413)
        try:
            check_hops(request.headers)
            verify(request.method, request.url.path, request.headers, body, self.secret, self._replays)
        except AuthError as exc:
            logger.warning("rpc handshake refused from %s: %s", address or "?", exc.reason)
            return JSONResponse({"error": {"type": "federation_auth", "message": exc.reason}}, status_code=401)
        if not self.instance.ready:
            reply: Response = JSONResponse({"error": {"type": "not_ready", "message": "rpc-server is not running "
                                                      f"({self.instance.state.value})"}}, status_code=503)
        else:
            self.allow.allow(address)
            logger.info("rpc handshake from %s: relay open to it for %.0f s", address, ALLOW_TTL_S)
            reply = JSONResponse(self.offer().to_dict())
        nonce = request.headers.get("x-localswarm-nonce", "")
        reply.headers.update(sign_reply(reply.status_code, nonce, bytes(reply.body), self.secret))
        return reply


def _refuse_wildcard(host: str) -> None:
    """rpc-server's relay binds ONE address: a wildcard would open it on every interface."""
    from localswarm.hosts import is_wildcard

    if is_wildcard(host):
        raise ConfigError(f"a Mode 2 worker binds one address, not {host!r}: pass --host with this machine's "
                          "LAN address (its relay accepts only peers that passed the signed handshake)")


def worker_from_settings(settings: Any, *, secret: bytes | None, node_id: str, name: str,
                         in_use: int = 0) -> RpcWorker:
    """The worker ``settings`` describe: this build's rpc-server, ``settings.host``, the memory
    this machine lends (its budget, capped by free RAM, less ``in_use`` bytes its own swarm
    takes when it also serves one: ``up --federate --offer-memory``)."""
    from localswarm import paths
    from localswarm.backends import binary as binaries
    from localswarm.backends.llama_server import find_llama_server
    from localswarm.gateway.app import timing_from
    from localswarm.hardware import detect
    from localswarm.provision import PlanPolicy
    from localswarm.supervisor.supervisor import available_cores

    if secret is None:
        raise SecretError("a Mode 2 worker needs the federation secret: set LOCALSWARM_FEDERATION_SECRET (or a 0600 "
                          "file named by federation_secret_file), the same on the coordinator")
    _refuse_wildcard(settings.host)
    server_binary = find_llama_server(settings.llama_server, allow_download=True)
    rpc_binary = binaries.rpc_server_for(server_binary)
    if rpc_binary is None:
        raise BackendNotFound(f"no rpc-server beside {server_binary}: this llama.cpp was built without -DGGML_RPC=ON "
                              "(`make install` builds it with RPC; or use a llama.cpp release archive)")
    memory, backend = offered_memory(detect(), PlanPolicy.from_settings(settings).rules())
    return RpcWorker(binary=rpc_binary, host=settings.host, relay_port=settings.rpc_port, secret=secret,
                     threads=settings.threads or available_cores(), memory=max(0, memory - in_use), backend=backend,
                     log_dir=paths.state_dir() / "logs", node_id=node_id, name=name, timing=timing_from(settings))


def run_worker(settings: Any) -> int:
    """``localswarm worker --rpc``: the worker in the foreground until SIGINT/SIGTERM."""
    import uvicorn
    from starlette.applications import Starlette

    from localswarm.federation.advert import default_hostname, instance_name, load_node_id
    from localswarm.federation.auth import load_secret
    from localswarm.federation.discovery import Discovery

    node_id, hostname = load_node_id(), default_hostname()
    worker = worker_from_settings(settings, secret=load_secret(settings.federation_secret_file), node_id=node_id,
                                  name=instance_name(hostname, settings.port))
    memory, backend = worker.memory, worker.backend_name
    rpc_binary = worker.instance.backend.binary  # type: ignore[attr-defined]
    loopback = settings.host in ("127.0.0.1", "localhost", "::1")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await worker.start()
        # Announced once the relay has its port (rpc_port 0: any free one).
        discovery = Discovery(port=settings.port, instances=0, auth=True, node_id=node_id, hostname=hostname,
                              interfaces=None if loopback else [settings.host],
                              addresses=["127.0.0.1"] if loopback else None, mdns=settings.mdns,
                              udp=settings.udp_discovery, udp_port=settings.udp_port,
                              udp_interval_s=settings.advertise_interval, rpc_port=worker.relay.port,
                              rpc_memory=memory, rpc_backend=backend)
        await discovery.start()
        ready = await worker.instance.wait_ready(settings.start_timeout)
        print(json.dumps({"event": "ready" if ready else "not_ready", "node_id": node_id,
                          "relay": f"{settings.host}:{worker.relay.port}", "memory": memory, "backend": backend,
                          "rpc_server": str(rpc_binary)}), flush=True)
        try:
            yield
        finally:
            await discovery.aclose()
            await worker.aclose()

    app = Starlette(routes=worker.routes(), lifespan=lifespan)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            lifespan="on", timeout_graceful_shutdown=int(settings.stop_grace))
    server = uvicorn.Server(config)
    asyncio.run(server.serve())
    return 0 if server.started else 1
