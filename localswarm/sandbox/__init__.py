"""Run untrusted generated code: one process per program, limited, isolated, thrown away.

Each program runs as ``python -I _boot.py`` (see ``_boot.py``) in a fresh temporary
directory that is deleted afterwards, with:

* RLIMIT_CPU, RLIMIT_AS (1 GiB), RLIMIT_FSIZE, RLIMIT_NPROC, no core dumps;
* a wall-clock timeout; the whole process group is SIGKILLed when it expires;
* where the kernel allows: fresh network and mount namespaces (no network at all;
  every mount read-only except the working directory), and as root a drop to
  ``nobody``. Where it does not, the run goes on with the limits only and
  :func:`probe` says what is missing (the harness logs and reports it);
* an empty environment, stdin from /dev/null, stdout/stderr to size-limited files.

A test passes only when the process exits 0 **and** prints a random sentinel that is
written after ``check(...)``, so a solution that calls ``sys.exit(0)`` early fails.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["Limits", "SandboxResult", "isolation_summary", "probe", "run_program", "run_test"]

BOOT = Path(__file__).with_name("_boot.py")


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    as_bytes: int = 1 << 30
    fsize_bytes: int = 16 << 20
    nproc: int = 64
    output_bytes: int = 64 << 10  # how much stdout/stderr is kept for the report


@dataclass
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "error"
    returncode: int | None
    duration_s: float
    stdout: str = ""
    stderr: str = ""
    isolation: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict:
        return asdict(self)


def _interpreter() -> str:
    """The base interpreter (not the venv's, so the project's packages are not importable)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if os.path.exists(base) else sys.executable


def _read(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def run_program(
    source: str,
    *,
    limits: Limits = Limits(),
    isolate: bool = True,
    sentinel: str | None = None,
) -> SandboxResult:
    """Run ``source`` in the sandbox. With ``sentinel``, passing also needs it on stdout."""
    workdir = Path(tempfile.mkdtemp(prefix="lsw-sbx-"))
    outdir = Path(tempfile.mkdtemp(prefix="lsw-sbx-out-"))  # outside the writable dir
    try:
        program = workdir / "program.py"
        program.write_text(source, encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(workdir, 65534, 65534)
            os.chown(program, 65534, 65534)
        cfg = {
            "workdir": str(workdir),
            "program": str(program),
            "status": str(outdir / "status.json"),
            "isolate": isolate,
            "limits": {
                "cpu_s": limits.cpu_s,
                "as_bytes": limits.as_bytes,
                "fsize_bytes": limits.fsize_bytes,
                "nproc": limits.nproc,
            },
        }
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        start = time.monotonic()
        with open(outdir / "stdout", "wb") as out, open(outdir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [_interpreter(), "-I", str(BOOT), json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=str(workdir),
                start_new_session=True, close_fds=True,
            )
            timed_out = False
            try:
                rc = proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                rc = None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, stragglers too
                except (ProcessLookupError, PermissionError):
                    pass
                if rc is None:
                    proc.wait()
        duration = time.monotonic() - start
        stdout = _read(outdir / "stdout", limits.output_bytes)
        stderr = _read(outdir / "stderr", limits.output_bytes)
        isolation: dict = {}
        try:
            isolation = json.loads(_read(outdir / "status.json", 1 << 16) or "{}")
        except json.JSONDecodeError:
            pass
        if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):  # wall limit, soft/hard CPU limit
            status = "timeout"
        elif rc == 0 and (sentinel is None or sentinel in stdout):
            status = "passed"
        else:
            status = "failed"
        return SandboxResult(status, rc, duration, stdout, stderr, isolation)
    except OSError as exc:
        return SandboxResult("error", None, 0.0, "", f"sandbox error: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(outdir, ignore_errors=True)


def run_test(program: str, test: str, entry_point: str, *, limits: Limits = Limits(),
             isolate: bool = True) -> SandboxResult:
    """HumanEval style: ``program``, then the problem's ``test`` and ``check(entry_point)``."""
    sentinel = "LSW-PASS-" + secrets.token_hex(12)
    source = f"{program}\n\n{test}\n\ncheck({entry_point})\nprint({sentinel!r})\n"
    return run_program(source, limits=limits, isolate=isolate, sentinel=sentinel)


_PROBE_SRC = r"""
import json, os, socket
res = {}
try:
    s = socket.socket()
    s.settimeout(1)
    s.connect(("127.0.0.1", 9))  # discard port: connected or refused both mean reachable
    res["loopback"] = "reachable"
except ConnectionRefusedError:
    res["loopback"] = "reachable"
except OSError as exc:
    res["loopback"] = type(exc).__name__ + ": " + str(exc)
try:
    ifs = [n for _, n in socket.if_nameindex()]
except OSError:
    ifs = []
res["interfaces"] = ifs
try:
    open("/tmp/.lsw-probe-write", "w").close()
    os.unlink("/tmp/.lsw-probe-write")
    res["tmp_writable"] = True
except OSError:
    res["tmp_writable"] = False
print(json.dumps(res))
"""


def probe(limits: Limits = Limits()) -> dict:
    """What isolation this machine gives (runs one tiny program in the sandbox)."""
    r = run_program(_PROBE_SRC, limits=limits)
    info = dict(r.isolation)
    try:
        info.update(json.loads(r.stdout.strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError):
        info["probe_error"] = (r.stderr or r.stdout)[-500:]
    return info


def isolation_summary(info: dict) -> str:
    """One line for logs and the report."""
    parts = [
        "network namespace (no interfaces up)" if info.get("net_ns") else "NO network isolation",
        "read-only filesystem except a throwaway dir" if info.get("readonly_fs")
        else "filesystem writable (throwaway cwd only)",
        "runs as nobody" if info.get("nobody") else "runs as the invoking user",
        "rlimits CPU/AS 1 GiB/FSIZE/NPROC, wall timeout",
    ]
    line = "; ".join(parts)
    if info.get("notes"):
        line += " (" + "; ".join(info["notes"]) + ")"
    return line
