#!/usr/bin/env python3
"""FAKE llama-server for tests: a real process speaking llama-server's HTTP protocol.

It is NOT llama.cpp. It exists for what the embedded 135M model cannot show (tool calls,
chosen disagreements) and for fault injection. It accepts llama-server's argv and reads
its behaviour from the environment:

- ``FAKE_REPLIES``: JSON list; instance ``i`` (its ``-s`` seed minus 1000) answers
  ``FAKE_REPLIES[i % len]``, each either a string (content) or an object
  ``{"content": ..., "tool_calls": [...], "finish_reason": ..., "delay": seconds,
  "word_delay": seconds between streamed words, "die_after": exit after N streamed words}``.
- ``FAKE_LOAD_DELAY``: seconds of answering 503 "Loading model" before ready.
- ``FAKE_DELAY``: seconds to wait before answering a completion.
- ``FAKE_DEVICES``: ``--list-devices`` answers these ``;``-separated device lines
  (e.g. ``CUDA0: NVIDIA GeForce RTX 4090 (24080 MiB, 23500 MiB free)``) and exits 0.
- ``FAKE_ARGV_LOG``: a file each start appends its argv to (one JSON list per line).

It serves ``/v1/chat/completions`` and ``/v1/completions`` (streamed or not, with
``logprobs`` as llama-server shapes them: one entry per word here), ``/v1/embeddings``
(with ``--embeddings``; 8 made-up dimensions), ``/tokenize`` (one token per word),
``/props``, ``/metrics``, the native ``/completion`` with llama-server's ``timings``
(rates from ``FAKE_PROMPT_TPS``/``FAKE_DECODE_TPS``), and a test-only ``GET /fake/last_bodies``. A prompt longer than
the slot context (``-c`` / ``-np``, one token per word) gets llama-server's 400
``exceed_context_size_error``; a malformed ``tools`` array gets its HTTP 500 "Failed to
parse tools: ..." (common/chat.cpp, server.cpp ex_wrapper).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8080)
parser.add_argument("--alias", "-a", default="fake-model")
parser.add_argument("-s", "--seed", type=int, default=1000)
parser.add_argument("-c", "--ctx-size", type=int, default=4096)
parser.add_argument("-np", "--parallel", type=int, default=1)
parser.add_argument("--embeddings", action="store_true")
parser.add_argument("--list-devices", action="store_true")
args, _ = parser.parse_known_args()
if args.list_devices:  # llama.cpp's format (common/arg.cpp): FAKE_DEVICES lines, else "(none)"
    print("Available devices:")
    for line in (os.environ.get("FAKE_DEVICES") or "(none)").split(";"):
        print(f"  {line}")
    sys.exit(0)

if os.environ.get("FAKE_ARGV_LOG"):
    with open(os.environ["FAKE_ARGV_LOG"], "a") as _log:
        _log.write(json.dumps(sys.argv) + "\n")

API_KEY = os.environ.get("LLAMA_API_KEY", "")
STARTED = time.monotonic()
LOAD_DELAY = float(os.environ.get("FAKE_LOAD_DELAY", "0"))
DELAY = float(os.environ.get("FAKE_DELAY", "0"))
REPLIES = json.loads(os.environ.get("FAKE_REPLIES", '["Hello from a fake llama-server."]'))
INDEX = args.seed - 1000
EMBEDDINGS = args.embeddings
COUNTERS = {"requests": 0, "prompt_tokens": 0, "predicted": 0}
LAST_BODIES: list = []  # upstream bodies seen, newest last (GET /fake/last_bodies)
LOCK = threading.Lock()


def reply() -> dict:
    r = REPLIES[INDEX % len(REPLIES)]
    return {"content": r} if isinstance(r, str) else r


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *a: object) -> None:
        sys.stderr.write("fake-llama-server: " + fmt % a + "\n")

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _loading(self) -> bool:
        if time.monotonic() - STARTED < LOAD_DELAY:
            self._json(503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
            return True
        return False

    def do_GET(self) -> None:
        if self._loading():
            return
        if self.path in ("/health", "/v1/health"):
            self._json(200, {"status": "ok"})
        elif self.path in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": args.alias, "object": "model", "owned_by": "fake"}]})
        elif self.path == "/props":
            self._json(200, {"total_slots": args.parallel, "model_alias": args.alias,
                             "default_generation_settings": {"n_ctx": args.ctx_size // max(1, args.parallel)}})
        elif self.path == "/fake/last_bodies":
            with LOCK:
                self._json(200, LAST_BODIES[-20:])
        elif self.path == "/metrics":
            text = (
                "# HELP llamacpp:requests_processing fake\n# TYPE llamacpp:requests_processing gauge\n"
                "llamacpp:requests_processing 0\n"
                f"# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total {COUNTERS['predicted']}\n"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    def do_POST(self) -> None:
        if self._loading():
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        auth = self.headers.get("Authorization", "")
        if API_KEY and auth != f"Bearer {API_KEY}" and self.headers.get("X-Api-Key") != API_KEY:
            self._json(401, {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, {"error": {"code": 400, "message": "invalid JSON", "type": "invalid_request_error"}})
            return
        if self.path == "/tokenize":
            self._json(200, {"tokens": list(range(len(str(body.get("content", "")).split())))})
        elif self.path == "/completion":  # llama-server's native endpoint, with its timings
            self._native_completion(body)
        elif self.path in ("/v1/embeddings", "/embeddings"):
            self._embeddings(body)
        elif self.path in ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions"):
            self._generate(body, chat="chat" in self.path)
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    def _native_completion(self, body: dict) -> None:
        # tools/server/server.cpp: the non-OAI /completion answers content plus "timings"
        # (prompt_n, prompt_ms, prompt_per_second, predicted_n, predicted_ms,
        # predicted_per_second, cache_n); rates here come from FAKE_PROMPT_TPS / FAKE_DECODE_TPS.
        # With "cache_prompt" the one slot reuses the prefix it holds from the last prompt
        # (token ids) and counts only the rest in prompt_n, re-evaluating at least one token.
        prompt = body.get("prompt", "")
        total = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        held = getattr(self.server, "slot_prompt", [])
        cached = 0
        if body.get("cache_prompt") and isinstance(prompt, list):
            while cached < min(len(held), total - 1) and held[cached] == prompt[cached]:
                cached += 1
        self.server.slot_prompt = prompt if isinstance(prompt, list) else []  # type: ignore[attr-defined]
        prompt_n = total - cached
        predicted_n = int(body.get("n_predict", 16))
        ptps = float(os.environ.get("FAKE_PROMPT_TPS", "200"))
        dtps = float(os.environ.get("FAKE_DECODE_TPS", "50"))
        self._json(200, {"content": "x " * predicted_n, "stop": True, "tokens_evaluated": prompt_n,
                         "tokens_predicted": predicted_n, "timings": {
                             "prompt_n": prompt_n, "prompt_ms": 1000 * prompt_n / ptps,
                             "prompt_per_second": ptps, "predicted_n": predicted_n,
                             "predicted_ms": 1000 * predicted_n / dtps, "predicted_per_second": dtps,
                             "cache_n": cached}})

    def _embeddings(self, body: dict) -> None:
        if not EMBEDDINGS:
            self._json(501, {"error": {"code": 501, "message": "This server does not support embeddings. "
                                       "Start it with `--embeddings`", "type": "not_supported_error"}})
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [((len(str(x)) + j) % 7) / 7 for j in range(8)]}
                for i, x in enumerate(inputs)]
        tokens = sum(len(str(x).split()) for x in inputs)
        self._json(200, {"object": "list", "model": args.alias, "data": data,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _refuse_tools(self, tools: object) -> bool:
        """llama-server's refusal of a malformed ``tools`` array, as it answers it.

        common/chat.cpp ``common_chat_tools_parse_oaicompat`` throws std::runtime_error
        "Failed to parse tools: Missing tool type: ...", which tools/server/server.cpp's
        ex_wrapper answers with HTTP 500 and type ``server_error`` (not 400).
        """
        why = None
        if tools is not None and not isinstance(tools, list):
            why = f"Expected 'tools' to be an array, got {json.dumps(tools)}"
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict) or "type" not in tool:
                why = f"Missing tool type: {json.dumps(tool)}"
            elif tool["type"] != "function":
                why = f"Unsupported tool type: {json.dumps(tool)}"
            elif "function" not in tool:
                why = f"Missing tool function: {json.dumps(tool)}"
            if why:
                break
        if why:
            self._json(500, {"error": {"code": 500, "type": "server_error",
                                       "message": f"Failed to parse tools: {why}; tools = {json.dumps(tools, indent=2)}"}})
        return why is not None

    def _generate(self, body: dict, *, chat: bool) -> None:
        if chat and self._refuse_tools(body.get("tools")):
            return
        r = reply()
        time.sleep(float(r.get("delay", DELAY)))
        content = r.get("content")
        tool_calls = r.get("tool_calls")
        finish = r.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
        if chat:
            prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or []
                                if isinstance(m, dict)) + 5
        else:
            prompt_tokens = len(str(body.get("prompt")).split())
        if prompt_tokens > args.ctx_size // max(1, args.parallel):  # as llama-server answers it
            n_ctx = args.ctx_size // max(1, args.parallel)
            self._json(400, {"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": prompt_tokens,
                                       "n_ctx": n_ctx, "message": f"request ({prompt_tokens} tokens) exceeds the "
                                       f"available context size ({n_ctx} tokens), try increasing it"}})
            return
        completion_tokens = len((content or "").split()) + (len(json.dumps(tool_calls)) // 4 if tool_calls else 0)
        with LOCK:
            COUNTERS["requests"] += 1
            COUNTERS["predicted"] += completion_tokens
            LAST_BODIES.append(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        words = [w + " " for w in (content or "").split(" ")] if content else []
        if words:
            words[-1] = words[-1][:-1]
        want_logprobs = bool(body.get("logprobs"))

        def logprob(word: str) -> dict:
            return {"token": word, "logprob": -0.5, "bytes": list(word.encode()),
                    "top_logprobs": [{"token": word, "logprob": -0.5, "bytes": list(word.encode())}]}

        message: dict = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        if not body.get("stream"):
            choice: dict = {"index": 0, "finish_reason": finish,
                            "logprobs": {"content": [logprob(w) for w in words]} if want_logprobs else None}
            if chat:
                choice["message"] = message
            else:
                choice["text"] = content or ""
            self._json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": args.alias, "choices": [choice],
                "usage": usage, "timings": {"predicted_n": completion_tokens, "predicted_ms": 10.0},
            })
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

        def event(obj: object) -> None:
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
            self.wfile.flush()

        def chunk(delta: dict, fin: str | None = None, word: str | None = None) -> dict:
            lp = {"content": [logprob(word)]} if want_logprobs and word is not None else None
            if chat:
                choice = {"index": 0, "delta": delta, "finish_reason": fin, "logprobs": lp}
            else:
                choice = {"index": 0, "text": delta.get("content") or "", "finish_reason": fin, "logprobs": lp}
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()), "model": args.alias, "choices": [choice]}

        if chat:
            event(chunk({"role": "assistant", "content": None}))
        for n, word in enumerate(words):
            if r.get("die_after") is not None and n >= r["die_after"]:
                os._exit(9)  # a crash mid-stream (reply option "die_after": N words)
            event(chunk({"content": word}, word=word))
            time.sleep(float(r.get("word_delay", 0)))
        for i, call in enumerate(tool_calls or []):
            event(chunk({"tool_calls": [{"index": i, **call}]}))
        event(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def main() -> None:
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"fake-llama-server listening on {args.host}:{args.port}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
