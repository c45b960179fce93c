"""Running a real gateway (uvicorn on a loopback port) inside a test, over real instances."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import uvicorn

from localswarm import paths
from localswarm.backends.llama_server import LlamaServerBackend
from localswarm.config import Settings
from localswarm.gateway.app import create_app, timing_from
from localswarm.supervisor.instance import free_port as free_tcp_port  # noqa: F401 - re-exported for tests
from localswarm.supervisor.supervisor import Supervisor

REPO = Path(__file__).resolve().parents[1]
FAKE_SERVER = REPO / "tests" / "fakes" / "fake_llama_server.py"


def fake_binary(tmp_path: Path) -> Path:
    """An executable that runs the FAKE llama-server (tests/fakes/fake_llama_server.py)."""
    script = tmp_path / "fake-llama-server"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "$@"\n')
    script.chmod(0o755)
    return script


def fake_backend(tmp_path: Path, **kw: Any) -> LlamaServerBackend:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF fake")
    return LlamaServerBackend(binary=fake_binary(tmp_path), model_path=model, model_id="fake-model", **kw)


def set_fake_replies(monkeypatch: Any, replies: list[Any]) -> None:
    monkeypatch.setenv("FAKE_REPLIES", json.dumps(replies))


class RunningGateway:
    """The real app served by uvicorn in a thread, supervising real instance processes."""

    def __init__(self, settings: Settings, backend: LlamaServerBackend, *, instances: int) -> None:
        self.settings = settings
        self.supervisor = Supervisor(
            backend, instances=instances, log_dir=paths.state_dir() / "logs",
            timing=timing_from(settings), threads=settings.threads,
        )
        self.app = create_app(settings, self.supervisor, model_id=backend.model_id)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on",
                           timeout_graceful_shutdown=5)
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())

    def __enter__(self) -> RunningGateway:
        self.thread.start()
        self.wait_ready(all_=True)
        return self

    def wait_ready(self, *, all_: bool = False, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        want = len(self.supervisor.instances) if all_ else 1
        while time.monotonic() < deadline:
            if self.server.started and len(self.supervisor.ready_instances()) >= want:
                return
            if not self.thread.is_alive():
                raise RuntimeError("gateway thread died")
            time.sleep(0.05)
        raise TimeoutError(f"{want} instances not ready: {self.supervisor.status()}")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 60), **kw)


def pids_of(binary_fragment: str) -> list[int]:
    """PIDs whose command line mentions ``binary_fragment`` (zombies excluded)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(binary_fragment in part for part in (p.info["cmdline"] or [])):
                found.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [pid for pid in found if pid != os.getpid()]


BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str) -> ModuleType:
    """The bench script ``bench/<name>.py`` as a module (tests reuse the benchmarks' own code).

    ``bench/`` goes on ``sys.path`` (the scripts import ``docs_section`` as a sibling) and the
    module is registered under ``name`` before it runs (dataclasses look their module up).
    """
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
