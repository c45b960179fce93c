"""Attacks on a real swarm: each is refused (4xx or a dropped connection) while a parallel client is served.

The swarm is the real thing: ``localswarm up --detach`` with the real llama-server and the
embedded model (1 instance, small ``max_tokens``), an API key from ``$LOCALSWARM_API_KEY``,
federation on (loopback, shared secret), and one static federation peer reached through a
man-in-the-middle relay (``tests/fakes/mitm_proxy.py``) that rewrites its replies; the peer
itself is ``tests/federation_node.py`` (real federation routes, a FAKE canned vote).

Cases: no key, wrong key, key in the query string; bearer headers with odd whitespace and
case; oversized headers; slowloris clients (heads dribbled for up to ``DRIBBLE_S``, longer
than the server's ``header_timeout``); a body that never ends; path traversal in every
route or command that takes a name (``/v1/models/{id}``, ``logs NAME``, ``pull``);
federation replay, tampered bodies both ways (request rewritten, reply rewritten) and a
clock 10 minutes off. Then the secrets are grepped for in ``ps``, the service unit,
every log and ``status --json``. In a network namespace LAN (root and ``ip`` needed), a
man in the middle between two federation nodes rewrites a reply: it is dropped.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from localswarm.federation import sign
from localswarm.federation.auth import HEADER_NONCE, FederationAuth, verify_reply
from localswarm.federation.errors import PeerError, ReplyAuthError
from localswarm.federation.peers import PeerClient
from localswarm.federation.protocol import VoteRequest
from tests import netns
from tests.conftest import leaky_variables
from tests.helpers import REPO, free_tcp_port

pytestmark = pytest.mark.integration

KEY = "sk-sec-" + secrets.token_hex(16)
FED_SECRET = "fed-" + secrets.token_hex(16)
DRIBBLE_S = 60.0  # how long a slowloris client would keep dribbling; the server's header_timeout is 10 s
HEADER_TIMEOUT_S = 10.0  # Settings.header_timeout default, which the swarm runs with
BODY_TIMEOUT_S = 8.0  # the swarm's body_timeout (default 60 s; shortened so the test is quick)
CHAT = {"model": "swarm", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
PROXY = [sys.executable, str(REPO / "tests" / "fakes" / "mitm_proxy.py")]
NODE = [sys.executable, "-m", "tests.federation_node"]


@dataclass
class Swarm:
    url: str
    port: int
    env: dict[str, str]
    state: Path
    home: Path
    peer_proxy: str

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "localswarm", *args], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.home)

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 120), **kw)


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"{proc.args} did not listen on {port}:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


@pytest.fixture(scope="module")
def swarm(real_llama: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    root = tmp_path_factory.mktemp("security")
    env = {k: v for k, v in os.environ.items() if k not in leaky_variables(os.environ)}
    for kind in ("state", "config", "cache", "home"):
        (root / kind).mkdir()
    env.update(LOCALSWARM_STATE_DIR=str(root / "state"), LOCALSWARM_CONFIG_DIR=str(root / "config"),
               LOCALSWARM_CACHE_DIR=str(root / "cache"), HOME=str(root / "home"), LOCALSWARM_API_KEY=KEY,
               LOCALSWARM_FEDERATION_SECRET=FED_SECRET, LOCALSWARM_MDNS="no", LOCALSWARM_PEER_TIMEOUT="20",
               LOCALSWARM_BODY_TIMEOUT=str(BODY_TIMEOUT_S), LOCALSWARM_LLAMA_SERVER=real_llama[0],
               PYTHONPATH=str(REPO))
    # The peer (a FAKE federation node, real routes) behind a relay that rewrites its replies.
    node_port, proxy_port, port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    node_env = {**env, "LOCALSWARM_STATE_DIR": str(root / "node-state")}
    node = _start([*NODE, "--port", str(node_port), "--bind", "127.0.0.1", "--no-mdns", "--answer", "peer answer"],
                  node_env, root / "node.log")
    proxy = _start([*PROXY, "--listen", f"127.0.0.1:{proxy_port}", "--upstream", f"127.0.0.1:{node_port}",
                    "--rewrite-reply", "peer answer", "evil answer"], env, root / "proxy.log")
    try:
        _wait_port(node_port, node, root / "node.log")
        _wait_port(proxy_port, proxy, root / "proxy.log")
        up = subprocess.run(
            [sys.executable, "-m", "localswarm", "up", "--detach", "--model", "embedded", "--instances", "1",
             "--ctx-size", "1024", "--parallel", "4", "--port", str(port), "--federate",
             "--peer", f"127.0.0.1:{proxy_port}"],
            env=env, capture_output=True, text=True, timeout=300, cwd=root / "home",
        )
        assert up.returncode == 0, up.stdout + up.stderr
        yield Swarm(url=f"http://127.0.0.1:{port}", port=port, env=env, state=root / "state", home=root / "home",
                    peer_proxy=f"127.0.0.1:{proxy_port}")
    finally:
        subprocess.run([sys.executable, "-m", "localswarm", "down"], env=env, capture_output=True, timeout=60)
        _stop(proxy)
        _stop(node)


def _ok_chat(swarm: Swarm) -> httpx.Response:
    with swarm.client() as c:
        return c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY}"})


@contextlib.contextmanager
def served_meanwhile(swarm: Swarm, delay: float = 0.5) -> Iterator[None]:
    """A well-behaved client's chat request runs during the block and must complete (200, an answer)."""
    result: dict[str, Any] = {}

    def go() -> None:
        time.sleep(delay)
        try:
            result["resp"] = _ok_chat(swarm)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    yield
    thread.join(300)
    assert "error" not in result, result.get("error")
    resp = result["resp"]
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] is not None


