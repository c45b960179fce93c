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


#: The macOS guard: runs the server as its child, forwards SIGTERM/SIGINT to it and waits for it
#: (so ``down`` and restarts stop the server, not just the guard), and kills it if the
#: supervisor disappears (the parent pid changes). Exits with the server's code.
_GUARD = (
    "import os,signal,subprocess,sys,time\n"
    "p=subprocess.Popen(sys.argv[2:]);ppid=int(sys.argv[1])\n"
    "def fwd(sig,frame):\n"
    "    try:\n"
    "        p.send_signal(sig)\n"
    "    except OSError:\n"
    "        pass\n"
    "signal.signal(signal.SIGTERM,fwd);signal.signal(signal.SIGINT,fwd)\n"
    "while p.poll() is None:\n"
    "    if os.getppid()!=ppid:\n"
    "        p.terminate()\n"
    "        try:\n"
    "            p.wait(10)\n"
    "        except subprocess.TimeoutExpired:\n"
    "            p.kill()\n"
    "        break\n"
    "    time.sleep(0.5)\n"
    "sys.exit(p.wait())\n"
)


def needs_orphan_guard(platform: str | None = None) -> bool:
    """True where the kernel cannot kill children with their parent (macOS, other BSDs)."""
    platform = platform or sys.platform
    return not (platform.startswith("linux") or platform == "win32")


def orphan_guard_argv(argv: list[str], *, platform: str | None = None) -> list[str]:
    """Wrap argv so the child dies with us where the kernel cannot arrange it (macOS)."""
    if not needs_orphan_guard(platform):
        return argv
    return [sys.executable, "-c", _GUARD, str(os.getpid()), *argv]


def memory_rss(pid: int) -> int | None:
    """Resident memory of the served process: ``pid`` plus its children (a guard's server)."""
    try:
        import psutil

        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except Exception:  # noqa: BLE001 - gone, or not allowed to look
        return None


def set_oom_score_adj(pid: int, value: int) -> bool:
    """Make the kernel's OOM killer prefer (higher) or spare (lower) ``pid``; Linux only.

    Raising a process's score needs no privilege. False where it cannot be set.
    """
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(max(-1000, min(1000, value))))
        return True
    except OSError:
        return False


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
    """Stop a process now (SIGKILL; TerminateProcess on Windows).

    A process that leads its own group (every instance: ``start_new_session``) is killed with
    its group, so a macOS guard cannot leave its server behind.
    """
    try:
        if os.name == "nt":
            os.kill(pid, signal.SIGTERM)  # TerminateProcess
        elif os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
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
