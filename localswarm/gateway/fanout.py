"""Send one request to every ready instance, gather answers until quorum or timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from localswarm import upstream
from localswarm.consensus import Candidate
from localswarm.errors import APIError, UpstreamError
from localswarm.supervisor.instance import Instance
from localswarm.upstream import Answer

logger = logging.getLogger(__name__)


@dataclass
class Gathered:
    """What a fan-out brought back: answers in arrival order, and why the others are missing."""

    answers: list[Answer] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # instance → why it is not in the vote
    errors: list[UpstreamError] = field(default_factory=list)
    early_stop: bool = False
    asked: int = 0


async def gather(
    client: httpx.AsyncClient,
    instances: Sequence[Instance],
    bodies: Sequence[dict[str, Any]],
    *,
    timeout: float,
    path: str = "/v1/chat/completions",
    quorum: Callable[[list[Candidate], int], bool] | None = None,
) -> Gathered:
    """Fan out; return when all answered, a quorum agrees, or the timeout strikes.

    Stragglers are cancelled (their connections closed) and named in ``failed``.
    """
    result = Gathered(asked=len(instances))
    tasks = {
        asyncio.create_task(upstream.ask(client, inst, path, body, timeout), name=f"fanout-{inst.name}"): inst
        for inst, body in zip(instances, bodies)
    }
    pending = set(tasks)
    deadline = time.monotonic() + timeout
    try:
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                for task in pending:
                    result.failed[tasks[task].name] = f"timed out after {timeout:g}s"
                break
            for task in done:
                name = tasks[task].name
                exc = task.exception()
                if exc is None:
                    result.answers.append(task.result())
                elif isinstance(exc, UpstreamError):
                    result.errors.append(exc)
                    result.failed[name] = f"HTTP {exc.status}: {exc.message}"
                else:
                    result.failed[name] = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    logger.warning("%s failed: %r", name, exc)
            if pending and quorum and result.answers and quorum(list(result.answers), len(instances)):
                result.early_stop = True
                for task in pending:
                    result.failed[tasks[task].name] = "cancelled: quorum reached"
                break
    finally:
        await cancel_and_wait(pending)
    return result


async def cancel_and_wait(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel tasks once and wait for their cleanup (closing upstream connections).

    ``asyncio.wait`` rather than ``gather``: cancelling a waiting ``gather`` cancels its
    children a second time, which interrupts httpx mid-close and leaves the upstream
    connection open, so llama-server keeps decoding for nobody.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


def raise_for_nothing(gathered: Gathered) -> None:
    """No answer came back: answer with the instances' own 4xx if they agree, else 502/504."""
    if gathered.answers:
        return
    client_errors = [e for e in gathered.errors if 400 <= e.status < 500 or e.refusal]
    if client_errors:
        e = client_errors[0]
        code = "context_length_exceeded" if "context" in e.message.lower() else None
        raise APIError(400 if e.status != 404 else 404, e.message, code=code)
    reasons = "; ".join(f"{k}: {v}" for k, v in gathered.failed.items())
    if gathered.failed and all(v.startswith("timed out") for v in gathered.failed.values()):
        raise APIError(504, f"No instance answered in time ({reasons}).", code="upstream_timeout")
    raise APIError(502, f"Every instance failed ({reasons or 'no instance asked'}).", code="upstream_error")
