#!/usr/bin/env python3
"""STAND-IN for `mlx_lm.server` (Apple's MLX runs only on Apple Silicon, not on this Linux CI).

It copies the behaviours the MLX backend must cope with: `/health` answers 200 at once,
while `/v1/models` and completions answer only after a load delay (FAKE_MLX_LOAD_DELAY);
errors are `{"error": "<string>"}`; no API key.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, default=8080)
ap.add_argument("--max-tokens", type=int, default=512)
args = ap.parse_args()
import os  # noqa: E402

STARTED = time.monotonic()
LOAD = float(os.environ.get("FAKE_MLX_LOAD_DELAY", "1.0"))
LOG = os.environ.get("FAKE_MLX_LOG")


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

    def _loaded(self) -> bool:
        return time.monotonic() - STARTED >= LOAD

    def do_GET(self) -> None:
        if LOG:
            with open(LOG, "a") as f:
                f.write(f"GET {self.path} loaded={self._loaded()}\n")
        if self.path == "/health":
            self._send(200, {"status": "ok"})  # the trap: 200 before the model is loaded
        elif self.path == "/v1/models":
            if not self._loaded():
                self.close_connection = True
                self._send(503, {"error": "loading"})
                return
            self._send(200, {"object": "list", "data": [{"id": args.model, "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if LOG:
            with open(LOG, "a") as f:
                f.write(f"POST {self.path} model={body.get('model')} max_tokens={body.get('max_tokens')}\n")
        if not self._loaded():
            self._send(503, {"error": "model still loading"})
            return
        if body.get("model") not in (None, args.model):
            self._send(404, {"error": f"would load another model: {body.get('model')}"})
            return
        self._send(200, {"id": "x", "object": "chat.completion", "model": args.model,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


ThreadingHTTPServer((args.host, args.port), H).serve_forever()
