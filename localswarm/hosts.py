"""Bind addresses and how a local client reaches them (one home for the wildcard rule)."""

from __future__ import annotations

__all__ = ["client_host", "is_wildcard"]

_WILDCARD_V4 = ("", "0.0.0.0")
_WILDCARD_V6 = ("::", "[::]")


def is_wildcard(host: str) -> bool:
    """True for an address that binds every interface (IPv4 or IPv6), or an empty one."""
    return host in _WILDCARD_V4 or host in _WILDCARD_V6


def client_host(host: str) -> str:
    """The host part of a URL a local client uses to reach a server bound to ``host``.

    A wildcard bind is reachable on loopback of its own family (``0.0.0.0`` → ``127.0.0.1``,
    ``::`` → ``[::1]``); an IPv6 literal gets the brackets a URL needs.
    """
    if host in _WILDCARD_V4:
        return "127.0.0.1"
    if host in _WILDCARD_V6:
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host
