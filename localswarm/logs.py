"""Logs: structured formatters for the gateway, rotation of instance logs, `localswarm logs`.

Layout under the state directory: ``gateway.log`` (a detached swarm's own output) and
``logs/<instance>.log`` (each llama-server's stdout and stderr, appended by the
supervisor). :func:`rotate_if_needed` keeps ``<name>.log.1`` .. ``<name>.log.N``; the
instance logs rotate when their instance (re)starts, ``gateway.log`` while it is being
written (:class:`RotatingOutput`, sizes from ``log_max_bytes`` / ``log_backups``).
Log files are created readable by their owner only (0600).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from localswarm import paths
from localswarm.errors import LocalSwarmError

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_MAX_BYTES",
    "GATEWAY",
    "JSONFormatter",
    "KeyValueFormatter",
    "QueryRedactor",
    "RotatingOutput",
    "iter_tail",
    "log_files",
    "redirect_stdout_handlers",
    "rotate_if_needed",
    "setup_logging",
    "tail_logs",
]

DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_BACKUPS = 3
GATEWAY = "gateway"  # the name `localswarm logs gateway` uses for gateway.log

# LogRecord attributes that are not user extras (``logger.info(..., extra={...})``).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any ``extra=`` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, val in _extras(record).items():
            out.setdefault(key, val)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def _kv(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueFormatter(logging.Formatter):
    """logfmt: ``ts=... level=info logger=localswarm msg="..." key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **{k: v for k, v in _extras(record).items() if k not in ("ts", "level", "logger", "msg")},
        }
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_kv(v)}" for k, v in fields.items())


FORMATS: dict[str, Callable[[], logging.Formatter]] = {
    "text": lambda: logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"),
    "json": JSONFormatter,
    "kv": KeyValueFormatter,
}


