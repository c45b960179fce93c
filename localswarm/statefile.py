"""The state file that lets `down` and `status` find a running (possibly detached) swarm."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from localswarm import paths
from localswarm.hosts import client_host


def state_file() -> Path:
    return paths.state_dir() / "swarm.json"


def write(data: dict[str, Any]) -> Path:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path


def read() -> dict[str, Any] | None:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        data = json.loads(state_file().read_text())
        if isinstance(data, dict):
            return data
    return None


def remove(pid: int | None = None) -> None:
    """Remove the state file (only if it belongs to ``pid`` when given)."""
    data = read()
    if pid is not None and data and data.get("pid") != pid:
        return
    with contextlib.suppress(FileNotFoundError):
        state_file().unlink()


def gateway_url(data: dict[str, Any] | None) -> str | None:
    """``http://HOST:PORT`` of the swarm a state file describes (wildcards → loopback)."""
    if not data or not data.get("port"):
        return None
    return f"http://{client_host(str(data.get('host') or '127.0.0.1'))}:{data['port']}"
