"""Run the swarm as a service: a systemd unit on Linux, a launchd job on macOS.

The service runs ``localswarm up`` in the foreground (never ``--detach``: the service
manager is the one that keeps it alive) and restarts it when it fails. Stopping the
service stops the supervisor, which drains and stops its llama-servers; the manager's
own kill of the whole process group/cgroup is the backstop.

Secrets never reach a command line or a world-readable file: ``install`` refuses a
secret among the ``up`` arguments, and secret environment variables (``LOCALSWARM_API_KEY``,
``LOCALSWARM_FEDERATION_SECRET``...) go to a 0600 ``EnvironmentFile`` the systemd unit
names (the unit itself stays 0644 and secret-free), or into the launchd plist, which is
then written 0600.

``install`` and ``uninstall`` call ``systemctl``/``launchctl`` when they can. Where they
can't (no systemd as PID 1 in a container, no user bus over ssh, the tool is missing),
the file is still written and the commands the user must run are printed instead.

Every path can be re-rooted with ``root=`` (like ``DESTDIR``), which tests use.
"""

from __future__ import annotations

import getpass
import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from localswarm import __version__
from localswarm.errors import ConfigError, LocalSwarmError

__all__ = [
    "LAUNCHD_LABEL",
    "SERVICE_NAME",
    "ServiceError",
    "ServiceKind",
    "default_command",
    "default_kind",
    "env_file_path",
    "install",
    "print_unit",
    "render_launchd_plist",
    "render_systemd_unit",
    "service_env",
    "status",
    "uninstall",
    "unit_path",
]

ServiceKind = Literal["systemd", "launchd"]
KINDS: tuple[ServiceKind, ...] = ("systemd", "launchd")

SERVICE_NAME = "localswarm"
SYSTEMD_UNIT = f"{SERVICE_NAME}.service"
LAUNCHD_LABEL = "dev.localswarm"

# The supervisor drains each instance for up to ``stop_grace`` seconds, then waits another
# ``stop_grace`` between SIGTERM and SIGKILL (config.Settings.stop_grace, 10 s). The
# manager must wait longer than that before it SIGKILLs everything itself.
DEFAULT_STOP_GRACE_S = 10.0
_STOP_MARGIN_S = 15

# A variable or option whose name looks like a secret (and does not just name a file).
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def is_secret_name(name: str) -> bool:
    """True for ``LOCALSWARM_API_KEY``, ``--api-key``, ``HF_TOKEN``...; not for ``..._FILE`` / ``--...-file``."""
    upper = name.strip().lstrip("-").upper().replace("-", "_")
    return any(marker in upper for marker in _SECRET_MARKERS) and not upper.endswith("_FILE")


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret) variables: secrets go to a file only the service's owner can read."""
    plain = {k: v for k, v in env.items() if not is_secret_name(k)}
    return plain, {k: v for k, v in env.items() if is_secret_name(k)}

Echo = Callable[[str], None]


class ServiceError(LocalSwarmError):
    """The service file could not be written or removed (usually: needs root)."""


# --- what the service runs -------------------------------------------------------------


def default_kind() -> ServiceKind:
    """The service manager of this platform: launchd on macOS, systemd elsewhere on POSIX."""
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform.startswith("linux"):
        return "systemd"
    raise ConfigError(
        f"no service manager support on {sys.platform}: run `localswarm up` from the "
        "Task Scheduler (Windows) or your init system instead"
    )


def default_command() -> tuple[str, list[str]]:
    """The executable and leading arguments that start this localswarm.

    The ``localswarm`` script beside the running interpreter (a venv's ``bin/``) when it
    exists, else ``python -m localswarm`` with this interpreter. ``sys.executable`` is
    kept unresolved: resolving a venv's python symlink would escape the venv.
    """
    exe = Path(sys.executable)
    script = exe.parent / ("localswarm.exe" if os.name == "nt" else "localswarm")
    if script.is_file() and os.access(script, os.X_OK):
        return str(script), []
    return str(exe), ["-m", "localswarm"]


