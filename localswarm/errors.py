"""The exception tree: every error localswarm raises on purpose derives from LocalSwarmError.

Transport errors are translated into these at the boundary (:mod:`localswarm.upstream`
for instances, :mod:`localswarm.federation.peers` for peers). Some areas still define a
subclass next to their code (``RegistryError``, ``GGUFFormatError``, ``NetworkUnavailable``,
``PrebuiltUnavailable``, ``ServiceError``, ``SwarmNotFound``); each derives from a class here.

::

    LocalSwarmError
     ├── ConfigError ── SecretError
     ├── BackendNotFound
     ├── ModelNotFound
     ├── DownloadError
     ├── PlanError
     ├── InvalidTransition (also RuntimeError: a supervisor bug)
     ├── UpstreamError   an instance refused or failed a request
     ├── APIError        answered to the client in OpenAI's shape
     └── FederationError
          ├── AuthError ── HopLimitError, ReplyAuthError
          ├── ProtocolError (also ValueError)
          └── PeerError ── PeerUnavailable
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import JSONResponse


class LocalSwarmError(Exception):
    """Base class of every error localswarm raises on purpose."""


class ConfigError(LocalSwarmError):
    """The configuration (file, environment or flags) is invalid."""


class BackendNotFound(LocalSwarmError):
    """No inference server binary (llama-server, mlx_lm.server) could be found."""


class ModelNotFound(LocalSwarmError):
    """The requested model is neither local, cached nor downloadable."""


class DownloadError(LocalSwarmError):
    """A download failed, was refused (checksum) or the network is unreachable."""


class PlanError(LocalSwarmError):
    """No model/quantization/instance count fits the memory budget."""


class UpstreamError(LocalSwarmError):
    """An instance (llama-server, mlx_lm.server) refused or failed a request: HTTP status and its message.

    ``refusal``: the instance refused the request as malformed (the client's error: a 400
    for the client, not a failure of the instance); see ``upstream.call.is_refusal``.
    """

    def __init__(self, status: int, message: str, type_: str | None = None, *, refusal: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.refusal = status, message, type_, refusal


_API_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "unavailable_error",
    504: "timeout_error",
}


class APIError(LocalSwarmError):
    """An error answered to the client in OpenAI's shape; raised anywhere in a route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _API_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The error as a Starlette response (imported here: the CLI never needs Starlette)."""
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


class InvalidTransition(LocalSwarmError, RuntimeError):
    """A state change that the table does not allow: a supervisor bug."""


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
