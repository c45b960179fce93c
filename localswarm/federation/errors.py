"""Federation errors, rooted in the project's :mod:`localswarm.errors` tree."""

from __future__ import annotations

from localswarm.errors import ConfigError, LocalSwarmError


class FederationError(LocalSwarmError):
    """Base class of every federation error."""


class SecretError(ConfigError):
    """The federation secret is missing, too short, or stored in a readable file."""


class AuthError(FederationError):
    """A federated request failed authentication; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplyAuthError(AuthError):
    """A peer's reply failed verification (unsigned, altered, stale, replayed): it is dropped."""


class HopLimitError(AuthError):
    """A federated request arrived with too many hops: peers never forward (no loops)."""


class ProtocolError(FederationError, ValueError):
    """A federation JSON body is malformed, of another version, or fails validation."""


class PeerError(FederationError):
    """A peer answered with an error, garbage, or not at all."""

    def __init__(self, message: str, *, peer: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.peer = peer
        self.status_code = status_code


class PeerUnavailable(PeerError):
    """A peer is marked down and its backoff delay has not elapsed yet."""
