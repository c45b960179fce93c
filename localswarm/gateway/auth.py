"""Optional gateway API key (issue 5): ``Authorization: Bearer <key>`` or ``X-Api-Key``.

The key comes from ``api_key`` (flag ``--api-key`` or ``LOCALSWARM_API_KEY``) or from a
file only its owner can read (``api_key_file`` / ``LOCALSWARM_API_KEY_FILE``). Keys are
compared in constant time (on their SHA-256, so the length does not leak either).
``/health``, ``/v1/health`` and ``/openapi.json`` stay open; federation routes carry their
own HMAC authentication and are left to it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from localswarm.config import Settings
from localswarm.errors import ConfigError
from localswarm.gateway.errors import APIError

OPEN_PATHS = frozenset({"/health", "/v1/health", "/openapi.json"})
OPEN_PREFIXES = ("/v1/federation/",)


def load_api_key(settings: Settings) -> str | None:
    """The key clients must present, or None when the gateway is open."""
    if settings.api_key:
        return settings.api_key.strip() or None
    if not settings.api_key_file:
        return None
    path = Path(settings.api_key_file).expanduser()
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the API key file {path} is readable by others: run `chmod 600 {path}`")
    if not text:
        raise ConfigError(f"the API key file {path} is empty")
    return text


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def presented_key(headers: Headers) -> str:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "")


class APIKeyMiddleware:
    """Refuses requests without the right key with a 401 in OpenAI's shape."""

    def __init__(self, app: ASGIApp, *, key: str, on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.digest = _digest(key)
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope):
            await self.app(scope, receive, send)
            return
        presented = presented_key(Headers(scope=scope))
        if presented and hmac.compare_digest(_digest(presented), self.digest):
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
