"""Sandbox bootstrap: run as ``python -I _boot.py CONFIG_JSON`` by :mod:`localswarm.sandbox`.

Standard library only, and never imported by the package (it is a script). In order:

1. resource limits (CPU seconds, address space, file size, processes, no core dumps);
2. where the kernel allows it, fresh network and mount namespaces (``unshare(2)``):
   as root directly, otherwise inside a new user namespace. The network namespace has
   only a loopback interface that is down, so nothing, not even 127.0.0.1, is reachable;
3. in the mount namespace every mount is remounted read-only except the throwaway
   working directory (bind-mounted onto itself first);
4. as root: the stdlib modules that solutions commonly import are preloaded, then the
   process drops to ``nobody`` (which drops every capability, so the read-only mounts
   cannot be undone, and makes RLIMIT_NPROC apply);
5. the program runs in this interpreter (``exec``), ``__name__ == "__main__"``.

What was achieved is written as one JSON line to the file named ``status`` in the
config (opened before the program runs; the parent reads it).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
_FLAG_BITS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

# Preloaded before dropping to nobody (the interpreter's own files may be unreadable then).
PRELOAD = (
    "abc array bisect cmath collections collections.abc copy dataclasses datetime decimal enum "
    "fractions functools hashlib heapq itertools json math numbers operator random re statistics "
    "string textwrap time typing unicodedata io os signal socket traceback linecache "
    "encodings.idna encodings.ascii encodings.latin_1 encodings.utf_16 encodings.utf_32"
).split()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _err(what: str) -> str:
    return f"{what}: {os.strerror(ctypes.get_errno())}"


def _set_limits(limits: dict) -> None:
    def lim(res: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(res, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            pass

    cpu = int(limits.get("cpu_s", 10))
    lim(resource.RLIMIT_CPU, cpu, cpu + 1)
    lim(resource.RLIMIT_AS, int(limits.get("as_bytes", 1 << 30)))
    lim(resource.RLIMIT_FSIZE, int(limits.get("fsize_bytes", 16 << 20)))
    lim(resource.RLIMIT_NPROC, int(limits.get("nproc", 64)))
    lim(resource.RLIMIT_CORE, 0)


def _write_map(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _unshare(libc: ctypes.CDLL, notes: list[str]) -> tuple[bool, bool]:
    """New net + mount namespaces. Returns (net, mnt)."""
    if os.geteuid() == 0:
        if libc.unshare(CLONE_NEWNET | CLONE_NEWNS) == 0:
            return True, True
        notes.append(_err("unshare(net|mnt) as root"))
        if libc.unshare(CLONE_NEWNET) == 0:
            return True, False
        notes.append(_err("unshare(net) as root"))
        return False, False
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS) != 0:
        notes.append(_err("unshare(user|net|mnt)"))
        return False, False
    try:
        _write_map("/proc/self/setgroups", "deny")
        _write_map("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write_map("/proc/self/gid_map", f"{gid} {gid} 1\n")
    except OSError as exc:
        notes.append(f"user namespace id maps: {exc}")
    return True, True


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _readonly_except(libc: ctypes.CDLL, workdir: str, notes: list[str]) -> bool:
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        notes.append(_err("make / private"))
        return False
    wd = workdir.encode()
    if libc.mount(wd, wd, None, MS_BIND | MS_REC, None) != 0:
        notes.append(_err("bind working directory"))
        return False
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    failed = 0
    for parts in mounts:
        point = _unescape(parts[4])
        if point == workdir:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in parts[5].split(","):
            flags |= _FLAG_BITS.get(opt, 0)
        if libc.mount(None, point.encode(), None, flags, None) != 0:
            failed += 1
    if failed:
        notes.append(f"{failed} mount(s) could not be made read-only")
    # The bind of the working directory may have inherited read-only from a parent mount.
    libc.mount(None, wd, None, MS_REMOUNT | MS_BIND, None)
    return failed == 0


def _drop_to_nobody(libc: ctypes.CDLL, notes: list[str]) -> bool:
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - best effort
            pass
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError as exc:
        notes.append(f"drop to nobody: {exc}")
        return False
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return True


def _child(job: dict, jobdir: str, outdir: str, limits: dict, drop: bool, server: int) -> None:
    """In a forked child of the server: one program, as the one-shot mode runs it."""
    try:
        os.setsid()
        out = os.open(os.path.join(outdir, "stdout"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(os.path.join(outdir, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (out, err, devnull):
            os.close(fd)
        _set_limits(dict(limits, **(job.get("limits") or {})))
        os.chdir(jobdir)
        if drop:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        # Die with the server (set after the drop: changing credentials clears it).
        _libc().prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        if os.getppid() != server:
            os._exit(1)
        program = os.path.join(jobdir, "program.py")
        sys.argv = [program]
        sys.path[0] = jobdir
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the fds 1 and 2 set above
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115
        code = compile(job["source"], program, "exec")
        exec(code, {"__name__": "__main__", "__file__": program, "__builtins__": __builtins__})
    except SystemExit as exc:
        code_ = exc.code
        sys.stdout.flush()
        os._exit(code_ if isinstance(code_, int) else (0 if code_ is None else 1))
    except BaseException:  # noqa: BLE001 - the program's own error: traceback to stderr, exit 1
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def _read_limited(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def serve(cfg: dict) -> None:
    """Fork-server mode: set the namespaces up once, then fork one child per program.

    Jobs arrive on stdin, one JSON line each (``id``, ``source``, ``wall_s``, optional
    ``limits``); each result leaves on stdout as one JSON line (``id``, ``rc``,
    ``timed_out``, ``duration_s``, ``stdout``, ``stderr``). Every child gets its own
    directory under the one writable ``workroot``, its own session (killed as a group
    at its wall limit), the resource limits, and as root the drop to ``nobody``. The
    server itself stays root inside the namespaces so that it can fork and clean up.
    """
    import selectors
    import shutil
    import signal
    import time

    workroot = cfg["workdir"]
    limits = cfg.get("limits", {})
    output_bytes = int(cfg.get("output_bytes", 64 << 10))
    notes: list[str] = []
    net = mnt = ro = False
    libc = _libc()
    root = os.geteuid() == 0
    if cfg.get("isolate", True):
        net, mnt = _unshare(libc, notes)
        if mnt:
            ro = _readonly_except(libc, workroot, notes)
    drop = root and cfg.get("isolate", True)
    if drop:
        for name in PRELOAD:
            try:
                __import__(name)
            except Exception:  # noqa: BLE001 - best effort
                pass
    os.chdir(workroot)
    reply = sys.stdout
    reply.write(json.dumps({"ready": True, "net_ns": net, "mnt_ns": mnt, "readonly_fs": ro, "nobody": drop,
                            "notes": notes}) + "\n")
    reply.flush()
    running: dict[int, dict] = {}  # pid -> job
    wake_r, wake_w = os.pipe()  # SIGCHLD wakes the select below
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "jobs")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    counter = 0
    pending = b""
    stdin_open = True

    def finish(pid: int, status: int | None, timed_out: bool) -> None:
        job = running.pop(pid)
        try:
            os.killpg(pid, signal.SIGKILL)  # stragglers in its session
        except OSError:
            pass
        rc = None if status is None else os.waitstatus_to_exitcode(status)
        res = {"id": job["id"], "rc": rc, "timed_out": timed_out,
               "duration_s": round(time.monotonic() - job["start"], 4),
               "stdout": _read_limited(os.path.join(job["out"], "stdout"), output_bytes),
               "stderr": _read_limited(os.path.join(job["out"], "stderr"), output_bytes)}
        shutil.rmtree(job["dir"], ignore_errors=True)
        shutil.rmtree(job["out"], ignore_errors=True)
        reply.write(json.dumps(res) + "\n")
        reply.flush()

    def start(job: dict) -> None:
        nonlocal counter
        counter += 1
        jobdir = os.path.join(workroot, f"job-{counter}")
        outdir = os.path.join(workroot, f"out-{counter}")
        os.mkdir(jobdir, 0o700)
        os.mkdir(outdir, 0o700)  # root's: a dropped child cannot reach its own output files
        with open(os.path.join(jobdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(job["source"])
        if drop:
            os.chown(jobdir, 65534, 65534)
            os.chown(os.path.join(jobdir, "program.py"), 65534, 65534)
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sel.close()
            os.close(wake_r)
            os.close(wake_w)
            _child(job, jobdir, outdir, limits, drop, server)
        now = time.monotonic()
        running[pid] = dict(job, dir=jobdir, out=outdir, start=now, deadline=now + float(job.get("wall_s", 10)))

    while stdin_open or running:
        now = time.monotonic()
        nearest = min((j["deadline"] for j in running.values()), default=None)
        for key, _ in sel.select(None if nearest is None else max(0.0, nearest - now)):
            if key.data == "wake":
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            chunk = os.read(0, 1 << 20)
            if not chunk:
                stdin_open = False
                sel.unregister(0)
                continue
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    start(json.loads(line))
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in running:
                finish(pid, status, False)
        now = time.monotonic()
        for pid in [p for p, j in running.items() if j["deadline"] <= now]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            _, status = os.waitpid(pid, 0)
            finish(pid, status, True)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("serve"):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        serve(cfg)
        return
    workdir = cfg["workdir"]
    status = open(cfg["status"], "w")  # noqa: SIM115 - closed after the report line
    _set_limits(cfg.get("limits", {}))
    notes: list[str] = []
    net = mnt = ro = dropped = False
    libc = _libc()
    if cfg.get("isolate", True):
        net, mnt = _unshare(libc, notes)
        if mnt:
            ro = _readonly_except(libc, workdir, notes)
        if os.geteuid() == 0 and cfg.get("drop_root", True):
            dropped = _drop_to_nobody(libc, notes)
    os.chdir(workdir)
    status.write(json.dumps({"net_ns": net, "mnt_ns": mnt, "readonly_fs": ro, "nobody": dropped,
                             "notes": notes}) + "\n")
    status.close()
    sys.argv = [cfg["program"]]
    sys.path[0] = workdir
    with open(cfg["program"], encoding="utf-8") as f:
        code = compile(f.read(), cfg["program"], "exec")
    exec(code, {"__name__": "__main__", "__file__": cfg["program"], "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
