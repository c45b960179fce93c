"""The service files: systemd units that systemd itself accepts, launchd plists that
round-trip through plistlib, and install/uninstall that never crash without a manager."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from localswarm import service
from localswarm.errors import ConfigError

# A value with every character systemd treats specially: quotes, escapes, specifiers, $.
NASTY = "a b\"c'd\\e%f$g;h"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME at a tmp dir so no test can touch the real ~/.config or ~/Library."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    return home


@pytest.fixture
def fake_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fake systemctl/launchctl on PATH (real subprocesses) that log their argv."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("systemctl", "launchctl"):
        script = bindir / name
        script.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $*" >> "{log}"\n'
            'if [ -n "${FAKE_STDERR:-}" ]; then echo "$FAKE_STDERR" >&2; fi\n'
            'if [ -n "${FAKE_STDOUT:-}" ]; then echo "$FAKE_STDOUT"; fi\n'
            'exit "${FAKE_RC:-0}"\n'
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))

    def calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    return calls


def _verify(unit_text: str, tmp_path: Path, *, user: bool) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    d = tmp_path / "verify"
    d.mkdir(exist_ok=True)
    unit = d / "localswarm.service"
    unit.write_text(unit_text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # A user-scope verify needs a runtime dir even where no user manager runs.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    cmd = [analyze, *(["--user"] if user else []), "verify", "--man=no", str(unit)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def _unit(**overrides: object) -> str:
    kwargs: dict[str, object] = {
        "system": False,
        # systemd-analyze verify insists the binary exists and is executable.
        "exec_path": sys.executable,
        "args": ["-m", "localswarm", "up", "--port", "8000", "--model", NASTY],
        "env": {"LOCALSWARM_INSTANCES": "3", "LOCALSWARM_NOTE": NASTY, "PATH": "/usr/bin:/bin"},
    }
    kwargs.update(overrides)
    return service.render_systemd_unit(**kwargs)  # type: ignore[arg-type]


# --- systemd ---------------------------------------------------------------------------


@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path, system: bool) -> None:
    """systemd parses the unit without a single warning about it (verify exits 0 even on
    unknown keys, so stderr is checked too)."""
    # (User=nobody would draw a warning: systemd calls it unsafe.)
    text = _unit(system=system, user="daemon" if system else None)
    done = _verify(text, tmp_path, user=not system)
    ours = [line for line in done.stderr.splitlines() if "localswarm.service" in line]
    assert done.returncode == 0, done.stderr
    assert ours == [], done.stderr


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify check above has teeth: a missing binary fails it."""
    done = _verify(_unit(exec_path="/nonexistent/localswarm"), tmp_path, user=False)
    assert done.returncode != 0 or "localswarm.service" in done.stderr


def test_systemd_unit_runs_up_in_foreground_with_restart_and_kill_policy() -> None:
    """ExecStart runs `up` (no --detach), restarts on failure, and its stop timeout
    outlasts the supervisor's drain + SIGTERM→SIGKILL grace."""
    lines = _unit().splitlines()
    exec_line = next(line for line in lines if line.startswith("ExecStart="))
    assert exec_line.startswith(f"ExecStart={sys.executable} -m localswarm up --port 8000")
    assert "--detach" not in exec_line
    assert "Restart=on-failure" in lines
    assert "KillMode=mixed" in lines
    timeout = int(next(line for line in lines if line.startswith("TimeoutStopSec=")).split("=")[1])
    assert timeout > 2 * service.DEFAULT_STOP_GRACE_S
    assert "WantedBy=default.target" in lines


def test_systemd_unit_quotes_specials() -> None:
    """%, $, quotes and backslashes are escaped the way systemd.syntax(7) wants."""
    text = _unit()
    assert '--model "a b\\"c\'d\\\\e%%f$$g;h"' in text
    # Environment= does no $ expansion, so $ stays single there.
    assert 'Environment="LOCALSWARM_NOTE=a b\\"c\'d\\\\e%%f$g;h"' in text
    assert 'Environment="LOCALSWARM_INSTANCES=3"' in text


def test_stop_timeout_follows_configured_grace() -> None:
    """A longer LOCALSWARM_STOP_GRACE gives the manager a longer stop timeout."""
    text = _unit(env={"LOCALSWARM_STOP_GRACE": "30"})
    assert "TimeoutStopSec=75" in text.splitlines()


def test_system_unit_runs_as_user_and_waits_for_network() -> None:
    text = _unit(system=True, user="alice")
    lines = text.splitlines()
    assert "User=alice" in lines
    assert "After=network-online.target" in lines
    assert "WantedBy=multi-user.target" in lines
    assert "User=" not in _unit(system=True, user="root")


