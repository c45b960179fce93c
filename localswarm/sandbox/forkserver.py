"""One sandbox, many programs: a fork server for the ``exec`` vote.

:func:`localswarm.sandbox.run_program` starts one interpreter per program and sets up
fresh namespaces each time (``unshare``, every mount remounted read-only, the stdlib
preloaded, the drop to ``nobody``): about 100 ms of start-up per program on a quiet
2-core machine, paid five times per request. :class:`ForkServer` pays it once: one
``python -I _boot.py`` in ``serve`` mode sets the namespaces up, then forks one child
per program. Each child gets what a one-shot run gets (its own throwaway directory,
its own session killed as a group at the wall limit, rlimits, ``nobody``, stdin from
/dev/null, size-limited output); what the children of one server share is the network
namespace (no interfaces up) and the read-only view of the filesystem.

:func:`run_programs` keeps one server per (limits, isolation) warm for the life of the
process, so a request pays only the forks; a server that has died (or been killed) is
replaced on the next call. The children of different requests then share the server's
namespaces too: each still runs in its own directory and session, as ``nobody``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from . import BOOT, Limits, SandboxResult, _interpreter

__all__ = ["ForkServer", "close_shared", "run_programs"]


class ForkServer:
    """A sandboxed parent process that runs programs in forked children."""

    def __init__(self, *, limits: Limits = Limits(), isolate: bool = True, start_timeout: float = 10.0) -> None:
        self.limits = limits
        self.workroot = Path(tempfile.mkdtemp(prefix="lsw-fsrv-"))
        if os.geteuid() == 0:
            os.chmod(self.workroot, 0o711)  # nobody may enter its own job dir, not list the others
        cfg = {"serve": True, "workdir": str(self.workroot), "isolate": isolate,
               "output_bytes": limits.output_bytes,
               "limits": {"cpu_s": limits.cpu_s, "as_bytes": limits.as_bytes,
                          "fsize_bytes": limits.fsize_bytes, "nproc": limits.nproc}}
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.workroot), "TMPDIR": str(self.workroot),
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        self._proc = subprocess.Popen(
            [_interpreter(), "-I", str(BOOT), json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, cwd=str(self.workroot), start_new_session=True, close_fds=True,
        )
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[SandboxResult]] = {}
        self._next = 0
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # the server's isolation report
        try:
            self.isolation = json.loads(line)
        except json.JSONDecodeError:
            self.close()
            raise OSError(f"sandbox fork server did not start: {line[:200]!r}") from None
        self._reader = threading.Thread(target=self._read, name="lsw-fsrv", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None and self._reader.is_alive()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                res = json.loads(raw)
            except json.JSONDecodeError:
                continue
            with self._lock:
                fut = self._waiting.pop(str(res.get("id")), None)
            if fut is not None:
                fut.set_result(_result(res, self.isolation))
        with self._lock:  # the server died: nothing more will come
            waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            fut.set_result(SandboxResult("error", None, 0.0, "", "sandbox fork server exited"))

    def submit(self, source: str, *, wall_s: float | None = None) -> Future[SandboxResult]:
        """Start ``source`` in a child now; the future holds its result."""
        fut: Future[SandboxResult] = Future()
        with self._lock:
            self._next += 1
            job_id = str(self._next)
            self._waiting[job_id] = fut
        line = json.dumps({"id": job_id, "source": source, "wall_s": wall_s or self.limits.wall_s}) + "\n"
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(line.encode())
            self._proc.stdin.flush()
        except (OSError, ValueError):
            with self._lock:
                self._waiting.pop(job_id, None)
            fut.set_result(SandboxResult("error", None, 0.0, "", "sandbox fork server is gone"))
        return fut

    def close(self) -> None:
        """Stop the server (its children are killed with it) and delete its directory."""
        try:
            if self._proc.stdin:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=self.limits.wall_s + 2)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._proc.wait()
        shutil.rmtree(self.workroot, ignore_errors=True)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(res: dict, isolation: dict) -> SandboxResult:
    rc = res.get("rc")
    if res.get("timed_out") or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        status = "timeout"
    elif rc == 0:
        status = "passed"
    else:
        status = "failed"
    iso = {k: isolation.get(k) for k in ("net_ns", "mnt_ns", "readonly_fs", "nobody", "notes")}
    return SandboxResult(status, rc, float(res.get("duration_s") or 0.0), res.get("stdout") or "",
                         res.get("stderr") or "", iso)


_shared: dict[tuple[Limits, bool], ForkServer] = {}
_shared_lock = threading.Lock()


def _server(limits: Limits, isolate: bool) -> ForkServer:
    with _shared_lock:
        srv = _shared.get((limits, isolate))
        if srv is None or not srv.alive:
            if srv is not None:
                srv.close()
            srv = _shared[(limits, isolate)] = ForkServer(limits=limits, isolate=isolate)
        return srv


@atexit.register
def close_shared() -> None:
    """Stop the warm servers (at exit; tests call it to start from cold)."""
    with _shared_lock:
        servers = list(_shared.values())
        _shared.clear()
    for srv in servers:
        srv.close()


def run_programs(sources: Sequence[str], *, limits: Limits = Limits(), isolate: bool = True,
                 warm: bool = True) -> list[SandboxResult]:
    """Run every program at once, each in a child of a fork server; results in order.

    ``warm``: use (or start) the process's shared server; otherwise start one for this
    batch and stop it after.
    """
    if not sources:
        return []
    start = time.monotonic()
    deadline = start + limits.wall_s + 10
    if warm:
        server = _server(limits, isolate)
        futs = [server.submit(s) for s in sources]
        return [f.result(timeout=max(0.1, deadline - time.monotonic())) for f in futs]
    with ForkServer(limits=limits, isolate=isolate) as server:
        futs = [server.submit(s) for s in sources]
        return [f.result(timeout=max(0.1, deadline - time.monotonic())) for f in futs]
