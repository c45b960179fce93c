"""The seam every vendor probe uses to run tools and read files.

Tests replace :data:`Runner` with a function that replays recorded output, and point
``sysfs_root`` at a fixture directory, so no probe ever needs the real hardware.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger("localswarm.hardware")

#: Runs ``argv`` and returns its stdout, or ``None`` when the tool is missing, fails or
#: times out. Never raises.
Runner = Callable[[Sequence[str]], "str | None"]

TOOL_TIMEOUT_S = 5.0


def run_tool(argv: Sequence[str]) -> str | None:
    """The real :data:`Runner`: run a tool with a short timeout, stdout on success."""
    if shutil.which(argv[0]) is None:
        logger.debug("hardware: %s not found on PATH", argv[0])
        return None
    try:
        cp = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("hardware: %s failed to run: %s", argv[0], exc)
        return None
    if cp.returncode != 0:
        logger.debug("hardware: %s exited %s: %s", " ".join(argv), cp.returncode,
                     cp.stderr.strip()[:200])
        return None
    return cp.stdout


def read_text(path: Path) -> str | None:
    """The stripped content of a small (sysfs) file, or ``None`` if unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    """A sysfs integer (decimal or ``0x`` hex), or ``None``."""
    text = read_text(path)
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        logger.debug("hardware: %s is not an integer: %r", path, text[:40])
        return None


def to_int(value: object) -> int | None:
    """Best-effort int from tool output (``"123"``, ``123``, ``"0x1f"``, ``"12.0"``)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 0)
        except ValueError:
            try:
                return int(float(text))
            except ValueError:
                return None
    return None
