"""Federation errors; the classes live in the one tree, :mod:`localswarm.errors`."""

from __future__ import annotations

from localswarm.errors import (
    AuthError,
    FederationError,
    HopLimitError,
    PeerError,
    PeerUnavailable,
    ProtocolError,
    ReplyAuthError,
    SecretError,
)

__all__ = ["AuthError", "FederationError", "HopLimitError", "PeerError", "PeerUnavailable", "ProtocolError",
           "ReplyAuthError", "SecretError"]
