"""One inference-server process: start, readiness, health checks, restart with backoff, stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from localswarm.backends.base import Backend
from localswarm.config import Settings, SupervisorTiming
from localswarm.errors import UpstreamError
from localswarm.logs import rotate_if_needed
from localswarm.supervisor import proc
from localswarm.supervisor.states import State, check_transition

logger = logging.getLogger(__name__)

UNHEALTHY_AFTER = 3  # consecutive failed health checks of an idle instance


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class InstanceStats:
    """Counters of one instance, written only through :meth:`Instance.request`."""

    requests: int = 0
    failures: int = 0
    in_flight: int = 0
    latency_total: float = 0.0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    restarts: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        done = self.requests - self.failures
        return {
            "requests": self.requests,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "avg_latency_s": round(self.latency_total / done, 3) if done > 0 else None,
            "tokens_per_s": (
                round(self.completion_tokens / self.generation_seconds, 1) if self.generation_seconds > 0 else None
            ),
            "completion_tokens": self.completion_tokens,
            "restarts": self.restarts,
        }


class Work:
    """One request to an instance, in flight from creation until closed (see :meth:`Instance.request`).

    Close it once: :meth:`done` (tokens decoded and decoding time, else the wall time),
    :meth:`failed`, or :meth:`abandoned` (cut off by the gateway, not the instance's fault:
    a losing stream of the fastest relay, a client that left).
    """

    def __init__(self, stats: InstanceStats) -> None:
        self._stats = stats
        self._started = time.monotonic()
        self._open = True
        stats.requests += 1
        stats.in_flight += 1

    def _close(self) -> bool:
        if not self._open:
            return False
        self._open = False
        self._stats.in_flight -= 1
        return True

    def done(self, *, tokens: int = 0, generation_s: float | None = None) -> None:
        if self._close():
            latency = time.monotonic() - self._started
            self._stats.latency_total += latency
            self._stats.completion_tokens += tokens
            self._stats.generation_seconds += generation_s if generation_s else latency

    def failed(self) -> None:
        if self._close():
            self._stats.failures += 1

    def abandoned(self) -> None:
        self._close()

    def __enter__(self) -> Work:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        # Any exception, a cancellation included (a straggler cut off by the quorum), counts
        # as a failure, except the instance refusing a malformed request (the client's
        # error); leaving the block normally without an outcome counts as done.
        if isinstance(exc, UpstreamError) and exc.refusal:
            self.abandoned()
        elif exc_type is not None:
            self.failed()
        else:
            self.done()


@dataclass(kw_only=True)
class InstanceTiming(SupervisorTiming):
    """The supervision timings of :class:`~localswarm.config.Settings`, plus how long a busy
    instance may fail health checks (the request timeout and a margin)."""

    busy_grace: float = 330.0

    @classmethod
    def from_settings(cls, settings: Settings) -> InstanceTiming:
        shared = {f.name: getattr(settings, f.name) for f in dataclasses.fields(SupervisorTiming)}
        return cls(**shared, busy_grace=settings.instance_timeout + 30)


@dataclass(eq=False)
class Instance:
    """A supervised process. The supervisor owns it and its state; the gateway reads it and
    opens each request to it with :meth:`request`, which keeps the stats."""

    name: str
    backend: Backend
    threads: int
    seed: int
    log_dir: Path
    client: httpx.AsyncClient
    timing: InstanceTiming = field(default_factory=InstanceTiming)
    extra_args: tuple[str, ...] = ()  # per-instance flags, e.g. the GPU it is pinned to
    device: str = "ram"  # whose memory it uses: "ram" (CPU) or "gpuN" (the memory guard reads it)
    # The memory guard (supervisor.memguard.MemoryGuard): every (re)start waits in its
    # admit() until the instance fits; started() when it is ready or gave up. None: no guard.
    guard: Any = None

    state: State = State.STOPPED
    port: int = 0
    api_key: str = ""
    process: asyncio.subprocess.Process | None = None
    stats: InstanceStats = field(default_factory=InstanceStats)
    last_error: str | None = None
    started_at: float = 0.0  # monotonic time of the last spawn: the newest goes first under pressure
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _ready_event: asyncio.Event = field(default_factory=asyncio.Event)

    # -- what the gateway reads ---------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def request(self) -> Work:
        """Account one request: ``with inst.request() as work: ... work.done(tokens=...)``.

        It is in flight until closed; the drain on stop and the busy grace of health checks
        read that count.
        """
        return Work(self.stats)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    # -- state machine ------------------------------------------------------------------
    def swap_state(self, expected: State | tuple[State, ...], new: State) -> None:
        """The only way state changes: validate, log, wake :meth:`wait_ready`."""
        allowed = expected if isinstance(expected, tuple) else (expected,)
        if self.state not in allowed:
            raise RuntimeError(f"{self.name}: expected state {allowed}, found {self.state.value}")
        check_transition(self.state, new)
        old, self.state = self.state, new
        logger.info("%s: %s -> %s", self.name, old.value, new.value)
        if new is State.READY:
            self._ready_event.set()
        else:
            self._ready_event.clear()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the run loop (returns at once; see :meth:`wait_ready`)."""
        if self._task and not self._task.done():
            raise RuntimeError(f"Cannot start {self.name}: already running")
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"instance-{self.name}")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self, *, drain_timeout: float | None = None) -> None:
        """Drain in-flight requests, SIGTERM, SIGKILL after the grace period, reap.

        The drain lasts at most ``drain_timeout`` seconds (default: the stop grace); the
        instance leaves READY first, so no new request is routed to it meanwhile.
        """
        self._stopping = True
        if self._task:
            self._task.cancel()
            # wait(), not `await task`: a cancellation aimed at stop() itself still propagates.
            await asyncio.wait({self._task})
            if not self._task.cancelled() and self._task.exception() is not None:
                logger.debug("%s: run loop ended with %r", self.name, self._task.exception())
        if self.state is State.STOPPED:
            return
        if self.state is not State.STOPPING:
            self.swap_state(tuple(State), State.STOPPING)
        await asyncio.shield(self._terminate(drain=True, drain_timeout=drain_timeout))
        self.swap_state(State.STOPPING, State.STOPPED)

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an odd environment (disk full...): never stay READY/STARTING
            logger.exception("%s: supervision loop failed", self.name)
            self.last_error = f"internal error: {exc!r}"
            await self._terminate(drain=False)
            if self.state in (State.STARTING, State.READY):
                self.swap_state(self.state, State.BACKOFF)
            if self.state in (State.BACKOFF, State.STOPPED):
                self.swap_state(self.state, State.FATAL)

    async def _loop(self) -> None:
        failures: list[float] = []
        delay = self.timing.backoff_initial
        while not self._stopping:
            if self.guard is not None:  # never (re)start what memory cannot hold
                await self.guard.admit(self)
            self.swap_state((State.STOPPED, State.BACKOFF, State.FATAL), State.STARTING)
            started = self.started_at = time.monotonic()
            try:
                reason = await self._start_once()
            finally:
                if self.guard is not None:
                    self.guard.started(self)
            if reason is None:
                self.swap_state(State.STARTING, State.READY)
                reason = await self._watch()
            # Leave READY at once, so the gateway stops sending requests to a dead port.
            self.swap_state((State.STARTING, State.READY), State.BACKOFF)
            await self._terminate(drain=False)
            self.last_error = reason
            now = time.monotonic()
            if now - started > self.timing.fast_failure_window:
                failures.clear()
                delay = self.timing.backoff_initial
            failures.append(now)
            if len(failures) >= self.timing.max_fast_failures:
                self.swap_state(State.BACKOFF, State.FATAL)
                logger.error(
                    "%s: gave up after %d fast failures; last: %s (log: %s)",
                    self.name, len(failures), reason, self.log_path,
                )
                return
            logger.warning("%s: %s; restarting in %.1fs", self.name, reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.timing.backoff_max)
            self.stats.restarts += 1

    async def _start_once(self) -> str | None:
        """Spawn and wait for /health 200. Returns why it failed, or None when ready."""
        self.port = free_port()
        self.api_key = secrets.token_urlsafe(24)
        spec = self.backend.launch_spec(port=self.port, api_key=self.api_key, threads=self.threads, seed=self.seed)
        spec.argv.extend(self.extra_args)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        rotate_if_needed(self.log_path)  # one rotated file per instance (issue 7)
        env = {**os.environ, **spec.env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(spec.argv)}\n".encode())
            log.flush()
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *proc.orphan_guard_argv(spec.argv),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    cwd=spec.cwd,
                    **proc.spawn_kwargs(),
                )
            except OSError as exc:
                return f"cannot execute {spec.argv[0]}: {exc}"
        if self.guard is not None:
            self.guard.spawned(self)
        deadline = time.monotonic() + self.timing.start_timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                return f"exited with code {self.process.returncode} while starting"
            try:
                if await self.backend.probe_ready(self.client, self.base_url, self.auth_headers(),
                                                  self.timing.health_timeout):
                    return None
            except httpx.HTTPError as exc:
                logger.debug("%s: not up yet: %r", self.name, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), 0.2)
        return f"not ready after {self.timing.start_timeout:.0f}s"

    async def _watch(self) -> str:
        """While READY: wait for the process to exit or for health checks to fail."""
        assert self.process is not None
        exited = asyncio.ensure_future(self.process.wait())
        failures = 0
        last_ok = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({exited}, timeout=self.timing.health_interval)
                if done:
                    return f"exited with code {self.process.returncode}"
                if await self._healthy():
                    failures, last_ok = 0, time.monotonic()
                    continue
                failures += 1
                busy = self.stats.in_flight > 0
                # A busy server answers health checks slowly: never kill it for that alone.
                if failures >= UNHEALTHY_AFTER and (
                    not busy or time.monotonic() - last_ok > self.timing.busy_grace
                ):
                    return f"unhealthy ({failures} failed health checks)"
        finally:
            exited.cancel()

    async def _healthy(self) -> bool:
        try:
            return await self.backend.probe_health(self.client, self.base_url, self.auth_headers(),
                                                   self.timing.health_timeout)
        except httpx.HTTPError:
            return False

    async def _terminate(self, *, drain: bool, drain_timeout: float | None = None) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        if drain:
            deadline = time.monotonic() + (self.timing.stop_grace if drain_timeout is None else drain_timeout)
            while self.stats.in_flight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        proc.terminate(process.pid)
        try:
            await asyncio.wait_for(process.wait(), self.timing.stop_grace)
        except asyncio.TimeoutError:
            logger.warning("%s: did not stop in %.0fs, killing", self.name, self.timing.stop_grace)
            proc.kill(process.pid)
            await process.wait()

    def info(self) -> dict[str, object]:
        """A JSON-able snapshot for `localswarm status`."""
        memory = proc.memory_rss(self.pid) if self.pid else None  # the server's, not a guard's
        return {
            "name": self.name,
            "state": self.state.value,
            "port": self.port,
            "pid": self.pid,
            "threads": self.threads,
            "memory_rss": memory,
            "device": self.device,
            "uptime_s": round(time.monotonic() - self.started_at, 3) if self.pid else None,
            "last_error": self.last_error,
            "log": str(self.log_path),
            **self.stats.as_dict(),
        }
