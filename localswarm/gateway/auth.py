"""Optional gateway API key (issue 5): ``Authorization: Bearer <key>`` or ``X-Api-Key``.

The key comes from ``$LOCALSWARM_API_KEY`` or from a file only its owner can read
(``api_key_file`` / ``$LOCALSWARM_API_KEY_FILE``), see :mod:`localswarm.access`; it is
compared in constant time (:func:`localswarm.access.same_secret`). A key in the query
string is never looked at. ``/health``, ``/v1/health`` and ``/openapi.json`` stay open;
federation routes carry their own HMAC authentication and are left to it.
"""

from __future__ import annotations

from typing import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from localswarm.access import load_api_key, same_secret
from localswarm.gateway.errors import APIError

__all__ = ["OPEN_PATHS", "APIKeyMiddleware", "load_api_key", "presented_key"]

OPEN_PATHS = frozenset({"/health", "/v1/health", "/openapi.json"})
OPEN_PREFIXES = ("/v1/federation/",)


def presented_key(headers: Headers) -> str:
    """The key a request carries: ``Authorization: Bearer <key>`` (scheme in any case,
    any whitespace around the token ignored; the token itself is compared exactly) or ``X-Api-Key``."""
    parts = headers.get("authorization", "").split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].strip():
        return parts[1].strip()
    return headers.get("x-api-key", "").strip()


class APIKeyMiddleware:
    """Refuses requests without the right key with a 401 in OpenAI's shape."""

    def __init__(self, app: ASGIApp, *, key: str, on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.key = key
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope):
            await self.app(scope, receive, send)
            return
        presented = presented_key(Headers(scope=scope))
        if presented and same_secret(presented, self.key):
            await self.app(scope, receive, send)
            return
        if self.on_reject:
            self.on_reject()
        message = ("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
                   if not presented else "Incorrect API key provided.")
        error = APIError(401, message, type="invalid_request_error", code="invalid_api_key",
                         headers={"WWW-Authenticate": "Bearer"})
        await error.response()(scope, receive, send)

    @staticmethod
    def _open(scope: Scope) -> bool:
        path = scope.get("path", "")
        # CORS preflights carry no credentials; the CORS middleware (outside this one) answers them.
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or scope.get("method") == "OPTIONS"
