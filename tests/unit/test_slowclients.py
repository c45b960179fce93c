"""Slow and oversized requests against a real uvicorn server with the gateway's guards.

A small Starlette app (echo the body; a slow streamed answer) behind the same uvicorn
options and middleware ``runner.run``/``create_app`` use, driven with raw sockets:
a dribbled head is cut at ``header_timeout`` (408), an oversized head gets 431, a body
that never ends gets 408, and well-behaved clients (keep-alive, a slow response, pipelined
requests) are not disturbed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from localswarm.config import Settings
from localswarm.gateway.errors import APIError
from localswarm.gateway.slowclients import EARLY_ANSWER_GRACE, BodyTimeoutMiddleware, server_options
from localswarm.gateway.validation import DRAIN_BYTES, read_json
from localswarm.supervisor.instance import free_port

SETTINGS = Settings(header_timeout=1.0, body_timeout=1.5, max_header_bytes=4096)


async def echo(request: Request) -> Response:
    return PlainTextResponse(await request.body())


async def capped(request: Request) -> Response:
    return PlainTextResponse(str(await read_json(request, max_bytes=1000)))


async def refuse(request: Request) -> Response:
    """Answers without reading the body, as the API-key check's 401 does."""
    raise APIError(401, "Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key")


async def slow(request: Request) -> Response:
    async def chunks():  # longer than header_timeout: the head deadline must not cut a response
        for i in range(3):
            await asyncio.sleep(0.8)
            yield f"chunk{i}\n".encode()

    return StreamingResponse(chunks())


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    app = Starlette(routes=[Route("/echo", echo, methods=["POST", "GET"]), Route("/slow", slow),
                            Route("/capped", capped, methods=["POST"]),
                            Route("/refuse", refuse, methods=["POST"])],
                    middleware=[Middleware(BodyTimeoutMiddleware, timeout=SETTINGS.body_timeout)],
                    exception_handlers={APIError: api_error})
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        **server_options(SETTINGS)))
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    yield port
    srv.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_a_dribbled_head_is_cut_with_408(server: int) -> None:
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
    got = b""
    with pytest.raises(OSError):  # the server closes while we keep dribbling
        for i in range(200):
            sock.sendall(f"X-Drip-{i}: a\r\n".encode())
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            finally:
                sock.settimeout(15)
            got += chunk
            if not chunk:
                raise ConnectionResetError("closed")
    elapsed = time.monotonic() - started
    sock.close()
    assert got.startswith(b"HTTP/1.1 408 ") and b"connection: close" in got
    assert SETTINGS.header_timeout <= elapsed < 15  # cut at the deadline, long before the dribble ends


def test_a_silent_connection_is_closed_without_an_answer(server: int) -> None:
    sock = _connect(server)
    started = time.monotonic()
    assert _read_all(sock) == b""
    assert time.monotonic() - started >= SETTINGS.header_timeout
    sock.close()


def test_an_oversized_head_gets_431(server: int) -> None:
    sock = _connect(server)
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    answer = _read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 ")
    # Just under the limit is served.
    sock = _connect(server)
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 3900 + b"\r\n\r\n")
    assert _read_all(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_a_body_that_never_ends_gets_408_and_a_closed_connection(server: int) -> None:
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nstart")
    sock.settimeout(0.2)
    got = b""
    while time.monotonic() - started < 15:
        try:
            sock.sendall(b"x")  # a trickle, never the whole body
        except OSError:
            break
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    sock.close()
    assert got.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in got
    assert b"connection: close" in got.lower()
    assert time.monotonic() - started < 15


def test_well_behaved_clients_are_not_disturbed(server: int) -> None:
    sock = _connect(server)
    for i in range(3):  # keep-alive: each request's head is on a fresh clock
        body = f"hello {i}".encode()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        answer = b""
        while not answer.endswith(body):  # the head and the body may come in two reads
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        time.sleep(0.6)  # idle between requests, under uvicorn's keep-alive timeout
    # Two pipelined requests in one write.
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _read_all(sock).count(b"HTTP/1.1 200 ") == 2
    sock.close()
    # A response slower than header_timeout is not cut.
    sock = _connect(server)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = _read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b"chunk2" in answer


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_body_gets_its_413_not_a_reset(server: int, chunked: bool) -> None:
    """A client that sends all its body before reading (httpx, the openai SDK) reads the 413.

    Found by bench/soak.py: answered and closed with megabytes unread, the kernel reset the
    connection and the client saw a ReadError instead of the 413 (and the SDK retried).
    """
    body = b"x" * (16 * 2**20)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 2**20):
            yield body[i:i + 2**20]

    async def post_three() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=15) as client:  # the sync client happens to cope
            return [await client.post(f"http://127.0.0.1:{server}/capped", content=chunks() if chunked else body)
                    for _ in range(3)]  # and the connection stays usable

    for r in asyncio.run(post_three()):
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_a_body_far_over_the_limit_is_not_read(server: int) -> None:
    """Past DRAIN_BYTES the declared length alone is refused: 413 and the connection closes."""
    sock = _connect(server)
    sock.sendall(f"POST /capped HTTP/1.1\r\nHost: x\r\nContent-Length: {DRAIN_BYTES + 2000}\r\n\r\n".encode())
    assert _read_all(sock).startswith(b"HTTP/1.1 413 ")
    sock.close()


@pytest.mark.parametrize("path", ["/refuse", "/nowhere"])
def test_an_answer_before_the_body_was_read_keeps_the_connection(server: int, path: str) -> None:
    """A 401 (or 404) the app sends without reading the body: the rest of the body is read
    first, so the keep-alive connection stays usable. CI saw the failure this prevents: the
    connection was closed, silently, after the answer, and httpx, which had pooled it, got
    ``Connection reset by peer`` on its next request (tests/integration/test_security.py).
    The head goes first and the body a moment later, so the app answers before the body."""
    sock = _connect(server)
    body = b'{"model": "swarm", "messages": [{"role": "user", "content": "hi"}]}'
    for _ in range(3):
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)))
        time.sleep(0.3)
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith((b"}", b"Not Found")):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {answer[:60]!r}"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 401 " if path == "/refuse" else b"HTTP/1.1 404 "), answer[:60]
        assert b"connection: close" not in answer.lower()
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _read_all(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_a_body_not_waited_for_is_answered_with_connection_close(server: int) -> None:
    """A body that has not come within EARLY_ANSWER_GRACE after an early answer: the answer
    says ``Connection: close`` (a client then does not reuse the connection) and it closes."""
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    answer = _read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 401 ") and b"connection: close" in answer.lower()
    assert EARLY_ANSWER_GRACE - 0.1 < time.monotonic() - started < SETTINGS.body_timeout
