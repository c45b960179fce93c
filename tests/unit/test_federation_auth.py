"""Request signing, verification, replay protection, secrets and the hop limit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from localswarm.federation.auth import (
    ENV_SECRET,
    HEADER_HOPS,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    FederationAuth,
    ReplayCache,
    check_hops,
    load_secret,
    resolve_secret,
    sign,
    sign_reply,
    verify,
    verify_reply,
)
from localswarm.federation.errors import AuthError, HopLimitError, PeerError, ReplyAuthError, SecretError

SECRET = b"s3cret-s3cret-s3cret"
BODY = b'{"v": 1}'


def signed(body: bytes = BODY, secret: bytes = SECRET, **kw: object) -> dict[str, str]:
    return sign("POST", "/v1/federation/vote", body, secret, **kw)  # type: ignore[arg-type]


def test_valid_signature_is_accepted() -> None:
    """A request signed with the shared secret passes."""
    verify("POST", "/v1/federation/vote", signed(), BODY, SECRET, ReplayCache())


def test_wrong_secret_is_refused() -> None:
    """A signature made with another secret fails, naming the likely cause."""
    with pytest.raises(AuthError, match="bad signature"):
        verify("POST", "/v1/federation/vote", signed(secret=b"other-secret-other"), BODY, SECRET, ReplayCache())


@pytest.mark.parametrize("missing", [HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE])
def test_unsigned_request_is_refused(missing: str) -> None:
    """Any missing signing header means unsigned."""
    headers = signed()
    del headers[missing]
    with pytest.raises(AuthError, match="unsigned"):
        verify("POST", "/v1/federation/vote", headers, BODY, SECRET, ReplayCache())


def test_replay_is_refused() -> None:
    """The same signed request twice: the second is a replay."""
    cache, headers = ReplayCache(), signed()
    verify("POST", "/v1/federation/vote", headers, BODY, SECRET, cache)
    with pytest.raises(AuthError, match="replayed"):
        verify("POST", "/v1/federation/vote", headers, BODY, SECRET, cache)


@pytest.mark.parametrize("offset", [-31, 31, -3600])
def test_stale_or_future_timestamp_is_refused(offset: int) -> None:
    """Outside the ±30 s window the request is refused even with a valid signature."""
    headers = signed(timestamp=time.time() + offset)
    with pytest.raises(AuthError, match="timestamp"):
        verify("POST", "/v1/federation/vote", headers, BODY, SECRET, ReplayCache())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/v1/federation/vote", BODY), ("POST", "/v1/federation/info", BODY), ("POST", "/v1/federation/vote", b"{}")],
)
def test_tampering_is_refused(method: str, path: str, body: bytes) -> None:
    """Method, path and body are all covered by the signature."""
    with pytest.raises(AuthError, match="bad signature"):
        verify(method, path, signed(), body, SECRET, ReplayCache())


def test_forged_request_does_not_consume_nonce() -> None:
    """A bad signature is not recorded, so it cannot block the genuine request's nonce."""
    cache = ReplayCache()
    good = signed(nonce="n1")
    bad = {**good, HEADER_SIGNATURE: "v1=" + "0" * 64}
    with pytest.raises(AuthError):
        verify("POST", "/v1/federation/vote", bad, BODY, SECRET, cache)
    verify("POST", "/v1/federation/vote", good, BODY, SECRET, cache)


def test_replay_cache_is_bounded_and_expires() -> None:
    """Oldest nonces are evicted past max_size; entries expire after ttl."""
    cache = ReplayCache(max_size=3, ttl_s=10)
    for i in range(5):
        assert cache.check_and_add(f"n{i}", now=0)
    assert len(cache) == 3
    assert not cache.check_and_add("n4", now=1)
    assert cache.check_and_add("n4", now=11)  # expired
    assert len(cache) == 1


def test_secret_from_environment() -> None:
    """The environment variable wins and is stripped."""
    assert load_secret(environ={ENV_SECRET: " abcdefghijklmnop \n"}) == b"abcdefghijklmnop"


def test_no_secret_configured_is_none() -> None:
    assert load_secret(environ={}) is None


def test_secret_file_must_be_0600(tmp_path: Path) -> None:
    """A group/other-readable file is refused with the chmod fix in the message."""
    f = tmp_path / "secret"
    f.write_text("abcdefghijklmnopqrstuvwxyz\n")
    f.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(f, environ={})
    f.chmod(0o600)
    assert load_secret(f, environ={}) == b"abcdefghijklmnopqrstuvwxyz"