def _raw(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes, read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
                if b"\r\n\r\n" in got and b"connection: close" not in got.lower():
                    head, _, body = got.partition(b"\r\n\r\n")
                    length = [int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if length and len(body) >= length[0]:
                        break
        return got


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


# -- keys ------------------------------------------------------------------------------------


def test_no_key_wrong_key_and_key_in_the_query_string_are_refused(swarm: Swarm) -> None:
    with served_meanwhile(swarm), swarm.client() as c:
        for path in ("/v1/models", "/localswarm/status", "/metrics", "/v1/models/swarm"):
            assert c.get(path).status_code == 401, path
        refused = c.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"X-Api-Key": "wrong"}).status_code == 401
        for query in ("api_key", "key", "access_token", "token", "authorization"):
            resp = c.get(f"/v1/models?{query}={KEY}")
            assert resp.status_code == 401, query
        assert c.get("/v1/models", params={"authorization": f"Bearer {KEY}"}).status_code == 401
        c.cookies.set("api_key", KEY)
        assert c.get("/v1/models").status_code == 401
        c.cookies.clear()
        # The right key, either header, works; /health stays open (documented).
        assert c.get("/v1/models", headers={"X-Api-Key": KEY}).status_code == 200
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize(("template", "expected"), [
    ("bearer {key}", 200), ("BEARER {key}", 200), ("Bearer    {key}   ", 200), ("Bearer\t{key}", 200),
    ("  Bearer {key}", 200), ("Bearer {KEY}", 401), ("Bearer {key_short}", 401), ("Bearer {key}x", 401),
    ("Bearer {key} {key}", 401), ("Bearer{key}", 401), ("Bearer", 401), ("Bearer ", 401), ("Token {key}", 401),
    ("Basic {basic}", 401),
])
def test_bearer_header_with_odd_whitespace_or_case(swarm: Swarm, template: str, expected: int) -> None:
    """The scheme is case-insensitive and whitespace around the token is ignored (RFC 9110);
    the token itself must match exactly. Sent raw: HTTP clients would tidy the header."""
    header = template.format(key=KEY, KEY=KEY.upper(), key_short=KEY[:-1],
                             basic=base64.b64encode(f"user:{KEY}".encode()).decode())
    raw = _raw(swarm.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
               + header.encode() + b"\r\n\r\n")
    assert _status(raw) == expected, raw[:300]


# -- oversized and slow requests ----------------------------------------------------------------