@pytest.mark.parametrize("args", [["up", "--detach"], ["up", "-d"]])
def test_detach_is_refused(args: list[str]) -> None:
    """The service manager supervises the foreground process; --detach would fork away."""
    with pytest.raises(ConfigError, match="detach"):
        service.render_systemd_unit(system=False, exec_path="/bin/true", args=args, env={})
    with pytest.raises(ConfigError, match="detach"):
        service.render_launchd_plist(exec_path="/bin/true", args=args, env={}, log_dir="/tmp")


def test_line_break_in_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="line break"):
        _unit(env={"LOCALSWARM_X": "a\nb"})


def test_service_env_carries_localswarm_settings_and_path() -> None:
    env = service.service_env({"LOCALSWARM_PORT": "9000", "HOME": "/h", "PATH": "/p", "OTHER": "x"})
    assert env == {"LOCALSWARM_PORT": "9000", "PATH": "/p", "PYTHONUNBUFFERED": "1"}


# --- launchd ---------------------------------------------------------------------------


def test_launchd_plist_round_trips_through_plistlib(tmp_path: Path) -> None:
    """The plist loads back with every key and value it was written with."""
    env = {"LOCALSWARM_PORT": "9000", "LOCALSWARM_NOTE": NASTY + "<&>"}
    data = service.render_launchd_plist(
        exec_path="/opt/ls/bin/localswarm", args=["up", "--port", "9000"], env=env, log_dir=tmp_path
    )
    job = plistlib.loads(data)
    assert set(job) == {
        "Label",
        "ProgramArguments",
        "EnvironmentVariables",
        "RunAtLoad",
        "KeepAlive",
        "ExitTimeOut",
        "ThrottleInterval",
        "ProcessType",
        "StandardOutPath",
        "StandardErrorPath",
    }
    assert job["Label"] == service.LAUNCHD_LABEL == "dev.localswarm"
    assert job["ProgramArguments"] == ["/opt/ls/bin/localswarm", "up", "--port", "9000"]
    assert job["EnvironmentVariables"] == env
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ExitTimeOut"] > 2 * service.DEFAULT_STOP_GRACE_S
    assert job["StandardOutPath"] == str(tmp_path / "localswarm.out.log")
    assert job["StandardErrorPath"] == str(tmp_path / "localswarm.err.log")
    # Writing what was read gives the same bytes back.
    assert plistlib.dumps(job, sort_keys=False) == data


def test_launchd_system_job_names_its_user(tmp_path: Path) -> None:
    data = service.render_launchd_plist(exec_path="/x", env={}, log_dir=tmp_path, user="alice")
    assert plistlib.loads(data)["UserName"] == "alice"


# --- paths -----------------------------------------------------------------------------


