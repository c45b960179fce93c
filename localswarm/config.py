"""Typed settings: defaults < ``config.yaml`` < ``LOCALSWARM_*`` environment < flags.

Every field of :class:`Settings` can be set in ``~/.config/localswarm/config.yaml``
(``LOCALSWARM_CONFIG`` names another file), overridden by an environment variable
``LOCALSWARM_<FIELD>`` (upper case) and finally by a command-line flag, except secrets:
a secret is never read from ``config.yaml`` nor accepted on a command line (where
``ps`` shows it). :data:`SECRETS` says where each one belongs instead.

Booleans from the environment or the file accept only true/false, 1/0 and yes/no (any
case); anything else is an error naming the variable, so ``LOCALSWARM_FEDERATE=ture``
fails loudly instead of meaning false.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localswarm import paths
from localswarm.errors import ConfigError

STREAM_MODES = ("consensus", "fastest")
BACKENDS = ("auto", "llama-server", "mlx")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")

# Secrets, and where they belong: never config.yaml, never argv (no flag is generated).
SECRETS = {
    "api_key": "LOCALSWARM_API_KEY, or a 0600 file named by --api-key-file / LOCALSWARM_API_KEY_FILE",
    "federation_secret": "LOCALSWARM_FEDERATION_SECRET, or a 0600 file named by federation_secret_file",
}
STRATEGIES = ("similarity", "quality", "fastest", "exec")
EXEC_CHECK_MODES = ("auto", "on", "off")
#: When two answers agree (local and cross-machine votes alike). Chance level (unrelated
#: HumanEval solutions, p99) is 0.47 on raw tokens and 0.62 normalised; it must sit well above.
SIMILARITY_THRESHOLD = 0.8


@dataclass(kw_only=True)
class SupervisorTiming:
    """How instances are supervised (seconds): declared once, read by the supervisor as
    :class:`~localswarm.supervisor.instance.InstanceTiming`."""

    health_interval: float = 5.0
    health_timeout: float = 3.0
    start_timeout: float = 120.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_fast_failures: int = 5  # consecutive failures within fast_failure_window → FATAL
    fast_failure_window: float = 30.0
    stop_grace: float = 10.0  # SIGTERM → SIGKILL


@dataclass(kw_only=True)
class Settings(SupervisorTiming):
    """All knobs of a swarm. Field comments are the user-facing documentation.

    The supervision timings come first (inherited from :class:`SupervisorTiming`).
    """

    # What to run.
    model: str = "auto"  # "auto" (planned for this machine), "embedded", a .gguf path, family:size:quant
    instances: int | None = None  # None: planned (2 for the embedded model on CPU)
    llama_server: str | None = None  # explicit llama-server binary
    backend: str = "auto"  # auto (mlx_lm.server on Apple Silicon with mlx-lm, else llama-server), llama-server, mlx
    threads: int | None = None  # CPU threads shared by all instances (None: all cores)
    ctx_size: int = 4096  # context per slot
    parallel: int = 2  # slots per instance (concurrent requests each can decode)
    extra_args: list[str] = field(default_factory=list)  # appended to llama-server argv
    device: list[str] = field(default_factory=list)  # GPUs the planner may use: "0", "gpu1"... (all)
    latency_target: float = 30.0  # seconds the planner allows for opencode's first turn (2,845 + 256 tokens)

    # Where to serve.
    host: str = "127.0.0.1"
    port: int = 8000

    # How to vote.
    stream_mode: str = "consensus"  # consensus: vote then stream; fastest: relay first
    strategy: str = "similarity"
    quorum: float | None = None  # share of instances that ends the wait; None: majority
    similarity_threshold: float = SIMILARITY_THRESHOLD
    temperature: float = 0.8  # used when the client sends none (diversity for the vote)
    instance_timeout: float = 300.0  # a slower instance is left out of the vote
    keepalive_interval: float = 2.0  # ": keep-alive" comment lines while voting
    # Run the answers on the examples in the request (doctest, assert, "f(x) → y") in the
    # sandbox and let the most examples passed win: auto (only where the sandbox isolates
    # fully: network and mount namespaces), on, off.
    exec_check: str = "auto"

    # Federation (issue 6, docs/federation.md): off unless enabled. Enabled on a
    # non-loopback host it needs a shared secret: $LOCALSWARM_FEDERATION_SECRET or a 0600 file.
    federate: bool = False
    peers: list[str] = field(default_factory=list)  # static peers, host:port (besides mDNS)
    federation_secret_file: str | None = None  # 0600 file holding the shared secret
    peer_timeout: float = 60.0  # seconds the coordinator waits for its peers' votes
    mdns: bool = True  # zeroconf discovery (_localswarm._tcp.local.)
    udp_discovery: bool = False  # UDP broadcast fallback where multicast is blocked
    udp_port: int = 5354
    peer_probe_interval: float = 5.0  # health probe of each peer (never generates text)

    # Limits.
    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 16 * 1024  # request line + headers; larger: 431 and the connection closed
    header_timeout: float = 10.0  # seconds a client has to send its request line and headers (slowloris)
    body_timeout: float = 60.0  # seconds a client has to send its whole request body
    max_concurrent: int | None = None  # requests in flight at the gateway; None: 4 × parallel (min 8); 0: no limit

    # Access (issue 5).
    api_key: str | None = None  # clients must send it (Authorization: Bearer); only from LOCALSWARM_API_KEY
    api_key_file: str | None = None  # a 0600 file holding the key (LOCALSWARM_API_KEY_FILE)
    insecure_no_auth: bool = False  # allow a non-loopback host without a key (logged loudly at every start)
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed; empty: CORS off
    embeddings: bool = False  # serve /v1/embeddings (starts llama-server with --embeddings)
    pooling: str | None = "mean"  # embeddings pooling for llama-server; None: the model's own
    log_level: str = "info"
    log_format: str = "text"  # gateway log lines: text, json (one object per line) or kv (logfmt)
    log_max_bytes: int = 10 * 1024 * 1024  # a detached swarm's gateway.log rotates at this size...
    log_backups: int = 3  # ...keeping gateway.log.1 .. .N

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.stream_mode not in STREAM_MODES:
            raise ConfigError(f"stream_mode must be one of {STREAM_MODES}, not {self.stream_mode!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.exec_check not in EXEC_CHECK_MODES:
            raise ConfigError(f"exec_check must be one of {EXEC_CHECK_MODES}, not {self.exec_check!r}")
        if self.instances is not None and not 1 <= self.instances <= 64:
            raise ConfigError(f"instances must be between 1 and 64, not {self.instances}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, not {self.port}")
        if self.max_concurrent is not None and self.max_concurrent < 0:
            raise ConfigError(f"max_concurrent must be >= 0, not {self.max_concurrent}")
        if self.parallel < 1 or self.ctx_size < 128:
            raise ConfigError("parallel must be >= 1 and ctx_size >= 128")
        if self.header_timeout <= 0 or self.body_timeout <= 0 or self.max_header_bytes < 1024:
            raise ConfigError("header_timeout and body_timeout must be > 0, max_header_bytes >= 1024")
        if self.log_max_bytes < 1024 or self.log_backups < 0:
            raise ConfigError("log_max_bytes must be >= 1024 and log_backups >= 0")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def config_file() -> Path:
    return Path(os.environ.get("LOCALSWARM_CONFIG") or paths.config_dir() / "config.yaml")


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn a YAML or environment value into the field's type, or raise ConfigError."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if args and typing.get_origin(hint) is not list else hint
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} may not be empty")
    try:
        if typing.get_origin(base) is list or base is list:
            if isinstance(value, str):
                return value.split()
            if isinstance(value, list):
                return [str(v) for v in value]
            raise TypeError
        if base is bool:
            return _boolean(name, value)
        if base in (int, float):
            if isinstance(value, bool):
                raise TypeError
            return base(value)
        if base is str:
            if not isinstance(value, (str, int, float)):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}: {value!r} is not a boolean; use one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}")


def load_settings(overrides: dict[str, Any] | None = None, *, path: Path | None = None) -> Settings:
    """Build settings from the config file, the environment and explicit overrides.

    ``overrides`` holds flag values; ``None`` values mean "flag not given".
    """
    types = _field_types()
    values: dict[str, Any] = {}
    path = path or config_file()
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        for key, value in data.items():
            key = str(key).replace("-", "_")
            if key in SECRETS:
                raise ConfigError(f"{path}: {key!r} is a secret and does not belong in a config file "
                                  f"(anyone who can read it, or a backup of it, has it): use {SECRETS[key]}")
            if key not in types:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, value, types[key])
    for key, hint in types.items():
        env = os.environ.get(f"LOCALSWARM_{key.upper()}")
        if env is not None:
            values[key] = _coerce(f"LOCALSWARM_{key.upper()}", env, hint)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in types:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, value, types[key])
    return Settings(**values)