def test_oversized_headers_are_refused(swarm: Swarm) -> None:
    auth = f"Authorization: Bearer {KEY}\r\n".encode()
    with served_meanwhile(swarm):
        one_big = _raw(swarm.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + auth + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 20) for i in range(1000))
        many_small = _raw(swarm.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + auth + many + b"\r\n")
        long_url = _raw(swarm.port, b"GET /v1/models/" + b"m" * 20000 + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
        huge_key = _raw(swarm.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"k" * 30000 + b"\r\n\r\n")
    for name, raw in [("one 20 KB header", one_big), ("1000 headers", many_small), ("20 KB URL", long_url),
                      ("30 KB key", huge_key)]:
        assert _status(raw) == 431 or raw == b"", (name, raw[:200])


def _dribble(port: int, results: list[tuple[float, bytes]], index: int) -> None:
    """A slowloris client: a request head sent one short line a second, for up to DRIBBLE_S."""
    started = time.monotonic()
    got = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(1.0)
            i = 0
            while time.monotonic() - started < DRIBBLE_S:
                sock.sendall(b"X-Slow-%d: %d\r\n" % (i, i))
                i += 1
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                got += chunk
    except OSError:
        pass  # reset by the server: dropped
    results[index] = (time.monotonic() - started, got)


def test_slowloris_clients_are_dropped_while_others_are_served(swarm: Swarm) -> None:
    n = 12
    results: list[tuple[float, bytes]] = [(0.0, b"")] * n
    threads = [threading.Thread(target=_dribble, args=(swarm.port, results, i)) for i in range(n)]
    for t in threads:
        t.start()
    with served_meanwhile(swarm, delay=2.0):  # served while every slowloris connection is open
        pass
    for t in threads:
        t.join(DRIBBLE_S + 30)
    for elapsed, got in results:
        assert HEADER_TIMEOUT_S - 0.5 <= elapsed < DRIBBLE_S - 10, elapsed  # cut at the header timeout
        assert got == b"" or _status(got) == 408, got[:200]


def test_a_request_body_that_never_ends_gets_408(swarm: Swarm) -> None:
    def trickle(head: bytes, first: bytes, piece: bytes) -> tuple[float, bytes]:
        started = time.monotonic()
        got = b""
        with socket.create_connection(("127.0.0.1", swarm.port), timeout=5) as sock:
            sock.sendall(head + first)
            sock.settimeout(0.5)
            while time.monotonic() - started < BODY_TIMEOUT_S + 30:
                try:
                    sock.sendall(piece)
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                got += chunk
        return time.monotonic() - started, got

    auth = f"Authorization: Bearer {KEY}\r\n".encode()
    with served_meanwhile(swarm):
        sized = trickle(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth
                        + b"Content-Length: 100000\r\n\r\n", b'{"messages": [', b" ")
        chunked = trickle(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + auth
                          + b"\r\n", b"1\r\n{\r\n", b"1\r\n \r\n")
        anonymous = trickle(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", b"{",
                            b" ")
    for elapsed, got in (sized, chunked):
        assert _status(got) == 408 and b"request_timeout" in got, got[:300]
        assert BODY_TIMEOUT_S - 0.5 <= elapsed < BODY_TIMEOUT_S + 30
    # No key: refused without the body (after a 1 s grace for it to arrive), the connection
    # closed and the answer says so, so no client reuses it.
    assert _status(anonymous[1]) == 401 and anonymous[0] < BODY_TIMEOUT_S, anonymous
    assert b"connection: close" in anonymous[1].lower()


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/v1/models/../../etc/passwd", "/v1/models/..%2F..%2Fetc%2Fpasswd", "/v1/models/%2e%2e/%2e%2e/etc/passwd",
    "/v1/models/a/../../../etc/passwd", "/v1/models/..%5C..%5Cwindows", "/v1/models/x%00y", "/v1/models/./x",
    "/v1/models//etc/passwd",
])
def test_path_traversal_in_the_model_route(swarm: Swarm, path: str) -> None:
    raw = _raw(swarm.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n".encode())
    assert 400 <= _status(raw) < 500, raw[:300]
    assert b"root:" not in raw


def test_a_plain_model_name_still_resolves(swarm: Swarm) -> None:
    with swarm.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        for name in ("swarm", "qwen2.5-coder:7b", "org/model-name"):
            assert c.get(f"/v1/models/{name}").json()["id"] == name


TRAVERSALS = ["../../etc/passwd", "../swarm.json", "/etc/passwd", "..", "inst-0/../../x", "../state/swarm",
              "..\\..\\x", "%2e%2e%2fetc%2fpasswd"]


def test_path_traversal_in_logs_and_pull(swarm: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    """`logs NAME` and `pull MODEL` (run in-process through click, against the swarm's own state
    and cache) refuse every traversal and write nothing."""
    from click.testing import CliRunner

    from localswarm.cli import main

    for name in ("LOCALSWARM_STATE_DIR", "LOCALSWARM_CACHE_DIR", "LOCALSWARM_CONFIG_DIR"):
        monkeypatch.setenv(name, swarm.env[name])
    cache = Path(swarm.env["LOCALSWARM_CACHE_DIR"])
    before = sorted(cache.rglob("*"))
    runner = CliRunner()
    for name in TRAVERSALS:
        logs = runner.invoke(main, ["logs", name, "-n", "5"])
        assert logs.exit_code == 1 and "no log for" in logs.output, (name, logs.output)
        assert "root:" not in logs.output and KEY not in logs.output
        for model in (name, f"qwen2.5-coder:{name}:q4_k_m", f"qwen2.5-coder:7b:{name}"):
            pulled = runner.invoke(main, ["pull", model])
            assert pulled.exit_code == 1 and "error:" in pulled.output, (model, pulled.output)
    assert sorted(cache.rglob("*")) == before  # nothing fetched or written anywhere
    assert runner.invoke(main, ["logs", "inst-0", "-n", "1"]).exit_code == 0  # a real name still works


# -- federation -------------------------------------------------------------------------------


def _vote_body(request_id: str) -> bytes:
    return json.dumps(VoteRequest(request_id=request_id, request=CHAT).to_dict()).encode()


def _signed(body: bytes, **kw: Any) -> dict[str, str]:
    return {**sign("POST", "/v1/federation/vote", body, FED_SECRET.encode(), **kw), "x-localswarm-hops": "1",
            "content-type": "application/json"}


def test_federation_replay_tampering_and_clock_skew_are_refused(swarm: Swarm) -> None:
    with served_meanwhile(swarm), swarm.client() as c:
        body = _vote_body("sec-1")
        headers = _signed(body)
        first = c.post("/v1/federation/vote", content=body, headers=headers)
        assert first.status_code == 200, first.text
        # The reply is signed, bound to our request's nonce; a reply with a clock 10 minutes off fails.
        verify_reply(200, headers[HEADER_NONCE], first.headers, first.content, FED_SECRET.encode(),
                     _fresh_cache())
        with pytest.raises(ReplyAuthError, match="stale or future"):
            verify_reply(200, headers[HEADER_NONCE], first.headers, first.content, FED_SECRET.encode(),
                         _fresh_cache(), now=time.time() + 600)
        with pytest.raises(ReplyAuthError, match="bad reply signature"):  # moved onto another request
            verify_reply(200, "another-nonce", first.headers, first.content, FED_SECRET.encode(), _fresh_cache())
        replay = c.post("/v1/federation/vote", content=body, headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.text
        tampered = body.replace(b"Say hi.", b"Run rm -rf")
        assert c.post("/v1/federation/vote", content=tampered, headers=_signed(body)).status_code == 401
        for skew in (-600, 600):  # a peer whose clock is 10 minutes off
            late = _vote_body(f"sec-skew{skew}")
            resp = c.post("/v1/federation/vote", content=late, headers=_signed(late, timestamp=time.time() + skew))
            assert resp.status_code == 401 and "stale or future" in resp.text
        unsigned = c.post("/v1/federation/vote", content=_vote_body("sec-2"), headers={"x-localswarm-hops": "1"})
        assert unsigned.status_code == 401
        wrong = _vote_body("sec-3")
        forged = {**sign("POST", "/v1/federation/vote", wrong, b"not-the-secret-0123456789"), "x-localswarm-hops": "1"}
        assert c.post("/v1/federation/vote", content=wrong, headers=forged).status_code == 401


def _fresh_cache() -> Any:
    from localswarm.federation.auth import ReplayCache

    return ReplayCache()


def test_tampered_bodies_both_ways_through_a_relay(swarm: Swarm, tmp_path: Path) -> None:
    """A relay between a federation client and the swarm: a faithful relay works; a rewritten
    request is refused by the swarm; a rewritten reply is dropped by the client."""
    procs = []
    ports = {}
    try:
        for mode, extra in [("faithful", []), ("request", ["--rewrite-request", "Say hi.", "Say no."]),
                            ("reply", ["--rewrite-reply", '"node_id"', '"node_id" ']), ]:
            ports[mode] = free_tcp_port()
            log = tmp_path / f"{mode}.log"
            proc = _start([*PROXY, "--listen", f"127.0.0.1:{ports[mode]}", "--upstream", f"127.0.0.1:{swarm.port}",
                           *extra], swarm.env, log)
            procs.append(proc)
            _wait_port(ports[mode], proc, log)

        async def vote(mode: str) -> tuple[Any, PeerClient]:
            client = PeerClient(f"http://127.0.0.1:{ports[mode]}", auth=FederationAuth(FED_SECRET.encode()),
                                vote_timeout_s=120)
            async with client:
                try:
                    return await client.vote(VoteRequest(request_id=f"relay-{mode}", request=CHAT)), client
                except PeerError as exc:
                    return exc, client

        import asyncio

        with served_meanwhile(swarm):
            good, _ = asyncio.run(vote("faithful"))
            bad_request, _ = asyncio.run(vote("request"))
            bad_reply, client = asyncio.run(vote("reply"))
        assert not isinstance(good, Exception) and good.message.content is not None
        assert isinstance(bad_request, PeerError) and bad_request.status_code == 401
        assert isinstance(bad_reply, PeerError) and "reply failed verification" in str(bad_reply)
        assert client.bad_replies == 1
    finally:
        for proc in procs:
            _stop(proc)


def test_the_swarm_drops_and_counts_a_peers_rewritten_replies(swarm: Swarm) -> None:
    """The swarm's own peer sits behind a relay that rewrites its replies: the swarm still answers
    (from its local vote), never with the injected text, and counts the dropped replies."""
    resp = _ok_chat(swarm)
    assert resp.status_code == 200
    assert "evil answer" not in resp.text
    meta = resp.json()["localswarm"]
    left_out = (meta.get("federation") or {}).get("left_out") or {}
    # The peer was asked (a cross-vote), and its rewritten vote left out, or it was already marked down.
    assert any("reply failed verification" in why or why.startswith("down") for why in left_out.values()), meta
    with swarm.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        deadline = time.monotonic() + 30
        dropped = 0.0
        while time.monotonic() < deadline and not dropped:
            for line in c.get("/metrics").text.splitlines():
                if line.startswith("localswarm_peer_bad_replies_total{"):
                    dropped += float(line.rsplit(" ", 1)[1])
            time.sleep(0.5)
    assert dropped >= 1


def test_mitm_in_a_network_namespace_cannot_inject_a_vote(tmp_path: Path) -> None:
    """h1 is a federation peer, h0 a man in the middle on the LAN rewriting h1's replies,
    h2 the coordinator (PeerClient) that was pointed at h0: the rewritten vote is dropped."""
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    import asyncio

    env = {"LOCALSWARM_FEDERATION_SECRET": FED_SECRET, "PYTHONPATH": str(REPO)}
    with netns.lan(3, subnet="10.231.7.0/24") as net:
        h0, h1, h2 = net.hosts
        h1.exec([*NODE, "--port", "8400", "--bind", h1.ip, "--no-mdns", "--answer", "def add(a, b): return a + b"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.PIPE)
        h0.exec([*PROXY, "--listen", f"{h0.ip}:8400", "--upstream", f"{h1.ip}:8400", "--rewrite-reply",
                 "return a + b", "__import__('os').system('id')"], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        h0.exec([*PROXY, "--listen", f"{h0.ip}:8401", "--upstream", f"{h1.ip}:8400"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        async def ask(port: int) -> Any:
            client = PeerClient(f"http://{h0.ip}:{port}", auth=FederationAuth(FED_SECRET.encode()), timeout_s=5,
                                vote_timeout_s=10)
            async with client:
                deadline = time.monotonic() + 20
                while True:  # until the node and the relay listen
                    try:
                        return await client.vote(VoteRequest(request_id=f"ns-{port}", request=CHAT)), client
                    except PeerError as exc:
                        if "unreachable" not in str(exc) or time.monotonic() > deadline:
                            return exc, client
                        client.health.consecutive_failures = 0
                        client.health.retry_at = 0
                        await asyncio.sleep(0.2)

        with netns.InNetns(h2) as inside:
            faithful, _ = inside.call(lambda: asyncio.run(ask(8401)), timeout=60)
            injected, client = inside.call(lambda: asyncio.run(ask(8400)), timeout=60)
    assert not isinstance(faithful, Exception) and faithful.message.content == "def add(a, b): return a + b"
    assert isinstance(injected, PeerError) and "reply failed verification" in str(injected), injected
    assert client.bad_replies == 1


# -- secrets never leak ----------------------------------------------------------------------


def test_the_key_never_shows_in_ps_unit_files_logs_or_status(swarm: Swarm, tmp_path: Path) -> None:
    # A request with the key in its URL first: it must not reach the access log either.
    with swarm.client() as c:
        assert c.get(f"/v1/models?api_key={KEY}").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    ps = subprocess.run(["ps", "auxww"], capture_output=True, text=True, timeout=30).stdout
    assert "localswarm" in ps and "llama-server" in ps  # the swarm is there to be seen
    assert KEY not in ps and FED_SECRET not in ps

    status = swarm.cli("status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["auth"] is True
    peers = swarm.cli("peers", "--json")
    metrics = httpx.get(f"{swarm.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).text
    for text in (status.stdout, status.stderr, peers.stdout, metrics):
        assert KEY not in text and FED_SECRET not in text

    # The service unit: secrets only in the 0600 EnvironmentFile (a fake systemctl records the calls).
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "systemctl").write_text("#!/bin/sh\nexit 0\n")
    (fakebin / "systemctl").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    svc_env = {**swarm.env, "HOME": str(home), "PATH": f"{fakebin}:{os.environ['PATH']}"}
    svc_env.pop("XDG_CONFIG_HOME", None)
    printed = swarm.cli("service", "print", env=svc_env)
    installed = swarm.cli("service", "install", "--kind", "systemd", env=svc_env)
    assert installed.returncode == 0, installed.stderr
    unit = home / ".config/systemd/user/localswarm.service"
    env_file = home / ".config/localswarm/service.env"
    for text in (printed.stdout, installed.stdout, installed.stderr, unit.read_text()):
        assert KEY not in text and FED_SECRET not in text
    assert (env_file.stat().st_mode & 0o777) == 0o600 and KEY in env_file.read_text()
    refused = swarm.cli("service", "install", "--", "--api-key", KEY, env=svc_env)
    assert refused.returncode == 1 and KEY not in refused.stdout + refused.stderr

    logs = [p for p in swarm.state.rglob("*") if p.is_file() and ".log" in p.name]
    assert any(p.name == "gateway.log" for p in logs) and any(p.name.startswith("inst-") for p in logs)
    for path in logs:
        text = path.read_text(errors="replace")
        assert KEY not in text and FED_SECRET not in text, path
        assert (path.stat().st_mode & 0o077) == 0 or not path.name.startswith("gateway"), path
    gateway_log = (swarm.state / "gateway.log").read_text(errors="replace")
    assert "api_key=***" in gateway_log  # the request above was logged, its query blanked
    shown = swarm.cli("logs", "-n", "500")
    assert KEY not in shown.stdout and FED_SECRET not in shown.stdout
