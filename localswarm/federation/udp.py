"""UDP broadcast announcer and listener: discovery where multicast (mDNS) is blocked.

Every node sends a small JSON datagram with its advert fields to the broadcast address(es)
every ``interval_s`` (sooner right after start) and listens on the same port. A node that
stops cleanly sends a ``bye``; one that vanishes is expired by the caller after a few
missed intervals. Datagrams carry no secret: they only say where to connect, and every
federated HTTP request is authenticated separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from localswarm.federation.advert import Advert

__all__ = ["DEFAULT_UDP_PORT", "MAGIC", "UdpBeacon", "decode_datagram", "encode_datagram"]

logger = logging.getLogger(__name__)

DEFAULT_UDP_PORT = 5354
MAGIC = "localswarm"
_MAX_DATAGRAM = 2048
_FAST_DELAYS = (0.0, 0.3, 0.7)  # first announcements, before settling on interval_s


def encode_datagram(advert: Advert, kind: str = "announce") -> bytes:
    """The JSON datagram for ``advert``; ``kind`` is ``announce`` or ``bye``."""
    body = {"magic": MAGIC, "type": kind, "name": advert.name, "port": advert.port, **advert.txt()}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")[:_MAX_DATAGRAM]


def decode_datagram(data: bytes) -> dict[str, Any] | None:
    """Parse a datagram; ``None`` for anything that is not a well-formed localswarm one."""
    if len(data) > _MAX_DATAGRAM:
        return None
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("magic") != MAGIC or body.get("type") not in ("announce", "bye"):
        return None
    port = body.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not (0 < port < 65536):
        return None
    if not isinstance(body.get("node"), str) or not body["node"]:
        return None
    return body


def _parse_target(target: str, default_port: int) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if sep and host and port.isdigit():
        return host, int(port)
    return target, default_port


class UdpBeacon(asyncio.DatagramProtocol):
    """Broadcasts this node's advert and hands every valid datagram received to ``on_datagram``.

    ``targets`` are ``addr`` or ``addr:port`` strings (broadcast addresses in production,
    loopback in tests). ``bind_host`` must be the wildcard address to receive broadcasts
    on Linux.
    """

    def __init__(
        self,
        advert: Callable[[], Advert],
        on_datagram: Callable[[dict[str, Any], str], None],
        *,
        port: int = DEFAULT_UDP_PORT,
        bind_host: str = "0.0.0.0",
        targets: Sequence[str] = ("255.255.255.255",),
        interval_s: float = 5.0,
    ) -> None:
        self._advert = advert
        self._on_datagram = on_datagram
        self.port = port
        self.bind_host = bind_host
        self.targets = [_parse_target(t, port) for t in targets]
        self.interval_s = interval_s
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        """Open the socket and start announcing."""
        if self._transport is not None:
            raise RuntimeError("Cannot start a UdpBeacon twice")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind((self.bind_host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._transport = transport  # type: ignore[assignment]
        self._task = asyncio.create_task(self._announce_loop(), name="localswarm-udp-announce")

    def announce_now(self) -> None:
        """Send an announcement at once (after a change, or when a new peer appears)."""
        self._wake.set()

    async def aclose(self, *, bye: bool = True) -> None:
        """Stop announcing; send a ``bye`` so peers drop this node immediately."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._transport is not None:
            if bye:
                self._send(encode_datagram(self._advert(), "bye"))
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: D102
        body = decode_datagram(data)
        if body is None:
            logger.debug("ignored datagram from %s", addr[0])
            return
        self._on_datagram(body, addr[0])

    def error_received(self, exc: Exception) -> None:  # noqa: D102
        logger.debug("udp beacon error: %s", exc)

    def _send(self, payload: bytes) -> None:
        if self._transport is None:
            return
        for host, port in self.targets:
            try:
                self._transport.sendto(payload, (host, port))
            except OSError as exc:  # e.g. no route to a broadcast address
                logger.debug("udp announce to %s:%d failed: %s", host, port, exc)

    async def _announce_loop(self) -> None:
        delays = list(_FAST_DELAYS)
        while True:
            delay = delays.pop(0) if delays else self.interval_s
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            self._send(encode_datagram(self._advert()))
