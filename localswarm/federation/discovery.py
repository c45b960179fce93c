"""Find other swarms on the LAN: mDNS (zeroconf), with static peers and UDP broadcast as fallbacks.

:class:`Discovery` advertises ``_localswarm._tcp.local.`` under the instance name
``hostname:port`` with the TXT fields of :class:`~localswarm.federation.advert.Advert`,
browses for the same type, and keeps a :class:`~localswarm.federation.table.PeerTable` up to
date. It ignores its own node id, keeps peers of another protocol version (marked
incompatible, with a warning), re-announces on :meth:`Discovery.update`, and unregisters
on :meth:`Discovery.aclose`. Meant to live in the gateway's lifespan::

    async with Discovery(port=8000, model="qwen2.5-coder-1.5b", instances=3) as disco:
        ...  # disco.table is live
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from localswarm.federation.advert import (
    Advert,
    default_hostname,
    hardware_summary,
    instance_name,
    load_node_id,
    parse_txt,
    server_label,
)
from localswarm.federation.table import Peer, PeerTable
from localswarm.federation.udp import DEFAULT_UDP_PORT, UdpBeacon

__all__ = ["SERVICE_TYPE", "Discovery", "broadcast_addresses", "parse_static_peer", "resolve_interfaces"]

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_localswarm._tcp.local."
DEFAULT_TTL_S = 120
_RESOLVE_TIMEOUT_MS = 3000


def parse_static_peer(spec: str, default_port: int = 8000) -> tuple[str, int]:
    """Parse ``host:port`` (or ``[v6]:port``, or ``host`` alone) into ``(host, port)``.

    A peer without a port means 8000, the gateway's default port (``Settings.port``).
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("empty peer address")
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    else:
        host, port = spec, str(default_port)
    if not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"invalid peer address {spec!r}: expected host:port")
    return host, int(port)


def resolve_interfaces(interfaces: Iterable[str]) -> list[str]:
    """Map interface names (``eth0``) and IP addresses to IP addresses.

    Unknown names raise ``ValueError`` so a typo does not silently advertise nothing.
    """
    adapters = {a.nice_name: a for a in ifaddr.get_adapters()}
    out: list[str] = []
    for item in interfaces:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            adapter = adapters.get(item)
            if adapter is None:
                raise ValueError(f"unknown network interface {item!r}; known: {sorted(adapters)}") from None
            out += [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]  # IPv4 only
        else:
            out.append(item)
    return out


def _default_addresses() -> list[str]:
    addrs = [
        ip.ip
        for a in ifaddr.get_adapters()
        for ip in a.ips
        if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback
    ]
    return addrs or ["127.0.0.1"]


def broadcast_addresses(addresses: Iterable[str]) -> list[str]:
    """The IPv4 broadcast address of each local address's subnet (for the UDP fallback)."""
    prefixes = {ip.ip: ip.network_prefix for a in ifaddr.get_adapters() for ip in a.ips if isinstance(ip.ip, str)}
    out = []
    for addr in addresses:
        if addr in prefixes and ":" not in addr:
            net = ipaddress.ip_network(f"{addr}/{prefixes[addr]}", strict=False)
            if net.prefixlen < 31:
                out.append(str(net.broadcast_address))
    return out or ["255.255.255.255"]