def setup_logging(level: str = "info", *, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger with one handler (stderr by default) in ``fmt``: text, json or kv.

    Replaces handlers a previous call installed; quiets httpx's one line per request.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_localswarm", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FORMATS[fmt]())
    handler._localswarm = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # huggingface_hub 2.x's HTTP client
    return handler


class QueryRedactor(logging.Filter):
    """Blanks query-string values in uvicorn's access log lines (``/v1/models?api_key=***``).

    The gateway reads its key from headers only, but a client may still put one in the
    URL; the access log must not keep it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            path, _, query = args[2].partition("?")
            blanked = "&".join(part.split("=", 1)[0] + "=***" for part in query.split("&"))
            record.args = (*args[:2], f"{path}?{blanked}", *args[3:])
        return True


def redirect_stdout_handlers() -> int:
    """Point every log handler that writes to stdout at stderr (stdout carries MCP).

    Covers handlers configured before the call, uvicorn's access log included.
    Returns how many were moved.
    """
    moved = 0
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for handler in lg.handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and handler.stream in (sys.stdout, sys.__stdout__)
            ):
                handler.setStream(sys.stderr)
                moved += 1
    return moved


# -- rotation -------------------------------------------------------------------------------


def _backup(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate_if_needed(path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> bool:
    """Rotate ``path`` if it has reached ``max_bytes``: ``x.log`` → ``x.log.1`` → ... → ``x.log.N``.

    Call it before (re)opening the file for append, e.g. before each instance start; the
    oldest backup beyond ``backups`` is deleted (``backups=0`` just truncates). Returns
    True when it rotated. Never raises for a missing file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size < max_bytes:
        return False
    if backups <= 0:
        path.unlink(missing_ok=True)
        return True
    _backup(path, backups).unlink(missing_ok=True)
    for n in range(backups - 1, 0, -1):
        src = _backup(path, n)
        if src.exists():
            os.replace(src, _backup(path, n + 1))
    os.replace(path, _backup(path, 1))
    return True


class RotatingOutput(io.TextIOBase):
    """This process's stdout and stderr in one file that rotates by size while it is written.

    A detached swarm has no terminal: its Python output (logs, uvicorn's access log, a
    traceback) goes through :meth:`write`, which rotates the file past ``max_bytes``
    (``x.log`` → ``x.log.1`` ... ``x.log.N``, see :func:`rotate_if_needed`). File
    descriptors 1 and 2 are pointed at the current file too (after every rotation), so
    output written below Python (a C library, a crash dump) lands in it as well.
    """

    def __init__(self, path: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        super().__init__()
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.RLock()

    def install(self) -> RotatingOutput:
        """Redirect fds 1 and 2 and ``sys.stdout``/``sys.stderr`` here; returns ``self``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rotate_if_needed(self.path, self.max_bytes, self.backups)
        self._reopen()
        sys.stdout = sys.stderr = self  # type: ignore[assignment]
        return self

    def _reopen(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
            if os.fstat(1).st_size >= self.max_bytes and rotate_if_needed(self.path, self.max_bytes, self.backups):
                self._reopen()
        return len(text)

    def flush(self) -> None:
        pass


# -- reading --------------------------------------------------------------------------------


def log_files(state_dir: Path | None = None) -> dict[str, Path]:
    """Every current log by name: ``gateway`` first, then each instance in name order."""
    root = state_dir or paths.state_dir()
    out: dict[str, Path] = {}
    if (root / "gateway.log").exists():
        out[GATEWAY] = root / "gateway.log"
    logs = root / "logs"
    if logs.is_dir():
        def order(p: Path) -> tuple[str, int]:
            stem, _, num = p.stem.rpartition("-")
            return (stem, int(num)) if num.isdigit() else (p.stem, -1)

        for p in sorted(logs.glob("*.log"), key=order):
            out[p.stem] = p
    return out


def _select(files: dict[str, Path], instance: str | None) -> dict[str, Path]:
    if instance is None:
        return files
    for name in (instance, f"inst-{instance}"):  # `localswarm logs 0` means inst-0
        if name in files:
            return {name: files[name]}
    known = ", ".join(files) or "none yet"
    raise LocalSwarmError(f"no log for {instance!r} (logs: {known})")


def _last_lines(path: Path, n: int, block: int = 64 * 1024) -> tuple[list[str], int]:
    """The last ``n`` lines and the file's size, reading backwards (logs can be large)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return (lines[-n:] if n > 0 else []), end


@dataclass
class _Follow:
    path: Path
    pos: int
    inode: int | None
    partial: str = ""


def iter_tail(
    instance: str | None = None,
    lines: int = 50,
    follow: bool = False,
    *,
    state_dir: Path | None = None,
    poll: float = 0.5,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield ``(log name, line)``: the last ``lines`` of each log, then, with ``follow``,
    new lines as they are written (a rotated or truncated file is reopened from the start;
    new instance logs are picked up when ``instance`` is None)."""
    root = state_dir or paths.state_dir()
    files = _select(log_files(root), instance)
    if not files and instance is None:
        raise LocalSwarmError(f"no logs yet in {root}")
    watched: dict[str, _Follow] = {}
    for name, path in files.items():
        tail, size = _last_lines(path, lines)
        for line in tail:
            yield name, line
        watched[name] = _Follow(path, size, _inode(path))
    while follow and not (should_stop and should_stop()):
        time.sleep(poll)
        if instance is None:
            for name, path in log_files(root).items():
                watched.setdefault(name, _Follow(path, 0, _inode(path)))
        for name, w in watched.items():
            yield from ((name, line) for line in _read_new(w))


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _read_new(w: _Follow) -> list[str]:
    try:
        st = w.path.stat()
    except FileNotFoundError:
        return []
    if st.st_ino != w.inode or st.st_size < w.pos:  # rotated or truncated
        w.pos, w.inode, w.partial = 0, st.st_ino, ""
    if st.st_size == w.pos:
        return []
    with open(w.path, "rb") as f:
        f.seek(w.pos)
        data = f.read()
    w.pos += len(data)
    text = w.partial + data.decode("utf-8", errors="replace")
    *complete, w.partial = text.split("\n")
    return complete


def tail_logs(
    instance: str | None = None,
    lines: int = 50,
    follow: bool = False,
    *,
    state_dir: Path | None = None,
    out: TextIO | None = None,
    poll: float = 0.5,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Print logs for ``localswarm logs [instance]``; each line is prefixed with its log's
    name when several logs are shown. Returns the number of lines printed."""
    out = out or sys.stdout
    several = instance is None
    width = max((len(n) for n in log_files(state_dir)), default=0)
    count = 0
    for name, line in iter_tail(instance, lines, follow, state_dir=state_dir, poll=poll, should_stop=should_stop):
        out.write(f"{name:<{width}} | {line}\n" if several else f"{line}\n")
        out.flush()
        count += 1
    return count
