"""Shared-secret authentication between federated swarms.

Every federated request is signed with HMAC-SHA256 over a canonical string::

    METHOD \\n TARGET \\n TIMESTAMP \\n NONCE \\n sha256(body) hex

where TARGET is the path plus ``?query`` when there is one. The receiver checks the
signature in constant time, refuses timestamps outside a ±30 s window and refuses a nonce
it has already seen (a bounded, expiring replay cache). A hop header caps forwarding: a
peer answers a federated request from its local swarm and never fans it out again.

Replies to an authenticated request are signed by the same scheme, with the request's
nonce bound in, so a reply cannot be forged, altered, or moved onto another request::

    REPLY \n STATUS \n REQUEST_NONCE \n TIMESTAMP \n NONCE \n sha256(body) hex

:class:`FederationAuth` (the client side) checks it on every 2xx reply and raises
:class:`~localswarm.federation.errors.ReplyAuthError` when it fails: the reply is dropped.

The secret comes from ``LOCALSWARM_FEDERATION_SECRET`` or from a file that only its owner
can read (mode 0600); a file readable by group or others is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping
from pathlib import Path

import httpx

from localswarm.access import is_loopback, read_secret_file, same_secret
from localswarm.federation.errors import AuthError, HopLimitError, ReplyAuthError, SecretError

__all__ = [
    "ENV_SECRET",
    "HEADER_HOPS",
    "HEADER_NODE",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "MAX_HOPS",
    "MIN_SECRET_LENGTH",
    "TIMESTAMP_WINDOW_S",
    "FederationAuth",
    "ReplayCache",
    "check_hops",
    "load_secret",
    "resolve_secret",
    "sign",
    "sign_reply",
    "verify",
    "verify_reply",
]

ENV_SECRET = "LOCALSWARM_FEDERATION_SECRET"
HEADER_TIMESTAMP = "x-localswarm-timestamp"
HEADER_NONCE = "x-localswarm-nonce"
HEADER_SIGNATURE = "x-localswarm-signature"
HEADER_HOPS = "x-localswarm-hops"
HEADER_NODE = "x-localswarm-node"

MAX_HOPS = 1
TIMESTAMP_WINDOW_S = 30.0
MIN_SECRET_LENGTH = 16
_SIG_PREFIX = "v1="


def load_secret(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> bytes | None:
    """Return the shared secret, or ``None`` when none is configured.

    The environment variable wins over ``path``. A file must be a regular file with no
    permission bits for group or others (``chmod 600``), else :class:`SecretError`.
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_SECRET)
    if value:
        return _check_length(value.strip(), f"${ENV_SECRET}")
    if path is None:
        return None
    value = read_secret_file(path, "federation secret file", error=SecretError)
    return _check_length(value, str(Path(path).expanduser()))


def _check_length(value: str, origin: str) -> bytes:
    if len(value) < MIN_SECRET_LENGTH:
        raise SecretError(
            f"federation secret from {origin} is {len(value)} characters; use at least "
            f"{MIN_SECRET_LENGTH} (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return value.encode("utf-8")


def resolve_secret(
    bind_host: str,
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> bytes | None:
    """Load the secret and enforce the rule: a non-loopback bind requires one.

    Returns ``None`` (no authentication) only when the gateway listens on loopback and
    no secret is configured.
    """
    secret = load_secret(path, environ=environ)
    if secret is None and not is_loopback(bind_host):
        raise SecretError(
            f"federation on {bind_host} needs a shared secret: set ${ENV_SECRET} or pass a "
            "0600 secret file, with the same value on every machine"
        )
    return secret


def _canonical(method: str, target: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), target, timestamp, nonce, digest)).encode("utf-8")


def _signature(secret: bytes, canonical: bytes) -> str:
    return _SIG_PREFIX + hmac.new(secret, canonical, hashlib.sha256).hexdigest()


