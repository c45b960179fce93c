"""A TCP relay that lets only handshaken addresses reach a loopback-only service.

llama.cpp's ``rpc-server`` has no authentication and no encryption (real-services.md §4:
"Never run the RPC server on an open network"). A worker therefore binds it to 127.0.0.1
and puts this relay on the one LAN address it offers: a connection from an address in the
:class:`AllowList` is piped to the service byte for byte; any other is closed at once, before
a byte is read or sent. Addresses enter the list only through the signed federation
handshake (:mod:`localswarm.federation.rpc`), and leave it when not renewed within ``ttl_s``.

What this is: address-based trust after a signed handshake. What it is not: encryption or
per-connection authentication (a host that can use a trusted peer's IP address on the LAN
gets through; the bytes cross the LAN in the clear). docs/federation.md says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable

__all__ = ["AllowList", "Relay"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16


def _norm(address: str) -> str:
    """One spelling per address (``::ffff:10.0.0.2`` is ``10.0.0.2``)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class AllowList:
    """Addresses allowed through the relay, each until its expiry (renewed by each handshake)."""

    def __init__(self, *, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._until: dict[str, float] = {}

    def allow(self, address: str) -> None:
        """Let ``address`` through for ``ttl_s`` from now."""
        self._until[_norm(address)] = self._clock() + self.ttl_s

    def revoke(self, address: str) -> None:
        self._until.pop(_norm(address), None)

    def allowed(self, address: str) -> bool:
        """True if ``address`` passed a handshake that has not expired."""
        try:
            key = _norm(address)
        except ValueError:
            return False
        until = self._until.get(key)
        if until is None:
            return False
        if until < self._clock():
            del self._until[key]
            return False
        return True

    def addresses(self) -> list[str]:
        now = self._clock()
        return sorted(a for a, t in self._until.items() if t >= now)


class Relay:
    """Listen on ``host:port``; pipe allowed connections to ``target()`` (a loopback ``(host, port)``).

    ``target`` is asked per connection, so the service may move (a restarted rpc-server gets a
    new port). Counts ``refused`` and ``relayed`` connections for status and tests.
    """

    def __init__(self, host: str, port: int, allow: AllowList, target: Callable[[], tuple[str, int] | None]) -> None:
        self.host, self.port = host, port
        self.allow = allow
        self.target = target
        self.refused = 0
        self.relayed = 0
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("rpc relay listening on %s:%d (handshaken peers only)", self.host, self.port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = peer[0] if peer else ""
        target = self.target()
        if not self.allow.allowed(address) or target is None:
            self.refused += 1
            logger.warning("rpc relay: refused %s (%s)", address or "?",
                           "no signed handshake from this address" if target else "rpc-server not running")
            writer.transport.abort()  # closed at once: nothing read, nothing sent
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError as exc:
            logger.warning("rpc relay: rpc-server at %s:%d unreachable: %s", *target, exc)
            writer.transport.abort()
            return
        self.relayed += 1
        logger.info("rpc relay: %s connected", address)
        task = asyncio.current_task()
        if task is not None:
            self._pipes.add(task)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            if task is not None:
                self._pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
