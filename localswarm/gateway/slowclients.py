"""Clients that send too slowly or too much: bounded time and size for a request to arrive.

uvicorn bounds the time between two requests on a keep-alive connection
(``timeout_keep_alive``) and, with h11, the size of a request head
(``h11_max_incomplete_event_size``), but nothing bounds how long a client may take to
send its request line and headers, or its body. A slowloris client (headers dribbled a
byte at a time) or a body that never ends would hold a connection, and with it a
concurrency slot, for ever. Two guards close that gap:

- :func:`guarded_protocol` wraps uvicorn's HTTP protocol class (h11 or httptools, the
  one uvicorn would pick): from the moment a connection opens, or a response completes on
  a kept-alive one, the client has ``header_timeout`` seconds to finish its request head
  (``CRLF CRLF``) and ``max_header_bytes`` bytes to do it in. Too slow: ``408`` and the
  connection is closed (just closed if it sent nothing); too large: ``431`` and closed.
  The bytes are counted as they arrive, before the HTTP parser sees them.
- :class:`BodyTimeoutMiddleware` (ASGI) gives the body ``body_timeout`` seconds from the
  moment the head was complete; past that the request is answered ``408`` with
  ``Connection: close`` (OpenAI's error shape). The size of a body is bounded where it
  is read (``max_body_bytes``, 413). A request answered before its body was read (a 401
  from the key check, a 404, a 413 past the limit) first has the rest of its body read and
  dropped, up to ``DRAIN_BYTES``: the guard above closes a connection whose request was
  answered before its body arrived (it cannot carry another request), and a client that had
  already put it back in its keep-alive pool sent its next request into the close and got a
  reset (CI saw
  ``ConnectionResetError`` on the request after a 401). A body declared larger than that,
  or one that has not come within ``EARLY_ANSWER_GRACE`` (1 s; a trickling client is not
  kept on), is not waited for: the answer goes out with ``Connection: close`` and the
  connection closes.

:func:`server_options` is what ``runner.run`` passes to ``uvicorn.Config``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from localswarm.config import Settings
from localswarm.gateway.errors import APIError
from localswarm.gateway.validation import DRAIN_BYTES

__all__ = ["BodyTimeout", "BodyTimeoutMiddleware", "guarded_protocol", "server_options"]

logger = logging.getLogger(__name__)

_END_OF_HEAD = b"\r\n\r\n"
#: how long an answer given before its request body was read waits for the rest of that body
#: (a client sends its body at once; one that trickles it gets the answer and a closed connection)
EARLY_ANSWER_GRACE = 1.0


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


def guarded_protocol(base: type[asyncio.Protocol], *, header_timeout: float,
                     max_header_bytes: int) -> type[asyncio.Protocol]:
    """``base`` (a uvicorn HTTP protocol class) with a deadline and a size cap on each request head."""

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None
        _awaiting_head = False
        _head_bytes = 0
        _tail = b""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_head()

        def _await_head(self) -> None:
            self._cancel_head_timer()
            self._awaiting_head, self._head_bytes, self._tail = True, 0, b""
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def data_received(self, data: bytes) -> None:
            if self._awaiting_head:
                seen = self._tail + data
                end = seen.find(_END_OF_HEAD)
                size = self._head_bytes + (len(data) if end < 0 else end + len(_END_OF_HEAD) - len(self._tail))
                if size > max_header_bytes:
                    self._refuse(431, "Request Header Fields Too Large",
                                 f"request line and headers over {max_header_bytes} bytes")
                    return
                if end < 0:
                    self._head_bytes, self._tail = size, seen[-(len(_END_OF_HEAD) - 1):]
                else:
                    self._awaiting_head = False
                    self._cancel_head_timer()
            super().data_received(data)

        def on_response_complete(self) -> None:
            cycle = getattr(self, "cycle", None)
            if cycle is not None and getattr(cycle, "more_body", False) and not self.transport.is_closing():
                # Answered before its body arrived and BodyTimeoutMiddleware gave up on it (too
                # large, too slow; its answer said ``Connection: close``): the connection cannot
                # carry another request.
                self._awaiting_head = False
                self._cancel_head_timer()
                self.transport.close()
            super().on_response_complete()
            # Kept alive and no pipelined request already started: the next head is on the clock.
            if not self.transport.is_closing() and getattr(self, "cycle", None) is cycle:
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self._awaiting_head or self.transport.is_closing():
                return
            client = getattr(self, "client", None)
            if self._head_bytes:
                logger.warning("closing a connection from %s: request head incomplete after %.0f s (%d bytes)",
                               client[0] if client else "?", header_timeout, self._head_bytes)
                self.transport.write(_raw_response(408, "Request Timeout",
                                                   f"request head not received within {header_timeout:g} s"))
            self._awaiting_head = False
            self.transport.close()

        def _refuse(self, status: int, reason: str, message: str) -> None:
            client = getattr(self, "client", None)
            logger.warning("refusing a request from %s: %s", client[0] if client else "?", message)
            self._awaiting_head = False
            self._cancel_head_timer()
            self.transport.write(_raw_response(status, reason, message))
            self.transport.close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def server_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments: the guarded protocol and h11's own head limit."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return {
        "http": guarded_protocol(AutoHTTPProtocol, header_timeout=settings.header_timeout,
                                 max_header_bytes=settings.max_header_bytes),
        # h11's buffer limit stays above ours, so the guard's 431 is what a client sees.
        "h11_max_incomplete_event_size": 2 * settings.max_header_bytes,
    }


class BodyTimeout(APIError):
    """The request body did not arrive in time: 408, and the connection is closed."""

    def __init__(self, timeout: float) -> None:
        super().__init__(408, f"The request body was not received within {timeout:g} s.", code="request_timeout",
                         headers={"Connection": "close"})


class BodyTimeoutMiddleware:
    """Answers 408 (``Connection: close``) when a request body takes over ``timeout`` seconds,
    and reads the rest of a body the app answered without reading (see the module's doc)."""

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_done = False
        received = 0
        started = False

        async def guarded_receive(until: float | None = None) -> Message:
            nonlocal body_done, received
            if body_done:  # after the body: waiting for a disconnect is not bounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, (until or deadline) - loop.time()))
            except asyncio.TimeoutError:
                if until is not None:
                    raise
                client = scope.get("client")
                logger.warning("request body from %s not received within %g s: 408",
                               client[0] if client else "?", self.timeout)
                raise BodyTimeout(self.timeout) from None
            received += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def drop_unread_body() -> bool:
            """Read and drop what is left of the body; False when it was not worth waiting for."""
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) - received > DRAIN_BYTES:
                return False
            limit, until = received + DRAIN_BYTES, min(deadline, loop.time() + EARLY_ANSWER_GRACE)
            try:
                while not body_done and received <= limit:
                    await guarded_receive(until)
            except asyncio.TimeoutError:
                return False
            return body_done

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started and not body_done \
                    and not await drop_unread_body():
                # the connection closes after this answer: say so, or a client that pooled it
                # sends its next request into the close and gets a reset
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except BodyTimeout as exc:  # raised where no exception handler answered it
            if started:
                raise
            await exc.response()(scope, receive, send)
