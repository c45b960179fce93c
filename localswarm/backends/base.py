"""What the supervisor needs from an inference server: how to start it, how to probe it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx


@dataclass(kw_only=True)
class LaunchSpec:
    """Everything needed to start one instance process."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to os.environ
    cwd: Path | None = None


class Backend(Protocol):
    """An inference server the supervisor can run one process per instance of."""

    name: str
    model_id: str  # the id the server reports, and the alias clients see

    def launch_spec(self, *, port: int, api_key: str, threads: int, seed: int) -> LaunchSpec:
        """argv/env for one instance listening on 127.0.0.1:port."""
        ...

    async def probe_ready(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                          timeout: float) -> bool:
        """True once the instance can answer (the start-up check; may generate a token)."""
        ...

    async def probe_health(self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str],
                           timeout: float) -> bool:
        """The periodic check while READY: cheap, and never generates text."""
        ...


async def get_ok(client: httpx.AsyncClient, url: str, headers: dict[str, str], timeout: float) -> bool:
    resp = await client.get(url, headers=headers, timeout=timeout)
    return resp.status_code == 200