def test_secret_file_missing_or_short(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        load_secret(tmp_path / "nope", environ={})
    f = tmp_path / "short"
    f.write_text("short")
    os.chmod(f, 0o600)
    with pytest.raises(SecretError, match="at least"):
        load_secret(f, environ={})


def test_non_loopback_bind_requires_secret() -> None:
    """Missing secret: refused on a LAN address, allowed (None) on loopback."""
    with pytest.raises(SecretError, match="needs a shared secret"):
        resolve_secret("0.0.0.0", environ={})
    with pytest.raises(SecretError):
        resolve_secret("192.168.1.5", environ={})
    assert resolve_secret("127.0.0.1", environ={}) is None
    assert resolve_secret("localhost", environ={}) is None
    assert resolve_secret("::1", environ={}) is None
    assert resolve_secret("0.0.0.0", environ={ENV_SECRET: "x" * 16}) == b"x" * 16


def test_hop_limit() -> None:
    """No header is a client request (0); 1 is a federated one; more is refused."""
    assert check_hops({}) == 0
    assert check_hops({HEADER_HOPS: "1"}) == 1
    with pytest.raises(HopLimitError):
        check_hops({HEADER_HOPS: "2"})
    with pytest.raises(HopLimitError):
        check_hops({HEADER_HOPS: "x"})


async def test_httpx_auth_signs_requests_verifiably() -> None:
    """FederationAuth's headers verify on the receiving side, query string included."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        verify(request.method, request.url.raw_path.decode(), request.headers, request.content, SECRET, ReplayCache())
        return httpx.Response(200, headers=sign_reply(200, request.headers[HEADER_NONCE], b"", SECRET))

    auth = FederationAuth(SECRET, node_id="abc")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
        r = await client.post("http://peer/v1/federation/vote?x=1", json={"v": 1})
        assert r.status_code == 200
    assert seen[0].headers[HEADER_HOPS] == "1"
    assert seen[0].headers["x-localswarm-node"] == "abc"


# -- signed replies ------------------------------------------------------------------------

REPLY = b'{"v": 1, "node_id": "n1"}'


def test_signed_reply_verifies_and_is_bound_to_its_request() -> None:
    headers = sign_reply(200, "req-nonce", REPLY, SECRET)
    verify_reply(200, "req-nonce", headers, REPLY, SECRET, ReplayCache())
    for status, nonce, body in [(200, "other-nonce", REPLY), (503, "req-nonce", REPLY),
                                (200, "req-nonce", REPLY.replace(b"n1", b"n2"))]:
        with pytest.raises(ReplyAuthError, match="bad reply signature"):
            verify_reply(status, nonce, headers, body, SECRET, ReplayCache())
    with pytest.raises(ReplyAuthError, match="bad reply signature"):
        verify_reply(200, "req-nonce", sign_reply(200, "req-nonce", REPLY, b"x" * 20), REPLY, SECRET, ReplayCache())


def test_reply_unsigned_stale_or_replayed_is_refused() -> None:
    with pytest.raises(ReplyAuthError, match="unsigned reply"):
        verify_reply(200, "n", {}, REPLY, SECRET, ReplayCache())
    old = sign_reply(200, "n", REPLY, SECRET, timestamp=time.time() - 600)  # a clock 10 minutes off
    with pytest.raises(ReplyAuthError, match="stale or future"):
        verify_reply(200, "n", old, REPLY, SECRET, ReplayCache())
    cache = ReplayCache()
    fresh = sign_reply(200, "n", REPLY, SECRET)
    verify_reply(200, "n", fresh, REPLY, SECRET, cache)
    with pytest.raises(ReplyAuthError, match="replayed reply"):
        verify_reply(200, "n", fresh, REPLY, SECRET, cache)


async def test_httpx_auth_drops_an_altered_reply_and_lets_errors_through() -> None:
    """A 2xx reply whose body changed after signing raises; a plain error status is the caller's to judge."""
    mode = {"alter": True, "status": 200}

    def handler(request: httpx.Request) -> httpx.Response:
        nonce = request.headers[HEADER_NONCE]
        headers = sign_reply(mode["status"], nonce, REPLY, SECRET)
        body = REPLY.replace(b"n1", b"evil") if mode["alter"] else REPLY
        return httpx.Response(mode["status"], content=body, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=FederationAuth(SECRET)) as client:
        with pytest.raises(ReplyAuthError):
            await client.get("http://peer/v1/federation/info")
        mode["alter"] = False
        assert (await client.get("http://peer/v1/federation/info")).content == REPLY
        mode["status"] = 401
        assert (await client.get("http://peer/v1/federation/info")).status_code == 401


async def test_peer_client_drops_and_counts_a_forged_reply() -> None:
    """A reply without a valid signature never reaches the vote: PeerError, counter, callback."""
    from localswarm.federation.peers import PeerClient

    def handler(request: httpx.Request) -> httpx.Response:  # an answer forged without the secret
        return httpx.Response(200, json={"v": 1, "node_id": "evil", "name": "x", "model": "m", "instances": 9})

    seen: list[str] = []
    client = PeerClient("http://peer:1", auth=FederationAuth(SECRET), transport=httpx.MockTransport(handler),
                        on_bad_reply=seen.append)
    async with client:
        with pytest.raises(PeerError, match="reply failed verification"):
            await client.info()
    assert client.bad_replies == 1 and seen == ["http://peer:1"]
    assert client.health.consecutive_failures == 1
