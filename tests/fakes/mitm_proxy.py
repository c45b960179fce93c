"""A man in the middle for federation tests: an HTTP/1.1 relay that can rewrite bodies.

Run ``python tests/fakes/mitm_proxy.py --listen HOST:PORT --upstream HOST:PORT
--rewrite-reply OLD NEW`` (or ``--rewrite-request OLD NEW``; neither: a faithful relay).
It stands where a LAN attacker without the federation secret would (ARP or DNS spoofing
puts it at the address a coordinator thinks is its peer): it sees every byte, forwards
requests to the real peer and relays its answers, and rewrites ``OLD`` to ``NEW`` in the
body going one way, fixing ``Content-Length`` so the HTTP stays valid. Headers,
signatures included, are passed through untouched: it does not know the secret.

Handles what the federation client sends: one request per connection or kept alive,
``Content-Length`` bodies (httpx sends JSON with a length; the peer's Starlette replies
with one). Prints ``listening`` once ready and one line per relayed exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head including CRLFCRLF, body) of one HTTP message, or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head, body


def _rewrite(head: bytes, body: bytes, old: bytes, new: bytes) -> tuple[bytes, bytes]:
    body = body.replace(old, new)
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    out = [lines[0]] + [
        b"content-length: %d" % len(body) if ln.split(b":", 1)[0].strip().lower() == b"content-length" else ln
        for ln in lines[1:]
    ]
    return b"\r\n".join(out) + b"\r\n\r\n", body


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--rewrite-request", nargs=2, metavar=("OLD", "NEW"))
    p.add_argument("--rewrite-reply", nargs=2, metavar=("OLD", "NEW"))
    args = p.parse_args()
    lhost, lport = args.listen.rsplit(":", 1)
    uhost, uport = args.upstream.rsplit(":", 1)

    async def handle(creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection(uhost, int(uport))
        except OSError:
            cwriter.close()
            return
        try:
            while (request := await _read_message(creader)) is not None:
                head, body = request
                if args.rewrite_request:
                    head, body = _rewrite(head, body, *(a.encode() for a in args.rewrite_request))
                uwriter.write(head + body)
                await uwriter.drain()
                reply = await _read_message(ureader)
                if reply is None:
                    break
                rhead, rbody = reply
                if args.rewrite_reply:
                    rhead, rbody = _rewrite(rhead, rbody, *(a.encode() for a in args.rewrite_reply))
                cwriter.write(rhead + rbody)
                await cwriter.drain()
                print(f"relayed {head.split(b' ')[1].decode()} -> {rhead.split(b' ')[1].decode()}", flush=True)
        finally:
            uwriter.close()
            cwriter.close()

    server = await asyncio.start_server(handle, lhost, int(lport))
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
