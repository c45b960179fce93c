"""A Mode 2 coordinator (``up --pool``): one model over its own memory and its workers'.

1. :func:`find_workers`: the workers it may use are the static ``--peer`` addresses and those
   mDNS shows with an ``rpc`` field (``pool_wait`` seconds of listening); each must pass the
   signed handshake (:mod:`localswarm.federation.rpc`), whose signed reply is the offer that
   counts (memory, backend, relay port), not the mDNS text.
2. :func:`pooled_plan`: the planner picks the best model for ONE llama-server with the pooled
   memory: this machine's budget plus every offer (:func:`pooled_profile`).
3. :func:`rpc_args`: ``--rpc host:port,...`` and the split: ``-ts`` in proportion to the offers
   (llama.cpp lists RPC devices first), and on a CPU-only coordinator ``-ngl`` so that its own
   share of the layers stays in its RAM.
4. :class:`PoolKeeper`: renews each handshake every ``peer_probe_interval``; a worker that
   fails twice is dropped and llama-server is restarted without it (a missing worker would
   fail every later load); one that answers again is taken back (another restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from localswarm.federation.auth import FederationAuth
from localswarm.federation.errors import ProtocolError, SecretError
from localswarm.federation.protocol import PROTOCOL_VERSION
from localswarm.federation.rpc import RPC_PATH, RpcOffer

__all__ = ["PoolKeeper", "PooledWorker", "find_workers", "handshake", "pooled_plan", "pooled_profile", "rpc_args"]

logger = logging.getLogger(__name__)

DROP_AFTER = 2  # consecutive failed handshakes before a worker is dropped


@dataclass
class PooledWorker:
    """A worker that passed the handshake: where its relay is, and what it offers."""

    host: str
    port: int  # its handshake (HTTP) port
    offer: RpcOffer
    failures: int = 0

    @property
    def endpoint(self) -> str:
        """``host:port`` of its relay, as ``--rpc`` wants it."""
        return f"[{self.host}]:{self.offer.port}" if ":" in self.host else f"{self.host}:{self.offer.port}"

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "handshake": f"{self.host}:{self.port}", "node_id": self.offer.node_id,
                "name": self.offer.name, "memory": self.offer.memory, "backend": self.offer.backend}


def client(secret: bytes, node_id: str, *, timeout_s: float = 3.0) -> httpx.AsyncClient:
    """Signs every handshake and checks every reply (FederationAuth); never through a proxy."""
    return httpx.AsyncClient(auth=FederationAuth(secret, node_id=node_id), trust_env=False,
                             timeout=httpx.Timeout(timeout_s, connect=min(2.0, timeout_s)))


async def handshake(http: httpx.AsyncClient, host: str, port: int) -> RpcOffer:
    """The signed handshake: opens the worker's relay to this machine's address; returns its offer."""
    url_host = f"[{host}]" if ":" in host else host
    resp = await http.post(f"http://{url_host}:{port}{RPC_PATH}", json={"v": PROTOCOL_VERSION})
    if resp.status_code != 200:
        raise ProtocolError(f"worker {host}:{port} answered HTTP {resp.status_code}: {resp.text[:200]}")
    return RpcOffer.from_dict(resp.json())


async def find_workers(settings: Any, secret: bytes, node_id: str, *,
                       discovered: Sequence[tuple[str, int]] = ()) -> list[PooledWorker]:
    """The workers that passed the handshake: static peers, plus mDNS ones (``pool_wait`` s)."""
    from localswarm.federation.discovery import parse_static_peer

    candidates = [parse_static_peer(p) for p in settings.peers] + list(discovered)
    if settings.mdns and settings.pool_wait > 0:
        candidates += await _browse(settings, node_id)
    candidates = list(dict.fromkeys(candidates))
    async with client(secret, node_id) as http:
        results = await asyncio.gather(*(handshake(http, h, p) for h, p in candidates), return_exceptions=True)
    workers = []
    for (host, port), result in zip(candidates, results):
        if isinstance(result, BaseException):
            logger.warning("rpc worker %s:%d left out: %s", host, port, result)
        else:
            workers.append(PooledWorker(host=host, port=port, offer=result))
            logger.info("rpc worker %s:%d (%s) offers %.2f GiB (%s)", host, port, result.name or result.node_id[:8],
                        result.memory / 2**30, result.backend)
    return workers


async def _browse(settings: Any, node_id: str) -> list[tuple[str, int]]:
    """Listen ``pool_wait`` seconds for mDNS adverts that carry an rpc field."""
    from localswarm.federation.discovery import Discovery

    disco = Discovery(port=settings.port, instances=0, node_id=node_id, mdns=True, udp=settings.udp_discovery,
                      udp_port=settings.udp_port, udp_interval_s=settings.advertise_interval)
    await disco.start()
    try:
        await asyncio.sleep(settings.pool_wait)
        return [(p.host, p.port) for p in disco.table.snapshot() if p.rpc_port > 0]
    finally:
        await disco.aclose()


def pooled_profile(own: Any, workers: Sequence[PooledWorker], rules: Any = None) -> tuple[Any, Any]:
    """A machine with this one's budget plus every offer, for the planner; and the rules that
    make its whole RAM the budget (the offers are budgets already, under each worker's rules)."""
    from localswarm.hardware.budget import BudgetRules, budget
    from localswarm.hardware.types import HardwareProfile

    mine = budget(own, rules).total
    total = mine + sum(w.offer.memory for w in workers)
    profile = HardwareProfile(os=own.os, os_release=own.os_release, cpu=own.cpu, ram_total=total,
                              ram_available=None, hostname=f"{own.hostname or 'this machine'} + {len(workers)} workers")
    return profile, BudgetRules(cpu_fraction=1.0)


def pooled_plan(own: Any, workers: Sequence[PooledWorker], *, ctx: int, parallel: int, rules: Any = None,
                model: str | None = None, locate: Any = None, registry: Any = None) -> Any:
    """The planner's choice for one llama-server over the pooled memory (memory decides: a
    split model's speed is the network's, which the planner does not model)."""
    from localswarm.models.planner import plan

    profile, pooled_rules = pooled_profile(own, workers, rules)
    return plan(profile, registry, model=model, instances=1, ctx=ctx, parallel=parallel, rules=pooled_rules,
                locate=locate, latency_target=None)


def rpc_args(workers: Sequence[PooledWorker], *, own_memory: int, n_layers: int, own_gpus: int = 0) -> list[str]:
    """llama-server flags that spread the model over ``workers`` (and this machine).

    llama.cpp puts RPC devices first, then local GPUs, and splits offloaded layers in the
    ``-ts`` proportions. A coordinator with GPUs offloads everything (``-ngl 999``) and gets
    its share through ``-ts``; a CPU-only one keeps its share of the layers in RAM by
    offloading only the workers' share (``-ngl``).
    """
    if not workers:
        return []
    offers = [max(1, w.offer.memory) for w in workers]
    args = ["--rpc", ",".join(w.endpoint for w in workers)]
    if own_gpus:
        per_gpu = max(1, own_memory // own_gpus)
        shares = offers + [per_gpu] * own_gpus
        return [*args, "-ngl", "999", "-ts", ",".join(str(round(s / 2**20)) for s in shares)]
    total = sum(offers) + max(0, own_memory)
    offloaded = max(1, min(n_layers, round(n_layers * sum(offers) / total))) if n_layers else 999
    return [*args, "-ngl", str(offloaded), "-ts", ",".join(str(max(1, round(s / 2**20))) for s in offers)]


class PoolKeeper:
    """Keeps the handshakes alive and restarts llama-server without a worker that disappears."""

    def __init__(self, workers: Sequence[PooledWorker], *, secret: bytes, node_id: str, interval_s: float,
                 own_memory: int, n_layers: int, own_gpus: int = 0) -> None:
        if secret is None:
            raise SecretError("Mode 2 needs the federation secret")
        self.workers = list(workers)
        self.dropped: list[PooledWorker] = []
        self.restarts = 0
        self._secret, self._node_id = secret, node_id
        self.interval_s = interval_s
        self._split = {"own_memory": own_memory, "n_layers": n_layers, "own_gpus": own_gpus}

    def args(self) -> list[str]:
        return rpc_args(self.workers, **self._split)

    def status(self) -> dict[str, Any]:
        return {"workers": [w.to_dict() for w in self.workers], "dropped": [w.to_dict() for w in self.dropped],
                "restarts": self.restarts, "args": self.args()}

    async def check(self, http: httpx.AsyncClient) -> list[str]:
        """Renew every handshake once (and try the dropped workers again); return why
        llama-server must restart (empty: it need not)."""
        active, dropped = list(self.workers), list(self.dropped)
        results = await asyncio.gather(*(handshake(http, w.host, w.port) for w in active + dropped),
                                       return_exceptions=True)
        changes = []
        for worker, result in zip(active, results[:len(active)]):
            if isinstance(result, BaseException):
                worker.failures += 1
                logger.warning("rpc worker %s: handshake failed (%d/%d): %s", worker.endpoint, worker.failures,
                               DROP_AFTER, result)
                if worker.failures >= DROP_AFTER:
                    self.workers.remove(worker)
                    self.dropped.append(worker)
                    changes.append(f"{worker.endpoint} gone")
                continue
            worker.failures = 0
            if result.port != worker.offer.port:  # its relay moved (the worker restarted)
                changes.append(f"{worker.endpoint} moved to port {result.port}")
            worker.offer = result
        for worker, result in zip(dropped, results[len(active):]):
            if not isinstance(result, BaseException):  # it is back: pool its memory again
                worker.failures, worker.offer = 0, result
                self.dropped.remove(worker)
                self.workers.append(worker)
                changes.append(f"{worker.endpoint} back")
        return changes

    async def run(self, instance: Any) -> None:
        """Forever: renew, and on a change restart ``instance`` (the coordinator's llama-server)."""
        async with client(self._secret, self._node_id) as http:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    changes = await self.check(http)
                except Exception:  # never let one bad round stop the keeper
                    logger.exception("rpc pool check failed")
                    continue
                if changes:
                    await self.restart(instance, reason="; ".join(changes))

    async def restart(self, instance: Any, *, reason: str) -> None:
        new = tuple(self.args())
        logger.warning("rpc pool changed (%s): restarting llama-server with %s", reason,
                       " ".join(new) or "no workers (this machine alone)")
        if not self.workers:
            logger.warning("no rpc worker left: the model runs on this machine alone and may not fit")
        instance.extra_args = new
        await instance.stop()
        instance.start()
        self.restarts += 1


def start_pool(settings: Any, model: Any = None, *, say: Any = None) -> tuple[PoolKeeper, Any]:
    """``up --pool`` before serving: find and handshake the workers, plan the model over the
    pooled memory (unless ``settings.model`` names a file or ``embedded``), and the keeper
    that holds the split. Returns ``(keeper, ResolvedModel)`` for one llama-server."""
    from localswarm.federation.advert import load_node_id
    from localswarm.federation.auth import load_secret
    from localswarm.hardware import detect
    from localswarm.hardware.budget import budget
    from localswarm.models.gguf_meta import read_gguf_meta
    from localswarm.provision import PlanPolicy, ResolvedModel, fetch_plan, locate_cached, resolve_model

    say = say or (lambda note: logger.info("%s", note))
    secret = load_secret(settings.federation_secret_file)
    if secret is None:
        raise SecretError("Mode 2 (--pool) needs the federation secret: set LOCALSWARM_FEDERATION_SECRET (or a "
                          "0600 file named by federation_secret_file), the same on every worker")
    node_id = load_node_id()
    workers = asyncio.run(find_workers(settings, secret, node_id))
    if not workers:
        say("Mode 2: no rpc worker passed the handshake; the model runs on this machine alone")
    policy = PlanPolicy.from_settings(settings)
    rules = policy.rules()
    own = detect()
    own_budget = budget(own, rules)
    own_gpus = sum(1 for d in own_budget.devices if d.gpu_index is not None)
    if model is None:
        spec = settings.model
        if spec in (None, "auto") or (":" in spec and not spec.endswith(".gguf") and "/" not in spec):
            p = pooled_plan(own, workers, ctx=settings.ctx_size, parallel=settings.parallel, rules=rules,
                            model=None if spec in (None, "auto") else spec, locate=locate_cached)
            path = fetch_plan(p)
            model = ResolvedModel(path=path, model_id=p.model_id, embedded=p.embedded, instances=1,
                                  gpu_layers="999" if own_gpus else "0", notes=list(p.reasons), plan=p)
            pooled = own_budget.total + sum(w.offer.memory for w in workers)
            say(f"Mode 2: planned {p.model_id} over {pooled / 2**30:.1f} GiB pooled "
                f"(this machine {own_budget.total / 2**30:.1f} GiB + {len(workers)} workers)")
        else:
            model = resolve_model(spec, instances=1, ctx=settings.ctx_size, parallel=settings.parallel,
                                  devices=settings.device, say=say, policy=policy)
    model.instances = 1
    if workers:
        model.gpu_layers = None  # the split's -ngl (rpc_args) decides what leaves this machine
    n_layers = read_gguf_meta(model.path).block_count + 1  # llama.cpp counts the output layer too
    keeper = PoolKeeper(workers, secret=secret, node_id=node_id, interval_s=settings.peer_probe_interval,
                        own_memory=own_budget.total, n_layers=n_layers, own_gpus=own_gpus)
    say(f"Mode 2: llama-server {' '.join(keeper.args()) or '(no workers)'}")
    return keeper, model


SEED_LAN_BEGIN = "<!-- seed-lan:begin -->"
SEED_LAN_END = "<!-- seed-lan:end -->"


def seed_lan_table() -> str:
    """The seed plan's example LAN (RTX 4060 Ti PC, M1 Mac mini, M4 MacBook) in both modes,
    computed by the planner: Mode 1 plans each machine alone; Mode 2 plans one llama-server
    on the PC over its budget plus what the Macs offer (:func:`offered_memory`)."""
    from localswarm.federation.rpc import offered_memory
    from localswarm.hardware.budget import budget
    from localswarm.hardware.synthetic import _apple, reference_profiles
    from localswarm.models.planner import plan

    gib = 2**30
    pc = reference_profiles()["RTX 4060 Ti 16 GB"]
    macs = {"Mac mini (M1, 8 GB)": _apple("Apple M1", 8, 8, 4), "MacBook (M4, 16 GB)": _apple("Apple M4", 16, 10, 4)}
    machines = {"PC (RTX 4060 Ti 16 GB, 32 GB RAM)": pc, **macs}
    none = lambda _ref: None  # noqa: E731 - plan from the registry's sizes, nothing downloaded
    rows = ["| Machine | Budget | Mode 1 (independent): its own swarm | Mode 2 (distributed): its part |",
            "|---|---|---|---|"]
    workers = []
    for i, (name, profile) in enumerate(macs.items()):
        memory, backend = offered_memory(profile)
        workers.append(PooledWorker(host=f"192.168.1.{21 + i}", port=8000,
                                    offer=RpcOffer("", name, 50052, memory, backend)))
    pooled = pooled_plan(pc, workers, ctx=4096, parallel=1, locate=none)
    own = budget(pc).total
    total = own + sum(w.offer.memory for w in workers)
    share = {name: w.offer.memory for name, w in zip(macs, workers)}
    for name, profile in machines.items():
        alone = plan(profile, ctx=4096, locate=none)
        b = budget(profile).total
        mine = share.get(name, own)
        part = (f"coordinator: llama-server with {pooled.model_id}, {mine / total:.0%} of its weights on the GPU"
                if name not in share else
                f"rpc worker ({workers[list(macs).index(name)].offer.backend}): {mine / gib:.1f} GiB offered, "
                f"{mine / total:.0%} of the weights")
        rows.append(f"| {name} | {b / gib:.1f} GiB ({budget(profile).rule}) | {alone.model_id} × {alone.instances} "
                    f"({alone.total_memory / gib:.1f} GiB) | {part} |")
    args = rpc_args(workers, own_memory=own, n_layers=0, own_gpus=1)  # a GPU coordinator offloads all layers
    return ("\n".join(rows) + f"\n\nMode 2 pools {total / gib:.1f} GiB and plans **{pooled.model_id}** "
            f"({pooled.total_memory / gib:.1f} GiB with a 4,096-token context, one slot), which no machine "
            f"holds alone. The PC starts `llama-server ... {' '.join(args)}` (the `-ts` shares in MiB, RPC "
            "devices first, the PC's GPU last).\n")


if __name__ == "__main__":  # python -m localswarm.federation.rpcpool --seed-lan [--write docs/federation.md]
    import sys
    from pathlib import Path

    from localswarm.models.planner import replace_section

    table = seed_lan_table()
    if sys.argv[1:3] and sys.argv[1:2] == ["--write"]:
        target = Path(sys.argv[2])
        target.write_text(replace_section(target.read_text(), SEED_LAN_BEGIN, SEED_LAN_END, table))
    sys.stdout.write(table)
