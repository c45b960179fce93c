"""The exception tree. Transport errors are translated into these at the boundary."""

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
    """An instance (llama-server, mlx_lm.server) refused or failed a request: HTTP status and its message."""

    def __init__(self, status: int, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_


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
