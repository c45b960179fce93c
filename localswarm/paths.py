"""Where localswarm keeps its files (XDG on Linux, the platform's own dirs elsewhere).

Each directory can be moved with an environment variable, which tests use to isolate
themselves: ``LOCALSWARM_STATE_DIR``, ``LOCALSWARM_CONFIG_DIR``, ``LOCALSWARM_CACHE_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "localswarm"


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    path = Path(value).expanduser() if value else Path(default)
    return path


def state_dir() -> Path:
    """Runtime state: the state file of a running swarm, per-instance logs."""
    return _dir("LOCALSWARM_STATE_DIR", platformdirs.user_state_dir(APP_NAME))


def config_dir() -> Path:
    """User configuration (``config.yaml``)."""
    return _dir("LOCALSWARM_CONFIG_DIR", platformdirs.user_config_dir(APP_NAME))


def cache_dir() -> Path:
    """Downloaded models and llama-server builds."""
    return _dir("LOCALSWARM_CACHE_DIR", platformdirs.user_cache_dir(APP_NAME))