def service_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the service gets: every ``LOCALSWARM_*`` setting, PATH, unbuffered output.

    PATH is carried over because service managers start jobs with a minimal one, where
    a ``llama-server`` in ``~/.local/bin`` or Homebrew's prefix would not be found.
    """
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in sorted(environ.items()) if k.startswith("LOCALSWARM_")}
    if environ.get("PATH"):
        env["PATH"] = environ["PATH"]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop_timeout(env: Mapping[str, str]) -> int:
    try:
        grace = float(env.get("LOCALSWARM_STOP_GRACE", DEFAULT_STOP_GRACE_S))
    except ValueError:
        grace = DEFAULT_STOP_GRACE_S
    return int(2 * grace) + _STOP_MARGIN_S


def _check_args(args: Sequence[str]) -> list[str]:
    args = [str(a) for a in args]
    if "--detach" in args or "-d" in args:
        raise ConfigError(
            "the service runs `localswarm up` in the foreground under its manager: drop --detach"
        )
    for arg in args:
        if arg.startswith("--") and is_secret_name(arg.split("=", 1)[0]):
            raise ConfigError(
                f"{arg.split('=', 1)[0]} would put a secret on the service's command line (visible in `ps` "
                "and in the unit file): export it instead (LOCALSWARM_API_KEY=..., LOCALSWARM_FEDERATION_SECRET=...)"
                " and run `localswarm service install` again; it is written to a file only you can read, "
                "or pass a 0600 file with --api-key-file"
            )
    return args


def _check_env(env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if not key or "=" in key or any(c.isspace() for c in key):
            raise ConfigError(f"invalid environment variable name for a service: {key!r}")
        if "\n" in value or "\r" in value or "\0" in value:
            raise ConfigError(f"environment variable {key} contains a line break; not allowed")


# --- systemd ---------------------------------------------------------------------------

# Characters that force quoting of an ExecStart= word (systemd.syntax(7)); '%' and '$'
# are escaped by doubling instead.
_SYSTEMD_QUOTE = set(" \t\"'\\;")


def _systemd_escape_specifiers(value: str) -> str:
    # '%' starts a specifier (%h, %u...) in every setting; '%%' is a literal percent.
    return value.replace("%", "%%")


def _systemd_quote_exec(arg: str) -> str:
    # In ExecStart=, '$' starts variable expansion ('$$' is literal) and a lone ';' would
    # separate commands, so both are escaped or quoted along with whitespace and quotes.
    arg = _systemd_escape_specifiers(arg).replace("$", "$$")
    if arg and not set(arg) & _SYSTEMD_QUOTE:
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_quote_env(key: str, value: str) -> str:
    # Environment= does no '$' expansion, but specifiers and C-style escapes apply.
    pair = _systemd_escape_specifiers(f"{key}={value}")
    return '"' + pair.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd_unit(
    *,
    system: bool,
    exec_path: str | os.PathLike[str],
    args: Sequence[str] = ("up",),
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    stop_timeout_s: int | None = None,
    env_file: str | os.PathLike[str] | None = None,
) -> str:
    """The text of ``localswarm.service``.

    ``args`` follow ``exec_path`` on ``ExecStart=``. A system unit (``system=True``) runs
    as ``user`` when one is given (``User=``), and is wanted by ``multi-user.target``; a
    user unit is wanted by ``default.target``. ``env`` must hold no secret: those live in
    ``env_file`` (``EnvironmentFile=``, see :func:`render_env_file`).
    """
    args = _check_args(args)
    env = dict(env or {})
    _check_env(env)
    if split_env(env)[1]:
        raise ConfigError(f"secrets belong in the EnvironmentFile, not in the unit: {sorted(split_env(env)[1])}")
    timeout = stop_timeout_s if stop_timeout_s is not None else _stop_timeout(env)
    command = " ".join(_systemd_quote_exec(a) for a in [os.fspath(exec_path), *args])

    unit = [
        f"# Written by localswarm {__version__} (`localswarm service install"
        f"{' --system' if system else ''}`).",
        "# Regenerate it with that command rather than editing it.",
        "[Unit]",
        "Description=localswarm: a swarm of llama-server processes behind an OpenAI-compatible API",
    ]
    if system:
        # A user manager cannot order itself after system targets; only system units do.
        unit += ["Wants=network-online.target", "After=network-online.target"]
    # Give up after 5 failures in 5 minutes instead of restarting forever.
    unit += ["StartLimitIntervalSec=300", "StartLimitBurst=5", "", "[Service]", "Type=simple"]
    if system and user and user != "root":
        unit.append(f"User={user}")
    unit.append(f"ExecStart={command}")
    unit += [f"Environment={_systemd_quote_env(k, v)}" for k, v in env.items()]
    if env_file is not None:
        unit.append(f"EnvironmentFile={_systemd_escape_specifiers(os.fspath(env_file))}")
    unit += [
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM to the supervisor alone so it can drain and stop its llama-servers;
        # SIGKILL to whatever is left in the cgroup once TimeoutStopSec runs out.
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={timeout}",
        "NoNewPrivileges=yes",
        f"SyslogIdentifier={SERVICE_NAME}",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
        "",
    ]
    return "\n".join(unit)


def render_env_file(env: Mapping[str, str]) -> str:
    """An ``EnvironmentFile=`` (systemd.exec(5)): one ``KEY='value'`` per line.

    Single quotes keep a value literal (spaces, ``$``, ``\\``, ``"``); a value holding a
    single quote is double-quoted with ``\\``, ``"``, ``$`` and backquote escaped. The file
    is read by the service manager, written 0600 by :func:`install`.
    """
    _check_env(env)
    lines = [f"# Secrets of the localswarm service (written by `localswarm service install`). Keep it 0600."]
    for key, value in env.items():
        if "'" not in value:
            lines.append(f"{key}='{value}'")
        else:
            escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
            lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


# --- launchd ---------------------------------------------------------------------------


def render_launchd_plist(
    *,
    exec_path: str | os.PathLike[str],
    args: Sequence[str] = ("up",),
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str],
    label: str = LAUNCHD_LABEL,
    user: str | None = None,
    stop_timeout_s: int | None = None,
) -> bytes:
    """The XML plist of the launchd job ``label``: started at load, kept alive on failure.

    ``user`` sets ``UserName`` (a LaunchDaemon, i.e. a system job, runs as root without it).
    """
    args = _check_args(args)
    env = dict(env or {})
    _check_env(env)
    log_dir = Path(log_dir)
    job: dict[str, object] = {
        "Label": label,
        "ProgramArguments": [os.fspath(exec_path), *args],
        "EnvironmentVariables": env,
        "RunAtLoad": True,
        # Restart after a crash or a non-zero exit, not after a clean `localswarm down`.
        "KeepAlive": {"SuccessfulExit": False},
        # launchd's SIGTERM → SIGKILL delay; it kills the whole process group afterwards.
        "ExitTimeOut": stop_timeout_s if stop_timeout_s is not None else _stop_timeout(env),
        "ThrottleInterval": 10,
        "ProcessType": "Standard",
        "StandardOutPath": str(log_dir / f"{SERVICE_NAME}.out.log"),
        "StandardErrorPath": str(log_dir / f"{SERVICE_NAME}.err.log"),
    }
    if user and user != "root":
        job["UserName"] = user
    return plistlib.dumps(job, fmt=plistlib.FMT_XML, sort_keys=False)


# --- where the files go ----------------------------------------------------------------


def _reroot(path: Path, root: Path | None) -> Path:
    if root is None:
        return path
    return Path(root) / path.relative_to(path.anchor)


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def unit_path(
    kind: ServiceKind | None = None, *, system: bool = False, root: Path | None = None
) -> Path:
    """Where the unit/plist of ``kind`` lives (under ``root`` when given).

    systemd: ``$XDG_CONFIG_HOME/systemd/user/localswarm.service`` (``~/.config`` by
    default), or ``/etc/systemd/system/localswarm.service`` for a system unit.
    launchd: ``~/Library/LaunchAgents/dev.localswarm.plist``, or
    ``/Library/LaunchDaemons/dev.localswarm.plist`` for a system job.
    """
    kind = _kind(kind)
    if kind == "systemd":
        if system:
            path = Path("/etc/systemd/system") / SYSTEMD_UNIT
        else:
            config = os.environ.get("XDG_CONFIG_HOME")
            base = Path(config) if config and Path(config).is_absolute() else _home() / ".config"
            path = base / "systemd" / "user" / SYSTEMD_UNIT
    else:
        base = Path("/Library/LaunchDaemons") if system else _home() / "Library" / "LaunchAgents"
        path = base / f"{LAUNCHD_LABEL}.plist"
    return _reroot(path, root)


def env_file_path(system: bool = False, *, root: Path | None = None) -> Path:
    """Where the systemd unit's 0600 ``EnvironmentFile`` (the service's secrets) lives:
    ``/etc/localswarm/service.env`` for a system unit, else
    ``$XDG_CONFIG_HOME/localswarm/service.env`` (``~/.config`` by default)."""
    if system:
        path = Path("/etc/localswarm/service.env")
    else:
        config = os.environ.get("XDG_CONFIG_HOME")
        base = Path(config) if config and Path(config).is_absolute() else _home() / ".config"
        path = base / "localswarm" / "service.env"
    return _reroot(path, root)


def _log_dir(system: bool, root: Path | None) -> Path:
    path = (
        Path("/Library/Logs/localswarm") if system else _home() / "Library" / "Logs" / "localswarm"
    )
    return _reroot(path, root)


def _kind(kind: str | None) -> ServiceKind:
    if kind is None:
        return default_kind()
    if kind not in KINDS:
        raise ConfigError(f"service kind must be one of {KINDS}, not {kind!r}")
    return kind


def _service_user(system: bool) -> str | None:
    # `sudo localswarm service install --system` should run the swarm as the person who
    # typed it (their model cache, their config), not as root.
    if not system:
        return None
    return os.environ.get("SUDO_USER") or getpass.getuser()


# --- rendering with defaults -----------------------------------------------------------


def _render(
    kind: ServiceKind,
    *,
    system: bool,
    root: Path | None,
    up_args: Sequence[str],
    exec_path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    user: str | None,
) -> tuple[bytes, dict[str, str]]:
    """The unit (or plist) and the secrets that go beside it (systemd: the EnvironmentFile)."""
    if exec_path is None:
        exe, lead = default_command()
    else:
        exe, lead = os.fspath(exec_path), []
    args = [*lead, "up", *_check_args(up_args)]
    env = service_env() if env is None else env
    user = _service_user(system) if user is None else user
    if kind == "systemd":
        plain, secret = split_env(env)
        env_file = env_file_path(system) if secret else None  # the path as the manager sees it
        unit = render_systemd_unit(system=system, exec_path=exe, args=args, env=plain, user=user, env_file=env_file)
        return unit.encode(), secret
    plist = render_launchd_plist(
        exec_path=exe,
        args=args,
        env=env,
        log_dir=_log_dir(system, root),
        user=user if system else None,
    )
    return plist, {}


def print_unit(
    kind: ServiceKind | None = None,
    *,
    system: bool = False,
    root: Path | None = None,
    up_args: Sequence[str] = (),
    exec_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> str:
    """The unit or plist ``install`` would write, as text; nothing is written.

    ``up_args`` are extra options for ``localswarm up`` (``--model``, ``--port`` ...);
    ``exec_path`` defaults to this installation (``default_command``); ``env`` to
    ``service_env()``.
    """
    kind = _kind(kind)
    data, _ = _render(
        kind, system=system, root=root, up_args=up_args, exec_path=exec_path, env=env, user=user
    )
    return data.decode()


# --- talking to the service manager ----------------------------------------------------


def _echo_default(line: str) -> None:
    print(line, flush=True)


def _scope(system: bool) -> list[str]:
    return [] if system else ["--user"]


def _run_commands(commands: list[list[str]], echo: Echo) -> bool:
    # Stops at the first failure: the rest would fail the same way (no bus, no systemd),
    # so they are printed for the user to run where the manager is reachable.
    for i, cmd in enumerate(commands):
        shown = shlex.join(cmd)
        reason: str | None = None
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            reason = f"{cmd[0]} is not installed"
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
        else:
            if done.returncode == 0:
                echo(f"ran: {shown}")
                continue
            reason = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        echo(f"could not run `{shown}`: {reason}")
        echo("Run this yourself where the service manager is available:")
        for rest in commands[i:]:
            echo(f"  {shlex.join(rest)}")
        return False
    return True


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        # Created with its final mode: a secret is never readable by others, not even for a moment.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with open(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # the umask may have taken bits away from a 0644 file
        os.replace(tmp, path)
    except PermissionError as exc:
        raise ServiceError(
            f"Cannot write {path}: {exc.strerror} (a system service needs sudo)"
        ) from exc


def _file_mode(kind: ServiceKind, env: Mapping[str, str] | None) -> int:
    # A plist carries every variable, secrets included: then only its owner may read it.
    env = service_env() if env is None else env
    return 0o600 if kind == "launchd" and split_env(env)[1] else 0o644


def install(
    kind: ServiceKind | None = None,
    *,
    system: bool = False,
    dry_run: bool = False,
    root: Path | None = None,
    manage: bool | None = None,
    up_args: Sequence[str] = (),
    exec_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    echo: Echo | None = None,
) -> Path:
    """Write the unit (or plist) and start it; return its path.

    ``manage`` runs ``systemctl daemon-reload`` + ``enable --now`` (``launchctl load -w``);
    by default only when ``root`` is not given. When the manager can't be reached the
    file is still written and the commands are printed. ``dry_run`` prints the file and
    the commands and changes nothing. Raises ``ServiceError`` if the file can't be written.
    """
    kind = _kind(kind)
    echo = echo or _echo_default
    manage = root is None if manage is None else manage
    path = unit_path(kind, system=system, root=root)
    data, secrets = _render(
        kind, system=system, root=root, up_args=up_args, exec_path=exec_path, env=env, user=user
    )
    env_file = env_file_path(system, root=root)
    env_text = render_env_file(secrets).encode() if secrets else None
    previous = path.read_bytes() if path.is_file() else None
    if env_file.is_file() and env_file.read_bytes() != env_text:
        previous = previous or b""  # new secrets: a running service must restart to see them

    if kind == "systemd":
        commands = [
            ["systemctl", *_scope(system), "daemon-reload"],
            ["systemctl", *_scope(system), "enable", "--now", SYSTEMD_UNIT],
        ]
        if previous is not None and previous != data:
            # enable --now leaves a running service on its old unit.
            commands.append(["systemctl", *_scope(system), "restart", SYSTEMD_UNIT])
    else:
        commands = [["launchctl", "load", "-w", str(path)]]
        if previous is not None:
            commands.insert(0, ["launchctl", "unload", str(path)])

    if dry_run:
        echo(f"would write {path}:")
        echo(data.decode())
        if secrets:
            echo(f"and, readable by its owner only (0600), {env_file} with: {', '.join(sorted(secrets))}")
        echo("and run:")
        for cmd in commands:
            echo(f"  {shlex.join(cmd)}")
        return path

    if kind == "launchd":
        # launchd opens the log files but does not create their directory.
        _log_dir(system, root).mkdir(parents=True, exist_ok=True)
    if env_text is not None:
        _write(env_file, env_text, 0o600)  # before the unit that names it
        echo(f"wrote {env_file} (0600): {', '.join(sorted(secrets))}")
    elif env_file.is_file():
        env_file.unlink()
    _write(path, data, _file_mode(kind, env))
    echo(f"wrote {path}")
    if manage:
        _run_commands(commands, echo)
    else:
        echo("To start it:")
        for cmd in commands:
            echo(f"  {shlex.join(cmd)}")
    if kind == "systemd" and not system:
        echo(f"To keep it running after you log out: loginctl enable-linger {getpass.getuser()}")
    return path


def uninstall(
    kind: ServiceKind | None = None,
    *,
    system: bool = False,
    dry_run: bool = False,
    root: Path | None = None,
    manage: bool | None = None,
    echo: Echo | None = None,
) -> Path:
    """Stop and disable the service, then remove its file; return the path it had.

    Removing a service that isn't installed only says so. A manager that can't be
    reached is reported (with the commands to run) and the file is removed anyway.
    """
    kind = _kind(kind)
    echo = echo or _echo_default
    manage = root is None if manage is None else manage
    path = unit_path(kind, system=system, root=root)
    if kind == "systemd":
        before = [["systemctl", *_scope(system), "disable", "--now", SYSTEMD_UNIT]]
        after = [["systemctl", *_scope(system), "daemon-reload"]]
    else:
        before = [["launchctl", "unload", "-w", str(path)]]
        after = []

    if not path.exists():
        echo(f"not installed: {path} does not exist")
        return path
    if dry_run:
        echo(f"would run: {shlex.join(before[0])}")
        echo(f"would remove {path}")
        for cmd in after:
            echo(f"would run: {shlex.join(cmd)}")
        return path

    if manage:
        _run_commands(before, echo)
    try:
        path.unlink()
        env_file = env_file_path(system, root=root)
        if kind == "systemd" and env_file.is_file():
            env_file.unlink()
            echo(f"removed {env_file}")
    except PermissionError as exc:
        raise ServiceError(
            f"Cannot remove {path}: {exc.strerror} (a system service needs sudo)"
        ) from exc
    echo(f"removed {path}")
    if manage and after:
        _run_commands(after, echo)
    elif not manage:
        for cmd in [*before, *after]:
            echo(f"  then run: {shlex.join(cmd)}")
    return path


def status(
    kind: ServiceKind | None = None,
    *,
    system: bool = False,
    root: Path | None = None,
    manage: bool | None = None,
) -> str:
    """A readable report: whether the file is installed, and what the manager says of it.

    Never raises because the manager is missing or unreachable; the report says so.
    """
    kind = _kind(kind)
    manage = root is None if manage is None else manage
    path = unit_path(kind, system=system, root=root)
    what = f"{kind} {'system' if system else 'user'} service"
    where = f"installed at {path}" if path.exists() else f"not installed (would be {path})"
    lines = [f"{what}: {where}"]
    if not manage:
        return "\n".join(lines)
    if kind == "systemd":
        cmd = ["systemctl", *_scope(system), "status", SYSTEMD_UNIT, "--no-pager", "--lines=20"]
    else:
        cmd = ["launchctl", "list", LAUNCHD_LABEL]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        lines.append(f"{cmd[0]} is not installed here; run `{shlex.join(cmd)}` on the host")
        return "\n".join(lines)
    except (OSError, subprocess.TimeoutExpired) as exc:
        lines.append(f"could not run `{shlex.join(cmd)}`: {exc}")
        return "\n".join(lines)
    output = (done.stdout + done.stderr).strip()
    # systemctl status exits 3 for an inactive unit and 4 for an unknown one: both are answers.
    answers = (0, 3, 4) if kind == "systemd" else (0, 113)
    if done.returncode not in answers:
        lines.append(
            f"could not ask the service manager (`{shlex.join(cmd)}`): {output or done.returncode}"
        )
    elif output:
        lines.append(output)
    elif kind == "launchd" and done.returncode == 113:
        lines.append("not loaded in launchd")
    return "\n".join(lines)