class Discovery:
    """Advertise this swarm and keep a live table of the others.

    Keyword-only settings:

    - ``port``: the gateway port peers connect to.
    - ``model``, ``instances``, ``hw``, ``auth``: announced fields (``hw`` defaults to a
      CPU/memory summary).
    - ``node_id``: defaults to the persistent id in ``state_dir()/node_id``.
    - ``hostname``: defaults to ``$LOCALSWARM_HOSTNAME`` or the host name.
    - ``interfaces``: interface names or IPs to bind mDNS to and advertise (default: all).
    - ``addresses``: override the advertised addresses.
    - ``mdns``: enable zeroconf (default True).
    - ``static_peers``: ``host:port`` strings added to the table as they are.
    - ``udp``: enable the UDP broadcast fallback; ``udp_port``, ``udp_targets``
      (default: the broadcast address of each advertised subnet), ``udp_bind``,
      ``udp_interval_s``.
    - ``rpc_port``, ``rpc_memory``, ``rpc_backend``: a Mode 2 worker's offer (advert.py).
    - ``ttl_s``: mDNS record TTL; a peer that vanishes without a goodbye is dropped
      when its records expire.
    """

    def __init__(
        self,
        *,
        port: int,
        model: str = "",
        instances: int = 0,
        hw: str | None = None,
        auth: bool = False,
        node_id: str | None = None,
        hostname: str | None = None,
        interfaces: Sequence[str] | None = None,
        addresses: Sequence[str] | None = None,
        mdns: bool = True,
        static_peers: Sequence[str] = (),
        udp: bool = False,
        udp_port: int = DEFAULT_UDP_PORT,
        udp_targets: Sequence[str] | None = None,
        udp_bind: str = "0.0.0.0",
        udp_interval_s: float = 5.0,
        ttl_s: int = DEFAULT_TTL_S,
        table: PeerTable | None = None,
        rpc_port: int = 0,
        rpc_memory: int = 0,
        rpc_backend: str = "",
    ) -> None:
        self.node_id = node_id or load_node_id()
        self.hostname = hostname or default_hostname()
        self.name = instance_name(self.hostname, port)
        self._interface_ips = resolve_interfaces(interfaces) if interfaces else None
        self.addresses = list(addresses or self._interface_ips or _default_addresses())
        self.advert = Advert(
            node_id=self.node_id,
            name=self.name,
            port=port,
            model=model,
            instances=instances,
            hw=hardware_summary() if hw is None else hw,
            auth=auth,
            rpc_port=rpc_port,
            rpc_memory=rpc_memory,
            rpc_backend=rpc_backend,
        )
        self.table = table or PeerTable(self_node_id=self.node_id)
        if self.table.self_node_id is None:
            self.table.self_node_id = self.node_id
        self._mdns = mdns
        self._static = [parse_static_peer(s) for s in static_peers]
        self._udp_enabled = udp
        self._udp_settings: dict[str, Any] = {
            "port": udp_port,
            "bind_host": udp_bind,
            "targets": list(udp_targets) if udp_targets is not None else broadcast_addresses(self.addresses),
            "interval_s": udp_interval_s,
        }
        self._ttl_s = ttl_s
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._registration: asyncio.Task[Any] | None = None
        self._udp: UdpBeacon | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mdns_names: dict[str, str] = {}  # mDNS instance name -> table key
        self._started = False

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Add static peers, register and browse mDNS, start the UDP beacon."""
        if self._started:
            raise RuntimeError("Cannot start Discovery twice")
        self._started = True
        for host, port in self._static:
            self.table.upsert(Peer(node_id="", host=host, port=port, name=f"{host}:{port}", version=None), "static")
        if self._mdns:
            try:
                await self._start_mdns()
            except Exception as exc:  # noqa: BLE001 - e.g. no multicast on the interface: keep the fallbacks
                logger.warning("mDNS unavailable on %s (%s: %s); using static peers%s only", self.addresses,
                               type(exc).__name__, exc, " and UDP broadcast" if self._udp_enabled else "")
                if self._azc is not None:
                    with contextlib.suppress(Exception):
                        await self._azc.async_close()
                self._azc = self._browser = self._info = None
                self._registration = None
        if self._udp_enabled:
            self._udp = UdpBeacon(lambda: self.advert, self._on_datagram, **self._udp_settings)
            await self._udp.start()
            self._spawn(self._expire_udp_loop())
        logger.info("federation discovery started as %s (node %s) on %s", self.name, self.node_id[:8], self.addresses)

    async def update(
        self,
        *,
        model: str | None = None,
        instances: int | None = None,
        hw: str | None = None,
        auth: bool | None = None,
    ) -> None:
        """Change announced fields and re-announce (mDNS update and an immediate datagram)."""
        changes = {
            k: v for k, v in (("model", model), ("instances", instances), ("hw", hw), ("auth", auth)) if v is not None
        }
        old = self.advert
        self.advert = dataclasses.replace(old, **changes)
        if self.advert == old:
            return
        if self._azc is not None and self._info is not None:
            await self._await_registration()
            self._info = self._service_info()
            await (await self._azc.async_update_service(self._info))
        if self._udp is not None:
            self._udp.announce_now()

    async def aclose(self) -> None:
        """Unregister (mDNS goodbye, UDP bye) and stop browsing. Safe to call twice."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._udp is not None:
            await self._udp.aclose(bye=True)
            self._udp = None
        if self._azc is not None:
            azc, self._azc = self._azc, None
            with contextlib.suppress(Exception):
                if self._browser is not None:
                    await self._browser.async_cancel()
            with contextlib.suppress(Exception):
                await self._await_registration()
                if self._info is not None:
                    await asyncio.wait_for(await azc.async_unregister_service(self._info), timeout=3)
            await azc.async_close()

    # -- mDNS ---------------------------------------------------------------------------

    def _service_info(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{self.name}.{SERVICE_TYPE}",
            port=self.advert.port,
            properties=self.advert.txt(),
            server=f"{server_label(self.hostname, self.node_id)}.local.",
            parsed_addresses=self.addresses,
            host_ttl=self._ttl_s,
            other_ttl=self._ttl_s,
        )

    async def _start_mdns(self) -> None:
        if self._interface_ips is not None:
            ips = self._interface_ips
            version = IPVersion.V4Only if all(":" not in ip for ip in ips) else IPVersion.All
            self._azc = AsyncZeroconf(interfaces=ips, ip_version=version)
        else:
            self._azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        self._info = self._service_info()
        # allow_name_change: two hosts with the same hostname and port get "name (2)".
        self._registration = await self._azc.async_register_service(self._info, allow_name_change=True)
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_service_change])

    async def _await_registration(self) -> None:
        if self._registration is not None:
            task, self._registration = self._registration, None
            await task

    def _on_service_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if self._info is not None and name == self._info.name:
            return
        if state_change is ServiceStateChange.Removed:
            key = self._mdns_names.pop(name, None)
            if key is not None:
                self.table.remove(key, "mdns")
            return
        self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        if self._azc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._azc.zeroconf, _RESOLVE_TIMEOUT_MS):
            logger.debug("could not resolve %s", name)
            return
        fields = parse_txt(info.properties or {})
        addrs = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
        if not addrs or info.port is None:
            logger.debug("%s has no address or port yet", name)
            return
        if not fields["node_id"]:
            logger.warning("peer %s announces no node id; ignored (it is not a localswarm node?)", name)
            return
        label = name[: -len(SERVICE_TYPE) - 1] if name.endswith(SERVICE_TYPE) else name
        peer = Peer(host=addrs[0], port=info.port, name=label, addresses=tuple(addrs), **fields)  # type: ignore[arg-type]
        old_key = self._mdns_names.get(name)
        if old_key is not None and old_key != peer.key:
            self.table.remove(old_key, "mdns")
        self._mdns_names[name] = peer.key
        self.table.upsert(peer, "mdns")

    # -- UDP fallback -------------------------------------------------------------------

    def _on_datagram(self, body: dict[str, Any], source_ip: str) -> None:
        fields = parse_txt({k: str(v) for k, v in body.items() if k in ("v", "node", "model", "instances", "hw", "auth",
                                                                       "rpc", "rpcmem", "rpcbe")})
        if fields["node_id"] == self.node_id:
            return
        if body["type"] == "bye":
            self.table.remove(str(fields["node_id"]), "udp")
            return
        name = body.get("name") if isinstance(body.get("name"), str) else f"{source_ip}:{body['port']}"
        peer = Peer(host=source_ip, port=body["port"], name=name, addresses=(source_ip,), **fields)  # type: ignore[arg-type]
        if self.table.upsert(peer, "udp") == "added" and self._udp is not None:
            self._udp.announce_now()  # let the newcomer learn about us without waiting

    async def _expire_udp_loop(self) -> None:
        interval = float(self._udp_settings["interval_s"])
        while True:
            await asyncio.sleep(interval)
            self.table.expire("udp", 3 * interval + 1)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
