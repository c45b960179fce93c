"""Run each candidate answer on the user's examples, in parallel, in the sandbox.

The I/O half of the ``exec`` vote: :mod:`localswarm.consensus.examples` finds the
examples and builds each program (pure); this module runs them, one sandboxed process
per candidate, and returns how many examples each candidate passed. The vote then uses
those counts as its first key (:func:`localswarm.consensus.vote.vote`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..consensus.examples import (MAX_EXAMPLES, Example, answer_code, defined_names, find_examples,
                                  parse_results, program)
from ..consensus.model import Candidate, VoteResult
from ..consensus.vote import vote
from . import Limits, SandboxResult, isolation_summary, probe, run_program
from .forkserver import run_programs

logger = logging.getLogger(__name__)

__all__ = ["CHECK_LIMITS", "Isolation", "checked_vote", "examples_for", "exec_enabled", "isolation",
           "RUNNERS", "relevant_examples", "run_examples", "run_examples_each"]

#: Limits for one candidate's run: the examples are small calls, not a test suite.
CHECK_LIMITS = Limits(wall_s=3.0, cpu_s=2, as_bytes=512 << 20)


@dataclass(frozen=True)
class Isolation:
    """What the sandbox achieves on this machine: ``full`` (network and mount namespaces
    with a read-only filesystem) or ``limits`` (resource limits only), and why."""

    level: str
    summary: str

    @property
    def full(self) -> bool:
        return self.level == "full"


@functools.cache
def isolation() -> Isolation:
    """Probe once per process (one tiny sandboxed program, ~0.1 s)."""
    info = probe(CHECK_LIMITS)
    full = bool(info.get("net_ns") and info.get("readonly_fs"))
    return Isolation("full" if full else "limits", isolation_summary(info))


#: How the candidates run: ``fork`` (the default: one child per candidate of a sandboxed
#: fork server kept warm for the process, see :mod:`localswarm.sandbox.forkserver`),
#: ``fork-cold`` (a fork server started for this request only) or ``oneshot`` (one
#: sandboxed interpreter per candidate). Without ``os.fork`` it is always ``oneshot``.
RUNNERS = ("fork", "fork-cold", "oneshot")


def run_examples_each(codes: Sequence[str], examples: Sequence[Example], *, isolate: bool = True,
                      workers: int | None = None, runner: str = "fork") -> list[list[bool] | None]:
    """Per candidate, which examples it passed, in order (None: no Python code)."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, not {runner!r}")
    if not examples or not codes:
        return [None] * len(codes)
    sentinels = ["LSW-EXEC-" + secrets.token_hex(8) + ":" for _ in codes]
    todo = [i for i, c in enumerate(codes) if c.strip()]
    sources = [program(codes[i], examples, sentinels[i]) for i in todo]
    results: list[SandboxResult | None] = []
    if runner.startswith("fork") and hasattr(os, "fork"):
        try:
            results = list(run_programs(sources, limits=CHECK_LIMITS, isolate=isolate, warm=runner == "fork"))
        except OSError as exc:
            logger.warning("exec check: fork server failed (%s); one interpreter per answer instead", exc)
    if not results and sources:
        workers = workers or min(len(sources), max(1, os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lsw-exec") as pool:
            results = list(pool.map(lambda src: run_program(src, limits=CHECK_LIMITS, isolate=isolate), sources))
    out: list[list[bool] | None] = [None] * len(codes)
    for i, r in zip(todo, results):
        parsed = parse_results(r.stdout if r is not None else "", sentinels[i], len(examples))
        out[i] = parsed if parsed is not None else [False] * len(examples)
    return out


def run_examples(codes: Sequence[str], examples: Sequence[Example], *, isolate: bool = True,
                 workers: int | None = None, runner: str = "fork") -> list[int | None]:
    """Examples passed per candidate (None: the candidate carries no Python code).

    Examples calling a function that no candidate defines are left out first; the
    caller passes only the examples that remain (see :func:`relevant_examples`).
    """
    each = run_examples_each(codes, examples, isolate=isolate, workers=workers, runner=runner)
    return [None if r is None else sum(r) for r in each]


def examples_for(codes: Sequence[str], text: str) -> list[Example]:
    """The examples in ``text`` that call a function some answer defines, at most
    ``MAX_EXAMPLES`` (chosen after the filter, so a long conversation's unrelated
    examples do not crowd out the relevant ones)."""
    return relevant_examples(codes, find_examples(text, limit=16 * MAX_EXAMPLES))[:MAX_EXAMPLES]


def relevant_examples(codes: Sequence[str], examples: Sequence[Example]) -> list[Example]:
    """The examples whose function at least one candidate defines."""
    names: set[str] = set()
    for code in codes:
        names |= defined_names(code)
    return [e for e in examples if e.function in names]


@functools.cache
def exec_enabled(mode: str) -> bool:
    """Whether answers are run on examples under setting ``mode`` (auto/on/off).

    ``auto`` turns it on only where the sandbox isolates fully. Says why once, in the log.
    """
    if mode == "off":
        logger.info("exec check: off (setting exec_check=off)")
        return False
    iso = isolation()
    if mode == "on":
        logger.info("exec check: on (setting exec_check=on); sandbox: %s", iso.summary)
        return True
    if iso.full:
        logger.info("exec check: on (sandbox isolates fully: %s)", iso.summary)
        return True
    logger.warning("exec check: off: this machine's sandbox gives resource limits only (%s); "
                   "set exec_check=on to run answers anyway", iso.summary)
    return False


async def checked_vote(candidates: list[Candidate], request_text: str, *, strategy: str,
                       threshold: float, mode: str, runner: str = "fork") -> VoteResult:
    """The vote, run-checked where it can be: see :mod:`localswarm.consensus.strategies`.

    ``similarity`` (the default) and ``exec`` run every answer on the request's examples
    when checking is enabled, there are examples calling a function some answer defines,
    and there are two answers or more to choose from; otherwise nothing is executed and
    the vote is by similarity (an ``exec`` request then says why in ``notes``).
    """
    why = None
    if strategy in ("similarity", "exec"):
        if len(candidates) < 2:
            why = "one answer: nothing to choose"
        elif not await asyncio.to_thread(exec_enabled, mode):
            why = "exec checking is off on this swarm (exec_check)"
        else:
            codes = [answer_code(c.text, c.tool_calls) for c in candidates]
            examples = examples_for(codes, request_text)
            if examples:
                passes = await asyncio.to_thread(run_examples, codes, examples, runner=runner)
                return vote(candidates, strategy="exec", threshold=threshold,
                            passes=passes, examples=len(examples))
            why = "no runnable examples in the request for a function the answers define"
    base = "similarity" if strategy == "exec" else strategy
    result = vote(candidates, strategy=base, threshold=threshold)
    if strategy == "exec" and why:
        result.notes.append(f"exec: nothing executed: {why}")
    return result
