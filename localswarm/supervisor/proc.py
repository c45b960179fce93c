"""Every platform difference in process control lives here, one small function each.

Linux: children get ``PR_SET_PDEATHSIG(SIGKILL)`` so they die with the supervisor even if
it is SIGKILLed. macOS has no such call: children are watched by a guard that polls the
parent. Windows: a Job Object with KILL_ON_JOB_CLOSE would be the equivalent; without
signals we terminate with ``TerminateProcess``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import Any, Callable

PR_SET_PDEATHSIG = 1


def _linux_preexec(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before prctl took effect: then we are already orphaned.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def spawn_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``subprocess.Popen``/``asyncio.create_subprocess_exec``.

    The child gets its own process group (so a terminal's Ctrl-C reaches only the
    supervisor, which then stops the children in order) and, on Linux, a death signal.
    """
    if sys.platform.startswith("linux"):
        return {"start_new_session": True, "preexec_fn": _linux_preexec(os.getpid())}
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def orphan_guard_argv(argv: list[str]) -> list[str]:
    """Wrap argv so the child dies with us where the kernel cannot arrange it (macOS)."""
    if sys.platform.startswith("linux") or os.name == "nt":
        return argv
    guard = (
        "import os,sys,subprocess,time\n"
        "p=subprocess.Popen(sys.argv[2:]);ppid=int(sys.argv[1])\n"
        "while p.poll() is None:\n"
        "    if os.getppid()!=ppid:\n"
        "        p.kill();break\n"
        "    time.sleep(0.5)\n"
        "sys.exit(p.wait())\n"
    )
    return [sys.executable, "-c", guard, str(os.getpid()), *argv]


def terminate(pid: int) -> None:
    """Ask a process to stop (SIGTERM; TerminateProcess on Windows)."""
    try:
        if os.name == "nt":
            os.kill(pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def kill(pid: int) -> None:
    """Stop a process now (SIGKILL; TerminateProcess on Windows)."""
    try:
        if os.name == "nt":
            os.kill(pid, signal.SIGTERM)  # TerminateProcess
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def is_alive(pid: int) -> bool:
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False