def sign(
    method: str,
    target: str,
    body: bytes,
    secret: bytes,
    *,
    timestamp: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return the headers that authenticate one request (timestamp, nonce, signature)."""
    return _signed_headers(secret, lambda ts, n: _canonical(method, target, ts, n, body), timestamp, nonce)


def _signed_headers(secret: bytes, canonical: Callable[[str, str], bytes], timestamp: float | None,
                    nonce: str | None) -> dict[str, str]:
    """The one signer of requests and replies: timestamp, nonce, HMAC over ``canonical(ts, nonce)``."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    nonce = nonce or secrets.token_hex(16)
    return {HEADER_TIMESTAMP: ts, HEADER_NONCE: nonce, HEADER_SIGNATURE: _signature(secret, canonical(ts, nonce))}


class ReplayCache:
    """Nonces seen recently, bounded in size, each forgotten after ``ttl_s``.

    ``ttl_s`` should cover the whole timestamp window (both sides), so a replay inside
    the window is always caught; once a nonce expires its timestamp is stale anyway.
    When full, the oldest nonces are evicted first.
    """

    def __init__(self, *, max_size: int = 10_000, ttl_s: float = 2 * TIMESTAMP_WINDOW_S + 5) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, nonce: str, *, now: float | None = None) -> bool:
        """Record ``nonce``; return False if it was already seen and has not expired."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now + self.ttl_s
        while len(self._seen) > self.max_size:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        # Insertion order equals expiry order (constant ttl), so stop at the first live one.
        while self._seen:
            nonce, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[nonce]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value


def check_hops(headers: Mapping[str, str]) -> int:
    """Return the hop count of a request (0 when absent); raise AuthError above the limit."""
    raw = _header(headers, HEADER_HOPS)
    if raw is None:
        return 0
    try:
        hops = int(raw)
    except ValueError:
        raise HopLimitError(f"invalid {HEADER_HOPS} header {raw!r}") from None
    if hops < 0 or hops > MAX_HOPS:
        raise HopLimitError(f"hop limit exceeded ({hops} > {MAX_HOPS}): federated requests are never forwarded")
    return hops


def verify(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: bytes,
    replay_cache: ReplayCache,
    *,
    now: float | None = None,
    window_s: float = TIMESTAMP_WINDOW_S,
) -> None:
    """Check one request's signature, timestamp and nonce; raise :class:`AuthError` if bad.

    ``headers`` is any mapping with lower-case keys (Starlette's and httpx's headers
    both qualify). The nonce is recorded only once the signature is valid, so forged
    requests cannot fill the replay cache.
    """
    _check_signed(
        headers, secret, replay_cache, lambda ts, nonce: _canonical(method, path, ts, nonce, body),
        error=AuthError, kind="request", prefix="", now=now, window_s=window_s,
        bad_signature="bad signature: the peers do not share the same federation secret",
    )


def _check_signed(
    headers: Mapping[str, str],
    secret: bytes,
    replay_cache: ReplayCache,
    canonical: Callable[[str, str], bytes],
    *,
    error: type[AuthError],
    kind: str,
    prefix: str,
    now: float | None,
    window_s: float,
    bad_signature: str,
) -> None:
    """The one check of a signed message (request or reply): headers present, timestamp in the
    window, signature over ``canonical(timestamp, nonce)``, nonce never seen. The nonce is
    recorded only once the signature is valid, so forgeries cannot fill the replay cache."""
    ts = _header(headers, HEADER_TIMESTAMP)
    nonce = _header(headers, HEADER_NONCE)
    sig = _header(headers, HEADER_SIGNATURE)
    if not ts or not nonce or not sig:
        raise error(f"unsigned {kind}: missing x-localswarm-timestamp, -nonce or -signature header")
    if len(nonce) > 128:
        raise error(f"{prefix}nonce too long")
    try:
        ts_value = int(ts)
    except ValueError:
        raise error(f"invalid {prefix}timestamp {ts!r}") from None
    wall = time.time() if now is None else now
    if abs(wall - ts_value) > window_s:
        raise error(
            f"stale or future {prefix}timestamp ({wall - ts_value:+.0f} s off, window ±{window_s:.0f} s): "
            "check the clocks"
        )
    if not same_secret(sig, _signature(secret, canonical(ts, nonce))):
        raise error(bad_signature)
    if not replay_cache.check_and_add(nonce):
        raise error(f"replayed {kind}: nonce already used")


def _reply_canonical(status: int, request_nonce: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(("REPLY", str(int(status)), request_nonce, timestamp, nonce, digest)).encode("utf-8")


def sign_reply(
    status: int,
    request_nonce: str,
    body: bytes,
    secret: bytes,
    *,
    timestamp: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one reply (status and body) to the request that had ``request_nonce``."""
    return _signed_headers(secret, lambda ts, n: _reply_canonical(status, request_nonce, ts, n, body),
                           timestamp, nonce)


def verify_reply(
    status: int,
    request_nonce: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: bytes,
    replay_cache: ReplayCache,
    *,
    now: float | None = None,
    window_s: float = TIMESTAMP_WINDOW_S,
) -> None:
    """Check a reply's signature, timestamp and nonce; raise :class:`ReplyAuthError` if bad."""
    _check_signed(
        headers, secret, replay_cache,
        lambda ts, nonce: _reply_canonical(status, request_nonce, ts, nonce, body),
        error=ReplyAuthError, kind="reply", prefix="reply ", now=now, window_s=window_s,
        bad_signature="bad reply signature: altered on the way, or not from a peer holding the secret",
    )


class FederationAuth(httpx.Auth):
    """Signs every outgoing request, marks it as one federation hop, and checks the reply.

    Usage: ``httpx.AsyncClient(auth=FederationAuth(secret, node_id=...))``. With
    ``secret=None`` it only adds the hop (and node) headers, for loopback-only setups.
    With a secret, a 2xx reply must carry a valid reply signature bound to this
    request's nonce, else :class:`ReplyAuthError` is raised from the request call.
    """

    requires_request_body = True
    requires_response_body = True

    def __init__(self, secret: bytes | None, *, node_id: str | None = None) -> None:
        self.secret = secret
        self.node_id = node_id
        self.replies = ReplayCache(max_size=2_000)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add hop, node and signature headers to ``request``."""
        request.headers[HEADER_HOPS] = str(MAX_HOPS)
        if self.node_id:
            request.headers[HEADER_NODE] = self.node_id
        if self.secret is None:
            yield request
            return
        target = request.url.raw_path.decode("ascii")
        signed = sign(request.method, target, request.content, self.secret)
        request.headers.update(signed)
        response = yield request
        if 200 <= response.status_code < 300:
            verify_reply(response.status_code, signed[HEADER_NONCE], response.headers, response.content,
                         self.secret, self.replies)
