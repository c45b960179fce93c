"""Who may use a swarm: the gateway key, where secrets live, how they are compared, the bind rule.

One home for every secret-handling rule the rest of the code relies on:

- :func:`same_secret` compares two secrets in constant time (on their SHA-256, so the
  length does not leak either). The gateway's key check, and federation's signature
  checks (requests and replies) all go through it.
- :func:`read_secret_file` reads a secret from a regular file only its owner can read
  (``chmod 600``): the API key file and the federation secret file.
- :func:`load_api_key` is the key the gateway demands: ``$LOCALSWARM_API_KEY`` or the
  file named by ``api_key_file`` / ``$LOCALSWARM_API_KEY_FILE``. Never argv, never
  ``config.yaml`` (``config.load_settings`` refuses it there).
- :func:`client_headers` is how every client of ours (``status``, ``peers``, the MCP
  server...) finds and sends that key: the same resolution as the gateway's.
- :func:`check_binding` refuses a gateway on a non-loopback address without a key unless
  ``insecure_no_auth`` is set, and :func:`announce_binding` logs that choice loudly.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import stat
from pathlib import Path

from localswarm.config import Settings
from localswarm.errors import ConfigError, LocalSwarmError

__all__ = [
    "ENV_KEY",
    "ENV_KEY_FILE",
    "announce_binding",
    "check_binding",
    "client_api_key",
    "client_headers",
    "is_loopback",
    "load_api_key",
    "read_secret_file",
    "same_secret",
]

ENV_KEY = "LOCALSWARM_API_KEY"
ENV_KEY_FILE = "LOCALSWARM_API_KEY_FILE"

logger = logging.getLogger("localswarm")


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def same_secret(presented: str | bytes, expected: str | bytes) -> bool:
    """True when ``presented`` equals ``expected``, in time independent of both.

    Both sides are hashed first, so neither where they differ nor their lengths leak.
    """
    return hmac.compare_digest(hashlib.sha256(_bytes(presented)).digest(), hashlib.sha256(_bytes(expected)).digest())


def read_secret_file(path: str | os.PathLike[str], what: str, *, error: type[ConfigError] = ConfigError) -> str:
    """The stripped content of ``path``, a regular, non-empty file readable by its owner only.

    ``what`` names the secret in messages ("the API key file"); ``error`` is the
    ConfigError subclass raised.
    """
    p = Path(path).expanduser()
    try:
        info = p.stat()
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {p} is not a regular file")
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"{what} {p} has mode {stat.S_IMODE(info.st_mode):04o}: it must be readable by its owner "
                    f"only: run `chmod 600 {p}`")
    try:
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {p}: {exc}") from None
    if not text:
        raise error(f"{what} {p} is empty")
    return text


def load_api_key(settings: Settings) -> str | None:
    """The key clients must present, or None when the gateway is open.

    ``settings.api_key`` comes from ``$LOCALSWARM_API_KEY`` (or a caller in Python);
    otherwise ``settings.api_key_file`` names a 0600 file holding it.
    """
    if settings.api_key and settings.api_key.strip():
        return settings.api_key.strip()
    if not settings.api_key_file:
        return None
    return read_secret_file(settings.api_key_file, "the API key file")


def client_api_key(settings: Settings | None = None) -> str | None:
    """The key our own clients send to a local gateway: the gateway's own resolution.

    A configuration that cannot be read (a bad file mode, a typo in a setting) means no
    key: the gateway then answers 401, and the message tells the user what to set.
    """
    if settings is None:
        from localswarm.config import load_settings

        try:
            settings = load_settings()
        except LocalSwarmError as exc:
            logger.debug("no client key: %s", exc)
            return None
    try:
        return load_api_key(settings)
    except LocalSwarmError as exc:
        logger.warning("cannot use the API key: %s", exc)
        return None


def client_headers(settings: Settings | None = None) -> dict[str, str]:
    """``Authorization`` for our calls to the gateway, when a key is configured."""
    key = client_api_key(settings)
    return {"Authorization": f"Bearer {key}"} if key else {}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(settings: Settings) -> None:
    """Refuse a gateway reachable from the network without a key, unless told it is on purpose."""
    if is_loopback(settings.host) or settings.insecure_no_auth:
        return
    if load_api_key(settings) is not None:
        return
    raise ConfigError(
        f"refusing to listen on {settings.host} without an API key: anyone who can reach this address "
        f"could use the swarm. Either set a key ({ENV_KEY}=..., or a 0600 file with --api-key-file / "
        f"{ENV_KEY_FILE}), or pass --insecure-no-auth if the network is trusted"
    )


def announce_binding(settings: Settings) -> None:
    """Log, at every start, that the gateway listens on the network and how it is guarded."""
    if is_loopback(settings.host):
        return
    if settings.insecure_no_auth and load_api_key(settings) is None:
        logger.warning("INSECURE: the gateway listens on %s with NO API key (--insecure-no-auth): anyone on "
                       "the network can use this swarm", settings.host)
    else:
        logger.info("the gateway listens on %s: reachable from the network, API key required", settings.host)
