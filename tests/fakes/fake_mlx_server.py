#!/usr/bin/env python3
"""STAND-IN for ``mlx_lm.server`` (Apple's MLX runs only on Apple Silicon, not on this Linux CI).

Behaviour copied from mlx-lm 0.32.2 ``mlx_lm/server.py`` (real-services.md §3):

- HTTP answers at once; the ``--model`` loads in the background (``FAKE_MLX_LOAD_DELAY`` s) and
  requests **queue** until it is loaded (an unbounded queue: never 503/429);
- ``GET /health`` is ``{"status": "ok"}`` 200 at once (not a readiness signal);
- ``GET /v1/models`` answers at once; it lists ``--model`` only when that is an existing local
  path (the real one scans the HF cache for multi-file safetensors repos);
- the request's ``model``: omitted or ``"default_model"`` (or the served repo itself) → the served
  model; anything else makes the real server try to *load* that model (``snapshot_download``):
  here, as for an unknown repo there, **404** ``{"error": "..."}``. The response's ``model``
  echoes the request (``"default_model"`` when omitted);
- ``POST /v1/chat/completions``, ``/chat/completions`` and ``/v1/completions``, streamed (SSE with
  ``: keepalive`` comments during prompt processing, ``stream_options.include_usage``) or not;
- errors are ``{"error": "<string>"}``; bad JSON → 400; unknown paths → 404; no API key.

``FAKE_MLX_LOG``: a file each request is logged to (``METHOD path model=… max_tokens=…``).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, default=8080)
ap.add_argument("--max-tokens", type=int, default=512)
args, _ = ap.parse_known_args()

LOAD = float(os.environ.get("FAKE_MLX_LOAD_DELAY", "1.0"))
LOG = os.environ.get("FAKE_MLX_LOG")
REPLY = os.environ.get("FAKE_MLX_REPLY", "def add(a, b):\n    return a + b")
LOADED = threading.Event()
threading.Timer(LOAD, LOADED.set).start()  # the generation thread loading the default model


def _log(line: str) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(line + "\n")


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        _log(f"GET {self.path} loaded={LOADED.is_set()}")
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            data = [{"id": args.model, "object": "model", "created": 0}] if os.path.exists(args.model) else []
            self._send(200, {"object": "list", "data": data})
        else:
            self._send(404, {"error": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path not in ("/v1/chat/completions", "/chat/completions", "/v1/completions"):
            self._send(404, {"error": "Not Found"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except ValueError as exc:
            self._send(400, {"error": f"Invalid JSON in request body: {exc}"})
            return
        requested = body.get("model", "default_model")
        _log(f"POST {self.path} model={body.get('model')} max_tokens={body.get('max_tokens')}")
        if requested not in ("default_model", args.model):
            self._send(404, {"error": f"Repository Not Found for url: https://huggingface.co/api/models/{requested}"})
            return
        LOADED.wait()  # queued behind the load, like the real generation thread
        chat = "chat" in self.path
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or args.max_tokens)
        words = REPLY.split(" ")[:max(1, max_tokens)]
        text = " ".join(words)
        usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
        rid = f"chatcmpl-{uuid.uuid4()}" if chat else f"cmpl-{uuid.uuid4()}"
        finish = "length" if len(words) >= max_tokens else "stop"
        if not body.get("stream"):
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                      if chat else {"index": 0, "text": text, "finish_reason": finish})
            self._send(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": int(time.time()), "model": requested, "system_fingerprint": "mlx",
                             "choices": [choice], "usage": usage})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(b": keepalive 5/5\n\n")
        obj = "chat.completion.chunk" if chat else "text_completion"
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            delta = ({"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}
                     if chat else {"index": 0, "text": piece, "finish_reason": None})
            chunk = {"id": rid, "object": obj, "created": int(time.time()), "model": requested, "choices": [delta]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = ({"index": 0, "delta": {}, "finish_reason": finish} if chat
                else {"index": 0, "text": "", "finish_reason": finish})
        self.wfile.write(f"data: {json.dumps({'id': rid, 'object': obj, 'model': requested, 'choices': [last]})}\n\n"
                         .encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            self.wfile.write(f"data: {json.dumps({'id': rid, 'object': obj, 'model': requested, 'choices': [], 'usage': usage})}\n\n"
                             .encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


ThreadingHTTPServer((args.host, args.port), H).serve_forever()
