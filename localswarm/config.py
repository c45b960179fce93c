"""Typed settings: flags > ``LOCALSWARM_*`` environment > ``config.yaml`` > defaults.

Every field of :class:`Settings` can be set in ``config.yaml`` (in the platform's config
dir, see :func:`config_file`; ``--config FILE`` or ``LOCALSWARM_CONFIG`` names another
file), overridden by an environment variable ``LOCALSWARM_<FIELD>`` (upper case) and
finally by a command-line flag, except secrets:
a secret is never read from ``config.yaml`` nor accepted on a command line (where
``ps`` shows it). :data:`SECRETS` says where each one belongs instead.

Booleans from the environment or the file accept only true/false, 1/0 and yes/no (any
case); anything else is an error naming the variable, so ``LOCALSWARM_FEDERATE=ture``
fails loudly instead of meaning false.

The file may be flat (``ctx_size: 8192``) or nested in the seed plan's sections
(``server:``, ``swarm:``, ``models:``, ``hardware:``, ``network:``); :data:`PLAN_KEYS`
maps each of the plan's names onto a field, or refuses it with a message naming what to
use instead (:data:`REFUSED`). A section also accepts any field by its own name.
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
#: Federation modes (docs/federation.md): independent swarms that cross-vote (Mode 1), or one
#: model spread over the memory of rpc workers (Mode 2, ``up --pool``).
FEDERATION_MODES = ("independent", "distributed")
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
#: The context per slot, sized for opencode (docs/GUIDE.md "opencode"). Measured with
#: llama-server's /apply-template + /tokenize on opencode 1.18.33's first agent turn
#: (tests/fixtures/opencode/first-turn-1.18.33.json), SmolLM2's tokenizer: 2,205 tokens of
#: system prompt and message, plus 5,390 tokens of its 10 tool schemas, which a tool-aware
#: chat template (Qwen2.5-Coder's) puts in the prompt: ~7,600 tokens before the model says a
#: word. 16,384 leaves ~4,700 tokens of conversation (several tool calls and results) before
#: opencode compacts at context - output (OPENCODE_OUTPUT).
OPENCODE_CTX = 16384
#: The answer budget opencode is told (``limit.output``): it sends it as ``max_tokens``.
OPENCODE_OUTPUT = 4096
#: When two answers agree (local and cross-machine votes alike). Chance level (unrelated
#: HumanEval solutions, p99) is 0.47 on raw tokens and 0.62 normalised; it must sit well above.
SIMILARITY_THRESHOLD = 0.8

#: The seed plan's nested names (section, key) → the field that honours them.
PLAN_KEYS: dict[tuple[str, str], str] = {
    ("server", "host"): "host",
    ("server", "port"): "port",
    ("swarm", "consensus_strategy"): "strategy",
    ("swarm", "min_instances"): "min_instances",
    ("swarm", "max_instances"): "max_instances",
    ("swarm", "timeout"): "instance_timeout",
    ("models", "cache_dir"): "models_dir",
    ("models", "preferred_models"): "preferred_models",
    ("hardware", "gpu_memory_fraction"): "gpu_memory_fraction",
    ("hardware", "ram_fraction"): "ram_fraction",
    ("network", "enabled"): "federate",
    ("network", "discovery_port"): "udp_port",
    ("network", "advertise_interval"): "advertise_interval",
    ("network", "strategy"): "federation_strategy",
    ("network", "min_peers"): "min_peers",
    ("network", "max_peers"): "max_peers",
    ("network", "auth_token"): "federation_secret",
    ("network", "mode"): "mode",
}
SECTIONS = ("server", "swarm", "models", "hardware", "network")
#: Names refused with what to use instead (flat, or section.key). A refusal is an error,
#: except for the names in :data:`IGNORED_WITH_NOTICE`.
REFUSED: dict[str, str] = {
    "network.federation_port": "federation is served on the gateway's own port: set server.port",
    "federation_port": "federation is served on the gateway's own port: set port",
    "discovery_port": "use udp_port (network.discovery_port in the nested form)",
    "consensus_strategy": "use strategy (swarm.consensus_strategy in the nested form)",
    "timeout": "use instance_timeout (swarm.timeout in the nested form)",
    "cache_dir": "use models_dir (models.cache_dir in the nested form)",
    "enabled": "use federate (network.enabled in the nested form)",
    "auth_token": "the federation secret never goes in a file: use LOCALSWARM_FEDERATION_SECRET",
    "max_concurrent": "requests now wait in a fair queue instead of being refused: use queue_depth "
                      "(and queue_timeout)",
}
#: Refused names that leave the rest of the file usable (the seed plan's own file has them):
#: the swarm starts, and every start says loudly that they have no effect.
IGNORED_WITH_NOTICE = ("network.federation_port", "federation_port")
#: How the federation picks among the swarms' answers (localswarm/consensus/crossvote.py).
FEDERATION_STRATEGIES = ("weighted", "best_of_n", "latency")
#: The confidence a vote must clear for ``latency`` to take it (a strict majority of one swarm, tight).
FEDERATION_FLOOR = 0.5


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
    min_instances: int | None = None  # bounds on the planned count (an explicit `instances` wins)
    max_instances: int | None = None
    preferred_models: list[str] = field(default_factory=list)  # families tried first by "auto", in order
    models_dir: str | None = None  # where GGUFs are cached (default: the cache dir's models/)
    gpu_memory_fraction: float = 1.0  # share of each GPU's VRAM the swarm may use (a 10%, >= 1 GiB reserve stays)
    ram_fraction: float = 0.5  # share of RAM (CPU only) or unified memory (Apple Silicon) the swarm may use
    llama_server: str | None = None  # explicit llama-server binary
    backend: str = "auto"  # auto (mlx_lm.server on Apple Silicon with mlx-lm, else llama-server), llama-server, mlx
    threads: int | None = None  # CPU threads shared by all instances (None: all cores)
    ctx_size: int = OPENCODE_CTX  # context per slot (one request): sized for opencode's first turn and several more
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
    advertise_interval: float = 2.0  # seconds between UDP announcements (mDNS re-announces by itself)
    peer_probe_interval: float = 5.0  # health probe of each peer (never generates text)
    # How the swarms' answers are pooled and how many peers are asked (docs/federation.md).
    federation_strategy: str = "weighted"  # weighted (support × confidence), best_of_n (quality score), latency
    federation_min_confidence: float = FEDERATION_FLOOR  # latency: the confidence a vote must clear to be taken
    min_peers: int = 0  # peer votes a federated answer needs (waited for up to peer_timeout); fewer: local answer
    max_peers: int | None = None  # ask at most this many peers: never timed first, then the fastest (None: all)
    # Mode 2 (docs/federation.md "Mode 2"): one model across machines on llama.cpp RPC. Off by
    # default; both sides need the federation secret. A coordinator (`up --pool`) plans against
    # its own memory plus what its trusted workers offer; a worker (`worker --rpc`, or
    # `up --federate --offer-memory`) lends its memory through rpc-server.
    mode: str = "independent"  # independent (Mode 1: swarms cross-vote) or distributed (Mode 2)
    offer_memory: bool = False  # with federate: also be a Mode 2 worker (rpc-server behind the relay)
    rpc_port: int = 50052  # a worker's relay port on its one LAN address (rpc-server itself: loopback)
    pool_wait: float = 3.0  # seconds a coordinator listens for workers (mDNS) before planning

    # Limits.
    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 16 * 1024  # request line + headers; larger: 431 and the connection closed
    header_timeout: float = 10.0  # seconds a client has to send its request line and headers (slowloris)
    body_timeout: float = 60.0  # seconds a client has to send its whole request body
    # Queue, don't refuse (issue 13): generating requests wait for instance slots in a fair FIFO.
    queue_depth: int = 256  # requests that may wait; past it, 429 with Retry-After (0: no bound)
    queue_timeout: float = 300.0  # 429 when the estimated wait exceeds it, or a waiter has waited this long
    min_voters: int = 1  # under load each request asks fewer instances, down to this (instances: fixed fan-out)
    # Memory guard (issue 13, seed 8.2): the supervisor, not the kernel's OOM killer, decides
    # which instance goes when memory runs short (RAM as the cgroup allows it, and NVML VRAM).
    memory_guard: bool = True  # never start an instance that does not fit; stop the newest under pressure
    memory_reserve_mb: int = 512  # MiB kept free (RAM, and VRAM per GPU): below it the newest instance is stopped
    memory_resume_mb: int = 256  # MiB free beyond an instance's need and the reserve before a stopped one returns
    memory_settle: float = 5.0  # seconds memory must stay at that level before a stopped instance returns
    memory_interval: float = 1.0  # seconds between memory checks
    memory_drain_timeout: float = 5.0  # seconds in-flight requests get on an instance stopped for memory

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
        if self.strategy in FEDERATION_STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is a cross-swarm federation strategy: set "
                              f"federation_strategy (network.strategy in the nested form); "
                              f"the local vote takes one of {STRATEGIES}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.federation_strategy not in FEDERATION_STRATEGIES:
            raise ConfigError(f"federation_strategy must be one of {FEDERATION_STRATEGIES}, "
                              f"not {self.federation_strategy!r}")
        if not 0.0 <= self.federation_min_confidence <= 1.0:
            raise ConfigError(f"federation_min_confidence must be in [0, 1], not {self.federation_min_confidence}")
        if not 0 <= self.min_peers <= 64 or (self.max_peers is not None and not 1 <= self.max_peers <= 64):
            raise ConfigError(f"min_peers must be 0-64 and max_peers 1-64 (or none), not {self.min_peers} "
                              f"and {self.max_peers}")
        if self.max_peers is not None and self.min_peers > self.max_peers:
            raise ConfigError(f"min_peers ({self.min_peers}) is above max_peers ({self.max_peers})")
        if self.mode not in FEDERATION_MODES:
            raise ConfigError(f"mode must be one of {FEDERATION_MODES}, not {self.mode!r}")
        if not 0 <= self.rpc_port < 65536:
            raise ConfigError(f"rpc_port must be a port number (0: any free port), not {self.rpc_port}")
        if self.exec_check not in EXEC_CHECK_MODES:
            raise ConfigError(f"exec_check must be one of {EXEC_CHECK_MODES}, not {self.exec_check!r}")
        for name in ("min_instances", "max_instances"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 64:
                raise ConfigError(f"{name} must be between 1 and 64, not {value}")
        if self.min_instances and self.max_instances and self.min_instances > self.max_instances:
            raise ConfigError(f"min_instances ({self.min_instances}) is above max_instances ({self.max_instances})")
        for name in ("gpu_memory_fraction", "ram_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], not {getattr(self, name)}")
        if self.advertise_interval <= 0:
            raise ConfigError("advertise_interval must be > 0")
        if self.instances is not None and not 1 <= self.instances <= 64:
            raise ConfigError(f"instances must be between 1 and 64, not {self.instances}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, not {self.port}")
        if self.queue_depth < 0 or self.queue_timeout <= 0 or self.min_voters < 1:
            raise ConfigError("queue_depth must be >= 0, queue_timeout > 0 and min_voters >= 1")
        if self.memory_reserve_mb < 0 or self.memory_resume_mb < 0:
            raise ConfigError("memory_reserve_mb and memory_resume_mb must be >= 0")
        if self.memory_interval <= 0 or self.memory_settle < 0 or self.memory_drain_timeout < 0:
            raise ConfigError("memory_interval must be > 0, memory_settle and memory_drain_timeout >= 0")
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


def _flatten(data: dict[Any, Any], path: Path, notices: list[str]) -> dict[str, Any]:
    """The file's settings by field name: nested plan sections unfolded, refused names refused
    (an error, or a line in ``notices`` for :data:`IGNORED_WITH_NOTICE`)."""
    flat: dict[str, Any] = {}

    def refuse(shown: str) -> None:
        message = f"{path}: {shown!r} is refused: {REFUSED[shown]}"
        if shown not in IGNORED_WITH_NOTICE:
            raise ConfigError(message)
        notices.append(message + " (it has no effect)")

    names = set(_field_types()) | set(SECRETS)

    def put(field_name: str, shown: str, value: Any) -> None:
        if field_name in SECRETS:
            if field_name == "federation_secret" and value is None:
                return  # `auth_token: null`: no secret in the file, as it should be
            raise ConfigError(f"{path}: {shown!r} is a secret and does not belong in a config file "
                              f"(anyone who can read it, or a backup of it, has it): use {SECRETS[field_name]}")
        if field_name in flat:
            raise ConfigError(f"{path}: {shown!r} sets {field_name!r} a second time")
        flat[field_name] = (shown, value)

    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key in SECTIONS and (value is None or isinstance(value, dict)):
            for sub, subvalue in (value or {}).items():
                sub = str(sub).replace("-", "_")
                shown = f"{key}.{sub}"
                if shown in REFUSED:
                    refuse(shown)
                    continue
                target = PLAN_KEYS.get((key, sub)) or (sub if sub in names else None)
                if target is None:
                    raise ConfigError(f"{path}: unknown setting {shown!r}")
                put(target, shown, subvalue)
            continue
        if key in REFUSED and key not in names:
            refuse(key)
            continue
        if key in SECRETS:
            put(key, key, value)
            continue
        if key not in names:
            hint = f" (a section is one of {', '.join(SECTIONS)})" if key in SECTIONS else ""
            raise ConfigError(f"{path}: unknown setting {key!r}{hint}")
        put(key, key, value)
    return flat


def load_settings(overrides: dict[str, Any] | None = None, *, path: Path | None = None) -> Settings:
    """Build settings from the config file, the environment and explicit overrides.

    ``overrides`` holds flag values; ``None`` values mean "flag not given".
    """
    return load_with_sources(overrides, path=path).settings


class Loaded(typing.NamedTuple):
    settings: Settings
    sources: dict[str, str]  # field → "file", "env" or "flag"; a field not listed has its default
    notices: list[str]  # refused keys that have no effect (say them at every start)


def load_with_sources(overrides: dict[str, Any] | None = None, *, path: Path | None = None) -> Loaded:
    """:func:`load_settings`, plus where each set field came from and what was refused."""
    types = _field_types()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    notices: list[str] = []
    path = path or config_file()
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        for key, (shown, value) in _flatten(data, path, notices).items():
            values[key] = _coerce(f"{path}: {shown}", value, types[key])
            sources[key] = "file"
    elif path_given(path):
        raise ConfigError(f"config file {path} does not exist (`localswarm config init` writes one)")
    for key, hint in types.items():
        env = os.environ.get(f"LOCALSWARM_{key.upper()}")
        if env is not None:
            values[key] = _coerce(f"LOCALSWARM_{key.upper()}", env, hint)
            sources[key] = "env"
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in types:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, value, types[key])
        sources[key] = "flag"
    return Loaded(Settings(**values), sources, notices)


def path_given(path: Path) -> bool:
    """Whether ``path`` was named by the user (``--config``/``LOCALSWARM_CONFIG``), not the default."""
    return path != paths.config_dir() / "config.yaml"


# -- `localswarm config` --------------------------------------------------------------------


def field_comments() -> dict[str, str]:
    """Each field's trailing comment in :class:`Settings` (its user-facing documentation)."""
    import inspect
    import re

    comments: dict[str, str] = {}
    for cls in (SupervisorTiming, Settings):
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s{4}(\w+): [^=]+=[^#]*#\s*(.+)$", line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
    return comments


def effective(settings: Settings, sources: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(field, shown value, source)`` for every field; a secret's value is never shown."""
    rows = []
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        shown = ("(set)" if value else "(not set)") if f.name in SECRETS else _yaml_value(value)
        rows.append((f.name, shown, sources.get(f.name, "default")))
    return rows


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def template() -> str:
    """A commented config.yaml: the seed plan's sections, then every other setting, all at
    their defaults and commented out (uncomment what you change)."""
    defaults = Settings()
    comments = field_comments()
    by_field = {v: k for k, v in PLAN_KEYS.items()}
    lines = [
        "# localswarm settings. Precedence: command-line flags > LOCALSWARM_* environment > this file > defaults.",
        "# `localswarm config show` prints what is in effect and where each value came from.",
        "# Secrets never go here: LOCALSWARM_API_KEY / LOCALSWARM_FEDERATION_SECRET (or 0600 files).",
        "",
    ]
    done: set[str] = set()
    for section in SECTIONS:
        lines.append(f"{section}:")
        for (sec, key), name in PLAN_KEYS.items():
            if sec != section:
                continue
            if name in SECRETS:
                lines.append(f"  # {key}: null  # never a value here: set LOCALSWARM_FEDERATION_SECRET")
                continue
            note = comments.get(name, "")
            note = f"{name}{': ' + note if note else ''}" if name != key else note
            lines.append(f"  # {key}: {_yaml_value(getattr(defaults, name))}" + (f"  # {note}" if note else ""))
            done.add(name)
        lines.append("")
    lines.append("# Every other setting (flat keys; each also LOCALSWARM_<KEY> and --<key>):")
    for f in dataclasses.fields(Settings):
        if f.name in done or f.name in SECRETS or f.name in by_field:
            continue
        note = comments.get(f.name)
        lines.append(f"# {f.name}: {_yaml_value(getattr(defaults, f.name))}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"