def test_unit_paths(_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """User units follow XDG_CONFIG_HOME, system units /etc, and root= re-roots both."""
    assert service.unit_path("systemd") == _home / ".config/systemd/user/localswarm.service"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert service.unit_path("systemd") == tmp_path / "xdg/systemd/user/localswarm.service"
    root = tmp_path / "root"
    assert (
        service.unit_path("systemd", system=True, root=root)
        == root / "etc/systemd/system/localswarm.service"
    )
    assert service.unit_path("launchd") == _home / "Library/LaunchAgents/dev.localswarm.plist"
    assert service.unit_path("launchd", system=True) == Path(
        "/Library/LaunchDaemons/dev.localswarm.plist"
    )
    with pytest.raises(ConfigError):
        service.unit_path("upstart")  # type: ignore[arg-type]


def test_default_command_is_this_installation() -> None:
    exe, lead = service.default_command()
    assert os.access(exe, os.X_OK)
    if lead:
        assert (exe, lead) == (sys.executable, ["-m", "localswarm"])
    else:
        assert Path(exe).parent == Path(sys.executable).parent


# --- install / uninstall ---------------------------------------------------------------


def test_install_and_uninstall_in_a_tmp_root(tmp_path: Path) -> None:
    """install writes exactly what print_unit shows; uninstall removes it; twice is fine."""
    root = tmp_path / "root"
    out: list[str] = []
    kw = {"root": root, "up_args": ["--port", "8100"], "env": {"LOCALSWARM_INSTANCES": "2"}}
    path = service.install("systemd", system=True, echo=out.append, **kw)  # type: ignore[arg-type]
    assert path == root / "etc/systemd/system/localswarm.service"
    assert path.read_text() == service.print_unit("systemd", system=True, **kw)  # type: ignore[arg-type]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert any("systemctl daemon-reload" in line for line in out)  # told what to run
    assert "up --port 8100" in path.read_text()

    out.clear()
    assert service.uninstall("systemd", system=True, root=root, echo=out.append) == path
    assert not path.exists()
    assert service.uninstall("systemd", system=True, root=root, echo=out.append) == path
    assert any("not installed" in line for line in out)


SECRET_VALUE = "s3cret-" + NASTY  # quotes, $, %, backslash: must survive the EnvironmentFile


@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_secrets_go_to_a_0600_environment_file_the_unit_names(tmp_path: Path, system: bool) -> None:
    env = {"LOCALSWARM_API_KEY": SECRET_VALUE, "LOCALSWARM_FEDERATION_SECRET": "fed'" + NASTY,
           "LOCALSWARM_API_KEY_FILE": "/k", "LOCALSWARM_INSTANCES": "2"}
    out: list[str] = []
    path = service.install("systemd", system=system, root=tmp_path, env=env, echo=out.append)
    unit = path.read_text()
    env_file = service.env_file_path(system, root=tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "s3cret" not in unit and "fed'" not in unit
    assert f"EnvironmentFile={service.env_file_path(system)}" in unit.splitlines()
    assert 'Environment="LOCALSWARM_INSTANCES=2"' in unit and 'Environment="LOCALSWARM_API_KEY_FILE=/k"' in unit
    assert not any("s3cret" in line for line in out)  # names only in what install prints
    # systemd's EnvironmentFile parser is shell-like: sourcing the file gives the values back exactly.
    done = subprocess.run(["sh", "-c", f'set -a; . "{env_file}"; printf "%s\\0%s" "$LOCALSWARM_API_KEY" '
                           '"$LOCALSWARM_FEDERATION_SECRET"'], capture_output=True, text=True, env={})
    assert done.stdout.split("\0") == [SECRET_VALUE, "fed'" + NASTY]
    if shutil.which("systemd-analyze"):  # the unit, with its EnvironmentFile= line, is valid
        verified = _verify(unit.replace(service.default_command()[0], sys.executable), tmp_path, user=not system)
        assert verified.returncode == 0, verified.stderr

    # Reinstalled without secrets: the file goes; uninstall removes it too.
    service.install("systemd", system=system, root=tmp_path, env={"LOCALSWARM_INSTANCES": "2"}, echo=out.append)
    assert not env_file.exists() and "EnvironmentFile" not in path.read_text()
    service.install("systemd", system=system, root=tmp_path, env=env, echo=out.append)
    service.uninstall("systemd", system=system, root=tmp_path, echo=out.append)
    assert not env_file.exists() and not path.exists()


def test_launchd_plist_with_a_secret_is_private(tmp_path: Path) -> None:
    path = service.install("launchd", root=tmp_path, env={"LOCALSWARM_API_KEY": "s3cret"}, echo=lambda _: None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert plistlib.loads(path.read_bytes())["EnvironmentVariables"]["LOCALSWARM_API_KEY"] == "s3cret"
    plain = service.install("launchd", root=tmp_path, env={"LOCALSWARM_INSTANCES": "2"}, echo=lambda _: None)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


@pytest.mark.parametrize("args", [["--api-key", "s3cret"], ["--api-key=s3cret"], ["--federation-secret", "x"],
                                  ["--port", "1", "--hf-token=abc"]])
@pytest.mark.parametrize("kind", ["systemd", "launchd"])
def test_secrets_in_the_up_arguments_are_refused(tmp_path: Path, args: list[str], kind: str) -> None:
    with pytest.raises(ConfigError, match="secret on the service's command line") as info:
        service.install(kind, root=tmp_path, up_args=args, env={}, echo=lambda _: None)  # type: ignore[arg-type]
    assert "s3cret" not in str(info.value)
    assert not service.unit_path(kind, root=tmp_path).exists()  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        service.print_unit(kind, up_args=args, env={})  # type: ignore[arg-type]
    # A file holding the key is fine: only its path is on the command line.
    service.install(kind, root=tmp_path, up_args=["--api-key-file", "/etc/k"], env={}, echo=lambda _: None)  # type: ignore[arg-type]


def test_cli_service_install_refuses_a_secret_argument(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from localswarm.cli import main

    result = CliRunner().invoke(main, ["service", "install", "--dry-run", "--", "--api-key", "s3cret"])
    assert result.exit_code == 1 and "secret on the service's command line" in result.output
    assert "s3cret" not in result.output


def test_dry_run_writes_nothing(tmp_path: Path, fake_manager) -> None:
    out: list[str] = []
    path = service.install("systemd", root=tmp_path, manage=True, dry_run=True, echo=out.append)
    assert not path.exists()
    assert fake_manager() == []
    text = "\n".join(out)
    assert "ExecStart=" in text and "systemctl --user enable --now localswarm.service" in text


def test_install_drives_systemctl(_home: Path, fake_manager) -> None:
    """With a manager: daemon-reload + enable --now; a changed unit also restarts;
    uninstall disables before removing and reloads after."""
    path = service.install("systemd", env={}, echo=lambda _: None)
    assert path == _home / ".config/systemd/user/localswarm.service"
    assert fake_manager() == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now localswarm.service",
    ]
    service.install("systemd", env={}, up_args=["--port", "9"], echo=lambda _: None)
    assert fake_manager()[-1] == "systemctl --user restart localswarm.service"

    service.uninstall("systemd", echo=lambda _: None)
    assert fake_manager()[-2:] == [
        "systemctl --user disable --now localswarm.service",
        "systemctl --user daemon-reload",
    ]
    assert not path.exists()


def test_install_tolerates_unreachable_systemd(
    fake_manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No systemd as PID 1 (containers): the unit is written and the commands printed."""
    monkeypatch.setenv("FAKE_RC", "1")
    monkeypatch.setenv("FAKE_STDERR", "Failed to connect to bus: No medium found")
    out: list[str] = []
    path = service.install("systemd", env={}, echo=out.append)
    assert path.is_file()
    text = "\n".join(out)
    assert "Failed to connect to bus" in text
    assert "  systemctl --user daemon-reload" in text
    assert "  systemctl --user enable --now localswarm.service" in text
    assert len(fake_manager()) == 1  # stopped at the first failure
    assert service.uninstall("systemd", echo=out.append) == path
    assert not path.exists()


def test_install_tolerates_missing_systemctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out: list[str] = []
    path = service.install("systemd", env={}, echo=out.append)
    assert path.is_file()
    assert any("systemctl is not installed" in line for line in out)
    assert "not installed here" in service.status("systemd")
    service.uninstall("systemd", echo=out.append)
    assert not path.exists()


@pytest.mark.skipif(
    shutil.which("systemctl") is None or Path("/run/systemd/system").exists(),
    reason="needs a systemctl with no systemd running (a container), so nothing real changes",
)
def test_install_tolerates_real_systemctl_without_systemd(tmp_path: Path) -> None:
    out: list[str] = []
    path = service.install("systemd", root=tmp_path, manage=True, env={}, echo=out.append)
    assert path.is_file()
    assert any(line.startswith("could not run") for line in out)
    assert "could not ask" in service.status("systemd", root=tmp_path, manage=True)


def test_install_drives_launchctl(_home: Path, fake_manager) -> None:
    """launchd: load -w on install (unload first on reinstall), unload -w on uninstall."""
    path = service.install("launchd", env={}, echo=lambda _: None)
    assert path == _home / "Library/LaunchAgents/dev.localswarm.plist"
    assert (_home / "Library/Logs/localswarm").is_dir()
    assert plistlib.loads(path.read_bytes())["ProgramArguments"][-1] == "up"
    service.install("launchd", env={}, echo=lambda _: None)
    service.uninstall("launchd", echo=lambda _: None)
    assert fake_manager() == [
        f"launchctl load -w {path}",
        f"launchctl unload {path}",
        f"launchctl load -w {path}",
        f"launchctl unload -w {path}",
    ]
    assert not path.exists()


def test_status_reports_file_and_manager(fake_manager, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "not installed" in service.status("systemd")
    service.install("systemd", env={}, echo=lambda _: None)
    monkeypatch.setenv("FAKE_RC", "3")  # systemctl's answer for an inactive unit
    monkeypatch.setenv("FAKE_STDOUT", "Active: inactive (dead)")
    report = service.status("systemd")
    assert "installed at" in report and "Active: inactive (dead)" in report
    monkeypatch.setenv("FAKE_RC", "1")
    monkeypatch.setenv("FAKE_STDOUT", "")
    monkeypatch.setenv("FAKE_STDERR", "Failed to connect to bus")
    assert "could not ask the service manager" in service.status("systemd")


def test_system_install_without_permission_is_a_service_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse(path: object, *args: object, **kw: object) -> int:
        if str(path).endswith(".tmp"):  # what install creates (as a non-root user would fail to)
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(service.ServiceError, match="sudo"):
        service.install("systemd", system=True, root=tmp_path, echo=lambda _: None)


def test_system_unit_runs_as_sudo_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sudo localswarm service install --system` runs the swarm as the invoking user."""
    monkeypatch.setenv("SUDO_USER", "alice")
    assert "User=alice" in service.print_unit("systemd", system=True, env={}).splitlines()
